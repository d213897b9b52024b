"""The patched MaskFormer pixel decoder and the heads (mmdet's, mmseg's) that build it."""
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
from mmdysample.mmdet import PixelDecoder
from mmdet_site_testing import RecordingGuidedUpsampler, assert_upstream_signature

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


def test_signatures_are_upstreams_plus_keyword_only_upsample_cfg():
    assert_upstream_signature(PixelDecoder, UpstreamPixelDecoder, ['upsample_cfg'])


def test_the_class_counts_as_mmdets_for_exact_type_checks_only():
    from mmdet.models.layers.pixel_decoder import TransformerEncoderPixelDecoder
    assert PixelDecoder == UpstreamPixelDecoder and UpstreamPixelDecoder == PixelDecoder
    assert not PixelDecoder != UpstreamPixelDecoder
    assert TransformerEncoderPixelDecoder != PixelDecoder

    class Subclass(PixelDecoder):
        pass

    assert Subclass != UpstreamPixelDecoder and Subclass != PixelDecoder
    assert hash(PixelDecoder) != hash(UpstreamPixelDecoder)  # identity hashing unchanged
    # mmdet's module still binds its own class: nothing upstream is rebound
    import mmdet.models.dense_heads.maskformer_head as maskformer_head
    assert maskformer_head.PixelDecoder is UpstreamPixelDecoder


@pytest.mark.parametrize('upsample_cfg', [None, dict(mode='nearest')])
def test_without_type_the_decoder_is_mmdet_bit_for_bit(upsample_cfg):
    torch.manual_seed(0)
    upstream = UpstreamPixelDecoder(**DECODER_KWARGS)
    torch.manual_seed(0)
    ours = PixelDecoder(upsample_cfg=upsample_cfg, **DECODER_KWARGS)
    assert type(ours) is PixelDecoder and ours.upsamplers is None
    # same random-number stream: same initial weights as upstream under the same seed
    for (key, expected), (got_key, got) in zip(upstream.state_dict().items(),
                                               ours.state_dict().items()):
        assert key == got_key and torch.equal(expected, got)
    feats = pyramid(19, 13)
    with torch.no_grad():
        mask_feature, memory = ours(feats, [])
        expected_mask_feature, expected_memory = upstream(feats, [])
    assert torch.equal(mask_feature, expected_mask_feature)
    assert torch.equal(memory, expected_memory)


def test_norm_cfg_is_the_fourth_positional_argument_as_upstream():
    """Regression: upsample_cfg used to be the 4th positional parameter, so mmdet's
    ``PixelDecoder(in, feat, out, norm_cfg)`` raised "unknown upsampler type 'GN'"."""
    norm_cfg = dict(type='GN', num_groups=8)
    torch.manual_seed(0)
    ours = PixelDecoder(IN_CHANNELS, FEAT, FEAT, norm_cfg, dict(type='ReLU'))
    torch.manual_seed(0)
    upstream = UpstreamPixelDecoder(IN_CHANNELS, FEAT, FEAT, norm_cfg, dict(type='ReLU'))
    assert ours.lateral_convs[0].gn.num_groups == 8
    learned = PixelDecoder(IN_CHANNELS, FEAT, FEAT, norm_cfg,
                           upsample_cfg=dict(type='DySample', groups=2))
    assert learned.lateral_convs[0].gn.num_groups == 8
    with pytest.raises(TypeError):  # upsample_cfg is keyword-only
        PixelDecoder(IN_CHANNELS, FEAT, FEAT, norm_cfg, dict(type='ReLU'), None,
                     dict(type='DySample'))
    feats = pyramid(16, 16)
    with torch.no_grad():
        assert torch.equal(ours(feats, [])[0], upstream(feats, [])[0])


