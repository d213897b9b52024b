"""Every patched mmseg site on an empty batch (B=0 images), with every upsampler type, against
the upstream module on the same empty batch (tests/empty_batch_testing.py)."""
import pytest
import torch
from mmdet.models.layers.pixel_decoder import PixelDecoder as UpstreamPixelDecoder
from mmseg.models.decode_heads.fpn_head import FPNHead as UpstreamFPNHead
from mmseg.models.decode_heads.segformer_head import SegformerHead as UpstreamSegformerHead
from mmseg.models.decode_heads.sep_aspp_head import \
    DepthwiseSeparableASPPHead as UpstreamASPPHead
from mmseg.models.decode_heads.uper_head import UPerHead as UpstreamUPerHead
from mmseg.models.necks.fpn import FPN as UpstreamFPN
from mmseg.registry import MODELS

import mmdysample  # noqa: F401  (registers the patched modules and the upsamplers)
from empty_batch_testing import assert_empty_batch_like_upstream, upsampler_types
from mmdysample.mmdet import PixelDecoder
from mmdysample.mmseg import FPN, DepthwiseSeparableASPPHead, FPNHead, SegformerHead, UPerHead

# 32 channels wherever an upsampler or its guide sits: A2U and SAPA-B need multiples of 32
C = 32
IN_CHANNELS = [8, 16, 24, C]
# strides 4..32 of an unpadded 100x75 image (odd sizes: the resize path of every step)
SIZES = [(25, 19), (13, 10), (7, 5), (4, 3)]


def empty_pyramid(channels=IN_CHANNELS):
    return [torch.zeros(0, c, h, w, requires_grad=True) for c, (h, w) in zip(channels, SIZES)]


def head(cls, **overrides):
    kwargs = dict(in_channels=IN_CHANNELS, in_index=[0, 1, 2, 3], channels=C, num_classes=5,
                  norm_cfg=dict(type='BN'), align_corners=False)
    kwargs.update(overrides)
    return cls(**kwargs)


SITES = {
    'FPN': (FPN, UpstreamFPN,
            lambda cls, **cfg: cls(in_channels=IN_CHANNELS, out_channels=C, num_outs=5, **cfg),
            empty_pyramid),
    'FPNHead': (FPNHead, UpstreamFPNHead,
                # each step's guide is the input at its output stride: C channels each
                lambda cls, **cfg: head(cls, in_channels=[C] * 4, feature_strides=[4, 8, 16, 32],
                                        **cfg),
                lambda: empty_pyramid([C] * 4)),
    'UPerHead': (UPerHead, UpstreamUPerHead,
                 lambda cls, **cfg: head(cls, pool_scales=(1, 2), **cfg), empty_pyramid),
    'SegformerHead': (SegformerHead, UpstreamSegformerHead, head, empty_pyramid),
    'DepthwiseSeparableASPPHead': (
        DepthwiseSeparableASPPHead, UpstreamASPPHead,
        lambda cls, **cfg: head(cls, in_channels=C, in_index=3, c1_in_channels=8,
                                c1_channels=C, dilations=(1, 2), **cfg),
        empty_pyramid),
}


@pytest.mark.parametrize('site, upsampler',
                         [(site, name) for site in SITES for name in upsampler_types()])
def test_empty_batch_gives_upstreams_outputs_and_zero_gradients(site, upsampler):
    ours_cls, upstream_cls, build, make_inputs = SITES[site]
    torch.manual_seed(0)
    upstream = build(upstream_cls)
    ours = build(ours_cls, upsample_cfg=dict(type=upsampler))
    assert not assert_empty_batch_like_upstream(ours, upstream, make_inputs)


# MaskFormer's decoder is mmdet's PixelDecoder (all types: tests/mmdet/test_mmdet_empty_batch.py);
# here as mmseg's MaskFormer config names it, a plain and a guided type.
@pytest.mark.parametrize('upsampler', ['DySample', 'FADE'])
def test_maskformer_decoder_as_mmseg_names_it_on_an_empty_batch(upsampler):
    decoder = dict(type='mmdet.PixelDecoder', in_channels=IN_CHANNELS, feat_channels=C,
                   out_channels=C, norm_cfg=dict(type='GN', num_groups=8))
    torch.manual_seed(0)
    upstream = MODELS.build(dict(decoder, type=UpstreamPixelDecoder))
    ours = MODELS.build(dict(decoder, upsample_cfg=dict(type=upsampler)))
    assert type(ours) is PixelDecoder
    assert not assert_empty_batch_like_upstream(ours, upstream, empty_pyramid,
                                                run=lambda module, feats: module(feats, []))
