#!/usr/bin/env python
"""Benchmark the upsamplers (``layers``) and whole models with DySample (``models``).

``layers``: every upsampler registered with :func:`mmdysample.upsamplers.register_upsampler`
(read from :func:`~mmdysample.upsamplers.registered_upsamplers`, so a new layer is benchmarked
without changing this file), plus nearest and bilinear interpolation, each with its paper
default settings. Guided upsamplers (class attribute ``requires_guide = True``) get a random
guide feature at the output size, with the input's channels. For each input size
(``--sizes BxCxHxW ...``) and each thread count (``--threads N ...``), in one process:

* forward latency (``torch.no_grad``) and forward+backward latency (gradients of the
  parameters, of the input and of the guide, as inside a network, from a fixed random output
  gradient). ``--warmup`` calls first (the last one timed, to choose ``--iters``), then
  ``--repeats`` rounds; each round times every upsampler in turn (interleaved, so a burst of
  load from other processes hits all of them alike), each for ``--iters`` back-to-back calls
  (default: as many as fill ~50 ms). Reported: the median over rounds of the per-call time,
  with its quartiles, and the ratio to bilinear: the median over rounds of the ratio within
  each round.
* peak memory of one forward and of one forward+backward (:func:`tool_helpers.peak_memory_bytes`:
  CUDA ``max_memory_allocated``; CPU the allocator's own events read through
  ``torch.profiler(profile_memory=True)``; memory held before the call, like the input and the
  parameters, is not included), and its ratio to bilinear's.
* parameters, and FLOPs of one forward (:func:`mmdysample.flops.count_flops`: mmengine's
  ``FlopAnalyzer`` with handlers for grid_sample, CARAFE-style einsum reassembly, pixel shuffle
  and unfold; one multiply-add = one FLOP, elementwise arithmetic not counted).

``--compare-reference`` times the DySample variants a second time in the authors'
formulation (:func:`authors_formulation`: 1x1 ``conv2d`` projections, then ``F.grid_sample``;
checked equal to the layer's output first) and adds the layer's speed-up over it;
``--compile`` adds the variants under ``torch.compile``; ``--components``
adds the parts of a DySample layer: the sampling op alone on precomputed offsets and the
offset branch alone; ``--kernels-off`` adds every learned upsampler again with the C++ CPU
kernels switched off (``mmdysample.ops.use_fused(False)``: DySample's composed reference path,
the reassembly layers' device-agnostic path, what runs on a device without kernels).
Outputs (``--out-dir``): ``benchmark.md`` (also printed), ``benchmark.json``, and for the
first size and thread count ``latency.png`` and ``latency_vs_miou.png`` (the paper's Fig. 1
style: latency here vs the SegFormer-B1 mIoU of the paper's Table 4).

``models``: one training step (forward with losses, backward, SGD) and one inference
(``mode='predict'``) of Faster R-CNN R50-FPN and SegFormer-B1 with DySample against their
nearest / bilinear twins (same weights wherever
the two have the same parameters), interleaved rounds, median ratio to the twin; DySample
with the fused kernel and with the reference path.

``models --fig8``: the paper's Fig. 8 (Sec. 3.4) on SegFormer-B1: one row per upsampler
(bilinear, the model's own, then every registered one in the decode head's six x2 steps):
parameters and GFLOPs of the whole model (at ``--flops-size``, 512x512 as in the paper), a
training step's time and peak memory and the model's inference time (``mode='tensor'``,
batch 1) at ``--size``, and the layer's own forward latency on the paper's random
1x256x64x64 feature (guided layers: a 1x256x128x128 guide); interleaved rounds, median and
ratio to bilinear. Outputs ``fig8.md``, ``fig8.json`` and ``fig8.png`` (one panel per
measure, as the figure).

Examples::

    python tools/benchmark.py                               # = layers: 1x256x64x64, x2
    python tools/benchmark.py layers --sizes 1x256x64x64 2x256x128x128 --threads 1 2
    python tools/benchmark.py layers --upsamplers Bilinear DySample DySample+ --compare-reference
    python tools/benchmark.py layers --upsamplers Bilinear CARAFE FADE SAPA-B A2U \
        --sizes 1x256x64x64 2x256x128x128 --threads 2 --kernels-off
    python tools/benchmark.py layers --device cuda --sizes 4x256x64x64 --dtype float16
    python tools/benchmark.py models --repeats 12
    python tools/benchmark.py models --fig8 --size 256 --batch 2 --repeats 3 --warmup 1
"""
import argparse
import contextlib
import functools
import json
import math
import os
import platform
import statistics
import sys
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

import torch

TOOLS_DIR = os.path.dirname(os.path.abspath(__file__))
if TOOLS_DIR not in sys.path:  # loaded by path rather than run as a script
    sys.path.append(TOOLS_DIR)
import tool_helpers  # noqa: E402

mmdysample = tool_helpers.import_mmdysample()
from mmengine.registry import MODELS  # noqa: E402

from mmdysample.flops import count_flops  # noqa: E402
from mmdysample.upsamplers import DySample, build_upsampler, registered_upsamplers  # noqa: E402
from mmdysample.upsamplers import requires_guide as upsampler_requires_guide  # noqa: E402

DTYPES = {
    'float32': torch.float32,
    'float64': torch.float64,
    'float16': torch.float16,
    'bfloat16': torch.bfloat16,
}
PAPER_SIZE = '1x256x64x64'  # Sec. 3.4 of the paper
REFERENCE_SUFFIX = ' [reference]'
COMPILED_SUFFIX = ' [compiled]'
KERNELS_OFF_SUFFIX = ' [kernels off]'
TARGET_REPEAT_SECONDS = 0.05
MAX_AUTO_ITERS = 200


# ---------------------------------------------------------------------------------------
# what is benchmarked
# ---------------------------------------------------------------------------------------
def default_upsamplers() -> List[Tuple[str, dict]]:
    """``(label, cfg)`` of every upsampler to benchmark, with its paper settings: nearest and
    bilinear interpolation, then every registered upsampler but ``Interpolate``."""
    entries = [('Nearest', dict(type='Interpolate', mode='nearest')),
               ('Bilinear', dict(type='Interpolate', mode='bilinear', align_corners=False))]
    entries += [(name, dict(type=name)) for name in registered_upsamplers()
                if name != 'Interpolate']
    return entries


def requires_guide(cfg: dict) -> bool:
    return upsampler_requires_guide(MODELS.get(cfg['type']))


