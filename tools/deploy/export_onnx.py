#!/usr/bin/env python
"""Export a model built from a config to ONNX, and check it with onnxruntime.

What is exported, by the model the config builds:

* an mmseg segmentor (``EncoderDecoder`` and its subclasses: SegFormer, UPerNet...): whole-image
  inference, ``encode_decode`` (backbone, neck, decode head, the head's resize of the logits to
  the input size); outputs ``seg_logits`` ``(B, num_classes, H, W)`` and ``segmentation``
  ``(B, 1, H, W)``, int64 (the arg-max over classes, or ``sigmoid(logit) > threshold`` for a
  one-channel head), as mmseg's ``postprocess_result`` computes them. A config's sliding-window
  inference (``test_cfg.mode='slide'``) is not in the graph: it runs the model on crops;
* an mmdet detector with a neck (Faster R-CNN, Mask R-CNN, RetinaNet...): ``extract_feat``,
  the backbone and the neck; outputs ``feat0``, ``feat1``... the neck's maps, finest first
  (FPN: strides 4 to 64). The heads (proposals, RoI heads, NMS) are not exported.

The input is ``inputs`` ``(B, C, H, W)``, float32, the image as the model's data preprocessor
hands it to the model (channel order converted, mean subtracted, divided by std: the values are
printed). Shapes are fixed at ``--batch`` and ``--shape``: export once per input size.

Weights: ``CHECKPOINT`` (mmengine's ``load_checkpoint``), else the constructor's random
initialisation (said in the output). ``--verify`` runs the exported file in onnxruntime on a
random input and compares every output with PyTorch (the model as it runs eagerly): the max
absolute and relative difference (relative: over the output's largest magnitude); exit code 1
when an element of a float output differs by more than ``--atol + --rtol * |PyTorch value|``.
The ``segmentation`` output is reported as the number of pixels whose class differs (classes
whose logits tie within rounding can swap), not checked.

Examples::

    python tools/deploy/export_onnx.py \\
        configs/segformer/segformer_mit-b1_dysample_8xb2-160k_ade20k-512x512.py \\
        segformer_dysample.pth --out segformer_dysample.onnx --shape 512 512 --verify
    python tools/deploy/export_onnx.py \\
        configs/faster_rcnn/faster-rcnn_r50_fpn-dysample-lpg4_1x_coco.py \\
        --out faster_rcnn_fpn.onnx --shape 800 1344 --exporter legacy --verify

Exit codes: 0 exported (and verified), 1 verification failed or the model cannot be exported,
2 bad arguments (a config or checkpoint that does not exist).
"""
import argparse
import contextlib
import logging
import os
import sys
import warnings
from typing import List, Sequence, Tuple

import numpy as np
import torch
import torch.nn as nn

TOOLS_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if TOOLS_DIR not in sys.path:  # tools/ holds the shared helpers (import tool_helpers)
    sys.path.append(TOOLS_DIR)
from tool_helpers import build_model  # noqa: E402

EXPORTERS = ('dynamo', 'legacy')
DEFAULT_OPSET = 18  # the dynamo exporter's own opset; GridSample needs >= 16
MIN_OPSET = 17


