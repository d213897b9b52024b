"""mmdysample.functional against hand-written numbers and independent computations."""
import math

import pytest
import torch
import torch.nn.functional as F

from mmdysample.functional import (carafe, check_feature, check_scale_factor, dysample,
                                   dysample_to_size, init_sampling_positions, sampling_grid)
from mmdysample.ops import use_fused

from .reference_carafe import carafe_naive
from .reference_dysample import (dysample_scalar_loop, dysample_to_size_scalar_loop,
                                 reference_init_pos)


def random_offsets(batch, groups, scale, height, width, std, dtype=torch.float64):
    """Offsets relative to the pixel centres: bilinear initial positions plus noise."""
    noise = torch.randn(batch, 2 * groups * scale * scale, height, width, dtype=dtype) * std
    return noise + init_sampling_positions(scale, groups, dtype=dtype)


def min_distance_to_kink(offset, scale, groups, height, width):
    """Smallest distance of any sampling index ``j + dx`` / ``i + dy`` to an integer: where
    bilinear sampling (and its border clamp) is not differentiable."""
    half = groups * scale * scale
    cols = torch.arange(width, dtype=offset.dtype).view(1, 1, 1, width)
    rows = torch.arange(height, dtype=offset.dtype).view(1, 1, height, 1)
    indices = torch.cat([offset[:, :half] + cols, offset[:, half:] + rows], dim=1)
    return (indices - indices.round()).abs().min().item()


# ---------------------------------------------------------------- init_sampling_positions

def test_init_positions_scale2_bilinear_hand_written():
    positions = init_sampling_positions(2, groups=1)
    assert positions.shape == (1, 8, 1, 1)
    assert positions.dtype == torch.float32
    # [x: (row 0: col 0, col 1), (row 1: col 0, col 1)] then the same for y
    expected = [-0.25, 0.25, -0.25, 0.25, -0.25, -0.25, 0.25, 0.25]
    assert positions.flatten().tolist() == expected


def test_init_positions_scale3_two_groups_hand_written():
    third = 1 / 3
    x_block = [-third, 0, third] * 3
    y_block = [-third] * 3 + [0] * 3 + [third] * 3
    expected = torch.tensor(x_block * 2 + y_block * 2, dtype=torch.float64)
    positions = init_sampling_positions(3, groups=2, dtype=torch.float64)
    assert positions.shape == (1, 36, 1, 1)
    torch.testing.assert_close(positions.flatten(), expected, atol=1e-15, rtol=0)


@pytest.mark.parametrize('scale', [2, 3, 4, 5])
@pytest.mark.parametrize('groups', [1, 2, 4])
@pytest.mark.parametrize('init', ['bilinear', 'nearest'])
def test_init_positions_match_reference(scale, groups, init):
    positions = init_sampling_positions(scale, groups, init, dtype=torch.float64)
    torch.testing.assert_close(positions, reference_init_pos(scale, groups, init), atol=1e-15,
                               rtol=0)


def test_init_positions_nearest_are_zero_and_follow_dtype():
    positions = init_sampling_positions(4, groups=3, init='nearest', dtype=torch.float16)
    assert positions.dtype == torch.float16
    assert positions.shape == (1, 96, 1, 1)
    assert not positions.any()


@pytest.mark.parametrize('kwargs, exc, words', [
    (dict(scale_factor=2, init='bicubic'), ValueError, ['init', "'bilinear', 'nearest'"]),
    (dict(scale_factor=2, groups=0), ValueError, ['groups', 'positive integer']),
    (dict(scale_factor=1), ValueError, ['scale_factor', 'integer >= 2']),
])
def test_init_positions_reject_bad_arguments(kwargs, exc, words):
    with pytest.raises(exc) as info:
        init_sampling_positions(**kwargs)
    for word in words:
        assert word in str(info.value)


# ------------------------------------------------------------------------- checks

@pytest.mark.parametrize('value, expected', [(2, 2), (3, 3), (4.0, 4), (8, 8)])
def test_check_scale_factor_accepts_integers(value, expected):
    result = check_scale_factor(value)
    assert result == expected and type(result) is int


