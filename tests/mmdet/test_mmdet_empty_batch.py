"""Every patched mmdet site on an empty batch (B=0 images; 0 RoIs for the mask head), with
every upsampler type it accepts, against the upstream module on the same empty batch
(tests/empty_batch_testing.py)."""
import pytest
import torch
from mmdet.models.layers.msdeformattn_pixel_decoder import \
    MSDeformAttnPixelDecoder as UpstreamMSDeformAttnPixelDecoder
from mmdet.models.layers.pixel_decoder import PixelDecoder as UpstreamPixelDecoder
from mmdet.models.necks.cspnext_pafpn import CSPNeXtPAFPN as UpstreamCSPNeXtPAFPN
from mmdet.models.necks.fpn import FPN as UpstreamFPN
from mmdet.models.necks.yolox_pafpn import YOLOXPAFPN as UpstreamYOLOXPAFPN
from mmdet.models.roi_heads.mask_heads.fcn_mask_head import FCNMaskHead as UpstreamFCNMaskHead
from mmdet.models.seg_heads import PanopticFPNHead as UpstreamPanopticFPNHead
from mmengine.config import ConfigDict

import mmdysample  # noqa: F401  (registers the patched modules and the upsamplers)
from empty_batch_testing import assert_empty_batch_like_upstream, upsampler_types
from mmdysample.mmdet import (CSPNeXtPAFPN, FCNMaskHead, MSDeformAttnPixelDecoder,
                              PixelDecoder, UpsamplerFPN, UpsamplerPanopticFPNHead,
                              YOLOXPAFPN)

# 32 channels wherever an upsampler or its guide sits: A2U and SAPA-B need multiples of 32
C = 32
GN = dict(type='GN', num_groups=8)


def empty(*shapes):
    return [torch.zeros(0, *shape, requires_grad=True) for shape in shapes]


def fpn(cls, **cfg):
    return cls(in_channels=[8, 16, 24, C], out_channels=C, num_outs=5, **cfg)


def pafpn(cls, **cfg):
    return cls(in_channels=[C, C, C], out_channels=8, num_csp_blocks=1, **cfg)


def mask_head(cls, **cfg):
    return cls(num_convs=1, in_channels=16, conv_out_channels=C, num_classes=3, **cfg)


def panoptic_head(cls, **cfg):
    return cls(num_things_classes=3, num_stuff_classes=2, in_channels=16, inner_channels=C,
               norm_cfg=dict(GN, requires_grad=True), **cfg)


def pixel_decoder(cls, **cfg):
    return cls(in_channels=[8, 16, 24, C], feat_channels=C, out_channels=C, norm_cfg=GN, **cfg)


def msdeformattn_decoder(cls, **cfg):
    # mmdet's decoder reads encoder.layer_cfg.self_attn_cfg.num_levels as attributes
    return cls(**ConfigDict(
        in_channels=[8, 16, 24, C], strides=[4, 8, 16, 32], feat_channels=C, out_channels=C,
        num_outs=3, norm_cfg=GN,
        encoder=dict(num_layers=1, layer_cfg=dict(
            self_attn_cfg=dict(embed_dims=C, num_heads=2, num_levels=3, num_points=2,
                               batch_first=True),
            ffn_cfg=dict(embed_dims=C, feedforward_channels=32, num_fcs=2, ffn_drop=0.0))),
        positional_encoding=dict(num_feats=C // 2, normalize=True)), **cfg)


# site: (ours, upstream, builder, empty inputs, run, upsampler types)
ODD_PYRAMID = [(8, 25, 19), (16, 13, 10), (24, 7, 5), (C, 4, 3)]  # a 100x75 image
ALL, UNGUIDED = upsampler_types(), upsampler_types(guided=False)
SITES = {
    'FPN': (UpsamplerFPN, UpstreamFPN, fpn, lambda: empty(*ODD_PYRAMID), None, ALL),
    'CSPNeXtPAFPN': (CSPNeXtPAFPN, UpstreamCSPNeXtPAFPN, pafpn,
                     lambda: empty((C, 8, 8), (C, 4, 4), (C, 2, 2)), None, ALL),
    # YOLOX's neck runs CSPNeXtPAFPN's learned forward (LearnedTopDownPAFPN): two types
    'YOLOXPAFPN': (YOLOXPAFPN, UpstreamYOLOXPAFPN, pafpn,
                   lambda: empty((C, 8, 8), (C, 4, 4), (C, 2, 2)), None, ['DySample', 'FADE']),
    'FCNMaskHead': (FCNMaskHead, UpstreamFCNMaskHead, mask_head,
                    lambda: empty((16, 14, 14))[0], None, UNGUIDED),
    'PanopticFPNHead': (UpsamplerPanopticFPNHead, UpstreamPanopticFPNHead, panoptic_head,
                        lambda: empty((16, 16, 24), (16, 8, 12), (16, 4, 6), (16, 2, 3),
                                      (16, 1, 2)), None, UNGUIDED),
    'PixelDecoder': (PixelDecoder, UpstreamPixelDecoder, pixel_decoder,
                     lambda: empty(*ODD_PYRAMID), lambda module, feats: module(feats, []),
                     ALL),
    'MSDeformAttnPixelDecoder': (MSDeformAttnPixelDecoder, UpstreamMSDeformAttnPixelDecoder,
                                 msdeformattn_decoder, lambda: empty(*ODD_PYRAMID), None,
                                 ['DySample', 'FADE']),
}
# mmdet's own MSDeformAttnPixelDecoder raises on B=0 (its SinePositionalEncoding reshapes
# with -1); the patched one must raise the same error, not another one
UPSTREAM_RAISES = {'MSDeformAttnPixelDecoder'}
CASES = [(site, name) for site, spec in SITES.items() for name in spec[5]]


@pytest.mark.parametrize('site, upsampler', CASES)
def test_empty_batch_gives_upstreams_outputs_and_zero_gradients(site, upsampler):
    ours_cls, upstream_cls, build, make_inputs, run, _ = SITES[site]
    torch.manual_seed(0)
    upstream = build(upstream_cls)
    ours = build(ours_cls, upsample_cfg=dict(type=upsampler))
    kwargs = {} if run is None else dict(run=run)
    if site == 'PanopticFPNHead':
        kwargs['learned_prefix'] = 'conv_upsample_layers.'
    raised = assert_empty_batch_like_upstream(ours, upstream, make_inputs, **kwargs)
    assert raised == (site in UPSTREAM_RAISES)


def test_mask_head_on_zero_rois_gives_mmdets_28x28_logits():
    """What Mask R-CNN relies on: an image without positive RoIs gives (0, 3, 28, 28)."""
    head = mask_head(FCNMaskHead, upsample_cfg=dict(type='DySample'))
    logits = head(torch.zeros(0, 16, 14, 14))
    assert logits.shape == (0, 3, 28, 28)
    assert mask_head(UpstreamFCNMaskHead)(torch.zeros(0, 16, 14, 14)).shape == logits.shape
