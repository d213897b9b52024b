"""UpsamplerFPN: mmdet's FPN unless ``upsample_cfg`` has a type; learned upsamplers otherwise."""
import math

import pytest
import torch
import torch.nn.functional as F
from mmdet.models.necks.fpn import FPN as MMDetFPN
from mmdet.registry import MODELS as MMDET_MODELS

import mmdysample  # noqa: F401  (registers the patched FPN)
from mmdysample.mmdet import UpsamplerFPN, match_spatial_size
from mmdysample.upsamplers import DySample, Interpolate

IN_CHANNELS = [8, 16, 24, 32]
OUT_CHANNELS = 16

# (FPN kwargs, description): the upstream options whose code paths UpsamplerFPN must keep.
FPN_VARIANTS = [
    dict(num_outs=4),
    dict(num_outs=5),  # extra level by max pooling
    dict(num_outs=5, add_extra_convs='on_input'),
    dict(num_outs=6, add_extra_convs='on_output', relu_before_extra_convs=True),
    dict(num_outs=5, add_extra_convs='on_lateral'),
    dict(num_outs=5, add_extra_convs=True, relu_before_extra_convs=True),
    dict(num_outs=5, start_level=1, add_extra_convs='on_input'),
    dict(num_outs=3, start_level=0, end_level=2),
    dict(num_outs=4, norm_cfg=dict(type='BN'), act_cfg=dict(type='ReLU')),
]
INTERPOLATION_CFGS = [
    None,  # mmdet's default dict(mode='nearest')
    dict(mode='nearest'),
    dict(scale_factor=2, mode='nearest'),
    dict(mode='bilinear', align_corners=False),
]


def pyramid(sizes, batch=2, seed=0):
    """Backbone-like inputs: level ``i`` has ``IN_CHANNELS[i]`` channels and ``sizes[i]``."""
    gen = torch.Generator().manual_seed(seed)
    return tuple(
        torch.randn(batch, c, h, w, generator=gen) for c, (h, w) in zip(IN_CHANNELS, sizes))


EVEN_SIZES = [(32, 24), (16, 12), (8, 6), (4, 3)]
# ResNet strides on a 75x100 image: every step rounds up, so x2 upsampling overshoots by one.
ODD_SIZES = [(19, 25), (10, 13), (5, 7), (3, 4)]


def build_pair(variant, upsample_cfg, seed=0):
    """Upstream FPN and UpsamplerFPN with the same weights (upstream's random init)."""
    kwargs = dict(in_channels=IN_CHANNELS, out_channels=OUT_CHANNELS, **variant)
    if upsample_cfg is not None:
        kwargs['upsample_cfg'] = upsample_cfg
    torch.manual_seed(seed)
    upstream = MMDetFPN(**kwargs).eval()
    torch.manual_seed(seed)
    ours = UpsamplerFPN(**kwargs).eval()
    return upstream, ours


def test_import_replaces_mmdet_fpn_in_registry():
    assert MMDET_MODELS.get('FPN') is UpsamplerFPN
    neck = MMDET_MODELS.build(
        dict(type='FPN', in_channels=IN_CHANNELS, out_channels=OUT_CHANNELS, num_outs=5))
    assert type(neck) is UpsamplerFPN
    assert issubclass(UpsamplerFPN, MMDetFPN)


@pytest.mark.parametrize('upsample_cfg', INTERPOLATION_CFGS, ids=str)
@pytest.mark.parametrize('variant', FPN_VARIANTS, ids=str)
def test_interpolation_cfg_is_mmdet_fpn_bit_for_bit(variant, upsample_cfg):
    upstream, ours = build_pair(variant, upsample_cfg)
    assert ours.upsamplers is None
    assert list(ours.state_dict()) == list(upstream.state_dict())
    # upstream checkpoints load strictly, in both directions
    ours.load_state_dict(upstream.state_dict(), strict=True)
    upstream.load_state_dict(ours.state_dict(), strict=True)
    size_sets = [EVEN_SIZES] if 'scale_factor' in (upsample_cfg or {}) else [EVEN_SIZES,
                                                                               ODD_SIZES]
    for sizes in size_sets:
        inputs = pyramid(sizes)
        with torch.no_grad():
            expected, got = upstream(inputs), ours(inputs)
        assert len(got) == len(expected) == variant['num_outs']
        for e, g in zip(expected, got):
            assert torch.equal(e, g)