@pytest.mark.parametrize('value, exc', [(1.5, ValueError), (2.5, ValueError), (1, ValueError),
                                        (0, ValueError), (-2, ValueError), (True, TypeError),
                                        ('2', TypeError), (None, TypeError)])
def test_check_scale_factor_rejects(value, exc):
    with pytest.raises(exc, match=r'scale_factor must be an integer >= 2'):
        check_scale_factor(value)


def test_check_feature_messages():
    with pytest.raises(TypeError, match=r'feat must be a torch.Tensor of shape \(B, C, H, W\)'):
        check_feature([[1.0]], 'feat')
    with pytest.raises(ValueError, match=r'feat must be a 4-D tensor .* got shape \(3, 4, 5\)'):
        check_feature(torch.zeros(3, 4, 5), 'feat')
    with pytest.raises(ValueError, match=r'feat must have 8 channels .* got shape \(1, 6, 2, 2\)'):
        check_feature(torch.zeros(1, 6, 2, 2), 'feat', channels=8)
    check_feature(torch.zeros(1, 8, 2, 2), 'feat', channels=8)


# ---------------------------------------------------------------------- dysample

@pytest.mark.parametrize('scale', [2, 3])
@pytest.mark.parametrize('groups', [1, 2])
def test_dysample_matches_scalar_bilinear_loop(scale, groups):
    batch, channels, height, width = 2, 4, 3, 5
    x = torch.randn(batch, channels, height, width, dtype=torch.float64)
    # std 1.5 pixels: many points fall outside the map and must take the border values
    offset = random_offsets(batch, groups, scale, height, width, std=1.5)
    out = dysample(x, offset, scale, groups)
    assert out.shape == (batch, channels, scale * height, scale * width)
    assert out.dtype == torch.float64
    torch.testing.assert_close(out, dysample_scalar_loop(x, offset, scale, groups), atol=1e-12,
                               rtol=0)
    # float32 follows to float rounding
    out32 = dysample(x.float(), offset.float(), scale, groups)
    assert out32.dtype == torch.float32
    torch.testing.assert_close(out32.double(), out, atol=2e-5, rtol=0)


@pytest.mark.parametrize('groups', [1, 2])
def test_dysample_of_coordinate_ramps_returns_clamped_sampling_positions(groups):
    """Bilinear interpolation reproduces linear functions exactly, so sampling the maps
    ``column index`` and ``row index`` returns the (border-clamped) sampling positions."""
    scale, height, width = 3, 4, 6
    cols = torch.arange(width, dtype=torch.float64).expand(height, width)
    rows = torch.arange(height, dtype=torch.float64).view(height, 1).expand(height, width)
    x = torch.stack([cols, rows] * groups).unsqueeze(0)  # group k holds channels 2k, 2k+1
    offset = random_offsets(1, groups, scale, height, width, std=2.0)
    out = dysample(x, offset, scale, groups)
    half = groups * scale * scale
    for group in range(groups):
        for out_row in range(scale * height):
            row, sub_row = divmod(out_row, scale)
            for out_col in range(scale * width):
                col, sub_col = divmod(out_col, scale)
                channel = group * scale * scale + sub_row * scale + sub_col
                index_x = col + offset[0, channel, row, col].item()
                index_y = row + offset[0, half + channel, row, col].item()
                assert out[0, 2 * group, out_row, out_col].item() == pytest.approx(
                    min(max(index_x, 0), width - 1), abs=1e-12)
                assert out[0, 2 * group + 1, out_row, out_col].item() == pytest.approx(
                    min(max(index_y, 0), height - 1), abs=1e-12)


@pytest.mark.parametrize('scale', [2, 3, 4])
def test_dysample_at_bilinear_initial_positions_is_bilinear_interpolation(scale):
    x = torch.randn(2, 6, 5, 7, dtype=torch.float64)
    offset = init_sampling_positions(scale, 3, dtype=torch.float64).expand(2, -1, 5, 7)
    expected = F.interpolate(x, scale_factor=scale, mode='bilinear', align_corners=False)
    torch.testing.assert_close(dysample(x, offset, scale, 3), expected, atol=1e-12, rtol=0)


