"""UpsamplerFPN: mmdet's FPN unless ``upsample_cfg`` has a type; learned upsamplers otherwise."""
import math

import pytest
import torch
import torch.nn.functional as F
from mmdet.models.necks.fpn import FPN as MMDetFPN
from mmdet.registry import MODELS as MMDET_MODELS
from mmengine.registry import DefaultScope

import mmdysample  # noqa: F401  (registers the patched FPN)
from mmdysample.mmdet import UpsamplerFPN
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
# A backbone that rounds down (a 9x9 map over 4x4): x2 is one pixel short.
FLOOR_SIZES = [(9, 9), (4, 4), (2, 2), (1, 1)]


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
    # in the mmdet scope, as a runner with default_scope='mmdet' builds (another test of the
    # same process may have left the mmseg scope current, where 'FPN' is mmseg's neck)
    with DefaultScope.overwrite_default_scope('mmdet'):
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


@pytest.mark.parametrize('sizes', [EVEN_SIZES, ODD_SIZES, FLOOR_SIZES],
                         ids=['even', 'odd', 'floor'])
@pytest.mark.parametrize('variant, mode', [(v, 'nearest') for v in FPN_VARIANTS] +
                         [(FPN_VARIANTS[1], 'bilinear')], ids=str)
def test_learned_path_matches_mmdet_fpn_with_typed_interpolation(variant, mode, sizes):
    """The learned-upsampler forward (our own top-down + extra levels code, stepping through
    ``upsample(..., size=...)``) reproduces mmdet's FPN exactly when each step is the
    parameter-free interpolation mmdet's FPN does, at even and odd sizes alike."""
    interpolation = dict(mode=mode) if mode == 'nearest' else dict(mode=mode,
                                                                   align_corners=False)
    upstream, _ = build_pair(variant, interpolation)
    typed = UpsamplerFPN(in_channels=IN_CHANNELS, out_channels=OUT_CHANNELS,
                         upsample_cfg=dict(type='Interpolate', **interpolation), **variant)
    typed.load_state_dict(upstream.state_dict(), strict=True)  # Interpolate has no params
    assert all(isinstance(u, Interpolate) for u in typed.upsamplers)
    inputs = pyramid(sizes)
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


def test_zero_offset_dysample_fpn_is_mmdet_bilinear_fpn_on_even_sizes():
    """With zero offsets DySample is bilinear x2 (align_corners=False), so the neck must
    equal mmdet's own FPN with ``upsample_cfg=dict(mode='bilinear', align_corners=False)``
    and the same weights."""
    upstream, _ = build_pair(dict(num_outs=5), dict(mode='bilinear', align_corners=False))
    fpn = UpsamplerFPN(in_channels=IN_CHANNELS, out_channels=OUT_CHANNELS, num_outs=5,
                       upsample_cfg=dict(type='DySample')).eval()
    for upsampler in fpn.upsamplers:
        torch.nn.init.zeros_(upsampler.offset.weight)
    missing, unexpected = fpn.load_state_dict(upstream.state_dict(), strict=False)
    assert unexpected == [] and all(k.startswith('upsamplers.') for k in missing)
    inputs = pyramid(EVEN_SIZES)
    with torch.no_grad():
        for e, g in zip(upstream(inputs), fpn(inputs)):
            torch.testing.assert_close(g, e, atol=1e-5, rtol=1e-5)


def mmdet_fpn_with_steps(upstream, step_fn):
    """Run mmdet's own ``FPN.forward`` with its ``F.interpolate(laterals[i], size=...)``
    calls replaced by ``step_fn(j, x, size)``, ``j`` counting the steps coarse to fine
    (``j = num_steps - 1, ..., 0``) as mmdet's loop visits them."""
    import mmdet.models.necks.fpn as mmdet_fpn_module

    class StepFunctional:
        def __init__(self):
            self.step = len(upstream.lateral_convs) - 1

        def interpolate(self, x, size=None, **kwargs):
            self.step -= 1
            return step_fn(self.step, x, tuple(size))

        def __getattr__(self, name):
            return getattr(F, name)

    def run(inputs):
        original = mmdet_fpn_module.F
        mmdet_fpn_module.F = StepFunctional()
        try:
            return upstream(inputs)
        finally:
            mmdet_fpn_module.F = original

    return run


@pytest.mark.parametrize('sizes', [EVEN_SIZES, ODD_SIZES, FLOOR_SIZES],
                         ids=['even', 'odd', 'floor'])
