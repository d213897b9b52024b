"""UPerHead, DeepLabV3+'s head, mmseg's FPN neck and the Semantic FPN head.

Each patched module against the upstream module itself (no ``type``: same keys, strict
loading, bit-identical outputs at odd sizes; with a parameter-free ``Interpolate`` type that
does what upstream does: bit-identical again), against a hand-written chain of
``F.interpolate`` calls where the learned steps differ from upstream's single resize, and
with a recording guided layer that checks each step's target size and guide.
"""
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from mmseg.models.decode_heads.fpn_head import FPNHead as UpstreamFPNHead
from mmseg.models.decode_heads.sep_aspp_head import \
    DepthwiseSeparableASPPHead as UpstreamASPPHead
from mmseg.models.decode_heads.uper_head import UPerHead as UpstreamUPerHead
from mmseg.models.necks.fpn import FPN as UpstreamFPN
from mmseg.models.utils import Upsample
from mmseg.registry import MODELS

import mmdysample  # noqa: F401  (registers the patched modules)
from mmdysample.mmseg import FPN, DepthwiseSeparableASPPHead, FPNHead, UPerHead
from mmdysample.upsamplers import DySample

IN_CHANNELS = [8, 16, 24, 32]
CHANNELS = 16
BILINEAR = dict(type='Interpolate', mode='bilinear', align_corners=False)


