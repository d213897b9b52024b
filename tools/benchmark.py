#!/usr/bin/env python
"""Benchmark every registered upsampler: latency, training latency, peak memory, params, FLOPs.

Default input: the paper's (Sec. 3.4) random ``1 x 256 x 64 x 64`` feature, upsampled x2.
Upsamplers: nearest and bilinear interpolation, then every layer registered with
:func:`mmdysample.upsamplers.register_upsampler` that needs no guidance map (Deconv,
PixelShuffle, CARAFE, DySample, DySample+, DySample-S, DySample-S+ at the time of writing),
each with its paper default settings.

Measurements, all in one process so that ratios against bilinear are meaningful:

* forward latency (``torch.no_grad``) and forward+backward latency (gradients of the
  parameters and of the input, as inside a network, from a fixed random output gradient);
  ``--warmup`` calls first (the last one timed, to choose ``--iters``), then ``--repeats``
  rounds. Each round times every upsampler in turn (interleaved, so a burst of load from
  other processes hits all of them alike), each for ``--iters`` back-to-back calls (default:
  as many as fill ~50 ms, at least 1). Reported: the median over rounds of the per-call
  mean, with the quartiles and min/max. Ratios to bilinear are ratios of these medians.
* peak memory of one forward and one forward+backward:
  :func:`mmdysample.analysis.peak_memory_bytes` (CUDA: ``max_memory_allocated``; CPU: the
  CPU allocator's own accounting read through ``torch.profiler(profile_memory=True)``;
  memory held before the call, like the input and the parameters, is not included).
* parameters, and FLOPs (multiply-adds) of one forward from mmengine's ``FlopAnalyzer``
  with the handlers of :func:`mmdysample.analysis.flop_handlers` (grid_sample: 4 per output
  element; CARAFE's reassembly einsum: exact; pixel shuffle and unfold: 0; elementwise
  arithmetic not counted).

Outputs (in ``--out-dir``): ``benchmark.md`` (the table, also printed), ``benchmark.json``,
``latency.png`` (bar chart) and ``latency_vs_miou.png`` (the paper's Fig. 1 style: latency
here vs the SegFormer-B1 mIoU of the paper's Table 4).

``--compare-reference`` times the DySample variants a second time with the fused kernel of
:mod:`mmdysample.ops` switched off (``use_fused(False)``) and prints fused-vs-reference ratios.

Example::

    python tools/benchmark.py                       # paper setting, CPU
    python tools/benchmark.py --device cuda --batch 4 --dtype float16
    python tools/benchmark.py --size 32 48 --channels 64 --upsamplers Bilinear DySample
"""
import argparse
import contextlib
import json
import math
import os
import platform
import sys
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

import torch

import mmdysample
from mmdysample.analysis import PAPER_SEGFORMER_B1, count_flops, count_parameters, \
    peak_memory_bytes, summarize_times, time_per_call
from mmdysample.upsamplers import DySample, build_upsampler, registered_upsamplers
from mmengine.registry import MODELS

DTYPES = {
    'float32': torch.float32,
    'float64': torch.float64,
    'float16': torch.float16,
    'bfloat16': torch.bfloat16,
}
REFERENCE_SUFFIX = ' [reference]'
TARGET_REPEAT_SECONDS = 0.05
MAX_AUTO_ITERS = 200


def default_upsamplers() -> List[Tuple[str, dict]]:
    """``(label, cfg)`` of every upsampler to benchmark, with its paper settings."""
    entries = [('Nearest', dict(type='Interpolate', mode='nearest')),
               ('Bilinear', dict(type='Interpolate', mode='bilinear', align_corners=False))]
    for name in registered_upsamplers():
        if name == 'Interpolate':
            continue
        if getattr(MODELS.get(name), 'requires_guide', False):
            continue  # guided upsamplers need a guidance map: not part of this benchmark
        entries.append((name, dict(type=name)))
    return entries


