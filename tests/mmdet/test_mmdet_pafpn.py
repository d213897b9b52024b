"""RTMDet's CSPNeXtPAFPN and YOLOX's YOLOXPAFPN with learned top-down upsamplers."""
import pytest
import torch
import torch.nn.functional as F
from mmdet.models.necks.cspnext_pafpn import CSPNeXtPAFPN as UpstreamCSPNeXtPAFPN
from mmdet.models.necks.yolox_pafpn import YOLOXPAFPN as UpstreamYOLOXPAFPN
from mmdet.registry import MODELS as MMDET_MODELS

import mmdysample  # noqa: F401  (registers the patched necks)
from mmdet_site_testing import RecordingGuidedUpsampler, assert_upstream_signature
from mmdysample.mmdet import CSPNeXtPAFPN, YOLOXPAFPN
from mmdysample.upsamplers import DySample, Interpolate

IN_CHANNELS = [8, 16, 32]
OUT_CHANNELS = 8
NECKS = {'CSPNeXtPAFPN': (CSPNeXtPAFPN, UpstreamCSPNeXtPAFPN),
         'YOLOXPAFPN': (YOLOXPAFPN, UpstreamYOLOXPAFPN)}
# strides 8/16/32 of a 160x224 image, and of a 40x56 one: 5x7 at the coarsest level
SIZES = {'even': [(20, 28), (10, 14), (5, 7)], 'small': [(8, 8), (4, 4), (2, 2)]}


def inputs(sizes, batch=2, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(batch, c, h, w, generator=gen)
                 for c, (h, w) in zip(IN_CHANNELS, sizes))


def build(cls, upsample_cfg=None, seed=0):
    kwargs = dict(in_channels=IN_CHANNELS, out_channels=OUT_CHANNELS, num_csp_blocks=1)
    if upsample_cfg is not None:
        kwargs['upsample_cfg'] = upsample_cfg
    torch.manual_seed(seed)
    return cls(**kwargs).eval()


@pytest.mark.parametrize('name', list(NECKS))
def test_registered_over_mmdets_name_with_mmdets_signature(name):
    ours, upstream = NECKS[name]
    assert MMDET_MODELS.get(name) is ours and issubclass(ours, upstream)
    assert_upstream_signature(ours, upstream)


@pytest.mark.parametrize('upsample_cfg', [None, dict(scale_factor=2, mode='nearest'),
                                          dict(scale_factor=2, mode='bilinear')], ids=str)
@pytest.mark.parametrize('name', list(NECKS))
def test_without_type_the_neck_is_mmdets_bit_for_bit(name, upsample_cfg):
    ours_cls, upstream_cls = NECKS[name]
    upstream, ours = build(upstream_cls, upsample_cfg), build(ours_cls, upsample_cfg)
    assert ours.upsamplers is None
    # same modules, created in the same order: same initial weights under the same seed
    assert list(ours.state_dict()) == list(upstream.state_dict())
    for key, value in upstream.state_dict().items():
        assert torch.equal(ours.state_dict()[key], value)
    ours.load_state_dict(upstream.state_dict(), strict=True)
    x = inputs(SIZES['even'])
    with torch.no_grad():
        for e, g in zip(upstream(x), ours(x)):
            assert torch.equal(e, g)


@pytest.mark.parametrize('name', list(NECKS))
def test_learned_path_with_typed_nearest_is_mmdets_neck(name):
    """Our top-down/bottom-up forward reproduces mmdet's exactly when each step is the
    parameter-free nearest x2 mmdet's neck does."""
    ours_cls, upstream_cls = NECKS[name]
    upstream = build(upstream_cls)
    typed = build(ours_cls, dict(type='Interpolate', mode='nearest'))
    assert [type(u) for u in typed.upsamplers] == [Interpolate, Interpolate]
    typed.load_state_dict(upstream.state_dict(), strict=True)
    x = inputs(SIZES['even'])
    with torch.no_grad():
        for e, g in zip(upstream(x), typed(x)):
            assert torch.equal(e, g)