def pyramid(height, width, batch=2, channels=IN_CHANNELS, seed=0):
    """Features at strides 4, 8, 16, 32 of a (4*height, 4*width) image, sides rounded up."""
    generator = torch.Generator().manual_seed(seed)
    return [
        torch.randn(batch, c, -(-height // 2**level), -(-width // 2**level),
                    generator=generator) for level, c in enumerate(channels)
    ]


def head_kwargs(**overrides):
    kwargs = dict(in_channels=IN_CHANNELS, in_index=[0, 1, 2, 3], channels=CHANNELS,
                  num_classes=5, norm_cfg=dict(type='BN'), align_corners=False)
    kwargs.update(overrides)
    return kwargs


def uper_kwargs(**overrides):
    return head_kwargs(pool_scales=(1, 2, 3), **overrides)


def aspp_kwargs(**overrides):
    kwargs = head_kwargs(in_channels=IN_CHANNELS[-1], in_index=3, c1_in_channels=IN_CHANNELS[0],
                         c1_channels=4, dilations=(1, 2, 3))
    kwargs.update(overrides)
    return kwargs


def fpn_head_kwargs(**overrides):
    return head_kwargs(**{'feature_strides': [4, 8, 16, 32], **overrides})


def neck_kwargs(**overrides):
    kwargs = dict(in_channels=IN_CHANNELS, out_channels=CHANNELS, num_outs=4)
    kwargs.update(overrides)
    return kwargs


# patched class, upstream class, kwargs, learned steps for 4 inputs, typeless cfgs to accept
SITES = {
    'UPerHead': (UPerHead, UpstreamUPerHead, uper_kwargs, 9,
                 [None, dict(mode='bilinear'), dict(mode='bilinear', align_corners=False)]),
    'DepthwiseSeparableASPPHead': (DepthwiseSeparableASPPHead, UpstreamASPPHead, aspp_kwargs, 1,
                                   [None, dict(mode='bilinear', align_corners=False)]),
    'FPNHead': (FPNHead, UpstreamFPNHead, fpn_head_kwargs, 6,
                [None, dict(align_corners=False)]),
    'FPN': (FPN, UpstreamFPN, neck_kwargs, 3,
            [dict(mode='nearest'), dict(mode='bilinear', align_corners=False),
             dict(scale_factor=2, mode='nearest')]),
}


def build_pair(name, upsample_cfg, **overrides):
    """The upstream module and ours (no type: the same weights), seeded identically."""
    ours_cls, upstream_cls, kwargs, _, _ = SITES[name]
    torch.manual_seed(0)
    upstream = upstream_cls(**kwargs(**overrides))
    if name == 'FPN' and upsample_cfg is not None:
        upstream = upstream_cls(**kwargs(upsample_cfg=upsample_cfg, **overrides))
    ours = ours_cls(**kwargs(upsample_cfg=upsample_cfg, **overrides))
    return upstream.eval(), ours.eval()


def outputs(module, feats):
    with torch.no_grad():
        out = module(feats)
    return out if isinstance(out, tuple) else (out, )


@pytest.mark.parametrize('name', list(SITES))
def test_registry_builds_the_patched_module(name):
    assert MODELS.get(name) is SITES[name][0]


@pytest.mark.parametrize('name, upsample_cfg',
                         [(name, cfg) for name, site in SITES.items() for cfg in site[4]])
def test_without_type_the_module_is_upstream_bit_for_bit(name, upsample_cfg):
    upstream, ours = build_pair(name, upsample_cfg)
    assert ours.upsamplers is None
    assert list(ours.state_dict()) == list(upstream.state_dict())
    ours.load_state_dict(upstream.state_dict(), strict=True)
    # 100 x 68 image: levels 25x17, 13x9, 7x5, 4x3 (odd sizes, ResNet's rounding); upstream's
    # neck with a fixed scale_factor needs sizes that halve exactly
    feats = pyramid(32, 24) if 'scale_factor' in (upsample_cfg or {}) else pyramid(25, 17)
    for got, expected in zip(outputs(ours, feats), outputs(upstream, feats), strict=True):
        assert torch.equal(got, expected)


@pytest.mark.parametrize('name', list(SITES))
def test_learned_steps_count_channels_and_keys(name):
    ours_cls, _, kwargs, count, _ = SITES[name]
    module = ours_cls(**kwargs(upsample_cfg=dict(type='DySample')))
    assert len(module.upsamplers) == count
    assert all(isinstance(up, DySample) and up.in_channels == CHANNELS and up.scale_factor == 2
               for up in module.upsamplers)
    keys = set(module.state_dict())
    upstream_keys = set(SITES[name][1](**kwargs()).state_dict())
    added = keys - upstream_keys
    assert upstream_keys <= keys
    # DySample's offset conv and its initial sampling position buffer, per step
    assert added == {f'upsamplers.{i}.{key}' for i in range(count)
                     for key in ('offset.weight', 'offset.bias', 'init_pos')}


@pytest.mark.parametrize('name', ['DepthwiseSeparableASPPHead', 'FPN'])
@pytest.mark.parametrize('height, width', [(25, 17), (64, 48)])
def test_single_step_sites_with_interpolate_steps_are_upstream(name, height, width):
    # Each learned step of these two goes straight to the finer feature's size, as upstream's
    # one resize does: with bilinear (nearest for the neck) Interpolate steps the outputs are
    # upstream's, bit for bit, at odd sizes too.
    step = BILINEAR if name != 'FPN' else dict(type='Interpolate', mode='nearest')
    upstream = SITES[name][1](**SITES[name][2]()).eval()
    ours = SITES[name][0](**SITES[name][2](upsample_cfg=step)).eval()
    ours.load_state_dict(upstream.state_dict(), strict=True)
    feats = pyramid(height, width)
    for got, expected in zip(outputs(ours, feats), outputs(upstream, feats), strict=True):
        assert torch.equal(got, expected)


def test_fpn_head_with_interpolate_steps_is_upstream_at_pyramid_sizes():
    # At sizes that halve exactly, upstream's Upsample(x2) lands on the next input's size.
    upstream, _ = build_pair('FPNHead', None)
    ours = FPNHead(**fpn_head_kwargs(upsample_cfg=BILINEAR)).eval()
    ours.load_state_dict(upstream.state_dict(), strict=True)
    feats = pyramid(32, 24)
    assert torch.equal(outputs(ours, feats)[0], outputs(upstream, feats)[0])


def fpn_head_reference(head, feats):
    """Scale heads by hand, each Upsample replaced by a bilinear resize to the size of the
    input one level finer."""
    output = None
    for level, scale_head in enumerate(head.scale_heads):
        y, target = feats[level], level
        for module in scale_head:
            if isinstance(module, Upsample):
                target -= 1
                y = F.interpolate(y, size=feats[target].shape[2:], mode='bilinear',
                                  align_corners=False)
            else:
                y = module(y)
        output = y if output is None else output + y
    return head.cls_seg(output)


def uper_reference(head, feats):
    """UPerHead with every resize a chain of bilinear resizes through the finer sizes."""
    laterals = [conv(feats[i]) for i, conv in enumerate(head.lateral_convs)]
    laterals.append(head.psp_forward(feats))
    for j in (2, 1, 0):
        laterals[j] = laterals[j] + F.interpolate(laterals[j + 1], size=laterals[j].shape[2:],
                                                  mode='bilinear', align_corners=False)
    fpn_outs = [head.fpn_convs[j](laterals[j]) for j in range(3)] + [laterals[3]]
    fused = []
    for level, y in enumerate(fpn_outs):
        for target in range(level - 1, -1, -1):
            y = F.interpolate(y, size=fpn_outs[target].shape[2:], mode='bilinear',
                              align_corners=False)
        fused.append(y)
    return head.cls_seg(head.fpn_bottleneck(torch.cat(fused, dim=1)))


@pytest.mark.parametrize('name, reference', [('UPerHead', uper_reference),
                                             ('FPNHead', fpn_head_reference)])
@pytest.mark.parametrize('height, width', [(25, 17), (33, 21), (32, 32)])
def test_chained_interpolate_steps_match_an_independent_chain(name, reference, height, width):
    head = SITES[name][0](**SITES[name][2](upsample_cfg=BILINEAR)).eval()
    feats = pyramid(height, width)
    with torch.no_grad():
        torch.testing.assert_close(head(feats), reference(head, feats), rtol=0, atol=0)


def zero_offsets(module):
    for up in module.upsamplers:
        nn.init.zeros_(up.offset.weight)
        nn.init.zeros_(up.offset.bias)


@pytest.mark.parametrize('name', list(SITES))
@pytest.mark.parametrize('dtype, size, width', [(torch.float32, 64, 64),
                                                (torch.bfloat16, 32, 32)])
def test_dysample_at_zero_offsets_is_bilinear_at_a_realistic_size(name, dtype, size, width):
    # float32: a 256 x 256 image (1/4: 64 x 64) at 64 channels; bf16 autocast (slow CPU
    # convolutions) at half that. Every step is an exact x2, where DySample with zero
    # offsets samples where bilinear x2 interpolation does.
    ours_cls, _, kwargs, _, _ = SITES[name]
    channels = [width] * 4
    overrides = dict(in_channels=channels, out_channels=width) if name == 'FPN' else dict(
        in_channels=channels, channels=width)
    if name == 'DepthwiseSeparableASPPHead':  # its input at 1/8, as in the -d8 configs
        overrides.update(in_channels=width, in_index=1, c1_in_channels=width)
    torch.manual_seed(0)
    learned = ours_cls(**kwargs(upsample_cfg=dict(type='DySample'), **overrides)).eval()
    zero_offsets(learned)
    interpolated = ours_cls(**kwargs(upsample_cfg=BILINEAR, **overrides)).eval()
    interpolated.load_state_dict(learned.state_dict(), strict=False)
    feats = pyramid(size, size, batch=1, channels=channels)
    with torch.autocast('cpu', dtype=dtype, enabled=dtype != torch.float32):
        got, expected = outputs(learned, feats), outputs(interpolated, feats)
    tolerance = 1e-4 if dtype == torch.float32 else 0.1
    for a, b in zip(got, expected, strict=True):
        assert a.dtype == b.dtype
        torch.testing.assert_close(a, b, atol=tolerance, rtol=tolerance)


class RecordingGuided(nn.Module):
    """A guided x2 layer for wiring tests: records (x, guide), returns nearest x2 + guide."""
    requires_guide = True

    def __init__(self, in_channels, scale_factor=2, guide_channels=None):
        super().__init__()
        self.in_channels, self.scale_factor = in_channels, scale_factor
        self.guide_channels = guide_channels
        self.seen = []

    def forward(self, x, guide):
        self.seen.append((x, guide))
        return F.interpolate(x, scale_factor=2, mode='nearest') + guide.mean(
            dim=1, keepdim=True)


def only_call(layer):
    ((x, guide), ) = layer.seen
    return x, guide


def test_uper_head_guides_are_the_laterals_and_fused_outputs():
    head = UPerHead(**uper_kwargs(upsample_cfg=dict(type=RecordingGuided))).eval()
    assert [up.guide_channels for up in head.upsamplers] == [CHANNELS] * 9
    feats = pyramid(32, 32)
    with torch.no_grad():
        head(feats)
        laterals = [conv(feats[i]) for i, conv in enumerate(head.lateral_convs)]
    # top-down: upsamplers[j] gets the lateral of level j as its guide
    for j in range(3):
        x, guide = only_call(head.upsamplers[j])
        assert torch.equal(guide, laterals[j]) and x.shape[2:] == feats[j + 1].shape[2:]
    # chains to 1/4, guided by the fused outputs (fpn_convs of the summed laterals) at the
    # step's output resolution: level 1 [3], level 2 [4, 5], level 3 [6, 7, 8]
    chains = {3: [(16, 16)], 4: [(8, 8)], 5: [(16, 16)], 6: [(4, 4)], 7: [(8, 8)],
              8: [(16, 16)]}
    for index, (in_size, ) in chains.items():
        x, guide = only_call(head.upsamplers[index])
        assert x.shape[2:] == in_size
        assert guide.shape == (2, CHANNELS, 2 * in_size[0], 2 * in_size[1])
    # level 1's and level 2's chains start from the fused outputs at 1/8 and 1/16, which
    # guide level 3's steps into 1/8 and 1/16 (and level 2's into 1/8)
    fused_8, fused_16 = only_call(head.upsamplers[3])[0], only_call(head.upsamplers[4])[0]
    assert torch.equal(only_call(head.upsamplers[7])[1], fused_8)
    assert torch.equal(only_call(head.upsamplers[4])[1], fused_8)
    assert torch.equal(only_call(head.upsamplers[6])[1], fused_16)
    # the 1/4 guide of every chain is fpn_convs[0] of the summed finest lateral
    x0, _ = only_call(head.upsamplers[0])
    with torch.no_grad():
        summed_0 = laterals[0] + RecordingGuided(CHANNELS)(x0, laterals[0])
        fused_4 = head.fpn_convs[0](summed_0)
    for index in (3, 5, 8):
        assert torch.equal(only_call(head.upsamplers[index])[1], fused_4)


def test_aspp_head_guide_is_the_projected_low_level_feature():
    head = DepthwiseSeparableASPPHead(**aspp_kwargs(
        upsample_cfg=dict(type=RecordingGuided))).eval()
    assert head.upsamplers[0].guide_channels == 4  # c1_channels
    feats = pyramid(25, 17)
    with torch.no_grad():
        out = head(feats)
        c1 = head.c1_bottleneck(feats[0])
    x, guide = only_call(head.upsamplers[0])
    assert x.shape[2:] == feats[3].shape[2:]
    # 4x3 -> natural 8x6: the guide (25x17) is resized to the layer's own size
    torch.testing.assert_close(guide, F.interpolate(c1, size=(8, 6), mode='bilinear',
                                                    align_corners=False), rtol=0, atol=0)
    assert out.shape == (2, 5, 25, 17)


def test_fpn_neck_and_head_guides_are_the_finer_features():
    neck = FPN(**neck_kwargs(upsample_cfg=dict(type=RecordingGuided))).eval()
    feats = pyramid(32, 32)
    with torch.no_grad():
        neck(feats)
        laterals = [conv(feats[i]) for i, conv in enumerate(neck.lateral_convs)]
    for j in range(3):
        assert torch.equal(only_call(neck.upsamplers[j])[1], laterals[j])

    head = FPNHead(**fpn_head_kwargs(upsample_cfg=dict(type=RecordingGuided))).eval()
    assert [up.guide_channels for up in head.upsamplers] == [8, 16, 8, 24, 16, 8]
    with torch.no_grad():
        head(feats)
    # scale head 3: 1/32 -> 1/16 -> 1/8 -> 1/4 guided by inputs 2, 1, 0
    for index, target in zip((3, 4, 5), (2, 1, 0)):
        assert only_call(head.upsamplers[index])[1] is feats[target]


@pytest.mark.parametrize('build, match', [
    (lambda: FPNHead(**fpn_head_kwargs(feature_strides=[4, 8, 32, 64],
                                      upsample_cfg=dict(type=RecordingGuided))),
     r"FPNHead scale head 2 step 0 has no such feature"),
    (lambda: DepthwiseSeparableASPPHead(**aspp_kwargs(c1_in_channels=0,
                                                       upsample_cfg=dict(type='DySample'))),
     r'needs the low-level branch \(c1_in_channels > 0, got 0\)'),
])
def test_a_step_without_a_guide_or_a_head_without_the_branch_raises(build, match):
    with pytest.raises(ValueError, match=match):
        build()


@pytest.mark.parametrize('name', ['UPerHead', 'DepthwiseSeparableASPPHead', 'FPNHead'])
@pytest.mark.parametrize('upsample_cfg, error, match', [
    (dict(mode='nearest'), ValueError, r"upsample_cfg mode='nearest' differs from the "
                                       r"module's own mode='bilinear'"),
    (dict(align_corners=True), ValueError, 'align_corners=True differs'),
    (dict(scale_factor=2), ValueError, r"unexpected keys \['scale_factor'\]"),
    ('DySample', TypeError, 'upsample_cfg must be None or a dict, got str'),
    (dict(type='NoSuchUpsampler'), ValueError, "unknown upsampler type 'NoSuchUpsampler'"),
])
def test_bad_upsample_cfg(name, upsample_cfg, error, match):
    with pytest.raises(error, match=match):
        SITES[name][0](**SITES[name][2](upsample_cfg=upsample_cfg))