def skipped_guided_upsamplers() -> List[str]:
    return [name for name in registered_upsamplers()
            if getattr(MODELS.get(name), 'requires_guide', False)]


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Benchmark the upsamplers (latency, memory, params, FLOPs).',
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument('--size', type=int, nargs='+', default=[64],
                        help='input height and width (one value: square)')
    parser.add_argument('--batch', type=int, default=1, help='batch size')
    parser.add_argument('--channels', type=int, default=256, help='input channels')
    parser.add_argument('--scale', type=int, default=2, help='upsampling ratio')
    parser.add_argument('--dtype', default='float32', choices=sorted(DTYPES))
    parser.add_argument('--device', default='cpu', help="'cpu', 'cuda' or 'cuda:N'")
    parser.add_argument('--threads', type=int, default=None,
                        help='torch.set_num_threads (default: torch\'s own choice)')
    parser.add_argument('--iters', type=int, default=None,
                        help='calls per timed round (default: enough to fill ~50 ms)')
    parser.add_argument('--warmup', type=int, default=2,
                        help='untimed calls first (the last one also sets the auto --iters)')
    parser.add_argument('--repeats', type=int, default=5, help='timed rounds')
    parser.add_argument('--upsamplers', nargs='+', default=None,
                        help='labels to benchmark (default: all); Bilinear is the '
                        'reference of the ratios')
    parser.add_argument('--compare-reference', action='store_true',
                        help='also time DySample variants with the fused kernel off')
    parser.add_argument('--no-plots', action='store_true', help='skip the PNG plots')
    parser.add_argument('--out-dir', default='work_dirs/benchmark', help='output folder')
    args = parser.parse_args(argv)

    if len(args.size) not in (1, 2):
        parser.error(f'--size takes one or two integers (H [W]), got {args.size}')
    for name in ('batch', 'channels', 'warmup', 'repeats'):
        minimum = 0 if name == 'warmup' else 1
        if getattr(args, name) < minimum:
            parser.error(f'--{name} must be >= {minimum}, got {getattr(args, name)}')
    if min(args.size) < 1:
        parser.error(f'--size must be positive, got {args.size}')
    if args.iters is not None and args.iters < 1:
        parser.error(f'--iters must be >= 1, got {args.iters}')
    if args.threads is not None and args.threads < 1:
        parser.error(f'--threads must be >= 1, got {args.threads}')
    try:
        args.device = torch.device(args.device)
    except RuntimeError as error:
        parser.error(f'--device: {error}')
    if args.device.type not in ('cpu', 'cuda'):
        parser.error(f"--device must be 'cpu' or 'cuda[:N]', got {args.device}")
    if args.device.type == 'cuda' and not torch.cuda.is_available():
        parser.error('--device cuda requested but CUDA is not available')
    known = [label for label, _ in default_upsamplers()]
    if args.upsamplers:
        unknown = [u for u in args.upsamplers if u not in known]
        if unknown:
            parser.error(f'unknown --upsamplers {unknown}; choose from {known}')
    return args


# ---------------------------------------------------------------------------------------
# fused kernel switch
# ---------------------------------------------------------------------------------------
def fused_kernel_switch() -> Optional[Callable[[bool], Any]]:
    """``mmdysample.ops.use_fused`` when the fused-kernel module exists, else ``None``."""
    try:
        from mmdysample import ops
    except ImportError:
        return None
    return getattr(ops, 'use_fused', None)


def fused_kernel_state() -> Dict[str, Any]:
    """Whether DySample runs the fused CPU kernel in this process (switch, environment
    variable and a successful build all needed)."""
    try:
        from mmdysample import ops
    except ImportError:
        return dict(available=False, enabled=False)
    enabled = bool(ops.fused_enabled())
    # checking availability builds the kernel if needed: only worth it when it is enabled
    return dict(enabled=enabled, available=bool(ops.extension_available()) if enabled else False)


@contextlib.contextmanager
def fused_kernel(enabled: bool):
    """Run the block with the fused DySample kernel on or off (``use_fused`` as a context
    manager: the previous setting comes back after)."""
    use_fused = fused_kernel_switch()
    if use_fused is None:
        raise RuntimeError('mmdysample.ops.use_fused is not available')
    with use_fused(enabled):
        yield