@pytest.mark.parametrize('scale', [2, 3, 4])
def test_dysample_at_pixel_centres_is_nearest_interpolation(scale):
    x = torch.randn(1, 4, 5, 3)
    offset = torch.zeros(1, 2 * 2 * scale * scale, 5, 3)
    expected = x.repeat_interleave(scale, dim=2).repeat_interleave(scale, dim=3)
    torch.testing.assert_close(dysample(x, offset, scale, 2), expected, atol=1e-6, rtol=0)


def test_dysample_groups_sample_their_own_channels_only():
    """Moving group 1's points must not change group 0's output channels."""
    x = torch.randn(1, 4, 4, 4)
    offset = random_offsets(1, 2, 2, 4, 4, std=0.5, dtype=torch.float32)
    moved = offset.clone()
    moved[:, 4:8] += 1.0  # x offsets of group 1
    moved[:, 12:16] -= 0.7  # y offsets of group 1
    before, after = dysample(x, offset, 2, 2), dysample(x, moved, 2, 2)
    torch.testing.assert_close(before[:, :2], after[:, :2], atol=0, rtol=0)
    assert (before[:, 2:] - after[:, 2:]).abs().max() > 0.1


def test_dysample_output_dtype_is_the_input_dtype():
    x = torch.randn(1, 2, 3, 3)
    offset = random_offsets(1, 1, 2, 3, 3, std=0.3)  # float64
    out = dysample(x, offset, 2, 1)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out.double(), dysample_scalar_loop(x, offset, 2, 1), atol=1e-5,
                               rtol=0)


def test_sampling_grid_normalises_by_width_and_height():
    scale, groups, height, width = 2, 2, 3, 5
    offset = random_offsets(2, groups, scale, height, width, std=0.7)
    grid = sampling_grid(offset, scale, groups)
    assert grid.shape == (2 * groups, scale * height, scale * width, 2)
    half = groups * scale * scale
    for n in range(2):
        for group in range(groups):
            for out_row in range(scale * height):
                row, sub_row = divmod(out_row, scale)
                for out_col in range(scale * width):
                    col, sub_col = divmod(out_col, scale)
                    channel = group * scale * scale + sub_row * scale + sub_col
                    centre_x = col + 0.5 + offset[n, channel, row, col].item()
                    centre_y = row + 0.5 + offset[n, half + channel, row, col].item()
                    got = grid[n * groups + group, out_row, out_col].tolist()
                    assert got == pytest.approx([2 * centre_x / width - 1,
                                                 2 * centre_y / height - 1], abs=1e-12)


def test_dysample_gradcheck_wrt_input_and_offset():
    scale, groups, height, width = 2, 2, 2, 3
    x = torch.randn(1, 2, height, width, dtype=torch.float64, requires_grad=True)
    # points away from the integer indices where bilinear sampling has kinks (and the border
    # clamp at 0 and W-1) so that finite differences see one linear piece: redraw (from the
    # seeded RNG, so deterministically) until every point is at least 1e-3 from a kink
    for _ in range(100):
        offset = random_offsets(1, groups, scale, height, width, std=1.0)
        if min_distance_to_kink(offset, scale, groups, height, width) > 1e-3:
            break
    assert min_distance_to_kink(offset, scale, groups, height, width) > 1e-3
    offset.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda a, b: dysample(a, b, scale, groups), (x, offset),
                                    eps=1e-6, atol=1e-7)


def test_dysample_gradient_is_zero_for_clamped_offsets():
    """Points beyond the border read the border value: moving them further changes nothing."""
    x = torch.randn(1, 1, 3, 3, dtype=torch.float64)
    offset = torch.full((1, 8, 3, 3), 10.0, dtype=torch.float64, requires_grad=True)
    dysample(x, offset, 2, 1).sum().backward()
    assert not offset.grad.any()
    torch.testing.assert_close(dysample(x, offset.detach(), 2, 1),
                               x[:, :, 2:, 2:].expand(1, 1, 6, 6), atol=1e-12, rtol=0)


