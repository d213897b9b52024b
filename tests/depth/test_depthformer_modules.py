"""DepthFormer's encoder, HAHI neck and fusion head against straightforward computations."""
import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from mmcv.ops import MultiScaleDeformableAttention
from mmseg.models.backbones import SwinTransformer
from mmseg.registry import MODELS

from mmdysample.mmseg.depth import (DenseDepthHead, DepthFormerSwin, HAHIHeteroNeck,
                                    pixel_centre_reference_points)
from mmdysample.upsamplers import DySample

# ---------------------------------------------------------------- backbone

TINY_SWIN = dict(embed_dims=8, depths=[1, 1, 1, 1], num_heads=[1, 1, 2, 2], window_size=3)


def test_registered_in_mmseg():
    assert MODELS.get('DepthFormerSwin') is DepthFormerSwin
    assert MODELS.get('HAHIHeteroNeck') is HAHIHeteroNeck
    assert MODELS.get('DenseDepthHead') is DenseDepthHead


@pytest.mark.parametrize('size', [(64, 96), (50, 70)])
def test_backbone_is_swin_plus_a_conv_bn_relu_stem(size):
    torch.manual_seed(0)
    ours = DepthFormerSwin(stem_channels=12, **TINY_SWIN)
    swin = SwinTransformer(**TINY_SWIN)
    ours.eval(), swin.eval()  # (mmseg's Swin.train() returns None: no chaining)
    missing, unexpected = swin.load_state_dict(ours.state_dict(), strict=False)
    assert missing == [] and sorted(unexpected) == sorted(
        k for k in ours.state_dict() if k.startswith(('conv1.', 'bn1.')))
    with torch.no_grad():  # non-trivial batch-norm statistics
        ours.bn1.running_mean.uniform_(-0.5, 0.5)
        ours.bn1.running_var.uniform_(0.5, 2.0)
        ours.bn1.weight.uniform_(0.5, 1.5)
        ours.bn1.bias.uniform_(-0.5, 0.5)
    x = torch.randn(2, 3, *size)
    with torch.no_grad():
        outs = ours(x)
        expected_swin = swin(x)
    stem = F.conv2d(x, ours.conv1.weight, stride=2, padding=3)
    bn = ours.bn1
    stem = (stem - bn.running_mean[:, None, None]) / torch.sqrt(
        bn.running_var[:, None, None] + bn.eps) * bn.weight[:, None, None] + bn.bias[:, None, None]
    assert len(outs) == 5 and ours.out_channels == [12, 8, 16, 32, 64]
    torch.testing.assert_close(outs[0], stem.clamp(min=0), rtol=1e-5, atol=1e-5)
    assert outs[0].shape[-2:] == (math.ceil(size[0] / 2), math.ceil(size[1] / 2))
    for ours_level, swin_level in zip(outs[1:], expected_swin):
        assert torch.equal(ours_level, swin_level)


def test_backbone_rejects_bad_stem_channels():
    with pytest.raises(ValueError, match='stem_channels'):
        DepthFormerSwin(stem_channels=0, **TINY_SWIN)


# ---------------------------------------------------------------- neck

def test_pixel_centre_reference_points_by_loop():
    shapes = [(3, 4), (2, 2), (1, 3)]
    points = pixel_centre_reference_points(shapes, batch_size=2)
    assert points.shape == (2, 12 + 4 + 3, 3, 2)
    k = 0
    for height, width in shapes:
        for i in range(height):
            for j in range(width):
                for level in range(3):
                    assert points[1, k, level].tolist() == pytest.approx(
                        [(j + 0.5) / width, (i + 0.5) / height])
                k += 1


