"""mmdysample.analysis: FLOP handlers against formulas, timing statistics, CPU peak memory,
DySample sampling points."""
import statistics

import pytest
import torch

from mmdysample.analysis import count_flops, count_parameters, dysample_sampling_points, \
    output_pixel_centres, peak_memory_bytes, summarize_times, time_per_call
from mmdysample.upsamplers import build_upsampler


def test_dysample_flops_are_conv_plus_grid_sample():
    layer = build_upsampler(dict(type='DySample'), 32, 2)  # lp, 4 groups: conv 32 -> 32
    x = torch.randn(2, 32, 6, 5)
    flops = count_flops(layer, x)
    conv = 2 * 6 * 5 * 32 * (2 * 4 * 2 * 2)  # 1x1 conv MACs: B*H*W*Cin*Cout
    grid = 4 * 2 * 32 * 12 * 10  # 4 MACs per output element (bilinear)
    assert flops.by_operator == {'conv': conv, 'grid_sampler': grid}
    assert flops.total == conv + grid


def test_carafe_flops_have_exact_reassembly():
    layer = build_upsampler(dict(type='CARAFE'), 16, 2)
    x = torch.randn(1, 16, 8, 8)
    flops = count_flops(layer, x)
    # reassembly: every output element is a k_up^2 (5x5) weighted sum
    assert flops.by_operator['einsum'] == 16 * 16 * 16 * 25
    params = count_parameters(layer)
    assert params > 0 and flops.total > flops.by_operator['einsum']


def test_pixel_shuffle_counts_no_flops():
    layer = build_upsampler(dict(type='PixelShuffle'), 8, 2)
    flops = count_flops(layer, torch.randn(1, 8, 4, 4))
    assert set(flops.by_operator) == {'conv'}
    assert 'aten::pixel_shuffle' not in flops.uncounted


def test_bilinear_flops_four_per_output():
    layer = build_upsampler(dict(mode='bilinear', align_corners=False), 8, 2)
    assert count_flops(layer, torch.randn(1, 8, 5, 7)).total == 4 * 8 * 10 * 14


def test_summarize_times_matches_statistics():
    samples = [5.0, 1.0, 3.0, 9.0, 7.0, 2.0]
    stats = summarize_times(samples, iters=4)
    q1, median, q3 = statistics.quantiles(samples, n=4, method='inclusive')
    assert (stats.q1, stats.median, stats.q3) == (q1, median, q3)
    assert (stats.minimum, stats.maximum, stats.iters) == (1.0, 9.0, 4)
    assert stats.to_dict()['iqr'] == pytest.approx(q3 - q1)
    with pytest.raises(ValueError, match='samples_ms'):
        summarize_times([], 1)
    with pytest.raises(ValueError, match='iters'):
        time_per_call(lambda: None, 0)


def test_cpu_peak_memory_sees_temporaries():
    mib = 2**20

    def two_temporaries():
        a = torch.ones(4 * mib // 4)  # 4 MiB
        b = torch.ones(2 * mib // 4)  # 2 MiB, while a is alive
        del a, b
        c = torch.ones(mib // 4)  # 1 MiB after both were freed
        return c.sum()

    peak = peak_memory_bytes(two_temporaries, 'cpu')
    assert 6 * mib <= peak < 6.5 * mib
    with pytest.raises(ValueError, match="device must be 'cpu' or 'cuda'"):
        peak_memory_bytes(two_temporaries, 'meta')


def test_sampling_points_at_init_are_output_centres():
    layer = build_upsampler(dict(type='DySample', groups=2), 8, 2)
    torch.nn.init.zeros_(layer.offset.weight)
    x = torch.randn(1, 8, 3, 4)
    points = dysample_sampling_points(layer, x)
    assert points.shape == (1, 2, 6, 8, 2)
    centres = output_pixel_centres(3, 4, 2)
    torch.testing.assert_close(points[0, 0], centres)
    torch.testing.assert_close(points[0, 1], centres)
    # a constant learned offset shifts every point by scope_factor * bias
    with torch.no_grad():
        layer.offset.bias.zero_()
        layer.offset.bias[:4].fill_(1.0)  # x offsets of group 0 ([x|y][group][a][b])
    shifted = dysample_sampling_points(layer, x)
    torch.testing.assert_close(shifted[0, 0, ..., 0], centres[..., 0] + 0.25)
    torch.testing.assert_close(shifted[0, 0, ..., 1], centres[..., 1])
    torch.testing.assert_close(shifted[0, 1], centres)
    with pytest.raises(TypeError, match='DySample'):
        dysample_sampling_points(torch.nn.Identity(), x)


def test_sampling_points_reproduce_layer_output():
    torch.manual_seed(0)
    layer = build_upsampler(dict(type='DySample+', groups=1), 4, 2)
    torch.nn.init.normal_(layer.scope.weight, std=0.5)
    torch.nn.init.normal_(layer.offset.weight, std=0.5)
    x = torch.randn(1, 4, 5, 5)
    points = dysample_sampling_points(layer, x)[0, 0]  # (10, 10, 2), input pixel units
    grid = points / torch.tensor([5.0, 5.0]) * 2 - 1
    expected = torch.nn.functional.grid_sample(x, grid[None], mode='bilinear',
                                               padding_mode='border', align_corners=False)
    with torch.no_grad():
        torch.testing.assert_close(layer(x), expected, rtol=1e-5, atol=1e-5)


class CARAFEFunction(torch.autograd.Function):
    """Stand-in with the name and signature of mmcv's CUDA-only CARAFE op (traced as
    ``prim::PythonOp.CARAFEFunction``); computes a nearest x2 upsampling."""

    @staticmethod
    def forward(ctx, features, masks, kernel_size, group_size, scale_factor):
        return torch.nn.functional.interpolate(features, scale_factor=scale_factor)


class _MMCVCarafeLike(torch.nn.Module):

    def forward(self, x):
        masks = torch.ones(x.shape[0], 25, 2 * x.shape[2], 2 * x.shape[3])
        return CARAFEFunction.apply(x, masks, 5, 1, 2)


def test_mmcv_carafe_op_handler():
    flops = count_flops(_MMCVCarafeLike(), torch.randn(1, 8, 4, 6))
    assert flops.by_operator == {'PythonOp.CARAFEFunction': 8 * 8 * 12 * 25}