class SegmentorForExport(nn.Module):
    """An mmseg segmentor's whole-image inference: ``(seg_logits, segmentation)`` at the
    input size (see the module docstring)."""
    output_names = ('seg_logits', 'segmentation')

    def __init__(self, segmentor: nn.Module):
        super().__init__()
        self.segmentor = segmentor

    def forward(self, inputs: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        # a torch.Size img_shape: the decode head resizes its logits to exactly this size
        seg_logits = self.segmentor.encode_decode(inputs, [dict(img_shape=inputs.shape[2:])])
        if seg_logits.shape[1] > 1:
            segmentation = seg_logits.argmax(dim=1, keepdim=True)
        else:
            threshold = self.segmentor.decode_head.threshold
            segmentation = (seg_logits.sigmoid() > threshold).to(torch.int64)
        return seg_logits, segmentation


class BackboneNeckForExport(nn.Module):
    """An mmdet detector's ``extract_feat`` (backbone + neck): the neck's maps, finest first."""

    def __init__(self, detector: nn.Module, num_outputs: int):
        super().__init__()
        self.detector = detector
        self.output_names = tuple(f'feat{i}' for i in range(num_outputs))

    def forward(self, inputs: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        return tuple(self.detector.extract_feat(inputs))


def wrap_for_export(model: nn.Module, inputs: torch.Tensor) -> Tuple[nn.Module, List]:
    """The module to export for ``model`` (see the module docstring), and its outputs on
    ``inputs`` as NumPy arrays (PyTorch's: what ``--verify`` compares with; for a detector,
    their count names the graph's outputs).

    Raises:
        SystemExit: for a model that is neither an mmseg ``EncoderDecoder`` nor an mmdet
            detector with a neck.
    """
    from mmdet.models.detectors import BaseDetector
    from mmseg.models.segmentors import DepthEstimator, EncoderDecoder

    kind = type(model).__name__
    if isinstance(model, EncoderDecoder) and not isinstance(model, DepthEstimator):
        module = SegmentorForExport(model).eval()
        with torch.no_grad():
            return module, [t.numpy() for t in module(inputs)]
    if isinstance(model, BaseDetector):
        if not getattr(model, 'with_neck', False):
            raise SystemExit(f'cannot export {kind}: the backbone+neck export needs a detector '
                             'with a neck (model.neck), this one has none')
        model.eval()
        with torch.no_grad():
            expected = [t.numpy() for t in model.extract_feat(inputs)]
        return BackboneNeckForExport(model, len(expected)).eval(), expected
    raise SystemExit(f'cannot export {kind}: supported are mmseg segmentors (EncoderDecoder: '
                     "SegFormer, UPerNet...) and mmdet detectors' backbone+neck")


@contextlib.contextmanager
def _quiet_loggers(*names: str):
    """Only errors from these loggers: the dynamo exporter logs a warning for every torchvision
    op it cannot register (torchvision not installed) and for every multi-output node its
    optimiser does not fold, neither of which concerns the exported graph."""
    loggers = [logging.getLogger(name) for name in names]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


def export(module: nn.Module, inputs: torch.Tensor, out: str, exporter: str = 'dynamo',
           opset: int = DEFAULT_OPSET) -> None:
    """Write ``module(inputs)`` to ``out`` as ONNX with torch's ``dynamo`` exporter
    (``torch.onnx.export(..., dynamo=True)``) or the TorchScript-based ``legacy`` one, the
    input named ``inputs``, the outputs ``module.output_names``; weights inside the file."""
    if exporter not in EXPORTERS:
        raise ValueError(f'exporter must be one of {EXPORTERS}, got {exporter!r}')
    options = dict(opset_version=opset, input_names=['inputs'],
                   output_names=list(module.output_names))
    with warnings.catch_warnings(), _quiet_loggers('onnxscript', 'torch.onnx'):
        # the tracer warns about every Python int taken from a tensor's shape (mmseg's and
        # mmdet's modules do this throughout); sizes are fixed in this export anyway
        warnings.simplefilter('ignore', torch.jit.TracerWarning)
        warnings.filterwarnings('ignore', 'You are using the legacy TorchScript-based ONNX')
        warnings.filterwarnings('ignore', '.*LeafSpec', FutureWarning)  # torch's own pytree
        if exporter == 'dynamo':
            torch.onnx.export(module, (inputs, ), out, dynamo=True, external_data=False,
                              verbose=False, **options)
        else:
            torch.onnx.export(module, (inputs, ), out, dynamo=False, **options)


def compare_outputs(onnx_path: str, inputs: torch.Tensor, names: Sequence[str],
                    expected: Sequence[np.ndarray], atol: float,
                    rtol: float) -> Tuple[bool, List[str]]:
    """Run ``onnx_path`` in onnxruntime (CPU) on ``inputs`` and compare its outputs with
    ``expected`` (PyTorch's, in the order of ``names``).

    Returns ``(ok, lines)``: ``ok`` when every element of every float output is within
    ``atol + rtol * |PyTorch value|``; one line per output."""
    import onnxruntime as ort

    session = ort.InferenceSession(onnx_path, providers=['CPUExecutionProvider'])
    got = session.run(list(names), {'inputs': inputs.numpy()})
    ok, lines = True, []
    for name, ours, ref in zip(names, got, expected):
        if ours.shape != ref.shape:
            ok = False
            lines.append(f'{name}: shape {ours.shape} in onnxruntime, {ref.shape} in PyTorch')
            continue
        if not np.issubdtype(ref.dtype, np.floating):
            differ = int((ours != ref).sum())
            lines.append(f'{name}: {differ} of {ref.size} values differ (not checked: '
                         'classes whose logits tie within rounding can swap)')
            continue
        diff = np.abs(ours.astype(np.float64) - ref.astype(np.float64))
        scale = float(np.abs(ref).max())
        within = bool((diff <= atol + rtol * np.abs(ref)).all())
        ok &= within
        lines.append(f'{name}: max abs diff {diff.max():.3g}, max rel diff '
                     f'{diff.max() / scale if scale else 0.0:.3g} (of the largest |value| '
                     f'{scale:.3g}), {"within" if within else "ABOVE"} atol={atol:g} '
                     f'rtol={rtol:g}')
    return ok, lines


def preprocessing_note(cfg) -> str:
    """How the exported model's input is prepared, from the config's data preprocessor."""
    preprocessor = cfg.model.get('data_preprocessor', None) or {}
    mean, std = preprocessor.get('mean'), preprocessor.get('std')
    if mean is None or std is None:
        return 'input: the image as the model takes it (the config does not normalise it)'
    # images are loaded in BGR order (mmcv), reversed by bgr_to_rgb
    order = 'RGB' if preprocessor.get('bgr_to_rgb') else 'BGR'
    return f'input: (image in {order} order - mean) / std, mean={list(mean)}, std={list(std)}'


def parse_args(argv=None):
    from mmengine.config import DictAction

    parser = argparse.ArgumentParser(
        description='Export a segmentor, or a detector\'s backbone+neck, to ONNX.')
    parser.add_argument('config', help='model config (.py)')
    parser.add_argument('checkpoint', nargs='?', help='weights (.pth); random initialisation '
                        'without')
    parser.add_argument('--out', required=True, help='the .onnx file to write')
    parser.add_argument('--shape', type=int, nargs=2, default=[512, 512], metavar=('H', 'W'),
                        help='input height and width (default 512 512)')
    parser.add_argument('--batch', type=int, default=1, help='batch size (default 1)')
    parser.add_argument('--exporter', choices=EXPORTERS, default='dynamo',
                        help="torch.onnx.export's dynamo=True (default) or the TorchScript-"
                        'based legacy exporter (dynamo=False)')
    parser.add_argument('--opset', type=int, default=DEFAULT_OPSET,
                        help=f'ONNX opset, >= {MIN_OPSET} (default {DEFAULT_OPSET})')
    parser.add_argument('--verify', action='store_true',
                        help='compare onnxruntime with PyTorch on a random input')
    parser.add_argument('--atol', type=float, default=1e-4, help='--verify: absolute '
                        'tolerance (default 1e-4)')
    parser.add_argument('--rtol', type=float, default=1e-4, help='--verify: relative '
                        'tolerance (default 1e-4)')
    parser.add_argument('--seed', type=int, default=0, help='seed of the random input')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override settings of the config, key=value pairs')
    args = parser.parse_args(argv)
    if not os.path.isfile(args.config):
        parser.error(f'config not found: {args.config}')
    if args.checkpoint is not None and not os.path.isfile(args.checkpoint) \
            and '://' not in args.checkpoint:
        parser.error(f'checkpoint not found: {args.checkpoint}')
    if min(args.shape) < 1 or args.batch < 1:
        parser.error(f'--shape and --batch must be positive, got --shape {args.shape[0]} '
                     f'{args.shape[1]} --batch {args.batch}')
    if args.opset < MIN_OPSET:
        parser.error(f'--opset must be >= {MIN_OPSET} (GridSample needs 16), got {args.opset}')
    return args


def main(argv: Sequence[str] = None) -> int:
    args = parse_args(argv)
    torch.manual_seed(args.seed)  # the random initialisation when no checkpoint is given
    model = build_model(args.config, cfg_options=args.cfg_options, checkpoint=args.checkpoint)
    weights = args.checkpoint or 'random initialisation (no checkpoint given)'
    in_channels = model.cfg.model.get('backbone', {}).get('in_channels', 3)
    generator = torch.Generator().manual_seed(args.seed)
    inputs = torch.randn(args.batch, in_channels, *args.shape, generator=generator)
    module, expected = wrap_for_export(model, inputs)
    print(f'exporting {type(model).__name__} ({type(module).__name__}) from {args.config}\n'
          f'weights: {weights}\n{preprocessing_note(model.cfg)}\n'
          f'input shape {tuple(inputs.shape)}, {args.exporter} exporter, opset {args.opset}',
          flush=True)
    test_cfg = model.cfg.model.get('test_cfg', None) or {}
    if isinstance(module, SegmentorForExport) and test_cfg.get('mode') == 'slide':
        print("note: the config infers by sliding window (test_cfg.mode='slide'); the graph "
              'is whole-image inference at the input size')
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    export(module, inputs, args.out, args.exporter, args.opset)
    print(f'wrote {args.out}: outputs ' + ', '.join(
        f'{name} {tuple(t.shape)} {t.dtype}' for name, t in zip(module.output_names, expected)))
    if not args.verify:
        return 0
    ok, lines = compare_outputs(args.out, inputs, module.output_names, expected, args.atol,
                                args.rtol)
    print('onnxruntime vs PyTorch:\n  ' + '\n  '.join(lines))
    if not ok:
        print('verification FAILED: onnxruntime differs from PyTorch beyond the tolerance',
              file=sys.stderr)
        return 1
    print('verification passed')
    return 0


if __name__ == '__main__':
    sys.exit(main())
