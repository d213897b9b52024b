"""mmdysample.flops: the FLOP handlers against formulas."""
import torch

from mmdysample.flops import count_flops
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
    assert flops.total > flops.by_operator['einsum']


def test_pixel_shuffle_counts_no_flops():
    layer = build_upsampler(dict(type='PixelShuffle'), 8, 2)
    flops = count_flops(layer, torch.randn(1, 8, 4, 4))
    assert set(flops.by_operator) == {'conv'}
    assert 'aten::pixel_shuffle' not in flops.uncounted


def test_bilinear_flops_four_per_output():
    layer = build_upsampler(dict(mode='bilinear', align_corners=False), 8, 2)
    assert count_flops(layer, torch.randn(1, 8, 5, 7)).total == 4 * 8 * 10 * 14


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