@pytest.mark.parametrize('variant', FPN_VARIANTS, ids=str)
def test_learned_path_matches_mmdet_fpn_with_typed_nearest(variant):
    """The learned-upsampler forward (our own top-down + extra levels code) reproduces
    mmdet's FPN exactly when each step is a parameter-free nearest x2 (even sizes)."""
    upstream, ours = build_pair(variant, dict(mode='nearest'))
    typed = UpsamplerFPN(in_channels=IN_CHANNELS, out_channels=OUT_CHANNELS,
                         upsample_cfg=dict(type='Interpolate', mode='nearest'), **variant)
    typed.load_state_dict(upstream.state_dict(), strict=True)  # Interpolate has no params
    assert all(isinstance(u, Interpolate) for u in typed.upsamplers)
    inputs = pyramid(EVEN_SIZES)
    with torch.no_grad():
        for e, g in zip(upstream(inputs), typed.eval()(inputs)):
            assert torch.equal(e, g)


@pytest.mark.parametrize('variant,num_steps', [
    (dict(num_outs=5), 3),
    (dict(num_outs=5, start_level=1, add_extra_convs='on_input'), 2),
    (dict(num_outs=3, start_level=0, end_level=2), 2),
])
def test_one_dysample_per_top_down_step(variant, num_steps):
    fpn = UpsamplerFPN(in_channels=IN_CHANNELS, out_channels=OUT_CHANNELS,
                       upsample_cfg=dict(type='DySample'), **variant)
    assert len(fpn.upsamplers) == num_steps
    assert all(type(u) is DySample and u.in_channels == OUT_CHANNELS and u.scale_factor == 2
               for u in fpn.upsamplers)
    assert len({id(u) for u in fpn.upsamplers}) == num_steps  # not shared
    upsampler_keys = sorted(k for k in fpn.state_dict() if k.startswith('upsamplers.'))
    expected_keys = sorted(f'upsamplers.{j}.{name}' for j in range(num_steps)
                           for name in ('offset.weight', 'offset.bias', 'init_pos'))
    assert upsampler_keys == expected_keys
    # every other key is upstream's
    upstream = MMDetFPN(in_channels=IN_CHANNELS, out_channels=OUT_CHANNELS, **variant)
    other_keys = [k for k in fpn.state_dict() if not k.startswith('upsamplers.')]
    assert other_keys == list(upstream.state_dict())
    missing, unexpected = fpn.load_state_dict(upstream.state_dict(), strict=False)
    assert sorted(missing) == expected_keys and unexpected == []


def test_upsampler_j_upsamples_level_j_plus_1_to_level_j():
    fpn = UpsamplerFPN(in_channels=IN_CHANNELS, out_channels=OUT_CHANNELS, num_outs=4,
                       upsample_cfg=dict(type='DySample')).eval()
    seen = {}

    def record(step):
        def hook(module, args, out):
            seen[step] = (tuple(args[0].shape[-2:]), tuple(out.shape[-2:]))
        return hook

    for j, upsampler in enumerate(fpn.upsamplers):
        upsampler.register_forward_hook(record(j))
    with torch.no_grad():
        fpn(pyramid(EVEN_SIZES))
    for j in range(3):
        assert seen[j] == (EVEN_SIZES[j + 1], EVEN_SIZES[j])


