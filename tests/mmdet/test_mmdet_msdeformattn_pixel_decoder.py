"""Mask2Former's MSDeformAttnPixelDecoder with a learned FPN-style top-down step."""
import pytest
import torch
from mmdet.models.layers.msdeformattn_pixel_decoder import \
    MSDeformAttnPixelDecoder as UpstreamDecoder
from mmdet.registry import MODELS as MMDET_MODELS
from mmengine.config import ConfigDict
from mmseg.registry import MODELS as MMSEG_MODELS

import mmdysample  # noqa: F401
from mmdet_site_testing import RecordingGuidedUpsampler, assert_upstream_signature
from mmdysample.mmdet import MSDeformAttnPixelDecoder
from mmdysample.upsamplers import DySample

IN_CHANNELS = [8, 16, 24, 32]
FEAT = 16


def decoder_kwargs():
    # mmdet's decoder reads encoder.layer_cfg.self_attn_cfg.num_levels as attributes
    return ConfigDict(
        in_channels=IN_CHANNELS, strides=[4, 8, 16, 32], feat_channels=FEAT, out_channels=FEAT,
        num_outs=3, norm_cfg=dict(type='GN', num_groups=4),
        encoder=dict(num_layers=1, layer_cfg=dict(
            self_attn_cfg=dict(embed_dims=FEAT, num_heads=2, num_levels=3, num_points=2,
                               batch_first=True),
            ffn_cfg=dict(embed_dims=FEAT, feedforward_channels=32, num_fcs=2,
                         ffn_drop=0.0))),
        positional_encoding=dict(num_feats=FEAT // 2, normalize=True))


def build(cls, upsample_cfg=None, seed=0):
    torch.manual_seed(seed)
    kwargs = decoder_kwargs()
    if upsample_cfg is not None:
        kwargs['upsample_cfg'] = upsample_cfg
    decoder = cls(**kwargs).eval()
    torch.manual_seed(seed + 1)
    decoder.init_weights()
    return decoder


def pyramid(height, width, batch=2, seed=0):
    """Stride-4..32 features of an unpadded ``height x width`` image (sizes round up)."""
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, c, -(-height // s), -(-width // s), generator=gen)
            for c, s in zip(IN_CHANNELS, (4, 8, 16, 32))]


def assert_same_outputs(expected, got, exact=True):
    (mask_e, levels_e), (mask_g, levels_g) = expected, got
    pairs = [(mask_e, mask_g)] + list(zip(levels_e, levels_g))
    assert len(levels_g) == len(levels_e)
    for e, g in pairs:
        if exact:
            assert torch.equal(e, g)
        else:
            torch.testing.assert_close(g, e, atol=1e-5, rtol=1e-5)


def test_registered_for_mmdet_and_mmseg_with_upstreams_signature():
    assert MMDET_MODELS.get('MSDeformAttnPixelDecoder') is MSDeformAttnPixelDecoder
    assert MMSEG_MODELS.get('mmdet.MSDeformAttnPixelDecoder') is MSDeformAttnPixelDecoder
    assert_upstream_signature(MSDeformAttnPixelDecoder, UpstreamDecoder, ['upsample_cfg'])


@pytest.mark.parametrize('upsample_cfg', [None, dict(mode='bilinear', align_corners=False)])
def test_without_type_the_decoder_is_mmdets_bit_for_bit(upsample_cfg):
    upstream, ours = build(UpstreamDecoder), build(MSDeformAttnPixelDecoder, upsample_cfg)
    assert ours.upsamplers is None
    assert list(ours.state_dict()) == list(upstream.state_dict())
    for key, value in upstream.state_dict().items():  # same seed, same initial weights
        assert torch.equal(ours.state_dict()[key], value)
    feats = pyramid(100, 75)  # odd: 25x19 at 1/4 ... 4x3 at 1/32
    with torch.no_grad():
        assert_same_outputs(upstream(feats), ours(feats))


@pytest.mark.parametrize('size', [(64, 64), (100, 75)], ids=['even', 'odd'])
def test_learned_path_with_typed_bilinear_is_mmdets_decoder(size):
    """Our forward (the encoder part restated in ``encode`` plus the learned top-down step)
    equals mmdet's decoder bit for bit when the step is the parameter-free bilinear
    interpolation mmdet's decoder does, at odd sizes too."""
    upstream = build(UpstreamDecoder)
    typed = build(MSDeformAttnPixelDecoder,
                  dict(type='Interpolate', mode='bilinear', align_corners=False))
    typed.load_state_dict(upstream.state_dict(), strict=True)
    feats = pyramid(*size)
    with torch.no_grad():
        assert_same_outputs(upstream(feats), typed(feats))


def test_one_dysample_outside_the_encoder_with_an_exact_delta():
    upstream = build(UpstreamDecoder)
    decoder = build(MSDeformAttnPixelDecoder, dict(type='DySample'))
    assert len(decoder.upsamplers) == 1
    assert type(decoder.upsamplers[0]) is DySample and decoder.upsamplers[0].in_channels == FEAT
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(decoder) - count(upstream) == FEAT * 32 + 32
    # upstream's init must not overwrite DySample's own (std 0.001 normal, zero bias)
    assert 0 < decoder.upsamplers[0].offset.weight.std() < 0.01
    missing, unexpected = decoder.load_state_dict(upstream.state_dict(), strict=False)
    assert unexpected == [] and all(k.startswith('upsamplers.0.') for k in missing)
    feats = pyramid(100, 75)
    with torch.no_grad():
        mask_feature, levels = decoder(feats)
    assert mask_feature.shape == (2, FEAT, 25, 19)
    assert [tuple(x.shape[-2:]) for x in levels] == [(4, 3), (7, 5), (13, 10)]


def test_zero_offset_dysample_is_mmdets_bilinear_step():
    upstream = build(UpstreamDecoder)
    decoder = build(MSDeformAttnPixelDecoder, dict(type='DySample'))
    torch.nn.init.zeros_(decoder.upsamplers[0].offset.weight)
    decoder.load_state_dict(upstream.state_dict(), strict=False)
    feats = pyramid(64, 64)
    with torch.no_grad():
        assert_same_outputs(upstream(feats), decoder(feats), exact=False)


def test_guided_upsampler_gets_the_lateral_at_one_quarter():
    decoder = build(MSDeformAttnPixelDecoder, dict(type=RecordingGuidedUpsampler))
    assert decoder.upsamplers[0].guide_channels == FEAT
    feats = pyramid(64, 64)
    RecordingGuidedUpsampler.calls = []
    with torch.no_grad():
        decoder(feats)
        lateral = decoder.lateral_convs[0](feats[0])
    (layer, x, guide), = RecordingGuidedUpsampler.calls
    assert layer is decoder.upsamplers[0] and x.shape[-2:] == (8, 8)
    assert torch.equal(guide, lateral)


def test_typeless_cfg_may_only_restate_bilinear():
    with pytest.raises(ValueError, match="mode='nearest' differs"):
        build(MSDeformAttnPixelDecoder, dict(mode='nearest'))
