"""The fused kernel's scratch memory does not grow with the thread count: the peak memory of a
forward + backward stays within 10 % of the reference path's at 2 and 16 threads (it was
1.03x / 1.42x / 2.71x at 2 / 16 / 64 threads at 1x256x128x128 with per-thread buffers)."""
import pytest
import torch
from fused_helpers import took_fused_path
from torch.profiler import ProfilerActivity, profile

from mmdysample.functional import dysample, init_sampling_positions
from mmdysample.ops import use_fused

pytestmark = pytest.mark.usefixtures('fused_extension', 'no_fused_env')


def peak_bytes(fn) -> int:
    """Largest running total of the CPU allocations made while ``fn()`` runs (the profiler
    sees every allocation through ATen's allocator, the kernel's scratch included)."""
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    live = peak = 0
    events = [e for e in prof.profiler.kineto_results.events() if e.name() == '[memory]']
    for event in sorted(events, key=lambda e: e.start_ns()):
        live += event.nbytes()
        peak = max(peak, live)
    return peak


@pytest.mark.parametrize('threads', [2, 16])
def test_forward_backward_peak_memory_is_the_reference_paths(threads):
    groups = 4
    x = torch.randn(1, 128, 64, 64, requires_grad=True)
    offset = torch.randn(1, 2 * groups * 4, 64, 64) * 0.3 + init_sampling_positions(2, groups)
    offset.requires_grad_()

    def step():
        out = dysample(x, offset, 2, groups)
        out.backward(torch.ones_like(out))
        x.grad = offset.grad = None
        return out

    torch.set_num_threads(threads)  # restored by the single_thread fixture
    assert took_fused_path(step())
    fused = peak_bytes(step)
    with use_fused(False):
        reference = peak_bytes(step)
    assert fused <= 1.1 * reference, (f'{threads} threads: fused {fused / 2**20:.1f} MiB, '
                                      f'reference {reference / 2**20:.1f} MiB')