@pytest.mark.parametrize('call, exc, pattern', [
    (lambda: dysample(torch.zeros(1, 4, 3, 3), torch.zeros(1, 8, 3, 3), 2, 2), ValueError,
     r'offset must have shape \(B, 2 \* groups \* s \* s, H, W\) = \(1, 16, 3, 3\).*'
     r'got \(1, 8, 3, 3\)'),
    (lambda: dysample(torch.zeros(1, 4, 3, 3), torch.zeros(1, 8, 3, 4), 2, 1), ValueError,
     r'offset must have shape .* = \(1, 8, 3, 3\)'),
    (lambda: dysample(torch.zeros(2, 4, 3, 3), torch.zeros(1, 8, 3, 3), 2, 1), ValueError,
     r'offset must have shape .* = \(2, 8, 3, 3\)'),
    (lambda: dysample(torch.zeros(4, 3, 3), torch.zeros(1, 8, 3, 3), 2, 1), ValueError,
     r'x must be a 4-D tensor'),
    (lambda: dysample(torch.zeros(1, 4, 3, 3), torch.zeros(8, 3, 3), 2, 1), ValueError,
     r'offset must be a 4-D tensor'),
    (lambda: dysample(torch.zeros(1, 6, 3, 3), torch.zeros(1, 32, 3, 3), 2, 4), ValueError,
     r'channels of x \(6\) must be divisible by groups \(4\); pass groups= one of the '
     r'divisors of 6: 1, 2, 3, 6$'),
    (lambda: dysample(torch.zeros(1, 4, 3, 3), torch.zeros(1, 8, 3, 3), 1.5, 1), ValueError,
     r'scale_factor must be an integer >= 2'),
    (lambda: dysample(torch.zeros(1, 4, 3, 3), torch.zeros(1, 8, 3, 3), 2, 0), ValueError,
     r'groups must be a positive integer'),
])
def test_dysample_rejects_bad_input(call, exc, pattern):
    with pytest.raises(exc, match=pattern):
        call()


@pytest.mark.parametrize('fused', [True, False])
def test_dysample_and_dysample_to_size_take_an_empty_batch(fused):
    """B=0: empty outputs of the right shape and x's dtype; the backward gives gradients of
    the inputs' shapes (the fused kernel and the lean reference sampling; the odd-size path,
    whose layout change once went through pixel_shuffle, whose CPU backward returns the wrong
    shape for zero elements)."""
    x = torch.randn(0, 6, 5, 7, requires_grad=True)
    offset = torch.randn(0, 2 * 3 * 4, 5, 7, requires_grad=True)
    with use_fused(fused):
        outputs = [dysample(x, offset, 2, 3), dysample_to_size(x, offset, (11, 9), 2, 3),
                   dysample_to_size(x, offset, (10, 14), 2, 3)]
    for out, shape in zip(outputs, [(0, 6, 10, 14), (0, 6, 11, 9), (0, 6, 10, 14)]):
        assert out.shape == shape and out.dtype == x.dtype
        out.sum().backward()
        assert x.grad.shape == x.shape and offset.grad.shape == offset.shape
        x.grad = offset.grad = None


# --------------------------------------------------------------- dysample_to_size

@pytest.mark.parametrize('init', ['bilinear', 'nearest'])
@pytest.mark.parametrize('scale, groups, in_size, size', [
    (2, 1, (3, 4), (7, 9)),   # odd: 2H + 1, 2W + 1
    (2, 2, (4, 3), (5, 11)),  # non-integer ratios 1.25 and 3.67
    (3, 1, (3, 5), (8, 4)),   # sizes below s * H, and a downsampled width
])
def test_dysample_to_size_matches_the_stated_geometry(init, scale, groups, in_size, size):
    """Against a loop over output points in exact rational arithmetic; offsets of ~1 pixel
    push points across the border."""
    x = torch.randn(2, 2 * groups, *in_size, dtype=torch.float64)
    offset = torch.randn(2, 2 * groups * scale * scale, *in_size, dtype=torch.float64)
    out = dysample_to_size(x, offset, size, scale, groups, init)
    assert out.shape == (2, 2 * groups, *size)
    expected = dysample_to_size_scalar_loop(x, offset, size, scale, groups, init)
    torch.testing.assert_close(out, expected, atol=1e-12, rtol=0)


