"""Time DySample layers with the fused kernel and with the reference path against bilinear.

    python -m mmdysample.ops.benchmark --threads 2 --repeats 30

Every round times each case once, in turn (interleaved, so that load from other processes
hits all cases alike); a case's ratio to bilinear ``F.interpolate`` is taken within each
round and the table shows the median ratio and its 25-75 % spread, plus median
milliseconds. ``best`` is the ratio of the fastest runs (the case's over bilinear's): on a
machine shared with other work, where a 2-thread parallel region can wait a whole scheduler
slice for its second thread, it estimates the unloaded ratio; ``cpu`` is the median ratio of
process CPU time (run with ``OMP_WAIT_POLICY=PASSIVE`` so that waiting threads sleep instead
of spinning and only work is counted). ``ref/fused`` is the median over rounds of the
reference path's time over the fused one's (the speed-up). ``--components`` adds the parts
of a DySample layer: the sampling op alone on precomputed offsets (``kernel``) and the 1x1
offset convolution (``offset conv``). Peak memory is the largest total of live CPU
allocations made during one call (torch profiler), inputs excluded. All on CPU, float32.
"""
import argparse
import os
import statistics
import time

import torch
import torch.nn.functional as F

from ..upsamplers import build_upsampler
from .extension import extension_available, use_fused
from .sampling import fused_dysample

SIZES = ('1x256x64x64', '2x256x128x128')
VARIANTS = ('DySample', 'DySample+')


def parse_size(text):
    dims = tuple(int(v) for v in text.lower().split('x'))
    if len(dims) != 4 or min(dims) < 1:
        raise argparse.ArgumentTypeError(f'size must look like BxCxHxW, got {text!r}')
    return dims


def peak_memory_bytes(fn):
    """Largest sum of live CPU allocations reached while ``fn()`` runs (profiler events)."""
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = [e for e in prof.profiler.kineto_results.events() if e.name() == '[memory]']
    live = peak = 0
    for event in sorted(events, key=lambda e: e.start_ns()):
        live += event.nbytes()
        peak = max(peak, live)
    return peak


def make_cases(size, variants, scale_factor, components=False):
    """{name: (forward, forward_backward)} closures, bilinear first."""
    B, C, H, W = size
    x = torch.randn(B, C, H, W)
    x_grad = x.clone().requires_grad_()
    grad_out = torch.randn(B, C, scale_factor * H, scale_factor * W)

    def bilinear_fwd():
        with torch.no_grad():
            F.interpolate(x, scale_factor=scale_factor, mode='bilinear', align_corners=False)

    def bilinear_fwd_bwd():
        F.interpolate(x_grad, scale_factor=scale_factor, mode='bilinear',
                      align_corners=False).backward(grad_out)

    cases = {'bilinear': (bilinear_fwd, bilinear_fwd_bwd)}
    for variant in variants:
        layer = build_upsampler(dict(type=variant), C, scale_factor)
        # trained-looking offsets (the init is ~N(0, 0.001)): some points cross pixels
        torch.nn.init.normal_(layer.offset.weight, std=0.05)
        for fused in (True, False):

            def fwd(layer=layer, fused=fused):
                with use_fused(fused), torch.no_grad():
                    layer(x)

            def fwd_bwd(layer=layer, fused=fused):
                with use_fused(fused):
                    layer(x_grad).backward(grad_out)

            cases[f'{variant} {"fused" if fused else "reference"}'] = (fwd, fwd_bwd)
        if components:
            with torch.no_grad():
                offset = layer.sampling_offsets(x)
            offset_grad = offset.clone().requires_grad_()
            groups = layer.groups

            def kernel_fwd(offset=offset, groups=groups):
                with torch.no_grad():
                    fused_dysample(x, offset, scale_factor, groups)

            def kernel_fwd_bwd(offset=offset_grad, groups=groups):
                fused_dysample(x_grad, offset, scale_factor, groups).backward(grad_out)

            def conv_fwd(layer=layer):
                with torch.no_grad():
                    layer.offset(x)

            def conv_fwd_bwd(layer=layer):
                layer.offset(x_grad).sum().backward()

            cases[f'{variant} kernel'] = (kernel_fwd, kernel_fwd_bwd)
            cases[f'{variant} offset conv'] = (conv_fwd, conv_fwd_bwd)
    return cases