def sine_encoding(height, width, num_feats, temperature=10000):
    """DETR's unnormalised sine encoding of pixel (i, j): (y, x) = (i + 1, j + 1); channel
    2m / 2m+1 of each half is sin / cos of coordinate / temperature**(2m / num_feats)."""
    enc = torch.zeros(2 * num_feats, height, width)
    for half, coords in enumerate((torch.arange(1, height + 1)[:, None].expand(height, width),
                                   torch.arange(1, width + 1)[None].expand(height, width))):
        for c in range(num_feats):
            angle = coords.float() / temperature**(2 * (c // 2) / num_feats)
            enc[half * num_feats + c] = torch.sin(angle) if c % 2 == 0 else torch.cos(angle)
    return enc


def bilinear_zero_padded(value, x, y):
    """value (C, H, W) at continuous pixel coordinates x, y (N,) (pixel centres at
    integers), zero outside: explicit four-corner weights."""
    channels, height, width = value.shape
    x0, y0 = torch.floor(x), torch.floor(y)
    out = torch.zeros(channels, x.shape[0], dtype=value.dtype)
    for dx in (0, 1):
        for dy in (0, 1):
            xi, yi = x0 + dx, y0 + dy
            weight = (1 - (x - xi).abs()) * (1 - (y - yi).abs())
            inside = (xi >= 0) & (xi < width) & (yi >= 0) & (yi < height)
            gathered = value[:, yi.clamp(0, height - 1).long(), xi.clamp(0, width - 1).long()]
            out += gathered * (weight * inside)[None]
    return out


def deformable_attention_reference(attn, query, value_maps, query_pos, reference):
    """Multi-scale deformable attention written out (Zhu et al., Deformable DETR, Eq. 2):
    per head h: sum over levels l and points k of A_hlk * V_l(p_l + offset_hlk / (W_l, H_l)),
    locations normalised to [0, 1] (pixel coordinate = loc * size - 0.5), then the output
    projection and the residual. ``value_maps``: per level (B, C, H_l, W_l); ``reference``:
    (B, Nq, 2) normalised (x, y), the same on every level."""
    batch, num_query, channels = query.shape
    heads, levels, points = attn.num_heads, attn.num_levels, attn.num_points
    head_dim = channels // heads
    q = query + query_pos
    offsets = attn.sampling_offsets(q).view(batch, num_query, heads, levels, points, 2)
    weights = attn.attention_weights(q).view(batch, num_query, heads, levels * points)
    weights = weights.softmax(-1).view(batch, num_query, heads, levels, points)
    out = torch.zeros(batch, num_query, heads, head_dim)
    for level, vmap in enumerate(value_maps):
        height, width = vmap.shape[-2:]
        projected = attn.value_proj(vmap.flatten(2).transpose(1, 2))  # (B, HW, C)
        projected = projected.transpose(1, 2).reshape(batch, heads, head_dim, height, width)
        for b in range(batch):
            for h in range(heads):
                for k in range(points):
                    loc_x = reference[b, :, 0] + offsets[b, :, h, level, k, 0] / width
                    loc_y = reference[b, :, 1] + offsets[b, :, h, level, k, 1] / height
                    sampled = bilinear_zero_padded(projected[b, h], loc_x * width - 0.5,
                                                   loc_y * height - 0.5)
                    out[b, :, h] += (weights[b, :, h, level, k, None] * sampled.T)
    return attn.output_proj(out.reshape(batch, num_query, channels)) + query


def test_mmcv_deformable_attention_cpu_path_matches_the_written_out_formula():
    torch.manual_seed(0)
    attn = MultiScaleDeformableAttention(embed_dims=16, num_levels=2, num_heads=2,
                                         num_points=3, batch_first=True)
    attn.init_weights()
    attn.eval()  # its output dropout (0.1, as in the toolbox) off
    with torch.no_grad():  # offsets reaching outside the maps, non-uniform weights
        attn.sampling_offsets.weight.normal_(0, 0.5)
        attn.attention_weights.weight.normal_(0, 0.5)
    maps = [torch.randn(2, 16, 5, 7), torch.randn(2, 16, 3, 4)]
    query = torch.randn(2, 6, 16)
    pos = torch.randn(2, 6, 16)
    reference = torch.rand(2, 6, 2)
    shapes = torch.tensor([[5, 7], [3, 4]])
    out = attn(query, value=torch.cat([m.flatten(2).transpose(1, 2) for m in maps], 1),
               query_pos=pos, reference_points=reference[:, :, None].expand(-1, -1, 2, -1),
               spatial_shapes=shapes, level_start_index=torch.tensor([0, 35]))
    with torch.no_grad():
        expected = deformable_attention_reference(attn, query, maps, pos, reference)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)


def neck_reference(neck, inputs):
    """HAHI written level by level: explicit positional encodings, pixel-centre reference
    points, the written-out deformable attention, concatenation and the fusion convs."""
    lateral = [conv(x) for conv, x in zip(neck.lateral_convs, inputs)]
    feat_conv, feats_trans = lateral[0], lateral[1:]
    batch = feat_conv.shape[0]
    num_feats = neck.embedding_dim // 2
    projected = [proj(f) for proj, f in zip(neck.trans_proj, feats_trans)]
    tokens = torch.cat([p.flatten(2).transpose(1, 2) for p in projected], 1)
    pos = torch.cat([(sine_encoding(*f.shape[-2:], num_feats) + neck.level_embed[l][:, None,
                                                                                  None])
                     .flatten(1).T[None].expand(batch, -1, -1)
                     for l, f in enumerate(feats_trans)], 1)
    # self-attention: every token refers to its own pixel centre, on every level
    reference = torch.cat([torch.stack(torch.meshgrid(
        (torch.arange(w) + 0.5) / w, (torch.arange(h) + 0.5) / h, indexing='xy'), -1)
        .reshape(-1, 2) for h, w in (f.shape[-2:] for f in feats_trans)])
    attended = deformable_attention_reference(neck.self_attn, tokens, projected, pos,
                                              reference[None].expand(batch, -1, -1))
    # cross-attention from the convolutional feature
    query_map = neck.conv_proj(feat_conv)
    height, width = query_map.shape[-2:]
    query_pos = sine_encoding(height, width, num_feats).flatten(1).T[None].expand(batch, -1, -1)
    cross_reference = neck.reference_points(query_pos).sigmoid()
    attended_maps, start = [], 0
    for f in feats_trans:
        h, w = f.shape[-2:]
        attended_maps.append(attended[:, start:start + h * w].transpose(1, 2).reshape(
            batch, -1, h, w))
        start += h * w
    conv_out = deformable_attention_reference(neck.multi_att,
                                              query_map.flatten(2).transpose(1, 2),
                                              attended_maps, query_pos, cross_reference)
    conv_out = conv_out.transpose(1, 2).reshape(batch, -1, height, width)
    outs = [neck.conv_fusion(torch.cat([conv_out, feat_conv], 1))]
    for level, (f, a) in enumerate(zip(feats_trans, attended_maps)):
        outs.append(neck.trans_fusion[level](torch.cat([f, a], 1)))
    return outs


def tiny_neck(**kwargs):
    torch.manual_seed(0)
    neck = HAHIHeteroNeck([6, 8, 12, 16], [6, 8, 12, 16], embedding_dim=16,
                          positional_encoding=dict(type='SinePositionalEncoding', num_feats=8),
                          num_heads=2, num_points=2, **kwargs)
    neck.init_weights()
    with torch.no_grad():
        for attn in (neck.self_attn, neck.multi_att):
            attn.sampling_offsets.weight.normal_(0, 0.3)
            attn.attention_weights.weight.normal_(0, 0.3)
    return neck.eval()


def tiny_pyramid(channels=(6, 8, 12, 16), size=(12, 16), batch=2):
    return [torch.randn(batch, c, math.ceil(size[0] / 2**l), math.ceil(size[1] / 2**l))
            for l, c in enumerate(channels)]


@pytest.mark.parametrize('size', [(12, 16), (10, 14)])
def test_hahi_neck_matches_the_written_out_computation(size):
    neck = tiny_neck()
    inputs = tiny_pyramid(size=size)
    with torch.no_grad():
        outs = neck(inputs)
        expected = neck_reference(neck, inputs)
    assert [o.shape for o in outs] == [
        (2, c, *x.shape[-2:]) for c, x in zip([6, 8, 12, 16], inputs)]
    for out, ref in zip(outs, expected):
        torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)


