#!/usr/bin/env python
"""Convert checkpoints of the DySample authors' mmdet/mmseg forks to this plugin's models.

The authors released their detection and segmentation models as forks of mmdetection and
mmsegmentation whose necks/heads keep the DySample layers in a ``ModuleList`` called
``upsample_modules``. This plugin keeps them in ``upsamplers`` (see
:class:`mmdysample.mmdet.UpsamplerFPN` and :class:`mmdysample.mmseg.SegformerHead`). Inside
each layer the names agree (``offset``, ``scope``, ``init_pos``), so conversion only renames
the container and, where the two orders differ, permutes the indices. Every other key
(backbone, lateral/FPN convs, heads) is copied unchanged.

Index mapping (assumed; override with ``--neck-index-map`` / ``--head-index-map``):

* **Detection fork**, ``neck.upsample_modules.{i}.*`` -> ``neck.upsamplers.{j}.*`` with
  ``j = i`` by default. Assumed: the fork's FPN builds one upsampler per top-down step and
  step ``i`` upsamples pyramid level ``i + 1`` onto level ``i`` (the finest step is ``0``),
  which is exactly this plugin's order (``upsamplers[j]`` takes ``laterals[j + 1]`` to the
  size of ``laterals[j]``). If a checkpoint lists the steps coarsest first, pass
  ``--neck-index-map 2 1 0`` (``j = map[i]``). The fork's dynamic-scope conv has a bias
  (``neck.upsample_modules.{i}.scope.bias``): the target config needs
  ``upsample_cfg=dict(type='DySample+', scope_bias=True)`` (the report says so when such
  keys are found).
* **Segmentation fork**, ``decode_head.upsample_modules.*`` -> ``decode_head.upsamplers.*``.
  SegFormer's head upsamples input ``l`` (strides 8, 16, 32 for ``l = 1, 2, 3``) by a chain
  of ``l`` x2 layers, 6 layers in all. Two layouts are recognised:

  - flat, ``upsample_modules.{i}.offset.weight``: ``j = i`` by default, i.e. the fork is
    assumed to list the layers stage-major as here: ``[l=1 step 0, l=2 step 0, l=2 step 1,
    l=3 step 0, l=3 step 1, l=3 step 2]`` (a chain's steps in the order they are applied);
  - nested, one ``Sequential`` per input, ``upsample_modules.{i}.{k}.offset.weight``: step
    ``k`` of input ``l`` goes to ``j = l * (l - 1) / 2 + k``, where ``l = i`` when some
    ``i`` is 3 (a parameter-free entry for input 0 exists) and ``l = i + 1`` otherwise.

Missing ``init_pos`` buffers (a fork that does not save them) are filled from the model built
from ``--config``; with ``--config`` the converted state dict is also loaded into that model
and the missing/unexpected keys are reported. Nothing is guessed silently: the report lists
every renamed key, every key copied unchanged and every key that could not be placed.

Example::

    python tools/convert_checkpoint.py fork_faster_rcnn_dysample.pth converted.pth \\
        --config configs/faster_rcnn/faster-rcnn_r50_fpn-dysample-plus-lpg4_1x_coco.py \\
        --cfg-options model.neck.upsample_cfg.scope_bias=True

Checkpoints are read with mmengine's ``CheckpointLoader`` (restricted unpickling, see
:mod:`mmdysample.compat`).
"""
import argparse
import copy
import re
import sys
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import torch

FORK_PREFIXES = {
    # prefix in the fork -> prefix here
    'neck.upsample_modules.': 'neck.upsamplers.',
    'decode_head.upsample_modules.': 'decode_head.upsamplers.',
}
_INDEXED_KEY = re.compile(r'^(\d+)\.(.+)$')
_INIT_POS_KEY = re.compile(r'(^|\.)upsamplers\.\d+\.init_pos$')


@dataclass
class ConversionReport:
    """What :func:`convert_state_dict` (and :func:`check_against_model`) did.

    Attributes:
        renamed: ``(source key, target key)`` for every key moved out of a fork container.
        unchanged: keys copied as they are.
        unmapped: source keys inside a fork container that could not be placed, with why.
        filled: target keys taken from the model (``init_pos`` buffers the source lacks).
        missing: keys the model has and the converted state dict lacks (``--config`` only).
        unexpected: keys of the converted state dict the model does not have.
        notes: hints (e.g. a scope bias needing ``scope_bias=True``).
    """
    renamed: List[Tuple[str, str]] = field(default_factory=list)
    unchanged: List[str] = field(default_factory=list)
    unmapped: List[Tuple[str, str]] = field(default_factory=list)
    filled: List[str] = field(default_factory=list)
    missing: List[str] = field(default_factory=list)
    unexpected: List[str] = field(default_factory=list)
    notes: List[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.unmapped or self.missing or self.unexpected)

    def format(self, verbose: bool = False) -> str:
        lines = [f'renamed {len(self.renamed)} keys, copied {len(self.unchanged)} unchanged, '
                 f'filled {len(self.filled)} from the model, {len(self.unmapped)} unmapped, '
                 f'{len(self.missing)} missing, {len(self.unexpected)} unexpected']
        for source, target in self.renamed:
            lines.append(f'  renamed    {source} -> {target}')
        if verbose:
            lines += [f'  unchanged  {key}' for key in self.unchanged]
        lines += [f'  filled     {key} (from the model)' for key in self.filled]
        lines += [f'  UNMAPPED   {key}: {why}' for key, why in self.unmapped]
        lines += [f'  MISSING    {key}' for key in self.missing]
        lines += [f'  UNEXPECTED {key}' for key in self.unexpected]
        lines += [f'  note: {note}' for note in self.notes]
        return '\n'.join(lines)


