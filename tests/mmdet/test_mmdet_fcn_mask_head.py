"""Mask R-CNN's FCNMaskHead with DySample in place of its deconvolution."""
import pytest
import torch
from mmdet.models.roi_heads.mask_heads.fcn_mask_head import FCNMaskHead as UpstreamFCNMaskHead
from mmdet.registry import MODELS as MMDET_MODELS

import mmdysample  # noqa: F401
from mmdet_site_testing import RecordingGuidedUpsampler, assert_upstream_signature
from mmdysample.mmdet import FCNMaskHead
from mmdysample.upsamplers import DySample

HEAD = dict(num_convs=2, in_channels=16, conv_out_channels=16, num_classes=3)


def build(cls, upsample_cfg, seed=0):
    torch.manual_seed(seed)
    return cls(upsample_cfg=upsample_cfg, **HEAD).eval()


def test_registered_over_mmdets_name_with_mmdets_signature():
    assert MMDET_MODELS.get('FCNMaskHead') is FCNMaskHead
    assert_upstream_signature(FCNMaskHead, UpstreamFCNMaskHead)


@pytest.mark.parametrize('upsample_cfg', [
    dict(type='deconv', scale_factor=2), dict(type='nearest', scale_factor=2),
    dict(type='bilinear', scale_factor=2), dict(type=None)], ids=str)
def test_mmdets_own_upsample_types_are_mmdets_head(upsample_cfg):
    upstream, ours = build(UpstreamFCNMaskHead, upsample_cfg), build(FCNMaskHead, upsample_cfg)
    upstream.init_weights()
    torch.manual_seed(1)
    ours.init_weights()
    assert ours.upsamplers is None
    assert list(ours.state_dict()) == list(upstream.state_dict())
    ours.load_state_dict(upstream.state_dict(), strict=True)
    x = torch.randn(5, 16, 13, 15)  # odd RoI size
    with torch.no_grad():
        assert torch.equal(ours(x), upstream(x))


def test_carafe_builds_mmcvs_carafe_as_upstream():
    cfg = dict(type='carafe', scale_factor=2)
    upstream, ours = build(UpstreamFCNMaskHead, cfg), build(FCNMaskHead, cfg)
    assert type(ours.upsample) is type(upstream.upsample)
    assert list(ours.state_dict()) == list(upstream.state_dict())


def test_dysample_replaces_the_deconvolution_with_an_exact_parameter_delta():
    upstream = build(UpstreamFCNMaskHead, dict(type='deconv', scale_factor=2))
    head = build(FCNMaskHead, dict(type='DySample'))
    assert head.upsample is None and len(head.upsamplers) == 1
    assert type(head.upsamplers[0]) is DySample and head.upsamplers[0].in_channels == 16
    assert head.conv_logits.in_channels == 16
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    deconv = 16 * 16 * 2 * 2 + 16
    dysample = 16 * 32 + 32  # 'lp' offset conv: 16 -> 2 * 4 groups * 2**2
    assert count(head) - count(upstream) == dysample - deconv
    assert head(torch.randn(3, 16, 14, 14)).shape == (3, 3, 28, 28)


def test_scale_factor_in_the_cfg_sets_the_ratio():
    head = build(FCNMaskHead, dict(type='DySample', scale_factor=4))
    assert head.upsamplers[0].scale_factor == 4 and head.scale_factor == 4
    assert head(torch.randn(2, 16, 14, 14)).shape == (2, 3, 56, 56)


def test_zero_offset_dysample_head_is_mmdets_bilinear_head():
    upstream = build(UpstreamFCNMaskHead, dict(type='bilinear', scale_factor=2))
    head = build(FCNMaskHead, dict(type='DySample'))
    torch.nn.init.zeros_(head.upsamplers[0].offset.weight)
    head.load_state_dict(upstream.state_dict(), strict=False)
    x = torch.randn(4, 16, 14, 14)
    with torch.no_grad():
        torch.testing.assert_close(head(x), upstream(x), atol=1e-5, rtol=1e-5)


def test_init_weights_keeps_dysamples_own_init():
    head = build(FCNMaskHead, dict(type='DySample'))
    torch.nn.init.constant_(head.upsamplers[0].offset.weight, 1.0)
    head.init_weights()
    assert 0 < head.upsamplers[0].offset.weight.std() < 0.01


def test_guided_type_raises_because_the_head_has_no_guide():
    with pytest.raises(ValueError, match='guided upsampler.*FCNMaskHead has no such feature'):
        build(FCNMaskHead, dict(type=RecordingGuidedUpsampler))