# ---------------------------------------------------------------------------------------
# measurement
# ---------------------------------------------------------------------------------------
class Candidate:
    """One upsampler on the benchmark input, with its forward and training-step closures."""

    def __init__(self, label: str, cfg: dict, args, fused: Optional[bool] = None):
        self.label = label
        self.cfg = cfg
        self.fused = fused
        self.error: Optional[str] = None
        height, width = args.size if len(args.size) == 2 else args.size * 2
        dtype, device = DTYPES[args.dtype], args.device
        generator = torch.Generator().manual_seed(0)
        self.model = build_upsampler(cfg, args.channels, args.scale).to(device, dtype)
        self.input = torch.randn(args.batch, args.channels, height, width,
                                 generator=generator).to(device, dtype)
        self.train_input = self.input.clone().requires_grad_(True)
        self.output_grad = torch.randn(args.batch, args.channels, args.scale * height,
                                       args.scale * width, generator=generator).to(device, dtype)
        self.forward_iters = self.train_iters = args.iters
        self.forward_samples: List[float] = []
        self.train_samples: List[float] = []

    def _context(self):
        return fused_kernel(self.fused) if self.fused is not None else contextlib.nullcontext()

    def forward(self):
        with torch.no_grad(), self._context():
            return self.model(self.input)

    def train_step(self):
        self.model.zero_grad(set_to_none=True)
        self.train_input.grad = None
        with self._context():
            output = self.model(self.train_input)
        output.backward(self.output_grad)


def iters_for(call_ms: float) -> int:
    """Calls per timed round that fill about ``TARGET_REPEAT_SECONDS``, given one call's
    time (at least 1, at most ``MAX_AUTO_ITERS``)."""
    seconds = call_ms / 1e3
    return max(1, min(MAX_AUTO_ITERS, int(TARGET_REPEAT_SECONDS / max(seconds, 1e-6))))


def run_benchmark(args) -> Dict[str, Any]:
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    entries = default_upsamplers()
    if args.upsamplers:
        entries = [e for e in entries if e[0] in args.upsamplers]
    candidates: List[Candidate] = []
    compare = args.compare_reference and fused_kernel_switch() is not None
    if args.compare_reference and not compare:
        print('--compare-reference: mmdysample.ops.use_fused not found; skipped')
    if compare and not all(fused_kernel_state().values()):
        print(f'--compare-reference: the fused kernel is not in use ({fused_kernel_state()}, '
              f'MMDYSAMPLE_FUSED={os.environ.get("MMDYSAMPLE_FUSED")!r}): both timings of '
              'each DySample variant take the reference path')
    for label, cfg in entries:
        is_dysample = issubclass(MODELS.get(cfg['type']), DySample)
        candidates.append(Candidate(label, cfg, args, fused=True if compare and is_dysample
                                    else None))
    if compare:
        for label, cfg in entries:
            if issubclass(MODELS.get(cfg['type']), DySample):
                candidates.append(Candidate(label + REFERENCE_SUFFIX, cfg, args, fused=False))

    device = args.device
    # warm-up; the last warm-up call (or one extra call) is timed to calibrate --iters
    for cand in candidates:
        try:
            cand.model.train()
            for _ in range(max(args.warmup - 1, 0)):
                cand.forward()
                cand.train_step()
            forward_ms = time_per_call(cand.forward, 1, device)
            train_ms = time_per_call(cand.train_step, 1, device)
            if args.iters is None:
                cand.forward_iters = iters_for(forward_ms)
                cand.train_iters = iters_for(train_ms)
        except Exception as error:  # report it in the table, go on with the others
            cand.error = f'{type(error).__name__}: {error}'
    alive = [c for c in candidates if c.error is None]
    # interleaved timed rounds
    for _ in range(args.repeats):
        for cand in alive:
            cand.forward_samples.append(time_per_call(cand.forward, cand.forward_iters, device))
            cand.train_samples.append(time_per_call(cand.train_step, cand.train_iters, device))

    results = []
    for cand in candidates:
        record: Dict[str, Any] = dict(label=cand.label, cfg=cand.cfg,
                                      params=count_parameters(cand.model),
                                      paper_miou=PAPER_SEGFORMER_B1.get(
                                          cand.label, {}).get('miou'),
                                      fused=cand.fused, error=cand.error)
        if cand.error is None:
            flops = count_flops(cand.model, cand.input)
            record.update(
                flops=flops.total, flops_by_operator=flops.by_operator,
                flops_uncounted_ops=flops.uncounted,
                forward_ms=summarize_times(cand.forward_samples, cand.forward_iters).to_dict(),
                train_ms=summarize_times(cand.train_samples, cand.train_iters).to_dict(),
                peak_memory_forward_bytes=peak_memory_bytes(cand.forward, device),
                peak_memory_train_bytes=peak_memory_bytes(cand.train_step, device))
        results.append(record)
    reference = next((r for r in results if r['label'] == 'Bilinear' and not r['error']), None)
    for record in results:
        for key in ('forward', 'train'):
            ok = reference is not None and not record['error']
            record[f'{key}_ratio_to_bilinear'] = (
                record[f'{key}_ms']['median'] / reference[f'{key}_ms']['median'] if ok else None)
    return dict(settings=settings_of(args), environment=environment_of(device),
                skipped_guided_upsamplers=skipped_guided_upsamplers(), results=results)