def _check_index_map(index_map: Optional[Sequence[int]], name: str) -> Optional[List[int]]:
    if index_map is None:
        return None
    values = list(index_map)
    if (not all(isinstance(v, int) and not isinstance(v, bool) for v in values)
            or sorted(values) != list(range(len(values)))):
        raise ValueError(f'{name} must be a permutation of 0..n-1 (target index of each '
                         f'source index), got {index_map!r}')
    return values


def _split_container(keys: Sequence[str], prefix: str) -> Dict[str, Tuple[int, str]]:
    """``{key: (index, rest)}`` for the keys ``prefix{index}.{rest}``."""
    found = {}
    for key in keys:
        if key.startswith(prefix):
            match = _INDEXED_KEY.match(key[len(prefix):])
            if match:
                found[key] = (int(match.group(1)), match.group(2))
    return found


def _flat_targets(entries: Dict[str, Tuple[int, str]], index_map: Optional[List[int]],
                  module: str, option: str, report: ConversionReport) -> Dict[str, str]:
    """``{module}.upsample_modules.{i}.rest`` -> ``{module}.upsamplers.{index_map[i]}.rest``
    (identity without ``index_map``); indices the map does not cover are reported unmapped."""
    targets = {}
    for key, (index, rest) in entries.items():
        if index_map is not None and index >= len(index_map):
            report.unmapped.append((key, f'index {index} not in {option} {index_map}'))
            continue
        target_index = index if index_map is None else index_map[index]
        targets[key] = f'{module}.upsamplers.{target_index}.{rest}'
    return targets


def _neck_targets(entries: Dict[str, Tuple[int, str]], index_map: Optional[List[int]],
                  report: ConversionReport) -> Dict[str, str]:
    targets = _flat_targets(entries, index_map, 'neck', '--neck-index-map', report)
    if any(rest == 'scope.bias' for _, rest in entries.values()):
        report.notes.append(
            "the source's scope convs have a bias: build the model with "
            "upsample_cfg=dict(type=..., dyscope=True, scope_bias=True) (e.g. --cfg-options "
            "model.neck.upsample_cfg.scope_bias=True)")
    return targets


def _head_targets(entries: Dict[str, Tuple[int, str]], index_map: Optional[List[int]],
                  report: ConversionReport) -> Dict[str, str]:
    nested = {key: (index, _INDEXED_KEY.match(rest)) for key, (index, rest) in entries.items()}
    is_nested = [match is not None for _, match in nested.values()]
    targets = {}
    if any(is_nested) and not all(is_nested):
        for key in entries:
            report.unmapped.append((key, 'decode_head.upsample_modules mixes flat '
                                    '({i}.offset...) and nested ({i}.{k}.offset...) keys'))
        return targets
    if not any(is_nested):
        return _flat_targets(entries, index_map, 'decode_head', '--head-index-map', report)
    level_offset = 0 if max(index for index, _ in nested.values()) == 3 else 1
    for key, (index, match) in nested.items():
        level, step = index + level_offset, int(match.group(1))
        if not 1 <= level <= 3 or step >= level:
            report.unmapped.append(
                (key, f'input {level} step {step} is not one of the SegFormer head chains '
                 f'(input l in 1..3 has steps 0..l-1)'))
            continue
        flat_index = level * (level - 1) // 2 + step
        if index_map is not None:
            flat_index = index_map[flat_index]
        targets[key] = f'decode_head.upsamplers.{flat_index}.{match.group(2)}'
    return targets