@pytest.mark.parametrize('in_size, size', [
    ((5, 7), (11, 15)),        # odd sizes
    ((40, 23), (80, 45)),      # "upsample 40x23 to 80x45"
    ((6, 9), (13, 20)),        # non-integer ratios
    ((8, 8), (5, 12)),         # shrink one side
    ((128, 168), (255, 335)),  # an FPN level to an odd size
])
def test_dysample_to_size_with_zero_offsets_is_interpolation(in_size, size):
    """float64: F.interpolate's values to rounding. float32: both round the coordinates
    differently, so each is compared with the float64 result, ours no further from it than
    F.interpolate's own float32 result (or 1e-5). (float32 nearest: F.interpolate copies
    values, while grid_sample's float32 coordinates of the pixel centres carry up to
    ~W * 2**-24 pixel of rounding, hence the larger bound.)"""
    x = torch.randn(1, 2, *in_size, dtype=torch.float64)
    zero = torch.zeros(1, 2 * 2 * 4, *in_size, dtype=torch.float64)
    for init, mode, kwargs in (('bilinear', 'bilinear', dict(align_corners=False)),
                               ('nearest', 'nearest-exact', {})):
        expected = F.interpolate(x, size=size, mode=mode, **kwargs)
        torch.testing.assert_close(dysample_to_size(x, zero, size, 2, 2, init), expected,
                                   atol=1e-10, rtol=0)
        ours32 = dysample_to_size(x.float(), zero.float(), size, 2, 2, init)
        theirs32 = F.interpolate(x.float(), size=size, mode=mode, **kwargs)
        assert ours32.dtype == torch.float32
        bound = max(1e-5 if init == 'bilinear' else 1e-4,
                    (theirs32.double() - expected).abs().max().item())
        assert (ours32.double() - expected).abs().max().item() <= bound


def test_dysample_to_size_at_the_natural_size_is_dysample():
    x = torch.randn(1, 8, 5, 7)
    offset = torch.randn(1, 2 * 2 * 9, 5, 7)
    for init in ('bilinear', 'nearest'):
        expected = dysample(x, offset + init_sampling_positions(3, 2, init), 3, 2)
        torch.testing.assert_close(dysample_to_size(x, offset, (15, 21), 3, 2, init), expected,
                                   atol=0, rtol=0)


@pytest.mark.parametrize('size', [(0, 3), (3, ), 5, (2.5, 3), (True, 3), '33', None])
def test_dysample_to_size_rejects_bad_sizes(size):
    with pytest.raises(ValueError, match=r'size must be a pair of positive integers'):
        dysample_to_size(torch.zeros(1, 2, 3, 3), torch.zeros(1, 8, 3, 3), size, 2, 1)


def test_dysample_to_size_rejects_bad_init():
    with pytest.raises(ValueError, match=r"init must be one of \('bilinear', 'nearest'\)"):
        dysample_to_size(torch.zeros(1, 2, 3, 3), torch.zeros(1, 8, 3, 3), (5, 5), 2, 1, 'x')


# ------------------------------------------------------------------------ carafe

@pytest.mark.parametrize('group_size', [1, 2])
@pytest.mark.parametrize('scale', [2, 3])
@pytest.mark.parametrize('kernel_size', [3, 5])
def test_carafe_matches_naive_kernel_loop(group_size, scale, kernel_size):
    batch, channels, height, width = 2, 4, 3, 4
    features = torch.randn(batch, channels, height, width, dtype=torch.float64)
    masks = torch.randn(batch, group_size * kernel_size**2, scale * height, scale * width,
                        dtype=torch.float64)
    out = carafe(features, masks, kernel_size, group_size, scale)
    assert out.shape == (batch, channels, scale * height, scale * width)
    expected = carafe_naive(features, masks, kernel_size, group_size, scale)
    torch.testing.assert_close(out, expected, atol=1e-12, rtol=0)
    out32 = carafe(features.float(), masks.float(), kernel_size, group_size, scale)
    torch.testing.assert_close(out32.double(), expected, atol=1e-5, rtol=0)


