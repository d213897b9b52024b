"""The fused DySample kernel against the reference ``grid_sample`` path: outputs, gradients
wrt the input and the offsets, every layer variant, scales 2-4, odd sizes, border-hitting
offsets, batch 1 and 2, memory layouts and dtypes."""
import pytest
import torch
from fused_helpers import took_fused_path

from mmdysample.functional import dysample, init_sampling_positions
from mmdysample.ops import fused_dysample, use_fused
from mmdysample.upsamplers import build_upsampler

pytestmark = pytest.mark.usefixtures('fused_extension', 'no_fused_env')

def assert_relative_close(actual, expected, rel=1e-5, what=''):
    """Elementwise ``rel`` relative tolerance with an absolute floor of ``rel`` times the
    tensor's largest magnitude (sums that cancel to ~0 have no meaningful relative error)."""
    scale = expected.abs().max().item()
    torch.testing.assert_close(actual, expected, rtol=rel, atol=rel * max(scale, 1e-30),
                               msg=lambda m: f'{what}: {m}')


def sample_both(x, offset, scale, groups, grad_out=None):
    """(output, grad x, grad offset) of the fused and the reference path, same inputs."""
    results = []
    for fused in (True, False):
        xi = x.detach().clone().requires_grad_()
        oi = offset.detach().clone().requires_grad_()
        with use_fused(fused):
            y = dysample(xi, oi, scale, groups)
        assert took_fused_path(y) == fused
        if grad_out is None:
            torch.manual_seed(123)
            grad_out = torch.randn_like(y)
        y.backward(grad_out)
        results.append((y.detach(), xi.grad, oi.grad))
    return results


def border_fraction(offset, scale, groups, height, width):
    """Fraction of sampling points whose source coordinate is clamped to the border."""
    half = groups * scale * scale
    cols = torch.arange(width, dtype=offset.dtype).view(1, 1, 1, width)
    rows = torch.arange(height, dtype=offset.dtype).view(1, 1, height, 1)
    x = offset[:, :half] + cols
    y = offset[:, half:] + rows
    clamped = (x <= 0) | (x >= width - 1) | (y <= 0) | (y >= height - 1)
    return clamped.double().mean().item()


@pytest.mark.parametrize('scale', [2, 3, 4])
@pytest.mark.parametrize('shape,groups', [((1, 8, 5, 7), 1), ((2, 12, 7, 3), 4),
                                          ((2, 16, 1, 5), 2), ((1, 40, 6, 1), 8),
                                          ((2, 36, 9, 11), 3)])
def test_functional_matches_reference_fp32(scale, shape, groups):
    B, C, H, W = shape
    x = torch.randn(B, C, H, W)
    # offsets up to a few pixels: many points land beyond the map (border padding)
    offset = torch.randn(B, 2 * groups * scale * scale, H, W) * 1.5
    offset += init_sampling_positions(scale, groups)
    assert border_fraction(offset, scale, groups, H, W) > 0.2
    (y, gx, go), (ry, rgx, rgo) = sample_both(x, offset, scale, groups)
    assert y.shape == (B, C, scale * H, scale * W) and y.is_contiguous()
    assert_relative_close(y, ry, what='output')
    assert_relative_close(gx, rgx, what='grad x')
    assert_relative_close(go, rgo, what='grad offset')


@pytest.mark.parametrize('scale', [2, 3, 4])
def test_offsets_on_pixel_grid_and_exact_borders(scale):
    """Source coordinates exactly on integers and on the borders (0 and size - 1): where
    floor, the clamp and its zero derivative switch; the fused kernel must switch alike."""
    B, C, H, W, groups = 2, 8, 4, 8, 2  # powers of two: 2 / W normalisation rounds exactly
    x = torch.randn(B, C, H, W)
    steps = torch.randint(-12, 13, (B, 2 * groups * scale * scale, H, W))
    offset = steps.float() * 0.5  # half-pixel steps: coordinates j + offset on x.0 / x.5
    (y, gx, go), (ry, rgx, rgo) = sample_both(x, offset, scale, groups)
    assert_relative_close(y, ry, what='output')
    assert_relative_close(gx, rgx, what='grad x')
    assert_relative_close(go, rgo, what='grad offset')
    # the clamped points got exactly zero offset gradient, as in grid_sample
    half = groups * scale * scale
    x_coord = offset[:, :half] + torch.arange(W).view(1, 1, 1, W)
    beyond = (x_coord <= 0) | (x_coord >= W - 1)
    assert beyond.any()
    assert (go[:, :half][beyond] == 0).all()