def test_trained_dysample_fpn_matches_mmdet_fpn_with_the_same_steps(sizes):
    """Offsets far from zero, as after training: the neck equals mmdet's FPN forward whose
    interpolations are replaced by the same DySample layers, each taken to the finer
    level's size (``layer(x, size=...)`` where DySample takes a size, else x2 then a
    bilinear resize: the documented odd-size strategy)."""
    fpn = UpsamplerFPN(in_channels=IN_CHANNELS, out_channels=OUT_CHANNELS, num_outs=5,
                       upsample_cfg=dict(type='DySample+')).eval()
    with torch.no_grad():
        for upsampler in fpn.upsamplers:
            upsampler.offset.weight.normal_(0, 0.5)
            upsampler.scope.weight.normal_(0, 0.5)
    upstream = MMDetFPN(in_channels=IN_CHANNELS, out_channels=OUT_CHANNELS, num_outs=5).eval()
    upstream.load_state_dict(fpn.state_dict(), strict=False)

    def dysample_step(j, x, size):
        layer = fpn.upsamplers[j]
        if getattr(layer, 'accepts_size', False):
            return layer(x, size=size)
        out = layer(x)
        if tuple(out.shape[-2:]) == size:
            return out
        return F.interpolate(out, size=size, mode='bilinear', align_corners=False)

    inputs = pyramid(sizes)
    with torch.no_grad():
        got = fpn(inputs)
        expected = mmdet_fpn_with_steps(upstream, dysample_step)(inputs)
    assert [tuple(o.shape[-2:]) for o in got[:4]] == sizes
    for e, g in zip(expected, got):
        torch.testing.assert_close(g, e, atol=0, rtol=0)


class RecordingGuidedUpsampler(torch.nn.Module):
    """A guided layer as the guided upsamplers are: ``forward(x, guide)``, guide at the
    output size; returns nearest x2 plus the guide's channel mean, and records its calls."""
    requires_guide = True
    calls = []

    def __init__(self, in_channels, scale_factor=2, guide_channels=None):
        super().__init__()
        self.in_channels, self.scale_factor = in_channels, scale_factor
        self.guide_channels = guide_channels
        self.weight = torch.nn.Parameter(torch.ones(1))

    def forward(self, x, guide):
        type(self).calls.append((self, x, guide))
        return (F.interpolate(x, scale_factor=2, mode='nearest') * self.weight +
                guide.mean(1, keepdim=True))


@pytest.mark.parametrize('sizes', [EVEN_SIZES, ODD_SIZES], ids=['even', 'odd'])
def test_guided_upsampler_gets_the_lateral_of_the_target_level(sizes):
    fpn = UpsamplerFPN(in_channels=IN_CHANNELS, out_channels=OUT_CHANNELS, num_outs=5,
                       upsample_cfg=dict(type=RecordingGuidedUpsampler)).eval()
    assert len(fpn.upsamplers) == 3
    assert all(u.guide_channels == OUT_CHANNELS for u in fpn.upsamplers)
    upstream = MMDetFPN(in_channels=IN_CHANNELS, out_channels=OUT_CHANNELS, num_outs=5).eval()
    upstream.load_state_dict(fpn.state_dict(), strict=False)
    inputs = pyramid(sizes)
    RecordingGuidedUpsampler.calls = []
    with torch.no_grad():
        got = fpn(inputs)
        laterals = [conv(x) for conv, x in zip(upstream.lateral_convs, inputs)]
    calls = RecordingGuidedUpsampler.calls
    assert [layer for layer, _, _ in calls] == [fpn.upsamplers[j] for j in (2, 1, 0)]
    for (_, x, guide), j in zip(calls, (2, 1, 0)):
        # the guide is lateral j before the top-down sum, at (2h, 2w) of the input x
        h, w = x.shape[-2:]
        expected_guide = laterals[j]
        if tuple(expected_guide.shape[-2:]) != (2 * h, 2 * w):
            expected_guide = F.interpolate(expected_guide, size=(2 * h, 2 * w),
                                           mode='bilinear', align_corners=False)
        torch.testing.assert_close(guide, expected_guide, atol=0, rtol=0)

    def guided_step(j, x, size):
        layer, _, guide = calls[2 - j]
        out = F.interpolate(x, scale_factor=2, mode='nearest') + guide.mean(1, keepdim=True)
        if tuple(out.shape[-2:]) != size:
            out = F.interpolate(out, size=size, mode='bilinear', align_corners=False)
        return out

    with torch.no_grad():
        expected = mmdet_fpn_with_steps(upstream, guided_step)(inputs)
    for e, g in zip(expected, got):
        torch.testing.assert_close(g, e, atol=0, rtol=0)


def test_guided_type_is_built_with_the_fpn_width_as_guide_channels():
    fpn = UpsamplerFPN(in_channels=IN_CHANNELS, out_channels=OUT_CHANNELS, num_outs=4,
                       upsample_cfg=dict(type=RecordingGuidedUpsampler))
    assert [u.guide_channels for u in fpn.upsamplers] == [OUT_CHANNELS] * 3


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