def convert_state_dict(state_dict: Dict[str, torch.Tensor],
                       neck_index_map: Optional[Sequence[int]] = None,
                       head_index_map: Optional[Sequence[int]] = None
                       ) -> Tuple['OrderedDict[str, torch.Tensor]', ConversionReport]:
    """Rename a fork's state dict to this plugin's keys (see the module docstring).

    Args:
        state_dict: the fork model's ``state_dict`` (keys like ``backbone.*``,
            ``neck.upsample_modules.0.offset.weight``...).
        neck_index_map: ``j = neck_index_map[i]`` for ``neck.upsample_modules.{i}``;
            ``None``: identity.
        head_index_map: same for the head's (flat, stage-major) upsampler index.

    Returns:
        The converted state dict (same tensors, source order) and the report.
    """
    if not isinstance(state_dict, dict):
        raise TypeError(f'state_dict must be a dict of tensors, got {type(state_dict).__name__}')
    neck_index_map = _check_index_map(neck_index_map, 'neck_index_map')
    head_index_map = _check_index_map(head_index_map, 'head_index_map')
    report = ConversionReport()
    keys = list(state_dict)
    targets: Dict[str, str] = {}
    targets.update(_neck_targets(_split_container(keys, 'neck.upsample_modules.'),
                                 neck_index_map, report))
    targets.update(_head_targets(_split_container(keys, 'decode_head.upsample_modules.'),
                                 head_index_map, report))
    unmapped = {key for key, _ in report.unmapped}
    for key in keys:
        if key not in targets and key not in unmapped and any(
                key.startswith(prefix) for prefix in FORK_PREFIXES):
            report.unmapped.append((key, 'no layer index after the container name'))
            unmapped.add(key)

    converted: 'OrderedDict[str, torch.Tensor]' = OrderedDict()
    for key in keys:
        if key in unmapped:
            continue
        target = targets.get(key, key)
        if target in converted:
            raise ValueError(f'two source keys map to {target!r}: check the index maps '
                             f'(neck_index_map={neck_index_map}, '
                             f'head_index_map={head_index_map})')
        converted[target] = state_dict[key]
        if key in targets:
            report.renamed.append((key, target))
        else:
            report.unchanged.append(key)
    return converted, report


def check_against_model(converted: 'OrderedDict[str, torch.Tensor]', model: torch.nn.Module,
                        report: ConversionReport) -> 'OrderedDict[str, torch.Tensor]':
    """Fill the upsamplers' missing ``init_pos`` buffers from ``model`` and record the keys
    still missing/unexpected, and shape mismatches, against ``model.state_dict()``."""
    model_state = model.state_dict()
    converted = OrderedDict(converted)
    for key, value in model_state.items():
        if key not in converted and _INIT_POS_KEY.search(key):
            converted[key] = value.clone()
            report.filled.append(key)
    report.missing = [key for key in model_state if key not in converted]
    report.unexpected = [key for key in converted if key not in model_state]
    for key, value in converted.items():
        if key in model_state and tuple(model_state[key].shape) != tuple(value.shape):
            report.unmapped.append(
                (key, f'shape {tuple(value.shape)} in the checkpoint, '
                 f'{tuple(model_state[key].shape)} in the model (another upsampler variant?)'))
    if any(key.endswith('.scope.bias') for key in report.unexpected):
        report.notes.append('scope.bias keys are unexpected: set scope_bias=True in the '
                            "model's upsample_cfg")
    return converted


def load_checkpoint_file(path: str) -> dict:
    """The checkpoint as a dict with a ``state_dict`` entry (bare state dicts are wrapped)."""
    from mmengine.runner import CheckpointLoader

    import mmdysample  # noqa: F401  (applies the checkpoint-loading fixes of compat)
    checkpoint = CheckpointLoader.load_checkpoint(path, map_location='cpu')
    if not isinstance(checkpoint, dict):
        raise TypeError(f'{path} does not hold a dict, got {type(checkpoint).__name__}')
    if 'state_dict' not in checkpoint:
        checkpoint = dict(state_dict=checkpoint)
    return checkpoint


def parse_args(argv=None):
    from mmengine.config import DictAction

    parser = argparse.ArgumentParser(
        description="Convert a checkpoint of the DySample authors' mmdet/mmseg forks.")
    parser.add_argument('src', help='checkpoint of the fork (.pth)')
    parser.add_argument('dst', help='where to write the converted checkpoint')
    parser.add_argument('--config', help='config of the target model: fills init_pos '
                        'buffers and checks that every key loads')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, default={},
                        metavar='KEY=VALUE', help='overrides of the config, mmengine style')
    parser.add_argument('--neck-index-map', type=int, nargs='+',
                        help='target index of each neck.upsample_modules index '
                        '(default: identity)')
    parser.add_argument('--head-index-map', type=int, nargs='+',
                        help='target index of each (flat) decode_head upsampler index '
                        '(default: identity)')
    parser.add_argument('--allow-partial', action='store_true',
                        help='write the output even if keys are unmapped/missing/unexpected')
    parser.add_argument('--verbose', action='store_true', help='also list unchanged keys')
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    checkpoint = load_checkpoint_file(args.src)
    converted, report = convert_state_dict(checkpoint['state_dict'], args.neck_index_map,
                                           args.head_index_map)
    if args.config:
        from tool_helpers import build_model
        model = build_model(args.config, cfg_options=args.cfg_options)
        converted = check_against_model(converted, model, report)
    print(report.format(args.verbose))
    if not report.ok and not args.allow_partial:
        print('not written: fix the problems above or pass --allow-partial', file=sys.stderr)
        return 1
    # optimizer/scheduler states refer to the fork's parameter order: not carried over
    meta = copy.deepcopy(checkpoint.get('meta') or {})
    meta['converted_by'] = 'mmdysample tools/convert_checkpoint.py'
    meta['converted_from'] = args.src
    torch.save(dict(meta=meta, state_dict=converted), args.dst)
    print(f'wrote {args.dst}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