def test_hahi_neck_without_attention_is_concat_and_convs():
    neck = tiny_neck(cross_att=False, self_att=False)
    inputs = tiny_pyramid()
    with torch.no_grad():
        outs = neck(inputs)
        lateral = [conv(x) for conv, x in zip(neck.lateral_convs, inputs)]
        expected = [neck.conv_fusion(torch.cat([neck.conv_proj(lateral[0]), lateral[0]], 1))]
        expected += [fusion(torch.cat([f, proj(f)], 1)) for fusion, proj, f in zip(
            neck.trans_fusion, neck.trans_proj, lateral[1:])]
    for out, ref in zip(outs, expected):
        torch.testing.assert_close(out, ref)


def test_hahi_neck_full_size_parameters_and_errors():
    neck = HAHIHeteroNeck([64, 96, 192, 384, 768], [64, 96, 192, 384, 768])
    # lateral 1x1 (+BN) / trans_proj / trans_fusion 3x3 / conv_proj / conv_fusion, the two
    # deformable attentions (value, output, offsets 8x4x8x2, weights 8x4x8), the reference
    # point layer and the level embeddings
    chans, emb = [64, 96, 192, 384, 768], 256
    convs = sum(c * c + 2 * c for c in chans)
    convs += sum(c * emb + 2 * emb for c in chans[1:])
    convs += sum((c + emb) * c * 9 + 2 * c for c in chans[1:])
    convs += 64 * emb + 2 * emb + (64 + emb) * 64 * 9 + 2 * 64
    attention = 2 * (2 * (emb * emb + emb) + (emb * 512 + 512) + (emb * 256 + 256))
    assert sum(p.numel() for p in neck.parameters()) == convs + attention + (emb * 2 + 2) + 4 * emb
    with pytest.raises(ValueError, match='num_feats=128'):
        HAHIHeteroNeck([8, 8], [8, 8], embedding_dim=256,
                       positional_encoding=dict(type='SinePositionalEncoding', num_feats=64))
    with pytest.raises(ValueError, match='same length'):
        HAHIHeteroNeck([8, 8, 8], [8, 8])
    with pytest.raises(ValueError, match='in_channels'):
        HAHIHeteroNeck([8, -1], [8, 8])
    with pytest.raises(ValueError, match='takes 4 features'):
        tiny_neck()(tiny_pyramid()[:3])