@pytest.mark.parametrize('variant', ['DySample', 'DySample+', 'DySample-S', 'DySample-S+'])
@pytest.mark.parametrize('scale', [2, 3, 4])
@pytest.mark.parametrize('batch', [1, 2])
def test_layers_match_reference(variant, scale, batch):
    """Whole layers (offset convs, scope, sampling): output and gradients of the input and
    of every parameter agree between the fused and the reference path."""
    channels = 8 * scale * scale if variant.startswith('DySample-S') else 16
    layer = build_upsampler(dict(type=variant), channels, scale)
    torch.nn.init.normal_(layer.offset.weight, std=0.5)  # far-reaching, border-hitting points
    if layer.dyscope:
        torch.nn.init.normal_(layer.scope.weight, std=0.5)
    x = torch.randn(batch, channels, 7, 5)
    results = []
    for fused in (True, False):
        layer.zero_grad()
        xi = x.clone().requires_grad_()
        with use_fused(fused):
            y = layer(xi)
        torch.manual_seed(7)
        y.backward(torch.randn_like(y))
        grads = {name: p.grad.clone() for name, p in layer.named_parameters()}
        results.append((y.detach(), xi.grad, grads))
    (y, gx, grads), (ry, rgx, rgrads) = results
    with torch.no_grad():
        offset = layer.sampling_offsets(x)
    assert border_fraction(offset, scale, layer.groups, 7, 5) > 0.05
    assert_relative_close(y, ry, what='output')
    assert_relative_close(gx, rgx, what='grad x')
    assert grads.keys() == rgrads.keys() and 'offset.weight' in grads
    for name in grads:
        assert_relative_close(grads[name], rgrads[name], what=f'grad {name}')


@pytest.mark.parametrize('scale,groups,shape', [(2, 1, (1, 3, 4, 5)), (3, 2, (2, 4, 3, 4)),
                                                (4, 1, (1, 2, 3, 1)), (2, 3, (2, 6, 1, 3))])
def test_gradcheck_fp64(scale, groups, shape):
    B, C, H, W = shape
    x = torch.randn(B, C, H, W, dtype=torch.float64, requires_grad=True)
    offset = torch.randn(B, 2 * groups * scale * scale, H, W, dtype=torch.float64)
    offset = (offset * 0.8).requires_grad_()  # some points beyond the borders
    assert border_fraction(offset.detach(), scale, groups, H, W) > 0.1
    fn = lambda a, o: fused_dysample(a, o, scale, groups)  # noqa: E731
    assert took_fused_path(fn(x, offset))
    assert torch.autograd.gradcheck(fn, (x, offset), eps=1e-6, atol=1e-7, rtol=1e-5)


@pytest.mark.parametrize('channels,groups', [(12, 3), (24, 3), (80, 2)])  # 4/8/16-wide blocks
def test_fp64_matches_reference_to_rounding(channels, groups):
    x = torch.randn(2, channels, 9, 7, dtype=torch.float64)
    offset = torch.randn(2, 2 * groups * 9, 9, 7, dtype=torch.float64) * 2
    (y, gx, go), (ry, rgx, rgo) = sample_both(x, offset, 3, groups)
    assert_relative_close(y, ry, rel=1e-12, what='output')
    assert_relative_close(gx, rgx, rel=1e-12, what='grad x')
    assert_relative_close(go, rgo, rel=1e-12, what='grad offset')


