"""Measurement helpers of tools/tool_helpers.py (timing statistics, CPU peak memory,
parameter counts) and the DySample sampling points of tools/visualize_sampling.py."""
import statistics

import pytest
import torch
from tool_helpers import count_parameters, peak_memory_bytes, summarize_times, time_per_call

from mmdysample.upsamplers import build_upsampler


def test_count_parameters():
    layer = build_upsampler(dict(type='DySample+'), 16, 2)  # offset 16->32 (+bias), scope 16->32
    assert count_parameters(layer) == 16 * 32 + 32 + 16 * 32
    layer.scope.weight.requires_grad_(False)
    assert count_parameters(layer, trainable_only=True) == 16 * 32 + 32


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


def test_sampling_points_at_init_are_output_centres(visualize_tool):
    layer = build_upsampler(dict(type='DySample', groups=2), 8, 2)
    torch.nn.init.zeros_(layer.offset.weight)
    x = torch.randn(1, 8, 3, 4)
    points = visualize_tool.dysample_sampling_points(layer, x)
    assert points.shape == (1, 2, 6, 8, 2)
    centres = visualize_tool.output_pixel_centres(3, 4, 2)
    torch.testing.assert_close(points[0, 0], centres)
    torch.testing.assert_close(points[0, 1], centres)
    # a constant learned offset shifts every point by scope_factor * bias
    with torch.no_grad():
        layer.offset.bias.zero_()
        layer.offset.bias[:4].fill_(1.0)  # x offsets of group 0 ([x|y][group][a][b])
    shifted = visualize_tool.dysample_sampling_points(layer, x)
    torch.testing.assert_close(shifted[0, 0, ..., 0], centres[..., 0] + 0.25)
    torch.testing.assert_close(shifted[0, 0, ..., 1], centres[..., 1])
    torch.testing.assert_close(shifted[0, 1], centres)
    with pytest.raises(TypeError, match='DySample'):
        visualize_tool.dysample_sampling_points(torch.nn.Identity(), x)


def test_sampling_points_reproduce_layer_output(visualize_tool):
    torch.manual_seed(0)
    layer = build_upsampler(dict(type='DySample+', groups=1), 4, 2)
    torch.nn.init.normal_(layer.scope.weight, std=0.5)
    torch.nn.init.normal_(layer.offset.weight, std=0.5)
    x = torch.randn(1, 4, 5, 5)
    points = visualize_tool.dysample_sampling_points(layer, x)[0, 0]  # (10, 10, 2), input pixel units
    grid = points / torch.tensor([5.0, 5.0]) * 2 - 1
    expected = torch.nn.functional.grid_sample(x, grid[None], mode='bilinear',
                                               padding_mode='border', align_corners=False)
    with torch.no_grad():
        torch.testing.assert_close(layer(x), expected, rtol=1e-5, atol=1e-5)


