#!/usr/bin/env python
"""Model complexity against the paper: parameters, GFLOPs and training-step cost of configs.

1. **Complexity** (default: every ``configs/segformer/*.py``, the SegFormer-B1 rows of the
   paper's Table 4 and its ablations). For each config the model is built (no pretrained
   weights are needed) and measured at the paper's input (``--size``, 512 x 512):

   * parameters: every parameter element of the model;
   * FLOPs: mmengine's ``FlopAnalyzer`` on the tensor-mode forward (backbone, neck/head,
     no post-processing), with the handlers of :func:`mmdysample.flops.flop_handlers`
     (one multiply-add = one FLOP, as mmcv/mmseg's ``get_flops`` report).

   Each row shows its delta to the ``--baseline`` config (default: the bilinear SegFormer-B1)
   next to the paper's Table 4 figures for the rows that are in Table 4 (matched by the
   upsampler token of the file name: ``segformer_mit-b1_<token>_...``).

2. **Training step** (``--train-step A B``; default the bilinear and DySample SegFormer-B1,
   ``--train-size`` 512 x 512, ``--batch`` 2): a full ``model.train_step`` (data
   preprocessor, forward, loss, backward, the config's optimizer step) on a random batch
   (random uint8 images, random labels; random boxes for detectors). Both models are timed
   in the same process, interleaved round by round (``--warmup`` untimed steps, then
   ``--repeats`` rounds; median and quartiles), and the peak memory of one step is measured
   with :func:`tool_helpers.peak_memory_bytes` (CUDA: ``max_memory_allocated``; CPU:
   the allocator's events through ``torch.profiler``, memory held before the step, i.e. the
   model and optimizer state, excluded). SyncBN layers are turned into BatchNorm on CPU.

Outputs in ``--out-dir``: ``model_complexity.md`` and ``model_complexity.json``.

Example::

    python tools/analyze_model.py                                  # Table 4 + train step
    python tools/analyze_model.py configs/segformer/*dysample-s*.py --no-train-step
    python tools/analyze_model.py configs/faster_rcnn/*r50*.py --size 800 1216 \\
        --baseline configs/faster_rcnn/faster-rcnn_r50_fpn-nearest_1x_coco.py --no-train-step
"""
import argparse
import glob
import json
import os
import sys
import time
from typing import Any, Dict, List, Optional

import torch
import torch.nn as nn

TOOLS_DIR = os.path.dirname(os.path.abspath(__file__))
if TOOLS_DIR not in sys.path:  # loaded by path rather than run as a script
    sys.path.append(TOOLS_DIR)
import paper_tables  # noqa: E402
import tool_helpers  # noqa: E402
from tool_helpers import build_model, count_parameters, peak_memory_bytes, \
    summarize_times, time_per_call  # noqa: E402

from mmdysample.flops import count_flops  # noqa: E402

SEGFORMER_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                             'configs', 'segformer')
DEFAULT_BASELINE = os.path.join(SEGFORMER_DIR,
                                'segformer_mit-b1_bilinear_8xb2-160k_ade20k-512x512.py')
DEFAULT_TRAIN_PAIR = [
    DEFAULT_BASELINE,
    os.path.join(SEGFORMER_DIR, 'segformer_mit-b1_dysample_8xb2-160k_ade20k-512x512.py')
]



def model_input(model: nn.Module, height: int, width: int, batch: int = 1) -> torch.Tensor:
    """A random input batch for ``model``'s tensor-mode forward (channels from its data
    preprocessor's mean, 3 by default), on the model's device."""
    channels = 3
    preprocessor = getattr(model, 'data_preprocessor', None)
    mean = getattr(preprocessor, 'mean', None)
    if isinstance(mean, torch.Tensor) and mean.numel() > 0:
        channels = mean.numel()
    device = next(model.parameters()).device
    generator = torch.Generator().manual_seed(0)
    return torch.randn(batch, channels, height, width, generator=generator).to(device)


def _random_seg_samples(batch: int, height: int, width: int, num_classes: int,
                        generator: torch.Generator):
    from mmengine.structures import PixelData
    from mmseg.structures import SegDataSample

    samples = []
    for _ in range(batch):
        sample = SegDataSample()
        sample.gt_sem_seg = PixelData(data=torch.randint(
            0, num_classes, (1, height, width), generator=generator))
        sample.set_metainfo(dict(img_shape=(height, width), ori_shape=(height, width),
                                 pad_shape=(height, width)))
        samples.append(sample)
    return samples