def test_learned_decoder_survives_copy_and_pickle():
    import pickle
    decoder = PixelDecoder(upsample_cfg=dict(type='DySample', groups=2), **DECODER_KWARGS)
    for clone in (copy.deepcopy(decoder), pickle.loads(pickle.dumps(decoder))):
        assert type(clone) is PixelDecoder and len(clone.upsamplers) == 3
        for key, value in decoder.state_dict().items():
            assert torch.equal(clone.state_dict()[key], value)


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
    """The top-down path with bilinear steps straight to each lateral's size: DySample
    with zero offsets when it takes a size; otherwise bilinear x2 and, when the size is
    off, a bilinear resize (the odd-size strategy of every site)."""
    y = decoder.last_feat_conv(feats[-1])
    for i in range(len(feats) - 2, -1, -1):
        cur = decoder.lateral_convs[i](feats[i])
        if getattr(decoder.upsamplers[i], 'accepts_size', False):
            up = F.interpolate(y, size=cur.shape[-2:], mode='bilinear', align_corners=False)
        else:
            up = F.interpolate(y, scale_factor=2, mode='bilinear', align_corners=False)
            if up.shape[-2:] != cur.shape[-2:]:
                up = F.interpolate(up, size=cur.shape[-2:], mode='bilinear',
                                   align_corners=False)
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


@pytest.mark.parametrize('height, width', [(16, 16), (25, 17)])
def test_typed_nearest_steps_reproduce_mmdets_decoder(height, width):
    """Our learned-path forward with parameter-free nearest steps is mmdet's decoder, bit
    for bit, at odd sizes too (each step goes straight to the lateral's size)."""
    upstream = UpstreamPixelDecoder(**DECODER_KWARGS)
    typed = PixelDecoder(upsample_cfg=dict(type='Interpolate', mode='nearest'),
                         **DECODER_KWARGS)
    typed.load_state_dict(upstream.state_dict(), strict=True)
    feats = pyramid(height, width)
    with torch.no_grad():
        assert torch.equal(typed(feats, [])[0], upstream(feats, [])[0])


def test_guided_upsampler_gets_the_lateral_of_the_target_level():
    decoder = PixelDecoder(upsample_cfg=dict(type=RecordingGuidedUpsampler), **DECODER_KWARGS)
    assert [u.guide_channels for u in decoder.upsamplers] == [FEAT] * 3
    feats = pyramid(16, 16)
    RecordingGuidedUpsampler.calls = []
    with torch.no_grad():
        decoder(feats, [])
        laterals = [conv(f) for conv, f in zip(decoder.lateral_convs, feats)]
    calls = RecordingGuidedUpsampler.calls
    assert [layer for layer, _, _ in calls] == [decoder.upsamplers[i] for i in (2, 1, 0)]
    for (_, _, guide), i in zip(calls, (2, 1, 0)):
        assert torch.equal(guide, laterals[i])


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
    (dict(type='Dysample'), ValueError, "unknown upsampler type 'Dysample'"),
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


@pytest.fixture
def mmdet_scope():
    with DefaultScope.overwrite_default_scope('mmdet'):
        yield


def data_samples(batch, height, width):
    from mmdet.structures import DetDataSample
    return [DetDataSample(metainfo=dict(batch_input_shape=(height, width),
                                        img_shape=(height, width))) for _ in range(batch)]


DECODER_NAMES = {'string': 'PixelDecoder', 'upstream class': UpstreamPixelDecoder,
                 'plugin class': PixelDecoder}
UPSAMPLE_CFGS = {'no type': None, 'DySample': dict(type='DySample', groups=2)}


