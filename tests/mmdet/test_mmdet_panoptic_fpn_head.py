"""UpsamplerPanopticFPNHead: mmdet's head by default, optional upsamplers in its branches."""
import pytest
import torch
from mmdet.models.layers import ConvUpsample
from mmdet.models.seg_heads import PanopticFPNHead as MMDetPanopticFPNHead
from mmdet.registry import MODELS as MMDET_MODELS

import mmdysample  # noqa: F401
from mmdysample.mmdet import UpsamplerConvUpsample, UpsamplerPanopticFPNHead
from mmdysample.upsamplers import DySample, Interpolate

HEAD_KWARGS = dict(num_things_classes=3, num_stuff_classes=2, in_channels=16,
                   inner_channels=32, norm_cfg=dict(type='GN', num_groups=8, requires_grad=True))
# FPN outputs at strides 4, 8, 16, 32 (64) of a 64x96 image
SIZES = [(16, 24), (8, 12), (4, 6), (2, 3), (1, 2)]


def features(seed=0):
    gen = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(2, 16, h, w, generator=gen) for h, w in SIZES)


def build_pair(**ours_kwargs):
    torch.manual_seed(0)
    upstream = MMDetPanopticFPNHead(**HEAD_KWARGS).eval()
    torch.manual_seed(0)
    ours = UpsamplerPanopticFPNHead(**HEAD_KWARGS, **ours_kwargs).eval()
    return upstream, ours


def test_registry_and_default_is_mmdet_head_bit_for_bit():
    assert MMDET_MODELS.get('PanopticFPNHead') is UpsamplerPanopticFPNHead
    upstream, ours = build_pair()
    assert ours.upsample_cfg is None
    assert all(type(branch) is ConvUpsample for branch in ours.conv_upsample_layers)
    assert list(ours.state_dict()) == list(upstream.state_dict())
    ours.load_state_dict(upstream.state_dict(), strict=True)
    with torch.no_grad():
        expected, got = upstream(features()), ours(features())
    assert torch.equal(expected['seg_preds'], got['seg_preds'])
    assert torch.equal(expected['seg_feats'], got['seg_feats'])


def test_interpolation_cfg_reproduces_mmdet_bilinear_bit_for_bit():
    upstream, ours = build_pair(upsample_cfg=dict(mode='bilinear', align_corners=False))
    assert all(isinstance(u, Interpolate) for branch in ours.conv_upsample_layers
               for u in branch.upsamplers)
    ours.load_state_dict(upstream.state_dict(), strict=True)  # Interpolate: no parameters
    with torch.no_grad():
        assert torch.equal(upstream(features())['seg_preds'], ours(features())['seg_preds'])


def test_dysample_branches_one_upsampler_per_upsampling():
    upstream, ours = build_pair(upsample_cfg=dict(type='DySample'))
    branches = ours.conv_upsample_layers
    assert [type(b) for b in branches] == [UpsamplerConvUpsample] * 4
    assert [len(b.upsamplers) for b in branches] == [0, 1, 2, 3]
    assert all(type(u) is DySample and u.in_channels == 32 for b in branches
               for u in b.upsamplers)
    # 6 x (32 * 32 + 32) new parameters (LP, 4 groups, x2: 1x1 conv 32 -> 2*4*2*2)
    delta = (sum(p.numel() for p in ours.parameters()) -
             sum(p.numel() for p in upstream.parameters()))
    assert delta == 6 * (32 * 32 + 32)
    missing, unexpected = ours.load_state_dict(upstream.state_dict(), strict=False)
    assert unexpected == []
    assert sorted(missing) == sorted(
        f'conv_upsample_layers.{i}.upsamplers.{k}.{name}' for i in range(4) for k in range(i)
        for name in ('offset.weight', 'offset.bias', 'init_pos'))
    # GroupNorm settings reached the rebuilt convolutions
    assert branches[3].conv[2].gn.num_groups == 8


def test_zero_offset_dysample_head_equals_mmdet_bilinear_head():
    upstream, ours = build_pair(upsample_cfg=dict(type='DySample'))
    ours.load_state_dict(upstream.state_dict(), strict=False)
    for branch in ours.conv_upsample_layers:
        for upsampler in branch.upsamplers:
            torch.nn.init.zeros_(upsampler.offset.weight)
    with torch.no_grad():
        expected, got = upstream(features()), ours(features())
    assert got['seg_preds'].shape == (2, 3, 16, 24)
    torch.testing.assert_close(got['seg_preds'], expected['seg_preds'], atol=1e-5, rtol=1e-5)


def test_conv_upsample_order_conv_then_upsampler():
    branch = UpsamplerConvUpsample(4, 8, num_layers=3, num_upsample=2,
                                   upsample_cfg=dict(type='DySample')).eval()
    x = torch.randn(1, 4, 5, 6)
    with torch.no_grad():
        expected = branch.conv[2](branch.upsamplers[1](branch.conv[1](branch.upsamplers[0](
            branch.conv[0](x)))))
        got = branch(x)
    assert got.shape == (1, 8, 20, 24)
    assert torch.equal(got, expected)


def test_head_init_weights_keeps_dysample_init():
    head = UpsamplerPanopticFPNHead(**HEAD_KWARGS, upsample_cfg=dict(type='DySample+'))
    for branch in head.conv_upsample_layers:
        for upsampler in branch.upsamplers:
            torch.nn.init.constant_(upsampler.offset.weight, 1.0)
            torch.nn.init.constant_(upsampler.scope.weight, 1.0)
    head.init_weights()
    upsamplers = [u for b in head.conv_upsample_layers for u in b.upsamplers]
    assert len(upsamplers) == 6
    weights = torch.cat([u.offset.weight.flatten() for u in upsamplers])
    assert 0.0008 < weights.std().item() < 0.0012
    assert all(torch.count_nonzero(u.scope.weight) == 0 for u in upsamplers)


def test_dysample_pl_in_head_needs_divisible_inner_channels():
    kwargs = dict(HEAD_KWARGS, inner_channels=36, norm_cfg=None)
    with pytest.raises(ValueError, match='divisible by groups'):
        UpsamplerPanopticFPNHead(**kwargs, upsample_cfg=dict(type='DySample-S'))
    # the same head without the option is mmdet's, which accepts it
    assert UpsamplerPanopticFPNHead(**kwargs).inner_channels == 36


def test_branches_are_summed_at_stride_4():
    _, ours = build_pair(upsample_cfg=dict(type='DySample-S+'))
    with torch.no_grad():
        out = ours(features())
    assert out['seg_feats'].shape == (2, 32, 16, 24)
    assert out['seg_preds'].shape == (2, 3, 16, 24)  # 2 stuff classes + 1 merged thing class
    assert torch.isfinite(out['seg_preds']).all()
    # check the sum against the branches run one by one
    with torch.no_grad():
        branch_sum = sum(b(f) for b, f in zip(ours.conv_upsample_layers, features()))
        torch.testing.assert_close(out['seg_feats'], branch_sum, atol=1e-5, rtol=1e-5)