def test_channels_last_and_non_contiguous_inputs():
    B, C, H, W, s, g = 2, 24, 7, 9, 2, 4
    base = torch.randn(B, C, H, W)
    offset = torch.randn(B, 2 * g * s * s, H, W) * 1.5
    expected = sample_both(base, offset, s, g)[1]
    layouts = {
        'channels_last': base.contiguous(memory_format=torch.channels_last),
        'channel slice': torch.randn(B, 2 * C, H, W)[:, ::2].copy_(base),
        'transposed HW': base.transpose(2, 3).contiguous().transpose(2, 3),
    }
    odd_offset = torch.randn(W, H, B, 2 * g * s * s).permute(2, 3, 1, 0).copy_(offset)
    assert not odd_offset.is_contiguous()
    for name, x in layouts.items():
        torch.testing.assert_close(x, base, rtol=0, atol=0)
        for off in (offset, odd_offset):
            xi = x.detach().requires_grad_()
            oi = off.detach().requires_grad_()
            y = dysample(xi, oi, s, g)
            assert took_fused_path(y), name
            torch.manual_seed(123)
            grad_out = torch.randn_like(y)
            y.backward(grad_out.contiguous(memory_format=torch.channels_last))
            assert_relative_close(y.detach(), expected[0], what=f'{name} output')
            assert_relative_close(xi.grad, expected[1], what=f'{name} grad x')
            assert_relative_close(oi.grad, expected[2], what=f'{name} grad offset')


@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16])
def test_half_precision_is_sampled_in_float32(dtype):
    """A float16/bfloat16 feature is sampled at float32 positions by the fused kernel and the
    result rounded once: the float32 computation on the rounded inputs, rounded."""
    x = torch.randn(2, 8, 5, 6).to(dtype).requires_grad_()
    offset = torch.randn(2, 2 * 2 * 4, 5, 6).to(dtype).requires_grad_()
    y = dysample(x, offset, 2, 2)
    assert y.dtype == dtype
    x32 = x.detach().float().requires_grad_()
    offset32 = offset.detach().float().requires_grad_()
    y32 = dysample(x32, offset32, 2, 2)
    assert took_fused_path(y32)
    torch.testing.assert_close(y, y32.to(dtype), atol=0, rtol=0)
    grad = torch.randn_like(y32)
    y.backward(grad.to(dtype))
    y32.backward(grad.to(dtype).float())
    assert x.grad.dtype == dtype and offset.grad.dtype == dtype
    torch.testing.assert_close(x.grad, x32.grad.to(dtype), atol=0, rtol=0)
    torch.testing.assert_close(offset.grad, offset32.grad.to(dtype), atol=0, rtol=0)


def test_mixed_dtypes_sample_in_float64():
    x = torch.randn(1, 4, 3, 3, requires_grad=True)
    offset = torch.randn(1, 8, 3, 3, dtype=torch.float64)
    y = dysample(x, offset, 2, 1)
    assert y.dtype == torch.float32
    expected = dysample(x.detach().double(), offset, 2, 1)
    torch.testing.assert_close(y, expected.float(), atol=0, rtol=0)


def test_no_grad_and_partial_grad():
    x = torch.randn(1, 8, 4, 5)
    offset = torch.randn(1, 8, 4, 5)
    with torch.no_grad():
        y = dysample(x, offset, 2, 1)
    with use_fused(False), torch.no_grad():
        ref = dysample(x, offset, 2, 1)
    assert_relative_close(y, ref)
    # gradient wanted for the offsets only, then for the input only
    for wants_x in (False, True):
        xi = x.clone().requires_grad_(wants_x)
        oi = offset.clone().requires_grad_(not wants_x)
        y = dysample(xi, oi, 2, 1)
        assert took_fused_path(y)
        y.sum().backward()
        with use_fused(False):
            xr = x.clone().requires_grad_(wants_x)
            orf = offset.clone().requires_grad_(not wants_x)
            dysample(xr, orf, 2, 1).sum().backward()
        got, want = (xi.grad, xr.grad) if wants_x else (oi.grad, orf.grad)
        assert_relative_close(got, want)
        assert (oi.grad if wants_x else xi.grad) is None


def test_large_channel_count_and_partial_blocks():
    """Group widths that are not multiples of the kernel's channel blocks (8 / 16 / 32)."""
    for C, g in ((200, 4), (21, 3), (100, 1), (36, 3), (8, 1)):
        x = torch.randn(1, C, 6, 5)
        offset = torch.randn(1, 2 * g * 4, 6, 5)
        (y, gx, go), (ry, rgx, rgo) = sample_both(x, offset, 2, g)
        assert_relative_close(y, ry, what=f'C={C} output')
        assert_relative_close(gx, rgx, what=f'C={C} grad x')
        assert_relative_close(go, rgo, what=f'C={C} grad offset')


