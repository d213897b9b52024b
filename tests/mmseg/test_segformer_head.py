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


def test_upsamplers_run_stage_major_on_the_expected_sizes():
    head = SegformerHead(upsample_cfg=dict(type='DySample'), **head_kwargs()).eval()
    seen = {}

    def record(index):
        def hook(module, args, out):
            seen[index] = (tuple(args[0].shape[-2:]), tuple(out.shape[-2:]))
        return hook

    for index, upsampler in enumerate(head.upsamplers):
        upsampler.register_forward_hook(record(index))
    with torch.no_grad():
        head(pyramid(16, 16))
    assert seen == {
        0: ((8, 8), (16, 16)),  # 1/8 -> 1/4
        1: ((4, 4), (8, 8)), 2: ((8, 8), (16, 16)),  # 1/16 -> 1/8 -> 1/4
        3: ((2, 2), (4, 4)), 4: ((4, 4), (8, 8)), 5: ((8, 8), (16, 16)),  # 1/32 -> ... -> 1/4
    }


def reference_forward(head, feats, final_mode='bilinear'):
    """The learned path when every upsampler is bilinear x2 (DySample with zero offsets)."""
    size = feats[0].shape[2:]
    outs = []
    for level, (x, conv) in enumerate(zip(feats, head.convs)):
        y = conv(x)
        for _ in range(level):
            y = F.interpolate(y, scale_factor=2, mode='bilinear', align_corners=False)
        if y.shape[2:] != size:
            y = F.interpolate(y, size=size, mode=final_mode,
                              align_corners=False if final_mode == 'bilinear' else None)
        outs.append(y)
    return head.conv_seg(head.fusion_conv(torch.cat(outs, dim=1)))


@pytest.mark.parametrize('height, width', [(16, 16), (25, 17)])
def test_learned_path_matches_an_independent_chain(height, width):
    # 25 x 17 at 1/4 (a 100 x 68 image): the levels are 13x9, 7x5, 4x3 and come back
    # from the chains as 26x18, 28x20, 32x24, then go to 25x17 with the head's interpolation.
    head = SegformerHead(upsample_cfg=dict(type='DySample'), **head_kwargs()).eval()
    zero_offsets(head)
    feats = pyramid(height, width)
    with torch.no_grad():
        out = head(feats)
        expected = reference_forward(head, feats)
    assert out.shape == (2, 5, height, width)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)


def test_odd_size_final_resize_uses_interpolate_mode():
    # (mmseg's own head crashes with 'nearest': it passes align_corners=False to it)
    head = SegformerHead(interpolate_mode='nearest', upsample_cfg=dict(type='DySample'),
                         **head_kwargs()).eval()
    zero_offsets(head)
    feats = pyramid(25, 17)
    with torch.no_grad():
        torch.testing.assert_close(head(feats), reference_forward(head, feats, 'nearest'),
                                   atol=1e-5, rtol=1e-5)


def test_non_pyramid_inputs_raise_a_clear_error():
    head = SegformerHead(upsample_cfg=dict(type='DySample'), **head_kwargs()).eval()
    feats = [torch.randn(1, c, 8, 8) for c in IN_CHANNELS]  # every level at the same size
    with pytest.raises(ValueError, match=r'decode_head input 1 reaches \(16, 16\) after 1 x2'):
        head(feats)


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