def _random_det_samples(batch: int, height: int, width: int, num_classes: int,
                        generator: torch.Generator, with_masks: bool):
    from mmdet.structures import DetDataSample
    from mmdet.structures.mask import BitmapMasks
    from mmengine.structures import InstanceData

    samples = []
    for _ in range(batch):
        num = 4
        corner = torch.rand(num, 2, generator=generator) * torch.tensor([width, height]) * 0.6
        size = (torch.rand(num, 2, generator=generator) * 0.3 + 0.1) * torch.tensor(
            [width, height])
        instances = InstanceData()
        instances.bboxes = torch.cat([corner, corner + size], dim=1)
        instances.labels = torch.randint(0, num_classes, (num, ), generator=generator)
        if with_masks:
            masks = torch.zeros(num, height, width, dtype=torch.uint8)
            for i, (x0, y0, x1, y1) in enumerate(instances.bboxes.round().long().tolist()):
                masks[i, y0:y1, x0:x1] = 1
            instances.masks = BitmapMasks(masks.numpy(), height, width)
        sample = DetDataSample()
        sample.gt_instances = instances
        sample.set_metainfo(dict(img_shape=(height, width), ori_shape=(height, width),
                                 pad_shape=(height, width), batch_input_shape=(height, width),
                                 scale_factor=(1.0, 1.0)))
        samples.append(sample)
    return samples


def random_training_batch(model: nn.Module, height: int, width: int, batch: int = 2,
                          seed: int = 0) -> Dict[str, Any]:
    """A ``{'inputs': [...], 'data_samples': [...]}`` batch of random uint8 images and
    random labels for ``model.train_step``: semantic maps for mmseg segmentors, 4 random
    boxes (and box masks if the model has a mask head) per image for mmdet detectors."""
    generator = torch.Generator().manual_seed(seed)
    inputs = [torch.randint(0, 256, (3, height, width), generator=generator, dtype=torch.uint8)
              for _ in range(batch)]
    module_name = type(model).__module__
    if module_name.startswith('mmseg'):
        num_classes = model.decode_head.num_classes
        samples = _random_seg_samples(batch, height, width, num_classes, generator)
    elif module_name.startswith('mmdet'):
        roi_head = getattr(model, 'roi_head', None)
        bbox_head = getattr(roi_head, 'bbox_head', None) or getattr(model, 'bbox_head', None)
        num_classes = getattr(bbox_head, 'num_classes', 1)
        with_masks = bool(getattr(roi_head, 'with_mask', False))
        samples = _random_det_samples(batch, height, width, num_classes, generator, with_masks)
    else:
        raise ValueError(f'random_training_batch supports mmseg segmentors and mmdet '
                         f'detectors, got {type(model).__name__} from {module_name}')
    return dict(inputs=inputs, data_samples=samples)


def table4_rows_by_config() -> Dict[str, Any]:
    """The paper's Table 4 rows (:mod:`paper_tables`, from the metafiles) by the absolute
    path of their config."""
    return {os.path.join(tool_helpers.REPO_ROOT, row.config): row
            for row in paper_tables.get_table('4').rows}


def paper_row(config_path: str) -> Optional[str]:
    """The label of the Table 4 row a config file reproduces; ``None`` if none."""
    row = table4_rows_by_config().get(os.path.abspath(config_path))
    return row.label if row is not None else None


def paper_numbers(label: str) -> Optional[Dict[str, Any]]:
    """The paper's Table 4 params, FLOPs (G) and mIoU of the row ``label``."""
    for row in paper_tables.get_table('4').rows:
        if row.label == label:
            return dict(params=row.params, flops=f'{row.flops}G' if row.flops else None,
                        miou=row.metrics.get('mIoU'), biou=row.metrics.get('bIoU'))
    return None


def config_label(config_path: str) -> str:
    return os.path.splitext(os.path.basename(config_path))[0]


def _to_cpu_friendly(model):
    from mmengine.model import revert_sync_batchnorm
    return revert_sync_batchnorm(model)


def measure_complexity(config: str, size, cfg_options=None) -> Dict[str, Any]:
    """Parameters and FLOPs of ``config``'s model on a ``1 x 3 x H x W`` input."""
    model = _to_cpu_friendly(build_model(config, cfg_options))
    flops = count_flops(model, model_input(model, *size))
    return dict(config=config, label=config_label(config), paper_row=paper_row(config),
                params=count_parameters(model), flops=flops.total,
                flops_by_operator=flops.by_operator, flops_uncounted_ops=flops.uncounted)