def reference_top_down(fpn, inputs, upsample):
    """Independent top-down: ``upsample`` then slice to the lateral's size."""
    laterals = [conv(inputs[i + fpn.start_level]) for i, conv in enumerate(fpn.lateral_convs)]
    for j in range(len(laterals) - 2, -1, -1):
        h, w = laterals[j].shape[-2:]
        laterals[j] = laterals[j] + upsample(laterals[j + 1])[..., :h, :w]
    return [fpn.fpn_convs[i](lat) for i, lat in enumerate(laterals)]


@pytest.mark.parametrize('sizes', [EVEN_SIZES, ODD_SIZES], ids=['even', 'odd'])
def test_zero_offset_dysample_fpn_is_bilinear_fpn(sizes):
    """With zero offsets DySample is bilinear x2, so the neck must equal a reference
    top-down with F.interpolate(bilinear, x2) and a bottom/right crop on odd sizes."""
    fpn = UpsamplerFPN(in_channels=IN_CHANNELS, out_channels=OUT_CHANNELS, num_outs=4,
                       upsample_cfg=dict(type='DySample')).eval()
    for upsampler in fpn.upsamplers:
        torch.nn.init.zeros_(upsampler.offset.weight)
    inputs = pyramid(sizes)
    with torch.no_grad():
        got = fpn(inputs)
        expected = reference_top_down(
            fpn, inputs,
            lambda x: F.interpolate(x, scale_factor=2, mode='bilinear', align_corners=False))
    for e, g in zip(expected, got):
        assert g.shape == e.shape
        torch.testing.assert_close(g, e, atol=1e-5, rtol=1e-5)


def test_trained_dysample_fpn_on_odd_sizes_matches_reference():
    fpn = UpsamplerFPN(in_channels=IN_CHANNELS, out_channels=OUT_CHANNELS, num_outs=5,
                       upsample_cfg=dict(type='DySample+')).eval()
    with torch.no_grad():  # offsets far from zero, as after training
        for upsampler in fpn.upsamplers:
            upsampler.offset.weight.normal_(0, 0.5)
            upsampler.scope.weight.normal_(0, 0.5)
    inputs = pyramid(ODD_SIZES)
    with torch.no_grad():
        got = fpn(inputs)
        steps = iter(range(2, -1, -1))  # reference_top_down calls coarse-to-fine
        expected = reference_top_down(fpn, inputs, lambda x: fpn.upsamplers[next(steps)](x))
    assert [tuple(o.shape[-2:]) for o in got] == ODD_SIZES + [(2, 2)]
    for e, g in zip(expected, got[:4]):
        torch.testing.assert_close(g, e, atol=0, rtol=0)


def test_match_spatial_size_crops_and_pads_bottom_right():
    x = torch.arange(2 * 3 * 4 * 5, dtype=torch.float32).reshape(2, 3, 4, 5)
    assert match_spatial_size(x, (4, 5)) is x
    assert torch.equal(match_spatial_size(x, (3, 4)), x[:, :, :3, :4])
    padded = match_spatial_size(x, (5, 6))
    assert padded.shape == (2, 3, 5, 6)
    assert torch.equal(padded[:, :, :4, :5], x)
    assert torch.equal(padded[:, :, 4, :5], x[:, :, 3, :])  # last row repeated
    assert torch.equal(padded[:, :, :4, 5], x[:, :, :, 4])  # last column repeated
    mixed = match_spatial_size(x, (3, 6))
    assert torch.equal(mixed[:, :, :, :5], x[:, :, :3, :])
    assert torch.equal(mixed[:, :, :, 5], x[:, :, :3, 4])
    with pytest.raises(ValueError, match=r'factor of 2'):
        match_spatial_size(x, (6, 5))