def test_carafe_with_a_centre_delta_kernel_is_nearest_upsampling():
    kernel_size, scale = 5, 2
    features = torch.randn(1, 3, 4, 5)
    masks = torch.zeros(1, kernel_size**2, scale * 4, scale * 5)
    masks[:, kernel_size**2 // 2] = 1.0
    expected = features.repeat_interleave(scale, 2).repeat_interleave(scale, 3)
    torch.testing.assert_close(carafe(features, masks, kernel_size, 1, scale), expected)


def test_carafe_gradcheck():
    features = torch.randn(1, 4, 3, 3, dtype=torch.float64, requires_grad=True)
    masks = torch.randn(1, 2 * 9, 6, 6, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda f, m: carafe(f, m, 3, 2, 2), (features, masks),
                                    fast_mode=True)


@pytest.mark.parametrize('call, pattern', [
    (lambda: carafe(torch.zeros(1, 4, 3, 3), torch.zeros(1, 16, 6, 6), 4, 1, 2),
     r'kernel_size must be a positive odd integer, got 4'),
    (lambda: carafe(torch.zeros(1, 4, 3, 3), torch.zeros(1, 27, 6, 6), 3, 3, 2),
     r'channels of features \(4\) must be divisible by group_size \(3\)'),
    (lambda: carafe(torch.zeros(1, 4, 3, 3), torch.zeros(1, 9, 3, 3), 3, 1, 2),
     r'masks must have shape .* = \(1, 9, 6, 6\), got \(1, 9, 3, 3\)'),
    (lambda: carafe(torch.zeros(1, 4, 3, 3), torch.zeros(1, 9, 6, 6), 3, 1, 1.5),
     r'scale_factor must be an integer >= 2'),
])
def test_carafe_rejects_bad_input(call, pattern):
    with pytest.raises(ValueError, match=pattern):
        call()


def test_min_distance_to_kink_helper_sees_integer_positions():
    """The gradcheck precondition above must be able to fail."""
    offset = torch.zeros(1, 8, 2, 2, dtype=torch.float64)
    assert min_distance_to_kink(offset, 2, 1, 2, 2) == 0
    offset = init_sampling_positions(2, 1, dtype=torch.float64).expand(1, 8, 2, 2)
    assert math.isclose(min_distance_to_kink(offset, 2, 1, 2, 2), 0.25)


@pytest.mark.parametrize('kwargs', [dict(), dict(up_group=2, up_kernel=3, encoder_kernel=1,
                                                 encoder_dilation=2)])
def test_carafe_layer_is_mmcv_carafepack_bit_for_bit(kwargs):
    """The CARAFE layer (which imports no mmcv) initialises and normalises its kernels exactly
    as mmcv's CARAFEPack: same RNG draws, same keys, same kernels."""
    from mmcv.ops import CARAFEPack

    from mmdysample.upsamplers import CARAFE
    torch.manual_seed(3)
    pack = CARAFEPack(16, 2, **kwargs)
    torch.manual_seed(3)
    layer = CARAFE(16, 2, **kwargs)
    assert list(layer.state_dict()) == list(pack.state_dict())
    for key, value in pack.state_dict().items():
        torch.testing.assert_close(layer.state_dict()[key], value, atol=0, rtol=0)
    x = torch.randn(1, 16, 5, 6)
    with torch.no_grad():
        theirs = pack.kernel_normalizer(pack.content_encoder(pack.channel_compressor(x)))
        ours = layer.kernel_normalizer(layer.content_encoder(layer.channel_compressor(x)))
    torch.testing.assert_close(ours, theirs, atol=0, rtol=0)