def is_dysample(cfg: dict) -> bool:
    return issubclass(MODELS.get(cfg['type']), DySample)


def paper_table4() -> Dict[str, Any]:
    """The rows of the paper's Table 4 (SegFormer-B1, ADE20K) by upsampler label, from the
    metafiles (:mod:`paper_tables`)."""
    import paper_tables
    return {row.label: row for row in paper_tables.get_table('4').rows}


def parse_size(text: str) -> Tuple[int, int, int, int]:
    try:
        dims = tuple(int(v) for v in text.lower().split('x'))
    except ValueError:
        dims = ()
    if len(dims) != 4 or min(dims) < 1:
        raise argparse.ArgumentTypeError(f'a size is BxCxHxW with positive integers (e.g. '
                                         f'{PAPER_SIZE}), got {text!r}')
    return dims


# ---------------------------------------------------------------------------------------
# fused kernel switch
# ---------------------------------------------------------------------------------------
def fused_kernel_state() -> Dict[str, bool]:
    """Whether DySample runs the fused CPU kernel in this process (switch, environment
    variable and a successful build all needed)."""
    from mmdysample import ops
    enabled = bool(ops.fused_enabled())
    # checking availability builds the kernel if needed: only worth it when it is enabled
    return dict(enabled=enabled, available=bool(ops.extension_available()) if enabled else False)


def fused_kernel(enabled: Optional[bool]):
    """Context: the fused DySample kernel on or off (``None``: as it is)."""
    if enabled is None:
        return contextlib.nullcontext()
    from mmdysample.ops import use_fused
    return use_fused(enabled)


def authors_formulation(layer, x: torch.Tensor) -> torch.Tensor:
    """DySample computed as the authors' public module does, on ``layer``'s parameters: 1x1
    ``conv2d`` offset (and scope) projections, of the pixel-shuffled input for the PL style,
    the offsets scaled and added to the initial positions, then ``F.grid_sample`` (bilinear,
    border padding, ``align_corners=False``; :func:`mmdysample.ops.grid_sample_dysample`)."""
    import torch.nn.functional as F

    from mmdysample.ops import grid_sample_dysample
    s = layer.scale_factor

    def project(conv):
        if layer.style == 'pl':
            return F.pixel_unshuffle(conv(F.pixel_shuffle(x, s)), s)
        return conv(x)

    offset = project(layer.offset)
    if layer.dyscope:
        offset = offset * (project(layer.scope).sigmoid() * (2 * layer.scope_factor))
    else:
        offset = offset * layer.scope_factor
    return grid_sample_dysample(x, offset + layer.init_pos, s, layer.groups)


# ---------------------------------------------------------------------------------------
# layers
# ---------------------------------------------------------------------------------------
class Case:
    """One thing to time on the benchmark input: a forward closure and a forward+backward
    closure, built from an upsampler config (or given, for the components)."""

    def __init__(self, label: str, size, scale: int, dtype, device, cfg: Optional[dict] = None,
                 fused: Optional[bool] = None, calls: Optional[Tuple[Callable, Callable]] = None,
                 compiled: Optional[str] = None, kernels_off: bool = False):
        self.label, self.cfg, self.fused = label, cfg, fused
        # the switch around each call: the layer with every C++ kernel off (kernels_off), or
        # the fused DySample kernel as `fused` says
        self.switch = False if kernels_off else fused
        self.error: Optional[str] = None
        self.model: Optional[torch.nn.Module] = None
        self.guided = cfg is not None and requires_guide(cfg)
        batch, channels, height, width = size
        generator = torch.Generator().manual_seed(0)
        self.input = torch.randn(size, generator=generator).to(device, dtype)
        self.train_input = self.input.clone().requires_grad_(True)
        out_size = (batch, channels, scale * height, scale * width)
        self.output_grad = torch.randn(out_size, generator=generator).to(device, dtype)
        self.guide = self.train_guide = None
        if self.guided:
            self.guide = torch.randn(out_size, generator=generator).to(device, dtype)
            self.train_guide = self.guide.clone().requires_grad_(True)
        if cfg is not None:
            kwargs = dict(guide_channels=channels) if self.guided else {}
            try:
                self.model = build_upsampler(cfg, channels, scale, **kwargs).to(device, dtype)
            except (ValueError, TypeError) as error:  # e.g. channels the layer cannot take
                self.error = f'{type(error).__name__}: {error}'
            else:
                self.model.train()
        # torch.compile of the layer with backend `compiled`; FLOPs and parameters read the
        # eager module
        self.run = torch.compile(self.model, backend=compiled) \
            if compiled and self.model is not None else self.model
        if fused is False and self.model is not None:  # the reference: authors' formulation
            self.run = functools.partial(authors_formulation, self.model)
            with torch.no_grad():
                torch.testing.assert_close(self.run(self.input), self.model(self.input),
                                           rtol=1e-4, atol=1e-4)
        self.calls = calls
        self.iters = dict(forward=1, train=1)
        self.samples: Dict[str, List[float]] = dict(forward=[], train=[])

    @property
    def inputs(self) -> tuple:
        return (self.input, self.guide) if self.guided else (self.input, )

    def forward(self):
        if self.calls is not None:
            return self.calls[0]()
        with torch.no_grad(), fused_kernel(self.switch):
            return self.run(*self.inputs)

    def train_step(self):
        if self.calls is not None:
            return self.calls[1]()
        self.model.zero_grad(set_to_none=True)
        self.train_input.grad = None
        inputs = (self.train_input, )
        if self.guided:
            self.train_guide.grad = None
            inputs += (self.train_guide, )
        with fused_kernel(self.switch):
            output = self.run(*inputs)
        output.backward(self.output_grad)

    def call(self, mode: str):
        return self.forward() if mode == 'forward' else self.train_step()


def component_cases(dysample: Case, size, scale: int, dtype, device) -> List[Case]:
    """The sampling op alone (on the layer's offsets) and the offsets alone (the offset
    branch: its convolution(s), pixel shuffles for the PL style, the scope)."""
    from mmdysample.functional import dysample as sample

    layer, x, x_grad, grad = dysample.model, dysample.input, dysample.train_input, \
        dysample.output_grad
    with torch.no_grad():
        offset = layer.sampling_offsets(x)
    offset_grad = offset.clone().requires_grad_(True)
    groups = layer.groups

    def kernel_forward():
        with torch.no_grad():
            sample(x, offset, scale, groups)

    def kernel_train():
        x_grad.grad = offset_grad.grad = None
        sample(x_grad, offset_grad, scale, groups).backward(grad)

    def offsets_forward():
        with torch.no_grad():
            layer.sampling_offsets(x)

    def offsets_train():
        layer.zero_grad(set_to_none=True)
        x_grad.grad = None
        layer.sampling_offsets(x_grad).sum().backward()

    return [
        Case(f'{dysample.label}: sampling op', size, scale, dtype, device,
             calls=(kernel_forward, kernel_train)),
        Case(f'{dysample.label}: offsets', size, scale, dtype, device,
             calls=(offsets_forward, offsets_train)),
    ]


