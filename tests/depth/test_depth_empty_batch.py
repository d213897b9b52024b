"""DepthFormer's fusion head (the depth site) on an empty batch (B=0 images), with every
upsampler type, against the head without ``type`` (the toolbox's bilinear head) on the same
empty batch (tests/empty_batch_testing.py).

Only the head upsamples. The rest of DepthFormer cannot take B=0, upstream code being the
cause: mmseg's ``SwinTransformer`` (``window_reverse`` reshapes with -1) in the backbone,
mmdet's ``SinePositionalEncoding`` and mmcv's ``MultiScaleDeformableAttention`` (both
reshape with -1) in the HAHI neck.
"""
import pytest
import torch

from empty_batch_testing import assert_empty_batch_like_upstream, upsampler_types
from mmdysample.mmseg.depth import DenseDepthHead

# 32 channels at every upsampler and guide: A2U and SAPA-B need multiples of 32; odd sizes
C = 32
SIZES = [(13, 10), (7, 5), (4, 3), (2, 2), (1, 1)]


def build(**cfg):
    return DenseDepthHead(in_channels=[C] * 5, up_sample_channels=[C] * 5, channels=C, **cfg)


def empty_levels():
    return [torch.zeros(0, C, h, w, requires_grad=True) for h, w in SIZES]


@pytest.mark.parametrize('upsampler', upsampler_types())
def test_empty_batch_gives_the_bilinear_heads_outputs_and_zero_gradients(upsampler):
    torch.manual_seed(0)
    bilinear = build()
    ours = build(upsample_cfg=dict(type=upsampler))
    assert not assert_empty_batch_like_upstream(ours, bilinear, empty_levels)