def run(sizes, variants, repeats, warmup, scale_factor, memory=True, components=False):
    rows = []
    for size in sizes:
        cases = make_cases(size, variants, scale_factor, components)
        for mode_index, mode in enumerate(('forward', 'forward+backward')):
            times = {name: [] for name in cases}
            cpu_times = {name: [] for name in cases}
            for round_index in range(warmup + repeats):
                for name, fns in cases.items():
                    start, cpu_start = time.perf_counter(), time.process_time()
                    fns[mode_index]()
                    elapsed = time.perf_counter() - start
                    if round_index >= warmup:
                        times[name].append(elapsed)
                        cpu_times[name].append(time.process_time() - cpu_start)
            base = times['bilinear']
            for name, fns in cases.items():
                cpu_ratio = statistics.median(
                    t / b for t, b in zip(cpu_times[name], cpu_times['bilinear']))
                ratios = sorted(t / b for t, b in zip(times[name], base))
                quartiles = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else ratios * 3
                peak = peak_memory_bytes(fns[mode_index]) if memory else float('nan')
                speedup = float('nan')
                if name.endswith(' fused'):  # reference time / fused time, median over rounds
                    reference = times[name[:-len('fused')] + 'reference']
                    speedup = statistics.median(r / t for r, t in zip(reference, times[name]))
                rows.append(('x'.join(map(str, size)), mode, name,
                             statistics.median(times[name]) * 1e3, statistics.median(ratios),
                             quartiles[0], quartiles[-1], min(times[name]) / min(base),
                             cpu_ratio, speedup, peak / 2**20))
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--sizes', nargs='+', type=parse_size,
                        default=[parse_size(s) for s in SIZES])
    parser.add_argument('--variants', nargs='+', default=list(VARIANTS))
    parser.add_argument('--scale-factor', type=int, default=2)
    parser.add_argument('--threads', type=int, default=2)
    parser.add_argument('--repeats', type=int, default=30)
    parser.add_argument('--warmup', type=int, default=3)
    parser.add_argument('--no-memory', action='store_true', help='skip the peak-memory runs')
    parser.add_argument('--components', action='store_true',
                        help='also time the sampling op alone and the offset conv alone')
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(f'torch {torch.__version__}, {torch.get_num_threads()} threads, '
          f'fused kernel available: {extension_available()}')
    load_before = os.getloadavg()
    rows = run(args.sizes, args.variants, args.repeats, args.warmup, args.scale_factor,
               memory=not args.no_memory, components=args.components)
    print(f'load average (1, 5, 15 min) before: {load_before[0]:.2f} {load_before[1]:.2f} '
          f'{load_before[2]:.2f}, after: {os.getloadavg()[0]:.2f}')
    print(f'{"size":<14} {"mode":<17} {"case":<22} {"median ms":>10} {"x bilinear":>10} '
          f'{"(25-75%)":>11} {"best":>6} {"cpu":>6} {"ref/fused":>9} {"peak MiB":>9}')
    for size, mode, name, ms, ratio, low, high, best, cpu, speedup, peak in rows:
        speedup = '' if speedup != speedup else f'{speedup:.2f}'
        print(f'{size:<14} {mode:<17} {name:<22} {ms:>10.2f} {ratio:>10.2f} '
              f'{f"{low:.2f}-{high:.2f}":>11} {best:>6.2f} {cpu:>6.2f} {speedup:>9} '
              f'{peak:>9.1f}')


if __name__ == '__main__':
    main()