def dysample_params(channels, groups=4, scale=2):
    """Offset conv of an 'lp' DySample: channels -> 2 * groups * scale**2, with bias."""
    out = 2 * groups * scale**2
    return channels * out + out


@pytest.mark.parametrize('name', list(NECKS))
def test_one_dysample_per_top_down_step_at_that_steps_channels(name):
    ours_cls, upstream_cls = NECKS[name]
    neck = build(ours_cls, dict(type='DySample'))
    assert len(neck.upsamplers) == 2
    assert [(type(u), u.in_channels) for u in neck.upsamplers] == \
        [(DySample, 8), (DySample, 16)]
    upstream = build(upstream_cls)
    delta = (sum(p.numel() for p in neck.parameters()) -
             sum(p.numel() for p in upstream.parameters()))
    assert delta == dysample_params(8) + dysample_params(16) == 832
    missing, unexpected = neck.load_state_dict(upstream.state_dict(), strict=False)
    assert unexpected == [] and all(k.startswith('upsamplers.') for k in missing)
    assert sorted(missing) == sorted(f'upsamplers.{j}.{n}' for j in range(2)
                                     for n in ('init_pos', 'offset.weight', 'offset.bias'))


@pytest.mark.parametrize('name', list(NECKS))
def test_zero_offset_dysample_neck_is_mmdets_bilinear_neck(name):
    ours_cls, upstream_cls = NECKS[name]
    upstream = build(upstream_cls, dict(scale_factor=2, mode='bilinear', align_corners=False))
    neck = build(ours_cls, dict(type='DySample'))
    for upsampler in neck.upsamplers:
        torch.nn.init.zeros_(upsampler.offset.weight)
    neck.load_state_dict(upstream.state_dict(), strict=False)
    x = inputs(SIZES['even'])
    with torch.no_grad():
        for e, g in zip(upstream(x), neck(x)):
            torch.testing.assert_close(g, e, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize('name', list(NECKS))
def test_guided_upsampler_gets_the_input_of_the_target_level(name):
    ours_cls, _ = NECKS[name]
    neck = build(ours_cls, dict(type=RecordingGuidedUpsampler))
    assert [u.guide_channels for u in neck.upsamplers] == [8, 16]
    x = inputs(SIZES['small'])
    RecordingGuidedUpsampler.calls = []
    with torch.no_grad():
        neck(x)
    calls = RecordingGuidedUpsampler.calls
    assert [layer for layer, _, _ in calls] == [neck.upsamplers[1], neck.upsamplers[0]]
    assert torch.equal(calls[0][2], x[1]) and torch.equal(calls[1][2], x[0])


@pytest.mark.parametrize('name', list(NECKS))
def test_odd_level_sizes_reach_each_finer_input(name):
    """An unpadded odd-sized image (CSPNeXt's stride-2 convs round up: 9x11 over 5x6 over
    3x3): each step goes to the finer input's size (DySample takes the size, or x2 then a
    bilinear resize), so the neck runs where mmdet's nearest x2 cannot concatenate."""
    ours_cls, upstream_cls = NECKS[name]
    neck = build(ours_cls, dict(type='DySample'))
    x = inputs([(9, 11), (5, 6), (3, 3)])
    with torch.no_grad():
        outs = neck(x)
    assert [tuple(o.shape) for o in outs] == [(2, 8, 9, 11), (2, 8, 5, 6), (2, 8, 3, 3)]
    with pytest.raises(RuntimeError):
        build(upstream_cls)(x)


def test_guided_type_without_channel_match_is_never_needed():
    """The guide is the target level's input, whose channels always equal the upsampled
    feature's (the reduce conv maps the coarser level to them)."""
    neck = build(CSPNeXtPAFPN, dict(type=RecordingGuidedUpsampler))
    assert [u.in_channels for u in neck.upsamplers] == [u.guide_channels
                                                        for u in neck.upsamplers]


def test_bad_upsampler_type_names_the_parameter():
    with pytest.raises(ValueError, match="unknown upsampler type 'Dysample'"):
        build(CSPNeXtPAFPN, dict(type='Dysample'))