# ---------------------------------------------------------------- head

IN_CH = [6, 8, 12, 16, 20]
UP_CH = [4, 8, 12, 16, 24]


def tiny_head(**kwargs):
    torch.manual_seed(0)
    return DenseDepthHead(in_channels=IN_CH, up_sample_channels=UP_CH, channels=4,
                          **kwargs).eval()


def head_reference(head, feats, upsample):
    """DenseDepth fusion written with F.conv2d: 1x1 projection of the coarsest level, then
    for each finer level: upsample, concatenate [upsampled, skip], two 3x3 convs with
    LeakyReLU(0.01); depth = ReLU(3x3 conv) + min_depth."""
    def conv(module, x, act=True):
        out = F.conv2d(x, module.conv.weight, module.conv.bias, padding=module.conv.padding)
        return F.leaky_relu(out, 0.01) if act else out

    fused = conv(head.conv_list[0], feats[-1], act=False)
    for step, level in enumerate(reversed(range(len(feats) - 1))):
        block = head.conv_list[step + 1]
        up = upsample(level, fused, feats[level])
        fused = conv(block.convB, conv(block.convA, torch.cat([up, feats[level]], 1)))
    return F.relu(F.conv2d(fused, head.conv_depth.weight, head.conv_depth.bias, padding=1)) \
        + head.min_depth