def test_floor_rounded_pyramid_is_replicate_padded():
    """A backbone that rounds down (fine 9 -> coarse 4): x2 gives 8, padded to 9."""
    sizes = [(9, 9), (4, 4), (2, 2), (1, 1)]
    fpn = UpsamplerFPN(in_channels=IN_CHANNELS, out_channels=OUT_CHANNELS, num_outs=4,
                       upsample_cfg=dict(type='Interpolate', mode='nearest')).eval()
    inputs = pyramid(sizes)
    with torch.no_grad():
        got = fpn(inputs)
        laterals = [conv(x) for conv, x in zip(fpn.lateral_convs, inputs)]
        for j in (2, 1, 0):
            up = F.interpolate(laterals[j + 1], scale_factor=2, mode='nearest')
            pad = laterals[j].shape[-1] - up.shape[-1]
            laterals[j] = laterals[j] + F.pad(up, (0, pad, 0, pad), mode='replicate')
    torch.testing.assert_close(got[0], fpn.fpn_convs[0](laterals[0]), atol=0, rtol=0)


def test_levels_not_a_factor_two_apart_raise():
    fpn = UpsamplerFPN(in_channels=IN_CHANNELS, out_channels=OUT_CHANNELS, num_outs=4,
                       upsample_cfg=dict(type='DySample'))
    sizes = [(32, 32), (16, 16), (4, 4), (2, 2)]  # level 2 is 4x below level 1
    with pytest.raises(ValueError, match=r'\(8, 8\).*\(16, 16\)'):
        fpn(pyramid(sizes))


def test_wrong_number_of_inputs_raises():
    fpn = UpsamplerFPN(in_channels=IN_CHANNELS, out_channels=OUT_CHANNELS, num_outs=4,
                       upsample_cfg=dict(type='DySample'))
    with pytest.raises(ValueError, match='4 input levels'):
        fpn(pyramid(EVEN_SIZES)[:3])


def test_type_merged_with_base_mode_raises_with_hint():
    with pytest.raises(ValueError, match='_delete_=True'):
        UpsamplerFPN(in_channels=IN_CHANNELS, out_channels=OUT_CHANNELS, num_outs=4,
                     upsample_cfg=dict(mode='nearest', type='DySample'))


def test_unknown_upsampler_type_raises():
    with pytest.raises(ValueError, match="unknown upsampler type 'Dysample'"):
        UpsamplerFPN(in_channels=IN_CHANNELS, out_channels=OUT_CHANNELS, num_outs=4,
                     upsample_cfg=dict(type='Dysample'))


def test_upsample_cfg_must_not_set_other_scale():
    with pytest.raises(ValueError, match='scale_factor'):
        UpsamplerFPN(in_channels=IN_CHANNELS, out_channels=OUT_CHANNELS, num_outs=4,
                     upsample_cfg=dict(type='DySample', scale_factor=4))


@pytest.mark.parametrize('upsample_type', ['DySample', 'DySample+', 'DySample-S+'])
def test_init_weights_keeps_dysample_init_under_fpn_xavier(upsample_type):
    """FPN's init_cfg (Xavier on every Conv2d) must not overwrite DySample's own init."""
    fpn = UpsamplerFPN(in_channels=[256, 512, 1024, 2048], out_channels=256, num_outs=5,
                       upsample_cfg=dict(type=upsample_type))
    for upsampler in fpn.upsamplers:  # make sure init_weights has something to undo
        torch.nn.init.constant_(upsampler.offset.weight, 1.0)
        torch.nn.init.constant_(upsampler.offset.bias, 1.0)
        if upsampler.dyscope:
            torch.nn.init.constant_(upsampler.scope.weight, 1.0)
    fpn.init_weights()
    for upsampler in fpn.upsamplers:
        std = upsampler.offset.weight.std().item()
        assert 0.0008 < std < 0.0012, std
        assert torch.count_nonzero(upsampler.offset.bias) == 0
        if upsampler.dyscope:
            assert torch.count_nonzero(upsampler.scope.weight) == 0
    # ...while FPN's own convs did get the Xavier-uniform init
    lateral = fpn.lateral_convs[0].conv.weight  # 256 -> 256, 1x1
    xavier_std = math.sqrt(6 / (256 + 256)) / math.sqrt(3)
    assert abs(lateral.std().item() - xavier_std) < 0.1 * xavier_std