def settings_of(args) -> Dict[str, Any]:
    height, width = args.size if len(args.size) == 2 else args.size * 2
    return dict(input_shape=[args.batch, args.channels, height, width],
                scale_factor=args.scale, dtype=args.dtype, device=str(args.device),
                threads=torch.get_num_threads(), iters=args.iters or 'auto',
                warmup=args.warmup, repeats=args.repeats, fused_kernel=fused_kernel_state())


def environment_of(device) -> Dict[str, Any]:
    if device.type == 'cuda':
        device_name = torch.cuda.get_device_name(device)
    else:
        device_name = platform.processor() or platform.machine()
        try:
            with open('/proc/cpuinfo') as cpuinfo:
                names = [line.split(':', 1)[1].strip() for line in cpuinfo
                         if line.startswith('model name')]
            device_name = names[0] if names else device_name
        except OSError:
            pass
    load = [round(v, 2) for v in os.getloadavg()] if hasattr(os, 'getloadavg') else None
    return dict(device_name=device_name, cpu_count=os.cpu_count(), load_average_1_5_15=load,
                torch=torch.__version__,
                python=platform.python_version(), mmdysample=mmdysample.__version__,
                time=time.strftime('%Y-%m-%d %H:%M:%S'))


# ---------------------------------------------------------------------------------------
# reports
# ---------------------------------------------------------------------------------------
def _fmt_count(value: Optional[float]) -> str:
    if value is None:
        return '-'
    for unit, size in (('G', 1e9), ('M', 1e6), ('K', 1e3)):
        if abs(value) >= size:
            return f'{value / size:.3g}{unit}' if abs(value) < 100 * size else \
                f'{value / size:.0f}{unit}'
    return f'{value:.0f}'


def _fmt_ms(stats: Optional[Dict[str, float]]) -> str:
    if not stats:
        return '-'
    return f"{stats['median']:.3g} ({stats['q1']:.3g}-{stats['q3']:.3g})"


def _fmt_mb(value: Optional[int]) -> str:
    return '-' if value is None else f'{value / 2**20:.1f}'