def head_pyramid(size, batch=2, channels=IN_CH, dtype=torch.float32):
    return [torch.randn(batch, c, math.ceil(size[0] / 2**l), math.ceil(size[1] / 2**l),
                        dtype=dtype) for l, c in enumerate(channels)]


def check_against_reference(head, size, align_corners, **tolerance):
    """The head on a random pyramid against :func:`head_reference` with bilinear stages."""
    feats = head_pyramid(size)
    bilinear = lambda level, x, skip: F.interpolate(  # noqa: E731
        x, size=skip.shape[-2:], mode='bilinear', align_corners=align_corners)
    with torch.no_grad():
        out = head(feats)
        expected = head_reference(head, feats, bilinear)
    torch.testing.assert_close(out, expected, **tolerance)
    return feats, out


@pytest.mark.parametrize('upsample_cfg', [None, dict(mode='bilinear'),
                                          dict(mode='bilinear', align_corners=True)])
@pytest.mark.parametrize('size', [(32, 48), (27, 41)])
def test_head_without_type_is_bilinear_align_corners_concat_convs(upsample_cfg, size):
    head = tiny_head(upsample_cfg=upsample_cfg)
    _, out = check_against_reference(head, size, align_corners=True, rtol=1e-5, atol=1e-6)
    assert head.upsamplers is None and out.shape == (2, 1, *size)
    assert out.min() >= head.min_depth


@pytest.mark.parametrize('size', [(32, 48), (27, 41)])
def test_head_with_dysample_runs_one_upsampler_per_stage_finest_first(size):
    head = tiny_head(upsample_cfg=dict(type='DySample', groups=4))
    assert [u.in_channels for u in head.upsamplers] == UP_CH[1:]
    assert all(type(u) is DySample for u in head.upsamplers)
    for u in head.upsamplers:  # zero offsets: DySample samples at F.interpolate's positions
        nn.init.zeros_(u.offset.weight)
        nn.init.zeros_(u.offset.bias)
    feats, _ = check_against_reference(head, size, align_corners=False, rtol=1e-4, atol=1e-5)
    # stage by stage, coarsest first: upsamplers[j] takes fused level j + 1 (its channels)
    calls = []
    for level, layer in enumerate(head.upsamplers):
        layer.register_forward_hook(
            lambda mod, args, kwargs_out, level=level: calls.append((level, args[0].shape[1])))
    with torch.no_grad():
        head(feats)
    assert calls == [(3, 24), (2, 16), (1, 12), (0, 8)]


class RecordingGuided(nn.Module):
    """A guided layer that records what the head hands it (x2 nearest, plus the guide's
    channel mean, so that a wrong guide changes the output)."""
    requires_guide = True
    seen = []

    def __init__(self, in_channels, scale_factor=2, guide_channels=None):
        super().__init__()
        self.in_channels, self.scale_factor, self.guide_channels = (in_channels, scale_factor,
                                                                    guide_channels)

    def forward(self, x, guide):
        type(self).seen.append((x.shape, guide))
        return F.interpolate(x, scale_factor=2, mode='nearest') + guide.mean(1, keepdim=True)


def test_guided_upsamplers_get_the_skip_feature_as_guide():
    RecordingGuided.seen = []
    head = tiny_head(upsample_cfg=dict(type=RecordingGuided))
    assert [(u.in_channels, u.guide_channels) for u in head.upsamplers] == list(
        zip(UP_CH[1:], IN_CH[:-1]))
    feats = head_pyramid((32, 48))
    with torch.no_grad():
        head(feats)
    assert [guide is feats[level] for (_, guide), level in zip(RecordingGuided.seen,
                                                                 (3, 2, 1, 0))] == [True] * 4