def iters_for(call_ms: float) -> int:
    """Calls per timed round that fill about ``TARGET_REPEAT_SECONDS``, given one call's
    time (at least 1, at most ``MAX_AUTO_ITERS``)."""
    return max(1, min(MAX_AUTO_ITERS, int(TARGET_REPEAT_SECONDS / max(call_ms / 1e3, 1e-6))))


def median_ratio(samples: List[float], reference: List[float]) -> Optional[float]:
    """Median over rounds of ``samples[i] / reference[i]`` (same round, same load)."""
    if not samples or len(samples) != len(reference):
        return None
    return statistics.median(s / r for s, r in zip(samples, reference))


def measure_section(args, size, threads: Optional[int]) -> Dict[str, Any]:
    """Every case at one input size and thread count."""
    if threads is not None:
        torch.set_num_threads(threads)
    dtype, device, scale = DTYPES[args.dtype], args.device, args.scale
    cases: List[Case] = []
    entries = [e for e in default_upsamplers() if not args.upsamplers or e[0] in args.upsamplers]
    for label, cfg in entries:
        fused = True if args.compare_reference and is_dysample(cfg) else None
        cases.append(Case(label, size, scale, dtype, device, cfg=cfg, fused=fused))
    dysamples = [c for c in cases if is_dysample(c.cfg) and c.error is None]
    learned = [c for c in cases if c.cfg['type'] != 'Interpolate' and c.error is None]
    if args.compare_reference:
        cases += [Case(c.label + REFERENCE_SUFFIX, size, scale, dtype, device, cfg=c.cfg,
                       fused=False) for c in dysamples]
    if args.compile:
        cases += [Case(c.label + COMPILED_SUFFIX, size, scale, dtype, device, cfg=c.cfg,
                       compiled=args.compile_backend) for c in dysamples]
    if args.components:
        for c in dysamples:
            cases += component_cases(c, size, scale, dtype, device)
    if args.kernels_off:
        cases += [Case(c.label + KERNELS_OFF_SUFFIX, size, scale, dtype, device, cfg=c.cfg,
                       kernels_off=True) for c in learned]

    # warm-up; the last warm-up call (or one extra call) is timed to calibrate the iterations
    for case in cases:
        if case.error is not None:
            continue
        try:
            for mode in ('forward', 'train'):
                for _ in range(max(args.warmup - 1, 0)):
                    case.call(mode)
                call_ms = tool_helpers.time_per_call(lambda: case.call(mode), 1, device)
                case.iters[mode] = args.iters or iters_for(call_ms)
        except Exception as error:  # reported in the table; the others go on
            case.error = f'{type(error).__name__}: {error}'
    alive = [c for c in cases if c.error is None]
    for _ in range(args.repeats):  # interleaved timed rounds
        for case in alive:
            for mode in ('forward', 'train'):
                case.samples[mode].append(
                    tool_helpers.time_per_call(lambda: case.call(mode), case.iters[mode],
                                               device))

    table4 = paper_table4()
    records = []
    for case in cases:
        record: Dict[str, Any] = dict(label=case.label, cfg=case.cfg, guided=case.guided,
                                      fused=case.fused, error=case.error)
        row = table4.get(case.label)
        record['paper_miou'] = row.metrics.get('mIoU') if row is not None else None
        if case.model is not None:
            record['params'] = tool_helpers.count_parameters(case.model)
        if case.error is None:
            if case.model is not None:
                flops = count_flops(case.model, case.inputs)
                record.update(flops=flops.total, flops_by_operator=flops.by_operator,
                              flops_uncounted_ops=flops.uncounted)
            for mode in ('forward', 'train'):
                record[f'{mode}_ms'] = tool_helpers.summarize_times(
                    case.samples[mode], case.iters[mode]).to_dict()
                record[f'peak_memory_{mode}_bytes'] = tool_helpers.peak_memory_bytes(
                    lambda: case.call(mode), device)
        records.append(record)
    add_ratios(records)
    return dict(input_shape=list(size), threads=torch.get_num_threads(),
                load_average_after=tool_helpers.load_average(), results=records)


def add_ratios(records: List[Dict[str, Any]]) -> None:
    """Ratios to bilinear (time: median of per-round ratios; memory: of the peaks) and the
    fused kernel's speed-up (reference time over fused time, median over rounds)."""
    by_label = {r['label']: r for r in records if r['error'] is None}
    bilinear = by_label.get('Bilinear')
    for record in records:
        for mode in ('forward', 'train'):
            ok = bilinear is not None and record['error'] is None
            record[f'{mode}_ratio_to_bilinear'] = median_ratio(
                record[f'{mode}_ms']['samples'], bilinear[f'{mode}_ms']['samples']) \
                if ok else None
            peak, base = record.get(f'peak_memory_{mode}_bytes'), \
                (bilinear or {}).get(f'peak_memory_{mode}_bytes')
            record[f'peak_memory_{mode}_ratio_to_bilinear'] = peak / base \
                if ok and peak is not None and base else None
        reference = by_label.get(record['label'] + REFERENCE_SUFFIX)
        if reference is not None and record['error'] is None:
            for mode in ('forward', 'train'):
                record[f'{mode}_speedup_over_reference'] = median_ratio(
                    reference[f'{mode}_ms']['samples'], record[f'{mode}_ms']['samples'])
        compiled = by_label.get(record['label'] + COMPILED_SUFFIX)
        if compiled is not None and record['error'] is None:
            for mode in ('forward', 'train'):
                record[f'{mode}_compiled_over_eager'] = median_ratio(
                    compiled[f'{mode}_ms']['samples'], record[f'{mode}_ms']['samples'])


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
    return dict(device_name=device_name, cpu_count=os.cpu_count(),
                load_average_1_5_15=tool_helpers.load_average(), torch=torch.__version__,
                python=platform.python_version(), mmdysample=mmdysample.__version__,
                omp_wait_policy=os.environ.get('OMP_WAIT_POLICY'),
                time=time.strftime('%Y-%m-%d %H:%M:%S'))


