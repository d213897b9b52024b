"""Peak memory of a training step (forward + backward).

* The fused kernel's scratch memory does not grow with the thread count: the peak stays within
  10 % of the reference path's at 2 and 16 threads (it was 1.03x / 1.42x / 2.71x at 2 / 16 /
  64 threads at 1x256x128x128 with per-thread buffers).
* The composed path (what CUDA and every device without the fused kernel run, and CPU with
  ``MMDYSAMPLE_FUSED=0``) is the lean layer: at most 1.15x bilinear interpolation's peak for
  every variant, where autograd through the composition of the same operators held 1.40x.
"""
import pytest
import torch
from fused_helpers import (LEAN_LAYER_NODE, VARIANTS, bilinear, composition, node_name,
                           peak_bytes, took_fused_path, training_step_peak)

from mmdysample.functional import dysample, init_sampling_positions
from mmdysample.ops import use_fused
from mmdysample.upsamplers import build_upsampler

pytestmark = pytest.mark.usefixtures('fused_extension', 'no_fused_env')


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


# The composed path's peak over bilinear's (its output and input gradient), 1 thread. At the
# performance target's 2x256x128x128 (python tools/benchmark.py, docs/performance.md) it is
# 1.075 / 1.076 / 1.150 / 1.150 (DySample / + / -S / -S+); here at 1x256x64x64, where the same
# ratios hold up to parameter-sized tensors alive at the peak (the stacked projection weights,
# their gradient, the batch's weight-gradient products: 1.151 for DySample-S+), which the limit
# allows for.
COMPOSED_MEMORY_LIMIT = 1.15


@pytest.mark.parametrize('name', VARIANTS)
def test_composed_path_training_step_peak_memory_against_bilinear(name):
    x = torch.randn(1, 256, 64, 64, requires_grad=True)
    grad_out = torch.randn(1, 256, 128, 128)
    layer = build_upsampler(dict(type=name), 256, 2)

    def lean(x):
        with use_fused(False):
            out = layer(x)
        assert node_name(out) == LEAN_LAYER_NODE
        return out

    base = training_step_peak(bilinear, x, grad_out)
    peak = training_step_peak(lean, x, grad_out, layer)
    parameter_bytes = sum(p.numel() * p.element_size() for p in layer.parameters())
    assert peak <= COMPOSED_MEMORY_LIMIT * base + 4 * parameter_bytes, peak / base
    # autograd through the same operators holds two more input-sized gradients (1.40x)
    autograd = training_step_peak(lambda x: composition(layer, x), x, grad_out, layer)
    assert autograd - peak >= 0.2 * base