def test_double_backward_matches_reference():
    """create_graph=True (gradient penalties): the fused op's gradients are differentiable and
    their own gradients agree with the reference path's."""
    x = torch.randn(2, 8, 4, 5)
    offset = torch.randn(2, 2 * 2 * 4, 4, 5)
    results = []
    for fused in (True, False):
        xi = x.clone().requires_grad_()
        oi = offset.clone().requires_grad_()
        with use_fused(fused):
            y = dysample(xi, oi, 2, 2)
        assert took_fused_path(y) == fused
        grad_x, grad_offset = torch.autograd.grad(y.pow(2).sum(), (xi, oi), create_graph=True)
        (grad_x.pow(2).sum() + grad_offset.sin().sum()).backward()
        results.append((grad_x.detach(), grad_offset.detach(), xi.grad, oi.grad))
    for name, got, want in zip(('grad x', 'grad offset', 'grad2 x', 'grad2 offset'), *results):
        assert_relative_close(got, want, what=name)



@pytest.mark.parametrize('threads', [1, 2, 3])
@pytest.mark.parametrize('batch,channels,groups', [(1, 96, 2), (1, 160, 1), (2, 64, 4),
                                                   (2, 12, 3)])
def test_thread_partitioning(threads, batch, channels, groups):
    """Work split over threads (per-thread buffers; the backward splits a group's channel
    blocks when batch x groups cannot keep the threads busy): same results whatever the
    thread count, and the same as the reference."""
    torch.set_num_threads(threads)
    x = torch.randn(batch, channels, 9, 10)
    offset = torch.randn(batch, 2 * groups * 9, 9, 10) * 2
    (y, gx, go), (ry, rgx, rgo) = sample_both(x, offset, 3, groups)
    assert_relative_close(y, ry, what='output')
    assert_relative_close(gx, rgx, what='grad x')
    assert_relative_close(go, rgo, what='grad offset')


def test_kernel_uses_the_threads():
    """The extension is built with OpenMP: with 2 threads, two threads do the work."""
    import glob
    if not glob.glob('/proc/self/task'):
        pytest.skip('needs /proc to count per-thread CPU time')

    def ticks():
        result = {}
        for task in glob.glob('/proc/self/task/*'):
            try:
                with open(f'{task}/stat') as stat:
                    fields = stat.read().rsplit(')', 1)[-1].split()
            except FileNotFoundError:  # a thread (e.g. of an earlier test) that just ended
                continue
            result[task] = int(fields[11]) + int(fields[12])
        return result

    torch.set_num_threads(2)
    x = torch.randn(2, 64, 96, 96)
    offset = torch.randn(2, 2 * 4 * 4, 96, 96)
    with torch.no_grad():
        fused_dysample(x, offset, 2, 4)
        before = ticks()
        for _ in range(20):
            fused_dysample(x, offset, 2, 4)
        after = ticks()
    busy = [after[t] - before.get(t, 0) for t in after]
    assert sum(tick > 0.2 * max(busy) for tick in busy) >= 2, busy


@pytest.mark.parametrize('dtype', [torch.float32, torch.float64])
def test_forward_is_bit_identical(dtype):
    """The kernel rounds the sampling coordinates step by step as the reference path does
    (its FMA use is probed once per dtype), so forward outputs are equal, not just close;
    the border clamp then switches at exactly the same offsets."""
    for scale, (B, C, H, W, g) in ((2, (1, 8, 5, 7, 1)), (3, (2, 64, 9, 6, 2)),
                                   (4, (2, 48, 7, 7, 8))):
        x = torch.randn(B, C, H, W, dtype=dtype)
        offset = torch.randn(B, 2 * g * scale * scale, H, W, dtype=dtype) * 3
        y = dysample(x, offset, scale, g)
        with use_fused(False):
            expected = dysample(x, offset, scale, g)
        assert torch.equal(y, expected)