def run_layers(args) -> Dict[str, Any]:
    settings = dict(sizes=[list(s) for s in args.sizes], threads=args.threads,
                    scale_factor=args.scale, dtype=args.dtype, device=str(args.device),
                    iters=args.iters or 'auto', warmup=args.warmup, repeats=args.repeats,
                    fused_kernel=fused_kernel_state(), kernels_off_rows=args.kernels_off,
                    compile_backend=args.compile_backend if args.compile else None)
    environment = environment_of(args.device)
    threads_before = torch.get_num_threads()
    try:
        sections = [measure_section(args, size, threads) for size in args.sizes
                    for threads in (args.threads or [None])]
    finally:
        torch.set_num_threads(threads_before)
    return dict(settings=settings, environment=environment, sections=sections)


# ---------------------------------------------------------------------------------------
# layer reports
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


def _fmt_ratio(value: Optional[float]) -> str:
    return '-' if value is None else f'{value:.2f}'


def _fmt_mb(value: Optional[int]) -> str:
    return '-' if value is None else f'{value / 2**20:.1f}'


def section_title(report: Dict[str, Any], section: Dict[str, Any]) -> str:
    s, env = report['settings'], report['environment']
    load = section['load_average_after']
    return (f"Input {'x'.join(map(str, section['input_shape']))}, x{s['scale_factor']}, "
            f"{s['dtype']}, {s['device']} ({env['device_name']}, {section['threads']} "
            f"threads, load average {load[0] if load else '?'} at the end)")


def markdown_table(report: Dict[str, Any]) -> str:
    s, env = report['settings'], report['environment']
    fused = 'on' if all(s['fused_kernel'].values()) else 'off'
    lines = [f"torch {env['torch']}, mmdysample {env['mmdysample']}; median over "
             f"{s['repeats']} interleaved rounds (quartiles in brackets), {s['warmup']} "
             f"warm-up calls; ratios to bilinear: median of the per-round ratios (time), "
             f"ratio of the peaks (memory); fused DySample CPU kernel {fused}."]
    for section in report['sections']:
        lines += ['', f'### {section_title(report, section)}', '',
                  '| Upsampler | Params | FLOPs | Forward ms | x bilinear | Fwd+bwd ms '
                  '| x bilinear | Peak MB fwd | Peak MB fwd+bwd | x bilinear | mIoU (paper) |',
                  '|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|']
        for r in section['results']:
            name = r['label'] + (' (guided)' if r['guided'] else '')
            if r['error']:
                lines.append(f"| {name} | {_fmt_count(r.get('params'))} | failed: "
                             f"{r['error']} | | | | | | | | |")
                continue
            miou = '-' if r['paper_miou'] is None else f"{r['paper_miou']:.2f}"
            lines.append(
                f"| {name} | {_fmt_count(r.get('params'))} | {_fmt_count(r.get('flops'))} | "
                f"{_fmt_ms(r['forward_ms'])} | {_fmt_ratio(r['forward_ratio_to_bilinear'])} | "
                f"{_fmt_ms(r['train_ms'])} | {_fmt_ratio(r['train_ratio_to_bilinear'])} | "
                f"{_fmt_mb(r['peak_memory_forward_bytes'])} | "
                f"{_fmt_mb(r['peak_memory_train_bytes'])} | "
                f"{_fmt_ratio(r['peak_memory_train_ratio_to_bilinear'])} | {miou} |")
        speedups = [r for r in section['results'] if 'forward_speedup_over_reference' in r]
        if speedups:
            lines += ['', "Speed-up over the authors' formulation, conv2d + grid_sample "
                      '(reference time / layer time, median over rounds):', '',
                      '| Upsampler | Forward | Fwd+bwd |', '|---|---:|---:|']
            lines += [f"| {r['label']} | {_fmt_ratio(r['forward_speedup_over_reference'])} | "
                      f"{_fmt_ratio(r['train_speedup_over_reference'])} |" for r in speedups]
        compiled = [r for r in section['results'] if 'forward_compiled_over_eager' in r]
        if compiled:
            lines += ['', f"torch.compile (backend {s['compile_backend']}) time / eager time, "
                      'median over rounds:', '',
                      '| Upsampler | Forward | Fwd+bwd |', '|---|---:|---:|']
            lines += [f"| {r['label']} | {_fmt_ratio(r['forward_compiled_over_eager'])} | "
                      f"{_fmt_ratio(r['train_compiled_over_eager'])} |" for r in compiled]
    if len(report['sections']) > 1:
        lines += summary_table(report['sections'])
    return '\n'.join(lines) + '\n'


def summary_table(sections: List[Dict[str, Any]]) -> List[str]:
    """One row per upsampler, one column per section: forward / forward+backward / peak memory
    of forward+backward, each as a ratio to bilinear."""
    columns = [f"{'x'.join(map(str, s['input_shape']))}, {s['threads']} thr" for s in sections]
    lines = ['', '### Summary: ratio to bilinear, forward / fwd+bwd / peak memory fwd+bwd', '',
             '| Upsampler | ' + ' | '.join(columns) + ' |',
             '|---|' + '---:|' * len(columns)]
    labels = [r['label'] for r in sections[0]['results'] if r['label'] != 'Bilinear']
    for label in labels:
        cells = []
        for section in sections:
            r = next((r for r in section['results'] if r['label'] == label), None)
            cells.append('-' if r is None or r['error'] else ' / '.join(
                _fmt_ratio(r[key]) for key in ('forward_ratio_to_bilinear',
                                               'train_ratio_to_bilinear',
                                               'peak_memory_train_ratio_to_bilinear')))
        lines.append(f'| {label} | ' + ' | '.join(cells) + ' |')
    return lines


def _plot_rows(section: Dict[str, Any]) -> List[Dict[str, Any]]:
    return [r for r in section['results'] if not r['error'] and r['cfg'] is not None
            and not r['label'].endswith((REFERENCE_SUFFIX, COMPILED_SUFFIX,
                                         KERNELS_OFF_SUFFIX))]


