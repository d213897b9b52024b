"""The reference path's gradients without autograd (mmdysample.ops.reference
.grid_sample_dysample_backward): autograd's values bit for bit; the custom ops' default
implementations (every device without the CPU kernel) running where autograd is off; the lean
reference sampling of ``dysample`` (what CUDA runs, and CPU with the kernel off)."""
import pytest
import torch
from fused_helpers import LEAN_SAMPLE_NODE, node_name

from mmdysample.functional import dysample, init_sampling_positions
from mmdysample.ops import sampling, use_fused
from mmdysample.ops.reference import grid_sample_dysample, grid_sample_dysample_backward

pytestmark = pytest.mark.usefixtures('no_fused_env')

CASES = [  # (batch, channels, height, width, scale, groups)
    (2, 8, 5, 7, 2, 1), (1, 12, 7, 3, 3, 4), (2, 16, 1, 5, 2, 2), (0, 8, 4, 5, 2, 2),
    (2, 256, 24, 30, 2, 4)]


def inputs(case, dtype):
    B, C, H, W, s, g = case
    x = torch.randn(B, C, H, W, dtype=dtype)
    # offsets of a few pixels: many points beyond the borders (clamped, zero gradient)
    offset = (torch.randn(B, 2 * g * s * s, H, W, dtype=dtype) * 1.5
              + init_sampling_positions(s, g, dtype=dtype))
    grad_out = torch.randn(B, C, s * H, s * W, dtype=dtype)
    return x, offset, grad_out


def autograd_gradients(x, offset, grad_out, s, g):
    x, offset = x.clone().requires_grad_(), offset.clone().requires_grad_()
    grid_sample_dysample(x, offset, s, g).backward(grad_out)
    return x.grad, offset.grad


@pytest.mark.parametrize('dtype', [torch.float32, torch.float64])
@pytest.mark.parametrize('case', CASES)
def test_backward_is_autograds_bit_for_bit(case, dtype):
    s, g = case[4:]
    x, offset, grad_out = inputs(case, dtype)
    expected = autograd_gradients(x, offset, grad_out, s, g)
    with torch.no_grad():
        grads = grid_sample_dysample_backward(grad_out, x, offset, s, g, True, True)
    for got, want in zip(grads, expected):
        assert got.shape == want.shape and torch.equal(got, want)
    # learned offsets and the initial positions apart (the lean layer's form)
    init_pos = init_sampling_positions(s, g, dtype=dtype)
    learned = offset - init_pos
    expected = autograd_gradients(x, learned + init_pos, grad_out, s, g)
    with torch.no_grad():
        grads = grid_sample_dysample_backward(grad_out, x, learned, s, g, True, True, init_pos)
    assert all(torch.equal(a, b) for a, b in zip(grads, expected))
    # one gradient at a time
    only_x = grid_sample_dysample_backward(grad_out, x, offset, s, g, True, False)
    only_offset = grid_sample_dysample_backward(grad_out, x, offset, s, g, False, True)
    assert only_x[1] is None and only_offset[0] is None


def test_default_op_implementations_work_where_autograd_is_off():
    """The ops' default implementations run inside the dispatcher, below autograd (a CUDA
    tensor's call): registered as the only implementation of test ops, called on CPU tensors,
    they give autograd's values, and the CPU kernel's up to float rounding. (The former
    default backward called torch.autograd.grad there: 'element 0 of tensors does not require
    grad'.)"""
    forward = torch.library.custom_op('mmdysample_test::sample_default',
                                      sampling._sample_reference, mutates_args=())
    backward = torch.library.custom_op('mmdysample_test::sample_backward_default',
                                       sampling._sample_backward_reference, mutates_args=())
    x, offset, grad_out = inputs((2, 16, 5, 7, 2, 2), torch.float32)
    x.requires_grad_()  # the dispatcher drops below autograd all the same
    out = forward(x, offset, 2, 2)
    assert torch.equal(out, grid_sample_dysample(x, offset, 2, 2))
    grad_x, grad_offset = backward(grad_out, x, offset, 2, 2, True, True)
    expected = autograd_gradients(x.detach(), offset, grad_out, 2, 2)
    assert torch.equal(grad_x, expected[0]) and torch.equal(grad_offset, expected[1])
    assert backward(grad_out, x, offset, 2, 2, False, True)[0].numel() == 0
    kernel = torch.ops.mmdysample.dysample_sample_backward(grad_out, x, offset, 2, 2, True, True)
    torch.testing.assert_close(grad_x, kernel[0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(grad_offset, kernel[1], rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize('dtype', [torch.float32, torch.float64])
def test_lean_sampling_is_the_compositions(dtype):
    """``dysample`` without the kernel: the lean reference sampling, output and gradients
    equal to autograd's through the composition."""
    x, offset, grad_out = inputs((2, 24, 9, 11, 2, 3), dtype)
    xi, oi = x.clone().requires_grad_(), offset.clone().requires_grad_()
    with use_fused(False):
        out = dysample(xi, oi, 2, 3)
    assert node_name(out) == LEAN_SAMPLE_NODE
    assert torch.equal(out, grid_sample_dysample(x, offset, 2, 3))
    out.backward(grad_out)
    expected = autograd_gradients(x, offset, grad_out, 2, 3)
    assert torch.equal(xi.grad, expected[0]) and torch.equal(oi.grad, expected[1])


@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16])
def test_lean_sampling_of_half_precision_saves_the_feature_not_its_float32_copy(dtype):
    """A float16/bfloat16 feature at float32 positions: the float32 computation on the rounded
    input, rounded once (forward and gradients), while autograd keeps only the feature itself
    (the float32 copy and the grid are recomputed in the backward)."""
    x = torch.randn(2, 8, 5, 6).to(dtype)
    offset = torch.randn(2, 2 * 2 * 4, 5, 6)
    xi, oi = x.clone().requires_grad_(), offset.clone().requires_grad_()
    saved = []
    with use_fused(False), torch.autograd.graph.saved_tensors_hooks(
            lambda t: saved.append((t.dtype, tuple(t.shape))) or t, lambda t: t):
        out = dysample(xi, oi, 2, 2)
    assert sorted(saved, key=str) == sorted([(dtype, (2, 8, 5, 6)),
                                             (torch.float32, tuple(offset.shape))], key=str)
    x32, o32 = x.float().requires_grad_(), offset.clone().requires_grad_()
    expected = grid_sample_dysample(x32, o32, 2, 2)
    assert out.dtype == dtype and torch.equal(out, expected.to(dtype))
    grad = torch.randn(out.shape).to(dtype)
    out.backward(grad)
    expected.backward(grad.float())
    assert xi.grad.dtype == dtype and torch.equal(xi.grad, x32.grad.to(dtype))
    assert torch.equal(oi.grad, o32.grad)


def test_lean_sampling_double_backward():
    x = torch.randn(1, 4, 3, 4, dtype=torch.float64, requires_grad=True)
    offset = (torch.randn(1, 2 * 2 * 4, 3, 4, dtype=torch.float64) * 0.4).requires_grad_()

    def fn(x, offset):
        with use_fused(False):
            return dysample(x, offset, 2, 2)

    assert node_name(fn(x, offset)) == LEAN_SAMPLE_NODE
    assert torch.autograd.gradcheck(fn, (x, offset))
    assert torch.autograd.gradgradcheck(fn, (x, offset), fast_mode=True)