def head_and_oracle(scope, decoder_name, upsample_name, **extra):
    """The head built from the registry with the decoder named one way, and the oracle:
    the same head class with mmdet's own decoder class, under the same seed."""
    decoder_type = DECODER_NAMES[decoder_name]
    upsample_cfg = UPSAMPLE_CFGS[upsample_name]
    if decoder_type is UpstreamPixelDecoder and upsample_cfg is not None:
        pytest.skip('mmdet\'s class takes no upsample_cfg')
    if scope == 'mmseg.' and isinstance(decoder_type, str):
        decoder_type = 'mmdet.' + decoder_type
    decoder = dict(type=decoder_type, norm_cfg=dict(type='GN', num_groups=8))
    if upsample_cfg is not None:
        decoder['upsample_cfg'] = upsample_cfg
    registry = MMSEG_MODELS if scope == 'mmseg.' else MMDET_MODELS
    loss_scope = 'mmdet.' if scope == 'mmseg.' else ''
    oracle_decoder = dict(type=UpstreamPixelDecoder, norm_cfg=dict(type='GN', num_groups=8))
    torch.manual_seed(0)
    head = registry.build(ConfigDict(type='MaskFormerHead', **head_cfg(loss_scope, decoder),
                                     **extra))
    torch.manual_seed(0)
    oracle = registry.build(ConfigDict(type='MaskFormerHead',
                                       **head_cfg(loss_scope, oracle_decoder), **extra))
    return head, oracle, upsample_cfg


@pytest.mark.parametrize('upsample_name', list(UPSAMPLE_CFGS))
@pytest.mark.parametrize('decoder_name', list(DECODER_NAMES))
@pytest.mark.parametrize('scope', ['', 'mmseg.'], ids=['mmdet head', 'mmseg head'])
def test_head_projects_the_decoder_input_however_the_decoder_is_named(
        scope, decoder_name, upsample_name):
    """Regression: mmdet's head adds ``decoder_input_proj`` only if ``type(pixel_decoder) ==
    PixelDecoder``; with the old rebinding of that name a head built from mmdet's class
    object (as mmdet's pure-Python configs write it) got ``Identity`` (and its forward
    crashed), and without it a learned decoder would. mmseg's head runs mmdet's __init__."""
    extra = dict(num_classes=4) if scope else dict(num_things_classes=3, num_stuff_classes=1)
    head, oracle, upsample_cfg = head_and_oracle(scope, decoder_name, upsample_name, **extra)
    assert isinstance(head.decoder_input_proj, Conv2d)
    assert head.decoder_input_proj.weight.shape == (FEAT, IN_CHANNELS[-1], 1, 1)
    # upstream's modules in upstream's order, with upstream's initial weights
    upsampler_keys = [k for k in head.state_dict() if '.upsamplers.' in k]
    assert bool(upsampler_keys) == (upsample_cfg is not None)
    expected = oracle.state_dict()
    assert [k for k in head.state_dict() if k not in upsampler_keys] == list(expected)
    if upsample_cfg is None:
        for key, value in expected.items():
            assert torch.equal(head.state_dict()[key], value), key
    if not scope:
        with torch.no_grad():
            _, mask_preds = head(pyramid(32, 32), data_samples(2, 128, 128))
        assert mask_preds[-1].shape == (2, 4, 32, 32)


def test_mmdet_maskformer_heads_keep_upstream_projection_rules(mmdet_scope):
    for upsample_cfg in (None, dict(type='DySample', groups=2)):
        decoder = dict(type='PixelDecoder', norm_cfg=dict(type='GN', num_groups=8),
                       upsample_cfg=upsample_cfg)
        equal_dims = head_cfg('', decoder, in_channels=[8, 16, 24, FEAT],
                              num_things_classes=3, num_stuff_classes=1)
        # last level already at the decoder width: no projection unless enforced
        head = MMDET_MODELS.build(ConfigDict(type='MaskFormerHead',
                                             **copy.deepcopy(equal_dims)))
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


def test_head_init_weights_reaches_the_upsamplers(mmdet_scope):
    decoder = dict(type='PixelDecoder', norm_cfg=dict(type='GN', num_groups=8),
                   upsample_cfg=dict(type='DySample-S+'))
    head = MMDET_MODELS.build(ConfigDict(type='MaskFormerHead', **head_cfg(
        '', decoder, num_things_classes=3, num_stuff_classes=1)))
    for upsampler in head.pixel_decoder.upsamplers:
        nn.init.constant_(upsampler.offset.weight, 1.0)
    head.init_weights()  # mmdet's head calls pixel_decoder.init_weights()
    for upsampler in head.pixel_decoder.upsamplers:
        assert 0 < upsampler.offset.weight.std() < 0.01