def plot_latency(report: Dict[str, Any], section: Dict[str, Any], path: str) -> None:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    rows = _plot_rows(section)
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
    ax.set_yticklabels([r['label'] for r in rows])
    ax.invert_yaxis()
    ax.set_xscale('log')
    ax.set_xlabel('latency per call (ms, log scale; bars: median, whiskers: quartiles)')
    ax.set_title('Upsampler latency, ' + section_title(report, section), fontsize=8)
    ax.legend(loc='lower right', fontsize=8)
    ax.set_xlim(right=ax.get_xlim()[1] * 2.5)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_latency_vs_miou(report: Dict[str, Any], section: Dict[str, Any], path: str) -> bool:
    """Fig. 1 style: x = forward latency measured here, y = the paper's SegFormer-B1 mIoU,
    circle area ~ sqrt(FLOPs). Returns False if nothing to plot."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    rows = [r for r in _plot_rows(section) if r['paper_miou'] is not None]
    if not rows:
        return False
    fig, ax = plt.subplots(figsize=(7, 4.8))
    max_flops = max(max(r['flops'] for r in rows), 1)
    for r in rows:
        area = 40 + 1500 * math.sqrt(r['flops'] / max_flops)
        ax.scatter(r['forward_ms']['median'], r['paper_miou'], s=area, alpha=0.55,
                   color='#d62728' if r['label'].startswith('DySample') else '#1f77b4',
                   edgecolors='black', linewidths=0.6)
    # labels right of each point, moved down while they would cover another label
    placed: List[Tuple[float, float]] = []
    for r in sorted(rows, key=lambda r: -r['paper_miou']):
        x, y = math.log10(r['forward_ms']['median']), r['paper_miou']
        label_y = y
        while any(abs(x - px) < 0.45 and abs(label_y - py) < 0.2 for px, py in placed):
            label_y -= 0.2
        placed.append((x, label_y))
        ax.annotate(f"{r['label']} ({_fmt_count(r['flops'])}FLOPs)",
                    (r['forward_ms']['median'], y),
                    xytext=(r['forward_ms']['median'] * 1.25, label_y + 0.06), fontsize=7,
                    arrowprops=dict(arrowstyle='-', lw=0.4, color='0.4')
                    if label_y != y else None)
    ax.set_xscale('log')
    ax.set_xlabel('forward latency measured here (ms, log scale)')
    ax.set_ylabel('SegFormer-B1 mIoU on ADE20K (paper, Table 4)')
    ax.set_title('mIoU vs latency (circle area ~ sqrt(FLOPs))\n' +
                 section_title(report, section), fontsize=8)
    ax.margins(x=0.25, y=0.15)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def write_layer_plots(report: Dict[str, Any], out_dir: str) -> Dict[str, str]:
    """The latency plots of ``report``'s first section into ``out_dir``; the paths written."""
    paths = {}
    if report['sections']:
        first = report['sections'][0]
        paths['latency_plot'] = os.path.join(out_dir, 'latency.png')
        plot_latency(report, first, paths['latency_plot'])
        scatter = os.path.join(out_dir, 'latency_vs_miou.png')
        if plot_latency_vs_miou(report, first, scatter):
            paths['miou_plot'] = scatter
    return paths


# ---------------------------------------------------------------------------------------
# models
# ---------------------------------------------------------------------------------------
#: name -> (twin config, DySample config, twin label), relative to configs/
MODEL_PAIRS = {
    'faster_rcnn': ('faster_rcnn/faster-rcnn_r50_fpn-nearest_1x_coco.py',
                    'faster_rcnn/faster-rcnn_r50_fpn-dysample-lpg4_1x_coco.py', 'nearest'),
    'segformer': ('segformer/segformer_mit-b1_bilinear_8xb2-160k_ade20k-512x512.py',
                  'segformer/segformer_mit-b1_dysample_8xb2-160k_ade20k-512x512.py',
                  'bilinear'),
}


def _detection_batch(model, batch: int, size: int):
    from mmdet.testing import demo_mm_inputs
    packed = demo_mm_inputs(batch_size=batch, image_shapes=(3, size, size),
                            num_items=[5] * batch, num_classes=80)
    return model.data_preprocessor(packed, True)


