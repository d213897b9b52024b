"""The patched MaskFormer pixel decoder and the heads that build it."""
import copy

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from mmcv.cnn import Conv2d
from mmdet.models.layers.pixel_decoder import PixelDecoder as UpstreamPixelDecoder
from mmdet.registry import MODELS as MMDET_MODELS
from mmengine.config import ConfigDict
from mmengine.model import ModuleList
from mmengine.registry import DefaultScope
from mmseg.registry import MODELS as MMSEG_MODELS

import mmdysample  # noqa: F401  (registers the patched decoder)
from mmdysample.mmseg import PixelDecoder

IN_CHANNELS = [8, 16, 24, 48]
FEAT = 32
DECODER_KWARGS = dict(in_channels=IN_CHANNELS, feat_channels=FEAT, out_channels=FEAT,
                      norm_cfg=dict(type='GN', num_groups=8))


def pyramid(height=16, width=16, batch=2, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return [
        torch.randn(batch, c, -(-height // 2**level), -(-width // 2**level),
                    generator=generator) for level, c in enumerate(IN_CHANNELS)
    ]


def test_registries_build_the_patched_decoder():
    assert MMDET_MODELS.get('PixelDecoder') is PixelDecoder
    # mmseg's MaskFormer config says type='mmdet.PixelDecoder'
    assert MMSEG_MODELS.get('mmdet.PixelDecoder') is PixelDecoder


@pytest.mark.parametrize('upsample_cfg', [None, dict(mode='nearest')])
def test_without_type_the_decoder_is_mmdet_bit_for_bit(upsample_cfg):
    torch.manual_seed(0)
    upstream = UpstreamPixelDecoder(**DECODER_KWARGS)
    upstream.init_weights()
    ours = PixelDecoder(upsample_cfg=upsample_cfg, **DECODER_KWARGS)
    assert list(ours.state_dict()) == list(upstream.state_dict())
    ours.load_state_dict(upstream.state_dict(), strict=True)
    feats = pyramid(19, 13)
    with torch.no_grad():
        mask_feature, memory = ours(feats, [])
        expected_mask_feature, expected_memory = upstream(feats, [])
    assert torch.equal(mask_feature, expected_mask_feature)
    assert torch.equal(memory, expected_memory)
    assert ours.upsamplers is None


def test_learned_upsamplers_one_per_top_down_step_in_lateral_order():
    decoder = PixelDecoder(upsample_cfg=dict(type='DySample-S+'), **DECODER_KWARGS)
    assert isinstance(decoder.upsamplers, ModuleList) and len(decoder.upsamplers) == 3
    assert all(up.in_channels == FEAT for up in decoder.upsamplers)
    seen = {}

    def record(index):
        def hook(module, args, out):
            seen[index] = (tuple(args[0].shape[-2:]), tuple(out.shape[-2:]))
        return hook

    for index, upsampler in enumerate(decoder.upsamplers):
        upsampler.register_forward_hook(record(index))
    with torch.no_grad():
        decoder(pyramid(16, 16), [])
    assert seen == {2: ((2, 2), (4, 4)), 1: ((4, 4), (8, 8)), 0: ((8, 8), (16, 16))}


def reference_forward(decoder, feats):
    """The top-down path with bilinear x2 steps (DySample with zero offsets) and a nearest
    resize when the size is off by a pixel."""
    y = decoder.last_feat_conv(feats[-1])
    for i in range(len(feats) - 2, -1, -1):
        cur = decoder.lateral_convs[i](feats[i])
        up = F.interpolate(y, scale_factor=2, mode='bilinear', align_corners=False)
        if up.shape[-2:] != cur.shape[-2:]:
            up = F.interpolate(up, size=cur.shape[-2:], mode='nearest')
        y = decoder.output_convs[i](cur + up)
    return decoder.mask_feature(y)


@pytest.mark.parametrize('height, width', [(16, 16), (25, 17)])
def test_learned_path_matches_an_independent_top_down_pass(height, width):
    decoder = PixelDecoder(upsample_cfg=dict(type='DySample'), **DECODER_KWARGS)
    for upsampler in decoder.upsamplers:
        nn.init.zeros_(upsampler.offset.weight)
    feats = pyramid(height, width)
    with torch.no_grad():
        mask_feature, memory = decoder(feats, [])
        expected = reference_forward(decoder, feats)
    assert mask_feature.shape == (2, FEAT, height, width)
    torch.testing.assert_close(mask_feature, expected, atol=1e-5, rtol=1e-5)
    assert memory is feats[-1]


def test_non_pyramid_inputs_raise_a_clear_error():
    decoder = PixelDecoder(upsample_cfg=dict(type='DySample'), **DECODER_KWARGS)
    feats = [torch.randn(1, c, 8, 8) for c in IN_CHANNELS]
    with pytest.raises(ValueError, match=r'pixel decoder level 3 reaches \(16, 16\)'):
        decoder(feats, [])


def test_init_weights_restores_the_upsamplers_own_initialisation():
    decoder = PixelDecoder(upsample_cfg=dict(type='DySample+'), **DECODER_KWARGS)
    for upsampler in decoder.upsamplers:
        nn.init.constant_(upsampler.offset.weight, 1.0)
        nn.init.constant_(upsampler.scope.weight, 1.0)
    decoder.init_weights()
    for upsampler in decoder.upsamplers:
        assert 0 < upsampler.offset.weight.std() < 0.01
        assert torch.all(upsampler.offset.bias == 0) and torch.all(upsampler.scope.weight == 0)


@pytest.mark.parametrize('upsample_cfg, error, match', [
    (dict(mode='bilinear'), ValueError, "mode='bilinear' differs from the module's own "
                                        "mode='nearest'"),
    (dict(mode='nearest', align_corners=False), ValueError, "unexpected keys"),
    ([('type', 'DySample')], TypeError, 'must be None or a dict, got list'),
    (dict(type='DySample', groups=3), ValueError, 'must be divisible by groups'),
])
def test_bad_upsample_cfg(upsample_cfg, error, match):
    with pytest.raises(error, match=match):
        PixelDecoder(upsample_cfg=upsample_cfg, **DECODER_KWARGS)


def tiny_transformer_decoder():
    return dict(
        return_intermediate=True,
        num_layers=1,
        layer_cfg=dict(
            self_attn_cfg=dict(embed_dims=FEAT, num_heads=2, batch_first=True),
            cross_attn_cfg=dict(embed_dims=FEAT, num_heads=2, batch_first=True),
            ffn_cfg=dict(embed_dims=FEAT, feedforward_channels=64)),
        init_cfg=None)


def head_cfg(scope, pixel_decoder, **overrides):
    cfg = dict(
        in_channels=IN_CHANNELS, feat_channels=FEAT, out_channels=FEAT, num_queries=4,
        pixel_decoder=pixel_decoder, positional_encoding=dict(num_feats=FEAT // 2,
                                                              normalize=True),
        transformer_decoder=tiny_transformer_decoder(),
        loss_cls=dict(type=f'{scope}CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0,
                      class_weight=[1.0] * 4 + [0.1]))
    cfg.update(overrides)
    return ConfigDict(cfg)  # mmdet's head reads loss_cls.class_weight as an attribute


@pytest.mark.parametrize('upsample_cfg', [None, dict(type='DySample-S+')])
def test_mmseg_maskformer_head_keeps_its_decoder_input_projection(upsample_cfg):
    # mmdet's head adds decoder_input_proj only if type(pixel_decoder) == PixelDecoder; the
    # registry now builds our subclass, which must still count as the FPN decoder.
    pixel_decoder = dict(type='mmdet.PixelDecoder', norm_cfg=dict(type='GN', num_groups=8),
                         upsample_cfg=upsample_cfg)
    head = MMSEG_MODELS.build(
        ConfigDict(type='MaskFormerHead', num_classes=4, **head_cfg('mmdet.', pixel_decoder)))
    assert type(head.pixel_decoder) is PixelDecoder
    assert isinstance(head.decoder_input_proj, Conv2d)
    assert head.decoder_input_proj.weight.shape == (FEAT, IN_CHANNELS[-1], 1, 1)
    head.init_weights()  # mmdet's head calls pixel_decoder.init_weights()
    for upsampler in head.pixel_decoder.upsamplers or ():
        assert 0 < upsampler.offset.weight.std() < 0.01


@pytest.fixture
def mmdet_scope():
    with DefaultScope.overwrite_default_scope('mmdet'):
        yield


def test_mmdet_maskformer_heads_keep_upstream_projection_rules(mmdet_scope):
    decoder = dict(type='PixelDecoder', norm_cfg=dict(type='GN', num_groups=8))
    equal_dims = head_cfg('', decoder, in_channels=[8, 16, 24, FEAT], num_things_classes=3,
                          num_stuff_classes=1)
    # last level already at the decoder width: no projection unless enforced
    head = MMDET_MODELS.build(ConfigDict(type='MaskFormerHead', **copy.deepcopy(equal_dims)))
    assert type(head).__module__ == 'mmdet.models.dense_heads.maskformer_head'
    assert type(head.pixel_decoder) is PixelDecoder
    assert isinstance(head.decoder_input_proj, nn.Identity)
    head = MMDET_MODELS.build(
        ConfigDict(type='MaskFormerHead', enforce_decoder_input_project=True,
                   **copy.deepcopy(equal_dims)))
    assert isinstance(head.decoder_input_proj, Conv2d)
    # mmdet's transformer-encoder decoder is untouched and never gets the projection
    encoder_decoder = dict(
        type='TransformerEncoderPixelDecoder', norm_cfg=dict(type='GN', num_groups=8),
        encoder=dict(num_layers=1, layer_cfg=dict(
            self_attn_cfg=dict(embed_dims=FEAT, num_heads=2, batch_first=True),
            ffn_cfg=dict(embed_dims=FEAT, feedforward_channels=64))),
        positional_encoding=dict(num_feats=FEAT // 2, normalize=True))
    head = MMDET_MODELS.build(
        ConfigDict(type='MaskFormerHead', **head_cfg('', encoder_decoder, num_things_classes=3,
                                                      num_stuff_classes=1)))
    assert type(head.pixel_decoder).__name__ == 'TransformerEncoderPixelDecoder'
    assert isinstance(head.decoder_input_proj, nn.Identity)