def markdown_table(report: Dict[str, Any]) -> str:
    s, env = report['settings'], report['environment']
    lines = [
        f"Input {'x'.join(map(str, s['input_shape']))}, x{s['scale_factor']}, {s['dtype']}, "
        f"{s['device']} ({env['device_name']}, {s['threads']} threads, load average "
        f"{env['load_average_1_5_15'][0] if env['load_average_1_5_15'] else '?'} at the end), "
        f"torch {env['torch']}; "
        f"median over {s['repeats']} rounds (quartiles in brackets), "
        f"{s['warmup']} warm-up calls; fused DySample CPU kernel "
        f"{'on' if all(s['fused_kernel'].values()) else 'off'}.", '',
        '| Upsampler | Params | FLOPs | Forward ms | x bilinear | Fwd+bwd ms | x bilinear '
        '| Peak mem fwd (MB) | Peak mem fwd+bwd (MB) | mIoU (paper) |',
        '|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|'
    ]
    for r in report['results']:
        if r['error']:
            lines.append(f"| {r['label']} | {_fmt_count(r['params'])} | failed: {r['error']} "
                         '| | | | | | | |')
            continue
        ratio = (lambda v: '-' if v is None else f'{v:.2f}')
        miou = '-' if r['paper_miou'] is None else f"{r['paper_miou']:.2f}"
        lines.append(
            f"| {r['label']} | {_fmt_count(r['params'])} | {_fmt_count(r['flops'])} | "
            f"{_fmt_ms(r['forward_ms'])} | {ratio(r['forward_ratio_to_bilinear'])} | "
            f"{_fmt_ms(r['train_ms'])} | {ratio(r['train_ratio_to_bilinear'])} | "
            f"{_fmt_mb(r['peak_memory_forward_bytes'])} | "
            f"{_fmt_mb(r['peak_memory_train_bytes'])} | {miou} |")
    fused_lines = fused_vs_reference(report)
    if fused_lines:
        lines += ['', 'Fused kernel speed-up (reference-path median / fused median, same '
                  'process):', '',
                  '| Upsampler | Forward: reference / fused | Fwd+bwd: reference / fused |',
                  '|---|---:|---:|'] + fused_lines
    if report['skipped_guided_upsamplers']:
        lines += ['', 'Not benchmarked (need a guidance map): '
                  + ', '.join(report['skipped_guided_upsamplers'])]
    return '\n'.join(lines) + '\n'


def fused_vs_reference(report: Dict[str, Any]) -> List[str]:
    by_label = {r['label']: r for r in report['results'] if not r['error']}
    lines = []
    for label, record in by_label.items():
        if not label.endswith(REFERENCE_SUFFIX):
            continue
        fused = by_label.get(label[:-len(REFERENCE_SUFFIX)])
        if fused is None:
            continue
        fwd = record['forward_ms']['median'] / fused['forward_ms']['median']
        train = record['train_ms']['median'] / fused['train_ms']['median']
        lines.append(f'| {fused["label"]} | {fwd:.2f} | {train:.2f} |')
    return lines