def _segmentation_batch(model, batch: int, size: int):
    from mmengine.structures import PixelData
    from mmseg.structures import SegDataSample
    generator = torch.Generator().manual_seed(0)
    inputs, samples = [], []
    for _ in range(batch):
        label = torch.randint(0, 150, (1, size // 16, size // 16), generator=generator)
        label = label.repeat_interleave(16, 1).repeat_interleave(16, 2)
        sample = SegDataSample(metainfo=dict(img_shape=(size, size), ori_shape=(size, size)))
        sample.gt_sem_seg = PixelData(data=label)
        inputs.append(torch.randint(0, 256, (3, size, size), generator=generator,
                                    dtype=torch.uint8))
        samples.append(sample)
    return model.data_preprocessor(dict(inputs=inputs, data_samples=samples), True)


def build_training_model(config: str, batch: int, size: int):
    """The config's model at full width without pretrained weights (BN instead of SyncBN on
    CPU), initialised with seed 0, and a preprocessed random batch for it."""
    cfg_options = {'model.backbone.init_cfg': None}
    if 'segformer' in config:
        cfg_options.update({'model.pretrained': None,
                            'model.data_preprocessor.size': (size, size)})
    torch.manual_seed(0)
    model = tool_helpers.build_model(os.path.join(tool_helpers.REPO_ROOT, 'configs', config),
                                     cfg_options=cfg_options)
    model.init_weights()
    make_batch = _segmentation_batch if 'segformer' in config else _detection_batch
    return model, make_batch(model, batch, size)


def training_step(model, data) -> Callable[[], None]:
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-5,
                                momentum=0.9)

    def step():
        model.train()
        optimizer.zero_grad()
        losses = model(**data, mode='loss')
        total, _ = model.parse_losses(losses)
        total.backward()
        optimizer.step()

    return step


def inference_step(model, data) -> Callable[[], None]:
    """``model(..., mode='predict')`` in eval mode without gradients (postprocessing and, for
    the detector, NMS included)."""

    def step():
        model.eval()
        with torch.no_grad():
            model(**data, mode='predict')

    return step


def run_models(args) -> Dict[str, Any]:
    import logging

    from mmengine.logging import MMLogger
    MMLogger.get_current_instance().setLevel(logging.WARNING)  # no init_weights report
    if args.threads:
        torch.set_num_threads(args.threads[0])
    results = []
    for name in args.models:
        twin_config, dysample_config, twin_label = MODEL_PAIRS[name]
        twin_model, twin_data = build_training_model(twin_config, args.batch, args.size)
        dysample_model, dysample_data = build_training_model(dysample_config, args.batch,
                                                             args.size)
        # same weights wherever the two models have the same parameters, so that the
        # data-dependent parts (proposals, NMS, sampled RoIs) do about the same work
        dysample_model.load_state_dict(twin_model.state_dict(), strict=False)
        phases = dict(train=training_step, inference=inference_step)
        for phase, make_step in phases.items():
            dysample = make_step(dysample_model, dysample_data)

            def fused(dysample=dysample):
                with fused_kernel(True):
                    dysample()

            def reference(dysample=dysample):
                with fused_kernel(False):
                    dysample()

            steps = {twin_label: make_step(twin_model, twin_data),
                     'DySample (fused)': fused, 'DySample (reference)': reference}
            wall = {case: [] for case in steps}
            cpu = {case: [] for case in steps}
            for round_index in range(args.warmup + args.repeats):
                for case, step in steps.items():
                    start, cpu_start = time.perf_counter(), time.process_time()
                    step()
                    if round_index >= args.warmup:
                        wall[case].append(time.perf_counter() - start)
                        cpu[case].append(time.process_time() - cpu_start)
            for case in steps:
                results.append(dict(
                    model=name, phase=phase, case=case, twin=twin_label,
                    wall_s=tool_helpers.summarize_times(wall[case], 1).to_dict(),
                    wall_ratio_to_twin=median_ratio(wall[case], wall[twin_label]),
                    cpu_s=tool_helpers.summarize_times(cpu[case], 1).to_dict(),
                    cpu_ratio_to_twin=median_ratio(cpu[case], cpu[twin_label])))
    settings = dict(models=args.models, batch=args.batch, size=args.size,
                    threads=torch.get_num_threads(), repeats=args.repeats, warmup=args.warmup,
                    fused_kernel=fused_kernel_state())
    return dict(settings=settings, environment=environment_of(torch.device('cpu')),
                results=results)


def models_markdown(report: Dict[str, Any]) -> str:
    s = report['settings']
    lines = [f"One training step (forward with losses, backward, SGD) and one inference "
             f"(`mode='predict'`, no gradients), batch {s['batch']} at {s['size']}x{s['size']}, "
             f"{s['threads']} threads, median over {s['repeats']} interleaved rounds; ratios to "
             f"the twin: median of the per-round ratios.", '',
             '| Model | Phase | Case | Wall s | x twin | CPU s | x twin |',
             '|---|---|---|---:|---:|---:|---:|']
    for r in report['results']:
        lines.append(f"| {r['model']} | {r['phase']} | {r['case']} | "
                     f"{r['wall_s']['median']:.3f} | {_fmt_ratio(r['wall_ratio_to_twin'])} | "
                     f"{r['cpu_s']['median']:.3f} | {_fmt_ratio(r['cpu_ratio_to_twin'])} |")
    return '\n'.join(lines) + '\n'


# ---------------------------------------------------------------------------------------
# models --fig8: the paper's Fig. 8 on SegFormer-B1
# ---------------------------------------------------------------------------------------
FIG8_CONFIG = 'segformer/segformer_mit-b1_bilinear_8xb2-160k_ade20k-512x512.py'
# (report key, panel title, scale of the value to the panel's unit)
FIG8_PANELS = (('layer_forward_ms', 'latency (ms)\n1x256x64x64 layer forward', 1.0),
               ('train_peak_memory_bytes', 'training memory (MB)\none step', 2.0**-20),
               ('train_step_ms', 'training time (s)\none step', 1e-3),
               ('flops', 'GFLOPs\nwhole model', 1e-9),
               ('params', 'parameters (M)\nwhole model', 1e-6))


def fig8_upsamplers(names: Optional[List[str]] = None) -> List[Tuple[str, Optional[dict]]]:
    """``(label, upsample_cfg)`` of SegFormer-B1's decode head: ``('Bilinear', None)`` (the
    upstream head, its default) then every registered upsampler (``names``: a subset)."""
    entries = [(label, None if label == 'Bilinear' else cfg)
               for label, cfg in default_upsamplers() if label != 'Nearest']
    return [e for e in entries if not names or e[0] in names]


class _SegformerCase:
    """SegFormer-B1 with one upsampler: a training step (model, optimizer, random batch at
    ``size``), an inference call (``mode='tensor'``, batch 1, no gradients) and the layer's
    forward on the paper's feature; each keeps its timings."""

    def __init__(self, analyze_model, label: str, upsample_cfg: Optional[dict], size: int,
                 batch: int):
        config = os.path.join(tool_helpers.REPO_ROOT, 'configs', FIG8_CONFIG)
        self.label = label
        self.cfg_options = {'model.data_preprocessor.size': (size, size)}
        if upsample_cfg is not None:
            self.cfg_options['model.decode_head.upsample_cfg'] = upsample_cfg
        torch.manual_seed(0)
        self.train = analyze_model.TrainStep(config, (size, size), batch, 'cpu',
                                             self.cfg_options)
        self.image = analyze_model.model_input(self.train.model, size, size)
        layer_cfg = upsample_cfg or dict(type='Interpolate', mode='bilinear',
                                         align_corners=False)
        self.layer = Case(label, parse_size(PAPER_SIZE), 2, torch.float32, torch.device('cpu'),
                          cfg=layer_cfg)
        self.samples: Dict[str, List[float]] = dict(train=[], inference=[], layer=[])
        self.layer_iters = 1

    def complexity(self, analyze_model, flops_size) -> Tuple[int, float]:
        """Parameters, and FLOPs of the model in eval mode on a ``1 x 3 x H x W`` input."""
        model = self.train.model
        model.eval()
        flops = count_flops(model, analyze_model.model_input(model, *flops_size)).total
        model.train()
        return analyze_model.count_parameters(model), flops

    def inference(self):
        model = self.train.model
        model.eval()
        with torch.no_grad():
            model(self.image, mode='tensor')
        model.train()

    def timed(self, what: str) -> float:
        if what == 'train':
            return tool_helpers.time_per_call(self.train, 1)
        if what == 'inference':
            return tool_helpers.time_per_call(self.inference, 1)
        return tool_helpers.time_per_call(self.layer.forward, self.layer_iters)


def run_fig8(args) -> Dict[str, Any]:
    """Measure every upsampler of :func:`fig8_upsamplers` in SegFormer-B1 (see the module
    docstring); models built one after the other, timed interleaved round by round."""
    import analyze_model  # tools/: model building, FLOPs and training steps
    if args.threads:
        torch.set_num_threads(args.threads[0])
    table4 = paper_table4()
    cases, records = [], []
    for label, upsample_cfg in fig8_upsamplers(args.upsamplers):
        print(f'building SegFormer-B1 with {label}', flush=True)
        case = _SegformerCase(analyze_model, label, upsample_cfg, args.size, args.batch)
        params, flops = case.complexity(analyze_model, args.flops_size)
        row = table4.get(label)
        records.append(dict(label=label, upsample_cfg=upsample_cfg,
                            paper_miou=row.metrics.get('mIoU') if row is not None else None,
                            params=params, flops=flops))
        cases.append(case)
    for case in cases:  # warm-up; the layer's calls per round from its last warm-up call
        for _ in range(args.warmup):
            case.train()
            case.inference()
            case.layer.forward()
        case.layer_iters = iters_for(tool_helpers.time_per_call(case.layer.forward, 1))
    for _ in range(args.repeats):
        for case in cases:
            for what in ('train', 'inference', 'layer'):
                case.samples[what].append(case.timed(what))
    for case, record in zip(cases, records):
        record['train_step_ms'] = tool_helpers.summarize_times(case.samples['train'], 1)
        record['inference_ms'] = tool_helpers.summarize_times(case.samples['inference'], 1)
        record['layer_forward_ms'] = tool_helpers.summarize_times(case.samples['layer'],
                                                                  case.layer_iters)
        record['train_peak_memory_bytes'] = tool_helpers.peak_memory_bytes(case.train)
        for key in ('train_step_ms', 'inference_ms', 'layer_forward_ms'):
            record[key] = record[key].to_dict()
    base = records[0]
    for record in records:
        for key in ('train_step_ms', 'inference_ms', 'layer_forward_ms'):
            record[key.replace('_ms', '_ratio_to_bilinear')] = median_ratio(
                record[key]['samples'], base[key]['samples'])
        for key in ('train_peak_memory_bytes', 'flops', 'params'):
            record[f'{key}_ratio_to_bilinear'] = record[key] / base[key] if base[key] else None
        record['delta_params'] = record['params'] - base['params']
        record['delta_flops'] = record['flops'] - base['flops']
    settings = dict(config=FIG8_CONFIG, size=args.size, batch=args.batch,
                    flops_size=list(args.flops_size), layer_input=PAPER_SIZE,
                    threads=torch.get_num_threads(), repeats=args.repeats, warmup=args.warmup,
                    fused_kernel=fused_kernel_state())
    return dict(settings=settings, environment=environment_of(torch.device('cpu')),
                results=records, load_average_after=tool_helpers.load_average())


def fig8_markdown(report: Dict[str, Any]) -> str:
    s = report['settings']
    lines = [f"SegFormer-B1 (`{s['config']}`, its decode head's six x2 steps) with each "
             f"upsampler, {s['threads']} threads: parameters and GFLOPs of the whole model at "
             f"{s['flops_size'][0]}x{s['flops_size'][1]}; a training step (AdamW, batch "
             f"{s['batch']}) and inference (`mode='tensor'`, batch 1) at {s['size']}x{s['size']}"
             f"; the layer alone on a random {s['layer_input']} feature; medians of "
             f"{s['repeats']} interleaved rounds; x bilinear: median of the per-round ratios "
             '(memory, FLOPs, parameters: ratio of the values). mIoU: the paper (Table 4).', '',
             '| Upsampler | mIoU (paper) | Params | Δ params | GFLOPs | Δ GFLOPs | Train step s '
             '| x bil. | Train memory MB | x bil. | Inference ms | x bil. | Layer ms | x bil. |',
             '|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|']
    for r in report['results']:
        miou = '-' if r['paper_miou'] is None else f"{r['paper_miou']:.2f}"
        lines.append(
            f"| {r['label']} | {miou} | {r['params'] / 1e6:.2f}M | "
            f"{_fmt_count(r['delta_params'])} | {r['flops'] / 1e9:.2f} | "
            f"{r['delta_flops'] / 1e9:+.2f} | {r['train_step_ms']['median'] / 1e3:.3f} | "
            f"{_fmt_ratio(r['train_step_ratio_to_bilinear'])} | "
            f"{r['train_peak_memory_bytes'] / 2**20:.0f} | "
            f"{_fmt_ratio(r['train_peak_memory_bytes_ratio_to_bilinear'])} | "
            f"{r['inference_ms']['median']:.1f} | {_fmt_ratio(r['inference_ratio_to_bilinear'])} "
            f"| {r['layer_forward_ms']['median']:.2f} | "
            f"{_fmt_ratio(r['layer_forward_ratio_to_bilinear'])} |")
    return '\n'.join(lines) + '\n'


def plot_fig8(report: Dict[str, Any], path: str) -> None:
    """The figure's layout: one panel per measure (layer latency, training memory, training
    time, GFLOPs, parameters), one bar per upsampler, the DySample variants highlighted, the
    paper's mIoU beside each name."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    rows = report['results']
    names = [r['label'] + ('' if r['paper_miou'] is None else f" ({r['paper_miou']:.2f})")
             for r in rows]
    colours = ['#d65f5f' if is_dysample(r['upsample_cfg'] or dict(type='Interpolate'))
               else '#4878d0' for r in rows]
    fig, axes = plt.subplots(1, len(FIG8_PANELS), figsize=(3.0 * len(FIG8_PANELS),
                                                           0.32 * len(rows) + 1.6),
                             sharey=True)
    for ax, (key, title, scale) in zip(axes, FIG8_PANELS):
        values = [(r[key]['median'] if isinstance(r[key], dict) else r[key]) * scale
                  for r in rows]
        ax.barh(range(len(rows)), values, color=colours)
        for y, value in enumerate(values):
            ax.text(value, y, f' {value:.3g}', va='center', fontsize=6)
        ax.set_title(title, fontsize=8)
        ax.set_xlim(right=max(values) * 1.35)
        ax.tick_params(axis='x', labelsize=6)
    axes[0].set_yticks(range(len(rows)))
    axes[0].set_yticklabels(names, fontsize=7)
    axes[0].invert_yaxis()
    s = report['settings']
    fig.suptitle(f"SegFormer-B1 with each upsampler (mIoU: paper, Table 4); training at "
                 f"{s['size']}x{s['size']}, batch {s['batch']}; GFLOPs at "
                 f"{s['flops_size'][0]}x{s['flops_size'][1]}; {s['threads']} CPU threads",
                 fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# ---------------------------------------------------------------------------------------
# command line
# ---------------------------------------------------------------------------------------
def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Benchmark the upsamplers (layers) or whole models with DySample (models).',
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    commands = parser.add_subparsers(dest='command', required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument('--threads', type=int, nargs='+', default=None,
                        help="torch.set_num_threads values, one section each (default: torch's "
                        'own choice)')
    common.add_argument('--warmup', type=int, default=2, help='untimed calls/rounds first')
    common.add_argument('--out-dir', default='work_dirs/benchmark', help='output folder')

    layers = commands.add_parser('layers', parents=[common],
                                 help='every registered upsampler on a random feature',
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    layers.add_argument('--sizes', type=parse_size, nargs='+',
                        default=[parse_size(PAPER_SIZE)],
                        help='input sizes BxCxHxW, one section each')
    layers.add_argument('--scale', type=int, default=2, help='upsampling ratio')
    layers.add_argument('--dtype', default='float32', choices=sorted(DTYPES))
    layers.add_argument('--device', default='cpu', help="'cpu', 'cuda' or 'cuda:N'")
    layers.add_argument('--iters', type=int, default=None,
                        help='calls per timed round (default: enough to fill ~50 ms)')
    layers.add_argument('--repeats', type=int, default=5, help='timed rounds')
    layers.add_argument('--upsamplers', nargs='+', default=None,
                        help='labels to benchmark (default: all); Bilinear is the reference '
                        'of the ratios')
    layers.add_argument('--compare-reference', action='store_true',
                        help="also time the DySample variants in the authors' formulation "
                        '(conv2d + grid_sample)')
    layers.add_argument('--compile', action='store_true',
                        help='also time the DySample variants under torch.compile (the first '
                        'call compiles)')
    layers.add_argument('--compile-backend', default='inductor',
                        help='torch.compile backend of --compile')
    layers.add_argument('--kernels-off', action='store_true',
                        help='also time every learned upsampler with the C++ CPU kernels '
                        'switched off (use_fused(False): the reassembly layers\' '
                        'device-agnostic path, DySample\'s composed reference path)')
    layers.add_argument('--components', action='store_true',
                        help="also time each DySample variant's sampling op and its offsets "
                        'alone')
    layers.add_argument('--no-plots', action='store_true', help='skip the PNG plots')

    models = commands.add_parser('models', parents=[common],
                                 help='training step of DySample models vs their twins',
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    models.add_argument('--models', nargs='+', default=list(MODEL_PAIRS),
                        choices=list(MODEL_PAIRS))
    models.add_argument('--batch', type=int, default=2, help='images per step')
    models.add_argument('--size', type=int, default=256, help='square image side')
    models.add_argument('--repeats', type=int, default=15, help='timed rounds')
    models.add_argument('--fig8', action='store_true',
                        help="the paper's Fig. 8: SegFormer-B1 with every upsampler (one row "
                        'each) instead of the DySample/twin pairs of --models')
    models.add_argument('--upsamplers', nargs='+', default=None,
                        help='--fig8: labels to measure (default: all; Bilinear is always '
                        'first, the reference of the ratios)')
    models.add_argument('--flops-size', type=int, nargs=2, default=[512, 512],
                        metavar=('H', 'W'), help='--fig8: input size of the FLOP count')

    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in ('layers', 'models', '-h', '--help'):
        argv.insert(0, 'layers')  # the layer benchmark is the default, as before subcommands
    args = parser.parse_args(argv)
    positive = ['repeats'] + (['iters', 'scale'] if args.command == 'layers' else
                              ['batch', 'size'])
    for name in positive:
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f'--{name} must be >= 1, got {value}')
    if args.warmup < 0:
        parser.error(f'--warmup must be >= 0, got {args.warmup}')
    if args.threads is not None and min(args.threads) < 1:
        parser.error(f'--threads must be >= 1, got {args.threads}')
    known = [label for label, _ in default_upsamplers()]
    if args.command == 'models' and args.upsamplers is not None:
        if not args.fig8:
            parser.error('--upsamplers of models needs --fig8')
        unknown = [u for u in args.upsamplers if u not in known or u == 'Nearest']
        if unknown:
            parser.error(f'unknown --upsamplers {unknown}; choose from {known[1:]}')
        args.upsamplers = ['Bilinear'] + [u for u in args.upsamplers if u != 'Bilinear']
    if args.command == 'models' and min(args.flops_size) < 32:
        parser.error(f'--flops-size must be >= 32, got {args.flops_size}')
    if args.command == 'layers':
        if args.scale < 2:
            parser.error(f'--scale must be >= 2, got {args.scale}')
        try:
            args.device = torch.device(args.device)
        except RuntimeError as error:
            parser.error(f'--device: {error}')
        if args.device.type not in ('cpu', 'cuda'):
            parser.error(f"--device must be 'cpu' or 'cuda[:N]', got {args.device}")
        if args.device.type == 'cuda' and not torch.cuda.is_available():
            parser.error('--device cuda requested but CUDA is not available')
        unknown = [u for u in args.upsamplers or [] if u not in known]
        if unknown:
            parser.error(f'unknown --upsamplers {unknown}; choose from {known}')
    return args


def write_report(report: Dict[str, Any], text: str, out_dir: str, stem: str) -> Dict[str, str]:
    """``report`` as ``{out_dir}/{stem}.json`` and its markdown ``text`` as ``{stem}.md``;
    the paths written."""
    os.makedirs(out_dir, exist_ok=True)
    paths = dict(markdown=os.path.join(out_dir, f'{stem}.md'),
                 json=os.path.join(out_dir, f'{stem}.json'))
    with open(paths['markdown'], 'w') as md_file:
        md_file.write(text)
    with open(paths['json'], 'w') as json_file:
        json.dump(report, json_file, indent=2)
    return paths


def main(argv=None) -> Dict[str, Any]:
    args = parse_args(argv)
    start = time.perf_counter()
    if args.command == 'layers':
        stem, run, markdown = 'benchmark', run_layers, markdown_table
    elif args.fig8:
        stem, run, markdown = 'fig8', run_fig8, fig8_markdown
    else:
        stem, run, markdown = 'models', run_models, models_markdown
    report = run(args)
    report['wall_seconds'] = round(time.perf_counter() - start, 1)
    text = markdown(report)
    paths = write_report(report, text, args.out_dir, stem)
    if args.command == 'layers' and not args.no_plots:
        paths.update(write_layer_plots(report, args.out_dir))
    elif args.command == 'models' and args.fig8:
        paths['plot'] = os.path.join(args.out_dir, 'fig8.png')
        plot_fig8(report, paths['plot'])
    print(text)
    print(f"took {report['wall_seconds']} s; wrote " + ', '.join(paths.values()))
    return report


if __name__ == '__main__':
    main(sys.argv[1:])