def add_deltas(rows: List[Dict[str, Any]], baseline: Dict[str, Any]) -> None:
    for row in rows:
        row['delta_params'] = row['params'] - baseline['params']
        row['delta_flops'] = row['flops'] - baseline['flops']
        row['paper'] = paper_numbers(row['paper_row']) if row['paper_row'] else None


# ---------------------------------------------------------------------------------------
# training step
# ---------------------------------------------------------------------------------------
class TrainStep:
    """One config's model, optimizer and random batch; ``__call__`` runs one train step."""

    def __init__(self, config: str, size, batch: int, device, cfg_options=None):
        from mmengine.optim import build_optim_wrapper

        self.config = config
        self.model = build_model(config, cfg_options, device=device)
        if torch.device(device).type == 'cpu':
            self.model = _to_cpu_friendly(self.model)
        self.model.train()
        self.optim_wrapper = build_optim_wrapper(self.model, self.model.cfg.optim_wrapper)
        self.data = random_training_batch(self.model, size[0], size[1], batch)
        self.samples: List[float] = []
        self.last_losses: Dict[str, float] = {}

    def __call__(self):
        losses = self.model.train_step(self.data, self.optim_wrapper)
        self.last_losses = {k: float(v.detach()) for k, v in losses.items()}


def compare_train_steps(configs: List[str], size, batch: int, warmup: int, repeats: int,
                        device='cpu', cfg_options=None) -> List[Dict[str, Any]]:
    steps = [TrainStep(c, size, batch, device, cfg_options) for c in configs]
    for step in steps:
        for _ in range(warmup):
            step()
    for _ in range(repeats):
        for step in steps:
            step.samples.append(time_per_call(step, 1, device))
    results = []
    for step in steps:
        results.append(
            dict(config=step.config, label=config_label(step.config),
                 paper_row=paper_row(step.config), batch=batch, input_size=list(size),
                 step_ms=summarize_times(step.samples, 1).to_dict(),
                 peak_memory_bytes=peak_memory_bytes(step, device),
                 trainable_params=count_parameters(step.model, trainable_only=True),
                 losses=step.last_losses))
    base = results[0]
    for row in results:
        row['time_ratio'] = row['step_ms']['median'] / base['step_ms']['median']
        row['memory_ratio'] = row['peak_memory_bytes'] / max(base['peak_memory_bytes'], 1)
    return results


# ---------------------------------------------------------------------------------------
# report
# ---------------------------------------------------------------------------------------
def _signed(value: float, unit: str, scale: float, digits: int = 1) -> str:
    return f'{value / scale:+.{digits}f}{unit}'


def _params_text(value: int) -> str:
    return f'{value / 1e6:.2f}M'


def _delta_params_text(value: int) -> str:
    if value == 0:
        return '0'
    return _signed(value, 'K', 1e3) if abs(value) < 1e6 else _signed(value, 'M', 1e6, 2)


def markdown_report(report: Dict[str, Any]) -> str:
    s = report['settings']
    lines = [
        f"Parameters and FLOPs (mmengine FlopAnalyzer, 1 multiply-add = 1 FLOP) at "
        f"{s['size'][0]}x{s['size'][1]}, deltas against `{config_label(s['baseline'])}`; "
        "paper: DySample Table 4 (SegFormer-B1, ADE20K).", '',
        '| Config | Params | Δ params | Δ params (paper) | GFLOPs | Δ GFLOPs '
        '| Δ FLOPs (paper) | mIoU (paper) |', '|---|---:|---:|---:|---:|---:|---:|---:|'
    ]
    for row in report['complexity']:
        paper = dict(row['paper'] or {})
        for key in ('params', 'flops'):  # the baseline row of Table 4 gives totals
            if key in paper and not str(paper[key]).startswith(('+', '-')):
                paper[key] = f'{paper[key]} (total)'
        lines.append(
            f"| {row['label']} | {_params_text(row['params'])} | "
            f"{_delta_params_text(row['delta_params'])} | {paper.get('params', '-')} | "
            f"{row['flops'] / 1e9:.2f} | {row['delta_flops'] / 1e9:+.2f} | "
            f"{paper.get('flops', '-')} | {paper.get('miou', '-')} |")
    if report.get('train_step'):
        first = report['train_step'][0]
        lines += [
            '', f"Training step (`model.train_step`: preprocessing, forward, loss, backward, "
            f"optimizer step), batch {first['batch']} at "
            f"{first['input_size'][0]}x{first['input_size'][1]}, {s['device']} "
            f"({s['threads']} threads): median of {s['repeats']} steps after {s['warmup']} "
            'warm-up (quartiles in brackets); peak memory of one step beyond the model and '
            'optimizer state.', '',
            '| Config | Step time (s) | x first | Peak memory (MB) | x first |',
            '|---|---:|---:|---:|---:|'
        ]
        for row in report['train_step']:
            t = row['step_ms']
            lines.append(
                f"| {row['label']} | {t['median'] / 1e3:.2f} ({t['q1'] / 1e3:.2f}-"
                f"{t['q3'] / 1e3:.2f}) | {row['time_ratio']:.2f} | "
                f"{row['peak_memory_bytes'] / 2**20:.0f} | {row['memory_ratio']:.2f} |")
    return '\n'.join(lines) + '\n'