def plot_latency(report: Dict[str, Any], path: str) -> None:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    rows = [r for r in report['results'] if not r['error']]
    labels = [r['label'] for r in rows]
    fig, ax = plt.subplots(figsize=(8, 0.45 * len(rows) + 1.6))
    bar_height = 0.38
    for offset, key, colour, name in ((-bar_height / 2, 'forward_ms', '#4878d0', 'forward'),
                                      (bar_height / 2, 'train_ms', '#ee854a',
                                       'forward + backward')):
        medians = [r[key]['median'] for r in rows]
        spread = [[r[key]['median'] - r[key]['q1'] for r in rows],
                  [r[key]['q3'] - r[key]['median'] for r in rows]]
        positions = [i + offset for i in range(len(rows))]
        ax.barh(positions, medians, height=bar_height, xerr=spread, color=colour,
                label=name, capsize=2)
        for y, value, row in zip(positions, medians, rows):
            ax.text(max(row[key]['q3'], value) * 1.12, y, f'{value:.3g}', va='center',
                    fontsize=7)
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels(labels)
    ax.invert_yaxis()
    ax.set_xscale('log')
    ax.set_xlabel('latency per call (ms, log scale; bars: median, whiskers: quartiles)')
    s, env = report['settings'], report['environment']
    ax.set_title(f"Upsampler latency, input {'x'.join(map(str, s['input_shape']))} "
                 f"x{s['scale_factor']}, {s['dtype']}\n{s['device']}: {env['device_name']}, "
                 f"{s['threads']} threads, torch {env['torch']}", fontsize=9)
    ax.legend(loc='lower right', fontsize=8)
    ax.set_xlim(right=ax.get_xlim()[1] * 2.5)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_latency_vs_miou(report: Dict[str, Any], path: str) -> bool:
    """Fig. 1 style: x = forward latency measured here, y = the paper's SegFormer-B1 mIoU,
    circle area proportional to the upsampler's FLOPs. Returns False if nothing to plot."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    rows = [r for r in report['results'] if not r['error'] and r['paper_miou'] is not None]
    if not rows:
        return False
    fig, ax = plt.subplots(figsize=(7, 4.8))
    max_flops = max(max(r['flops'] for r in rows), 1)
    for r in rows:
        is_dysample = r['label'].startswith('DySample')
        area = 40 + 1500 * math.sqrt(r['flops'] / max_flops)
        ax.scatter(r['forward_ms']['median'], r['paper_miou'], s=area, alpha=0.55,
                   color='#d62728' if is_dysample else '#1f77b4', edgecolors='black',
                   linewidths=0.6)
    # labels: to the right of each point, moved down while they would cover another label
    # (in log-latency / mIoU units)
    placed: List[Tuple[float, float]] = []
    for r in sorted(rows, key=lambda r: -r['paper_miou']):
        x, y = math.log10(r['forward_ms']['median']), r['paper_miou']
        label_y = y
        while any(abs(x - px) < 0.45 and abs(label_y - py) < 0.2 for px, py in placed):
            label_y -= 0.2
        placed.append((x, label_y))
        ax.annotate(f"{r['label']} ({_fmt_count(r['flops'])}FLOPs)",
                    (r['forward_ms']['median'], y), xytext=(r['forward_ms']['median'] * 1.25,
                                                           label_y + 0.06),
                    fontsize=7, arrowprops=dict(arrowstyle='-', lw=0.4, color='0.4')
                    if label_y != y else None)
    ax.set_xscale('log')
    ax.set_xlabel('forward latency measured here (ms, log scale)')
    ax.set_ylabel('SegFormer-B1 mIoU on ADE20K (paper, Table 4)')
    s, env = report['settings'], report['environment']
    ax.set_title(f"mIoU vs latency (circle area ~ sqrt(FLOPs)); input "
                 f"{'x'.join(map(str, s['input_shape']))} x{s['scale_factor']}\n"
                 f"{s['device']}: {env['device_name']}, {s['threads']} threads", fontsize=9)
    ax.margins(x=0.25, y=0.15)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def write_outputs(report: Dict[str, Any], out_dir: str, plots: bool = True) -> Dict[str, str]:
    os.makedirs(out_dir, exist_ok=True)
    paths = dict(markdown=os.path.join(out_dir, 'benchmark.md'),
                 json=os.path.join(out_dir, 'benchmark.json'))
    with open(paths['markdown'], 'w') as md_file:
        md_file.write(markdown_table(report))
    with open(paths['json'], 'w') as json_file:
        json.dump(report, json_file, indent=2)
    if plots:
        paths['latency_plot'] = os.path.join(out_dir, 'latency.png')
        plot_latency(report, paths['latency_plot'])
        scatter = os.path.join(out_dir, 'latency_vs_miou.png')
        if plot_latency_vs_miou(report, scatter):
            paths['miou_plot'] = scatter
    return paths


def main(argv=None) -> Dict[str, Any]:
    args = parse_args(argv)
    start = time.perf_counter()
    report = run_benchmark(args)
    report['wall_seconds'] = round(time.perf_counter() - start, 1)
    paths = write_outputs(report, args.out_dir, plots=not args.no_plots)
    print(markdown_table(report))
    print(f"took {report['wall_seconds']} s; wrote " + ', '.join(paths.values()))
    return report


if __name__ == '__main__':
    main(sys.argv[1:])
