"""The patched SegFormer head: upstream without a type, chained x2 upsamplers with one."""
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.model import ModuleList
from mmseg.models.decode_heads.segformer_head import SegformerHead as UpstreamSegformerHead
from mmseg.registry import MODELS

import mmdysample  # noqa: F401  (registers the patched head)
from mmdysample.mmseg import SegformerHead
from mmdysample.upsamplers import CARAFE, DySample

IN_CHANNELS = [8, 16, 24, 32]
CHANNELS = 16


def head_kwargs(**overrides):
    kwargs = dict(in_channels=IN_CHANNELS, in_index=[0, 1, 2, 3], channels=CHANNELS,
                  num_classes=5, dropout_ratio=0.1, norm_cfg=dict(type='BN'),
                  align_corners=False)
    kwargs.update(overrides)
    return kwargs


def pyramid(height=16, width=16, batch=2, seed=0):
    """Features at strides 4, 8, 16, 32 of a (4*height, 4*width) image, sides rounded up."""
    generator = torch.Generator().manual_seed(seed)
    feats = []
    for level, channels in enumerate(IN_CHANNELS):
        h, w = -(-height // 2**level), -(-width // 2**level)
        feats.append(torch.randn(batch, channels, h, w, generator=generator))
    return feats


def zero_offsets(head):
    for upsampler in head.upsamplers:
        nn.init.zeros_(upsampler.offset.weight)
        nn.init.zeros_(upsampler.offset.bias)


def test_registry_builds_the_patched_head():
    assert MODELS.get('SegformerHead') is SegformerHead
    head = MODELS.build(dict(type='SegformerHead', **head_kwargs()))
    assert type(head) is SegformerHead


@pytest.mark.parametrize('upsample_cfg', [None, dict(mode='bilinear'),
                                          dict(mode='bilinear', align_corners=False)])
def test_without_type_the_head_is_mmseg_bit_for_bit(upsample_cfg):
    torch.manual_seed(0)
    upstream = UpstreamSegformerHead(**head_kwargs())
    ours = SegformerHead(upsample_cfg=upsample_cfg, **head_kwargs())
    assert list(ours.state_dict()) == list(upstream.state_dict())
    ours.load_state_dict(upstream.state_dict(), strict=True)
    upstream.eval(), ours.eval()
    feats = pyramid(17, 13)  # odd sizes too: the upstream resize is kept as is
    with torch.no_grad():
        assert torch.equal(ours(feats), upstream(feats))
    assert ours.upsamplers is None


def test_learned_upsamplers_count_type_and_channels():
    head = SegformerHead(upsample_cfg=dict(type='DySample-S+'), **head_kwargs())
    assert isinstance(head.upsamplers, ModuleList)
    assert len(head.upsamplers) == 6
    assert all(type(up).__name__ == 'DySample_SPlus' and up.in_channels == CHANNELS
               and up.scale_factor == 2 for up in head.upsamplers)
    keys = [k for k in head.state_dict() if k.startswith('upsamplers.')]
    assert 'upsamplers.5.offset.weight' in keys and 'upsamplers.5.scope.weight' in keys
    assert [head.upsampler_indices(level) for level in range(4)] == [[], [0], [1, 2], [3, 4, 5]]


class RecordingGuided(nn.Module):
    """A guided x2 layer for wiring tests: nearest x2 plus a constant from the guide."""
    requires_guide = True

    def __init__(self, in_channels, scale_factor=2, guide_channels=None):
        super().__init__()
        self.in_channels, self.scale_factor = in_channels, scale_factor
        self.guide_channels = guide_channels
        self.weight = nn.Parameter(torch.ones(()))
        self.seen = []

    def forward(self, x, guide):
        self.seen.append((x, guide))
        out = F.interpolate(x, scale_factor=2, mode='nearest') * self.weight
        return out + guide.mean(dim=(1, 2, 3), keepdim=True)


@pytest.mark.parametrize('height, width', [(16, 16), (25, 17)])
def test_each_step_goes_to_the_next_projection_with_it_as_guide(height, width):
    # 25 x 17 at 1/4 (a 100 x 68 image): projections 25x17, 13x9, 7x5, 4x3
    head = SegformerHead(upsample_cfg=dict(type=RecordingGuided), **head_kwargs()).eval()
    assert all(up.guide_channels == CHANNELS for up in head.upsamplers)
    feats = pyramid(height, width)
    with torch.no_grad():
        out = head(feats)
        projections = [conv(x) for x, conv in zip(feats, head.convs)]
    assert out.shape == (2, 5, height, width)
    chains = {1: [0], 2: [1, 0], 3: [2, 1, 0]}  # target projection of each step, in order
    for level, targets in chains.items():
        for index, target in zip(head.upsampler_indices(level), targets):
            ((x, guide), ) = head.upsamplers[index].seen
            # the guide is the projection at the step's output resolution (at the layer's
            # own x2 size: sites.upsample resizes it when an odd size rounds differently)
            natural = (2 * x.shape[2], 2 * x.shape[3])
            expected = projections[target]
            if tuple(expected.shape[2:]) != natural:
                expected = F.interpolate(expected, size=natural, mode='bilinear',
                                         align_corners=False)
            torch.testing.assert_close(guide, expected, rtol=0, atol=0)
            # and the step's input is the previous step's output at that level's size
            assert x.shape[2:] == projections[target + 1].shape[2:]


@pytest.mark.parametrize('guided', ['FADE', 'SAPA-B'])
def test_guided_upsamplers_build_with_the_head_channels_and_run_at_odd_sizes(guided):
    # 32 channels: SAPA-B's group norm takes multiples of 32
    head = SegformerHead(upsample_cfg=dict(type=guided), **head_kwargs(channels=32)).eval()
    assert len(head.upsamplers) == 6
    assert all(up.requires_guide and up.in_channels == up.guide_channels == 32
               for up in head.upsamplers)
    with torch.no_grad():
        out = head(pyramid(25, 17))
    assert out.shape == (2, 5, 25, 17) and torch.isfinite(out).all()


def bilinear_chain_reference(head, feats):
    """Every input projected, then resized step by step through the finer projections'
    sizes with F.interpolate(bilinear): the learned path when each step is bilinear."""
    projections = [conv(x) for x, conv in zip(feats, head.convs)]
    outs = []
    for level, y in enumerate(projections):
        for target in range(level - 1, -1, -1):
            y = F.interpolate(y, size=projections[target].shape[2:], mode='bilinear',
                              align_corners=False)
        outs.append(y)
    return head.conv_seg(head.fusion_conv(torch.cat(outs, dim=1)))


@pytest.mark.parametrize('height, width', [(16, 16), (25, 17), (64, 64)])
def test_interpolate_steps_match_an_independent_chain_at_odd_sizes(height, width):
    head = SegformerHead(upsample_cfg=dict(type='Interpolate', mode='bilinear',
                                           align_corners=False), **head_kwargs()).eval()
    feats = pyramid(height, width)
    with torch.no_grad():
        torch.testing.assert_close(head(feats), bilinear_chain_reference(head, feats),
                                   rtol=0, atol=0)


@pytest.mark.parametrize('dtype', [torch.float32, torch.bfloat16])
def test_dysample_at_zero_offsets_is_the_bilinear_chain(dtype):
    # 128 x 128 at 1/4 (a 512 x 512 crop, the paper's): every step is an exact x2
    head = SegformerHead(upsample_cfg=dict(type='DySample'), **head_kwargs()).eval()
    zero_offsets(head)
    feats = pyramid(128, 128, batch=1)
    with torch.no_grad(), torch.autocast('cpu', dtype=dtype, enabled=dtype != torch.float32):
        out = head(feats)
        expected = bilinear_chain_reference(head, feats)
    tolerance = 1e-5 if dtype == torch.float32 else 5e-2
    assert out.dtype == expected.dtype
    torch.testing.assert_close(out, expected, atol=tolerance, rtol=tolerance)


def test_dysample_at_odd_sizes_reaches_every_projection_size():
    head = SegformerHead(upsample_cfg=dict(type='DySample'), **head_kwargs()).eval()
    with torch.no_grad():
        assert head(pyramid(25, 17)).shape == (2, 5, 25, 17)


def test_init_weights_keeps_dysample_initialisation_under_a_head_init_cfg():
    init_cfg = [dict(type='Constant', val=1.0, layer='Conv2d'),
                dict(type='Normal', std=0.01, override=dict(name='conv_seg'))]
    head = SegformerHead(upsample_cfg=dict(type='DySample+'), init_cfg=init_cfg,
                         **head_kwargs())
    head.init_weights()
    # the head's init_cfg did reach the plain convs ...
    assert torch.all(head.convs[0].conv.weight == 1)
    for upsampler in head.upsamplers:
        # ... but every upsampler got its own initialisation back afterwards
        assert upsampler.offset.weight.abs().max() < 0.01
        assert 0 < upsampler.offset.weight.std() < 0.01
        assert torch.all(upsampler.offset.bias == 0)
        assert torch.all(upsampler.scope.weight == 0)


def test_other_upsampler_types_build_at_head_channels():
    head = SegformerHead(upsample_cfg=dict(type='CARAFE', compressed_channels=8),
                         **head_kwargs())
    assert len(head.upsamplers) == 6 and all(isinstance(u, CARAFE) for u in head.upsamplers)
    out = head.eval()(pyramid(8, 8))
    assert out.shape == (2, 5, 8, 8)
    dysample = SegformerHead(upsample_cfg=dict(type='DySample', groups=2), **head_kwargs())
    assert all(isinstance(u, DySample) and u.groups == 2 for u in dysample.upsamplers)


@pytest.mark.parametrize('upsample_cfg, error, match', [
    (dict(mode='nearest'), ValueError, r"upsample_cfg mode='nearest' differs from the "
                                       r"module's own mode='bilinear'"),
    (dict(mode='bilinear', align_corners=True), ValueError, 'align_corners=True differs'),
    (dict(scale_factor=2), ValueError, r"unexpected keys \['scale_factor'\]"),
    ('DySample', TypeError, 'upsample_cfg must be None or a dict, got str'),
    (dict(type='NoSuchUpsampler'), ValueError, "unknown upsampler type 'NoSuchUpsampler'"),
    (dict(type='DySample', groups=3), ValueError, r'in_channels \(16\) must be divisible by '
                                                  r'groups \(3\)'),
])
def test_bad_upsample_cfg(upsample_cfg, error, match):
    with pytest.raises(error, match=match):
        SegformerHead(upsample_cfg=upsample_cfg, **head_kwargs())