def parse_args(argv=None):
    from mmengine.config import DictAction

    parser = argparse.ArgumentParser(
        description='Params/GFLOPs of configs vs the paper, and a training-step comparison.')
    parser.add_argument('configs', nargs='*', help='configs (default: configs/segformer/*.py)')
    parser.add_argument('--baseline', default=DEFAULT_BASELINE,
                        help='config the deltas are taken against')
    parser.add_argument('--size', type=int, nargs=2, default=[512, 512], metavar=('H', 'W'),
                        help='input size of the FLOP count')
    parser.add_argument('--train-step', nargs=2, default=DEFAULT_TRAIN_PAIR,
                        metavar=('CONFIG_A', 'CONFIG_B'),
                        help='two configs whose training steps are compared (A = reference)')
    parser.add_argument('--no-train-step', action='store_true',
                        help='skip the training-step comparison')
    parser.add_argument('--train-size', type=int, nargs=2, default=[512, 512],
                        metavar=('H', 'W'), help='image size of the training step')
    parser.add_argument('--batch', type=int, default=2, help='training-step batch size')
    parser.add_argument('--warmup', type=int, default=1, help='untimed training steps')
    parser.add_argument('--repeats', type=int, default=3, help='timed training steps')
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--threads', type=int, default=None, help='torch.set_num_threads')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, default={},
                        help='overrides applied to every config, mmengine style')
    parser.add_argument('--out-dir', default='work_dirs/analyze_model')
    args = parser.parse_args(argv)
    if not args.configs:
        args.configs = sorted(glob.glob(os.path.join(SEGFORMER_DIR, '*.py')))
    for path in args.configs + [args.baseline] + list(args.train_step):
        if not os.path.isfile(path):
            parser.error(f'config not found: {path}')
    for name, minimum in (('batch', 1), ('warmup', 0), ('repeats', 1)):
        if getattr(args, name) < minimum:
            parser.error(f'--{name} must be >= {minimum}, got {getattr(args, name)}')
    if min(args.size + args.train_size) < 32:
        parser.error('--size and --train-size must be >= 32')
    if args.threads is not None and args.threads < 1:
        parser.error(f'--threads must be >= 1, got {args.threads}')
    return args


def main(argv=None) -> Dict[str, Any]:
    args = parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    start = time.perf_counter()
    rows = []
    for config in args.configs:
        print(f'measuring {config_label(config)}', flush=True)
        rows.append(measure_complexity(config, args.size, args.cfg_options))
    baseline = next((r for r in rows if os.path.abspath(r['config']) ==
                     os.path.abspath(args.baseline)), None)
    if baseline is None:
        baseline = measure_complexity(args.baseline, args.size, args.cfg_options)
    add_deltas(rows, baseline)
    report = dict(settings=dict(size=args.size, baseline=args.baseline, device=args.device,
                                threads=torch.get_num_threads(), warmup=args.warmup,
                                repeats=args.repeats, torch=torch.__version__),
                  complexity=rows)
    if not args.no_train_step:
        print('timing training steps: ' + ' vs '.join(map(config_label, args.train_step)),
              flush=True)
        report['train_step'] = compare_train_steps(list(args.train_step), args.train_size,
                                                   args.batch, args.warmup, args.repeats,
                                                   args.device, args.cfg_options)
    report['wall_seconds'] = round(time.perf_counter() - start, 1)
    os.makedirs(args.out_dir, exist_ok=True)
    text = markdown_report(report)
    with open(os.path.join(args.out_dir, 'model_complexity.md'), 'w') as md_file:
        md_file.write(text)
    with open(os.path.join(args.out_dir, 'model_complexity.json'), 'w') as json_file:
        json.dump(report, json_file, indent=2)
    print(text)
    print(f"took {report['wall_seconds']} s; wrote {args.out_dir}/model_complexity.md/.json")
    return report


if __name__ == '__main__':
    main(sys.argv[1:])