@pytest.mark.parametrize('row', ['IndexNet', 'A2U', 'FADE', 'SAPA-B'])
def test_table9_guided_types_run_in_the_head(row):
    # the real guided layers at the head's channels: multiples of 32 for their GroupNorms
    torch.manual_seed(0)
    head = DenseDepthHead(in_channels=[32, 32, 64, 64, 96], up_sample_channels=[32, 64, 64,
                                                                                96, 128],
                          channels=32, upsample_cfg=dict(type=row)).eval()
    with torch.no_grad():
        out = head(head_pyramid((32, 48), channels=[32, 32, 64, 64, 96]))
    assert out.shape == (2, 1, 32, 48) and torch.isfinite(out).all()


def test_head_errors_name_the_parameter():
    with pytest.raises(ValueError, match='channels .* up_sample_channels\\[0\\]'):
        DenseDepthHead(in_channels=IN_CH, up_sample_channels=UP_CH, channels=8)
    with pytest.raises(ValueError, match='up_sample_channels'):
        DenseDepthHead(in_channels=IN_CH, up_sample_channels=UP_CH[:4], channels=4)
    with pytest.raises(ValueError, match="align_corners=True"):
        tiny_head(upsample_cfg=dict(mode='bilinear', align_corners=False))
    with pytest.raises(ValueError, match='unexpected keys'):
        tiny_head(upsample_cfg=dict(scale_factor=2))
    with pytest.raises(ValueError, match='max_depth'):
        tiny_head(max_depth=0)
    with pytest.raises(ValueError, match='below max_depth'):
        tiny_head(min_depth=20.0)
    with pytest.raises(ValueError, match="input_transform must be 'multiple_select'"):
        tiny_head(input_transform='resize_concat')


def test_head_loss_and_prediction():
    head = tiny_head(max_depth=2.0, loss_decode=dict(type='SiLogLoss'))
    from mmengine.structures import PixelData
    from mmseg.structures import SegDataSample
    feats = head_pyramid((16, 24))
    samples = []
    for _ in range(2):
        sample = SegDataSample()
        sample.gt_depth_map = PixelData(data=torch.rand(1, 32, 48) * 3 + 0.5)
        sample.set_metainfo(dict(img_shape=(32, 48), pad_shape=(32, 48)))
        samples.append(sample)
    losses = head.loss(feats, samples, train_cfg={})
    with torch.no_grad():
        depth = head(feats)
    resized = F.interpolate(depth, size=(32, 48), mode='bilinear', align_corners=True)
    gt = torch.stack([s.gt_depth_map.data for s in samples])
    expected = head.loss_decode(resized, gt)
    torch.testing.assert_close(losses['loss_silog'].detach(), expected)
    pred = head.predict(feats, [s.metainfo for s in samples], test_cfg={})
    torch.testing.assert_close(pred, F.interpolate(depth.clamp(1e-3, 2.0), size=(32, 48),
                                                   mode='bilinear', align_corners=True))
    assert pred.max() <= 2.0


@pytest.mark.slow
@pytest.mark.parametrize('dtype', [torch.bfloat16])
def test_full_size_head_under_cpu_autocast(dtype):
    """The Table 9 head (768-64 channels, full width) with DySample on a 128x192 input's
    pyramid (finest level 64x96; the 416x544 crop's took two minutes in bf16 on 2 CPU cores):
    autocast output close to float32 (per-pixel relative error, depths around 1-10)."""
    torch.manual_seed(0)
    head = DenseDepthHead(upsample_cfg=dict(type='DySample')).eval()
    for u in head.upsamplers:
        nn.init.normal_(u.offset.weight, std=0.01)
    feats = head_pyramid((64, 96), batch=1, channels=[64, 96, 192, 384, 768])
    with torch.no_grad():
        reference = head(feats)
        with torch.autocast('cpu', dtype=dtype):
            low = head(feats)
    assert low.shape == reference.shape == (1, 1, 64, 96)
    assert torch.isfinite(low).all()
    relative = ((low.float() - reference).abs() / reference.abs().clamp(min=1e-2)).median()
    assert relative < 0.05, relative
