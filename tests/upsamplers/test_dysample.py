"""The DySample layer against the independent re-statement of the authors' module."""
import copy
import math

import pytest
import torch
import torch.nn.functional as F
from mmengine.model import BaseModule, ModuleList

from mmdysample.ops import use_fused
from mmdysample.upsamplers import DySample, upsample

from .reference_dysample import (ReferenceDySample, dysample_to_size_scalar_loop,
                                 reference_init_pos)

VARIANTS = [  # (style, dyscope): DySample, DySample+, DySample-S, DySample-S+
    ('lp', False), ('lp', True), ('pl', False), ('pl', True)
]
PAPER_GROUPS = {'lp': 4, 'pl': 8}


def channels_for(style, scale, groups):
    """A channel count >= 8 the variant accepts: a multiple of g (and of s*s for PL)."""
    multiple = math.lcm(groups, scale * scale) if style == 'pl' else groups
    return multiple * math.ceil(8 / multiple)


def randomise(module, std=1.0):
    """Weights large enough that many sampling points leave the map (border padding)."""
    with torch.no_grad():
        module.offset.weight.normal_(0, std)
        module.offset.bias.normal_(0, 0.5)
        if hasattr(module, 'scope'):
            module.scope.weight.normal_(0, std)
            if module.scope.bias is not None:
                module.scope.bias.normal_(0, 0.5)
    return module


def pair(style, dyscope, scale, groups=None, **knobs):
    """(reference with random weights, ours with the reference's state dict loaded strictly)."""
    groups = groups or PAPER_GROUPS[style]
    channels = channels_for(style, scale, groups)
    reference = randomise(ReferenceDySample(channels, scale, style, groups, dyscope, **knobs))
    ours = DySample(channels, scale, style=style, groups=groups, dyscope=dyscope, **knobs)
    # our own initial positions must be right before the reference's overwrite them
    torch.testing.assert_close(ours.init_pos.double(),
                               reference_init_pos(scale, groups, knobs.get('init', 'bilinear')),
                               atol=1e-7, rtol=0)
    ours.load_state_dict(reference.state_dict(), strict=True)
    return reference, ours, channels


# ---------------------------------------------------------------- exactness

@pytest.mark.parametrize('style, dyscope', VARIANTS)
@pytest.mark.parametrize('scale', [2, 3, 4])
@pytest.mark.parametrize('batch', [1, 2])
@pytest.mark.parametrize('fused', [True, False])  # the CPU layer; the lean composed layer
def test_matches_reference_formulation(style, dyscope, scale, batch, fused):
    reference, ours, channels = pair(style, dyscope, scale)
    reference.double()
    ours.double()
    height, width = 5, 7
    x = torch.randn(batch, channels, height, width, dtype=torch.float64)
    with torch.no_grad(), use_fused(fused):
        expected = reference(x)
        out = ours(x)
        # the weights must push points across the border, or border padding goes untested
        rel = reference.relative_positions(x)
        index_x = rel[:, 0] + (torch.arange(scale * width) // scale).view(1, 1, 1, -1)
        assert (index_x < 0).any() and (index_x > width - 1).any()
        assert rel.abs().max() > 0.75
    assert out.shape == (batch, channels, scale * height, scale * width)
    torch.testing.assert_close(out, expected, atol=1e-12, rtol=0)
    # sampling_offsets is the same field, in the low-res layout
    offsets = ours.sampling_offsets(x).detach()
    assert offsets.shape == (batch, 2 * ours.groups * scale * scale, height, width)
    # float32 to float rounding
    reference.float()
    ours.float()
    with torch.no_grad(), use_fused(fused):
        out32 = ours(x.float())
    assert out32.dtype == torch.float32
    torch.testing.assert_close(out32.double(), expected, atol=2e-5, rtol=0)


@pytest.mark.parametrize('knobs', [
    dict(style='lp', groups=1),
    dict(style='lp', groups=2, dyscope=True),
    dict(style='pl', groups=1, dyscope=True),
    dict(style='lp', init='nearest'),
    dict(style='pl', init='nearest', dyscope=True),
    dict(style='lp', scope_factor=0.1),
    dict(style='pl', scope_factor=1.0),
    dict(style='lp', dyscope=True, scope_factor=0.5),
    dict(style='lp', dyscope=True, scope_bias=True),
    dict(style='pl', dyscope=True, scope_bias=True),
])
def test_ablation_knobs_match_reference(knobs):
    knobs = dict(knobs)
    style, dyscope = knobs.pop('style'), knobs.pop('dyscope', False)
    reference, ours, channels = pair(style, dyscope, 2, groups=knobs.pop('groups', None),
                                     **knobs)
    x = torch.randn(2, channels, 5, 3, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(ours.double()(x), reference.double()(x), atol=1e-12, rtol=0)


@pytest.mark.parametrize('style, dyscope, scope_bias, keys', [
    ('lp', False, False, {'init_pos', 'offset.weight', 'offset.bias'}),
    ('lp', True, False, {'init_pos', 'offset.weight', 'offset.bias', 'scope.weight'}),
    ('pl', False, False, {'init_pos', 'offset.weight', 'offset.bias'}),
    ('pl', True, False, {'init_pos', 'offset.weight', 'offset.bias', 'scope.weight'}),
    ('lp', True, True, {'init_pos', 'offset.weight', 'offset.bias', 'scope.weight',
                        'scope.bias'}),
])
def test_state_dict_keys_and_shapes_are_the_authors(style, dyscope, scope_bias, keys):
    scale, channels = 2, 32
    groups = PAPER_GROUPS[style]
    layer = DySample(channels, scale, style=style, dyscope=dyscope, scope_bias=scope_bias)
    state = layer.state_dict()
    assert set(state) == keys
    conv_in, conv_out = ((channels // 4, 2 * groups) if style == 'pl' else
                         (channels, 2 * groups * 4))
    assert state['offset.weight'].shape == (conv_out, conv_in, 1, 1)
    assert state['offset.bias'].shape == (conv_out, )
    assert state['init_pos'].shape == (1, 2 * groups * 4, 1, 1)
    if dyscope:
        assert state['scope.weight'].shape == (conv_out, conv_in, 1, 1)
    # init_pos is a buffer, not a learnable parameter
    assert 'init_pos' not in dict(layer.named_parameters())
    # the reference (the authors' layout) loads strictly, and back
    reference = ReferenceDySample(channels, scale, style, groups, dyscope, scope_bias=scope_bias)
    layer.load_state_dict(reference.state_dict(), strict=True)
    reference.load_state_dict(layer.state_dict(), strict=True)


# ------------------------------------------------------------------ parameters

@pytest.mark.parametrize('style, dyscope, expected', [
    ('lp', False, 256 * 32 + 32),  # 8224: 1x1 conv 256 -> 2*4*2*2
    ('lp', True, 256 * 32 + 32 + 256 * 32),
    ('pl', False, 64 * 16 + 16),  # 1040: 1x1 conv 256/4 -> 2*8
    ('pl', True, 64 * 16 + 16 + 64 * 16),
])
def test_parameter_count_c256_x2(style, dyscope, expected):
    layer = DySample(256, 2, style=style, dyscope=dyscope)
    assert sum(p.numel() for p in layer.parameters()) == expected


@pytest.mark.parametrize('scale', [2, 3, 4])
@pytest.mark.parametrize('style', ['lp', 'pl'])
def test_parameter_count_formula(style, scale):
    channels, groups = 144, PAPER_GROUPS[style]
    if style == 'lp':
        conv_in, conv_out = channels, 2 * groups * scale * scale
    else:
        conv_in, conv_out = channels // (scale * scale), 2 * groups
    plain = DySample(channels, scale, style=style)
    plus = DySample(channels, scale, style=style, dyscope=True)
    assert sum(p.numel() for p in plain.parameters()) == conv_in * conv_out + conv_out
    assert sum(p.numel() for p in plus.parameters()) == 2 * conv_in * conv_out + conv_out


# ----------------------------------------------------------------- shapes

@pytest.mark.parametrize('style, dyscope', VARIANTS)
def test_one_pixel_input(style, dyscope):
    """A 1x1 map (both border clamps at once): every output point is that pixel's value.
    (Output shapes of other sizes are checked by the value tests.)"""
    layer = randomise(DySample(72, 3, style=style, dyscope=dyscope))
    x = torch.randn(2, 72, 1, 1)
    with torch.no_grad():
        out = layer(x)
    torch.testing.assert_close(out, x.expand(2, 72, 3, 3), atol=0, rtol=0)


EMPTY_BATCH_PATHS = {  # path -> the autograd node of the layer's output
    'fused': '_FusedDySampleLayerBackward',  # the CPU layer
    'lean': '_LeanDySampleLayerBackward',  # the composed layer (CUDA; kernel off)
    'autocast': '_FusedSampleBackward',  # projection under autocast, then the sampling
    'size': 'ViewBackward0',  # forward(x, size) at an odd size
}


@pytest.mark.parametrize('style, dyscope', VARIANTS)
@pytest.mark.parametrize('path', list(EMPTY_BATCH_PATHS))
def test_empty_batch_forward_and_backward(style, dyscope, path):
    """B=0 (e.g. a detector's mask head without RoIs): the empty tensor upstream's default
    (bilinear interpolation) returns, and a backward giving x's gradient of x's shape and
    every parameter a zero gradient."""
    layer = randomise(DySample(16, 2, style=style, dyscope=dyscope))
    x = torch.randn(0, 16, 5, 7, requires_grad=True)
    size = (11, 9) if path == 'size' else (10, 14)
    with use_fused(path != 'lean'), torch.autocast('cpu', torch.bfloat16,
                                                   enabled=path == 'autocast'):
        out = layer(x, size=size) if path == 'size' else layer(x)
    upstream = F.interpolate(x.detach(), size=size, mode='bilinear', align_corners=False)
    assert out.shape == upstream.shape and out.dtype == upstream.dtype
    assert type(out.grad_fn).__name__ == EMPTY_BATCH_PATHS[path]
    out.sum().backward()
    assert x.grad.shape == x.shape
    for name, parameter in layer.named_parameters():
        assert parameter.grad is not None and parameter.grad.shape == parameter.shape, name
        assert not parameter.grad.any(), name
    offsets = (0, 2 * layer.groups * 4, 5, 7)
    assert layer.learned_offsets(x).shape == offsets == layer.sampling_offsets(x).shape


def test_default_groups_are_the_papers():
    assert DySample(64).groups == 4
    assert DySample(64, style='pl').groups == 8
    assert DySample(64, style='pl', groups=2).groups == 2
    assert DySample(64, scale_factor=2.0).scale_factor == 2


def test_batch_elements_are_independent():
    layer = randomise(DySample(16, 2, dyscope=True), std=0.3)
    x = torch.randn(3, 16, 5, 7)
    with torch.no_grad():
        together = layer(x)
        alone = torch.cat([layer(x[i:i + 1]) for i in range(3)])
    torch.testing.assert_close(together, alone)


@pytest.mark.parametrize('style, dyscope', VARIANTS)
@pytest.mark.parametrize('groups', [1, None])
def test_channels_last_and_non_contiguous_inputs(style, dyscope, groups):
    layer = randomise(DySample(32, 2, style=style, groups=groups, dyscope=dyscope), std=0.3)
    x = torch.randn(2, 32, 5, 7)
    with torch.no_grad():
        expected = layer(x)
        channels_last = layer(x.contiguous(memory_format=torch.channels_last))
        strided = layer(torch.randn(2, 32, 7, 5).transpose(2, 3).copy_(x))
        layer.to(memory_format=torch.channels_last)
        both = layer(x.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(channels_last, expected)  # conv summation order may differ
    torch.testing.assert_close(strided, expected)
    torch.testing.assert_close(both, expected)


# ------------------------------------------------------------------ init

@pytest.mark.parametrize('style, dyscope', VARIANTS)
@pytest.mark.parametrize('scale', [2, 3, 4])
def test_zero_offsets_give_bilinear_interpolation(style, dyscope, scale):
    channels = channels_for(style, scale, PAPER_GROUPS[style])
    layer = DySample(channels, scale, style=style, dyscope=dyscope).double()
    torch.nn.init.zeros_(layer.offset.weight)
    x = torch.randn(2, channels, 5, 7, dtype=torch.float64)
    expected = F.interpolate(x, scale_factor=scale, mode='bilinear', align_corners=False)
    # init_pos is a float32 buffer, as in the authors' module: at s=3 the positions +-1/3 carry
    # float32 rounding (~3e-8 pixel) even in a float64 layer
    with torch.no_grad():
        torch.testing.assert_close(layer(x), expected, atol=1e-12 if scale != 3 else 3e-7,
                                   rtol=0)


@pytest.mark.parametrize('style, dyscope', VARIANTS)
def test_fresh_layer_is_close_to_bilinear_interpolation(style, dyscope):
    """The real initialisation (offset weights ~ N(0, 0.001)) starts next to bilinear
    upsampling: bilinear sampling is Lipschitz with the largest neighbour difference of the
    map as constant, so the output moves at most (|dx| + |dy|) * that from it."""
    layer = DySample(64, 2, style=style, dyscope=dyscope)
    x = torch.randn(2, 64, 6, 5)
    expected = F.interpolate(x, scale_factor=2, mode='bilinear', align_corners=False)
    with torch.no_grad():
        difference = (layer(x) - expected).abs().max().item()
        learned = (layer.sampling_offsets(x) - layer.init_pos).abs().max().item()
    steepest = max(x.diff(dim=2).abs().max().item(), x.diff(dim=3).abs().max().item())
    assert 0 < learned < 0.02
    assert 0 < difference <= 2 * learned * steepest + 1e-6


@pytest.mark.parametrize('scale', [2, 3, 4])
@pytest.mark.parametrize('style', ['lp', 'pl'])
def test_nearest_init_with_zero_offsets_gives_nearest_interpolation(scale, style):
    channels = channels_for(style, scale, PAPER_GROUPS[style])
    layer = DySample(channels, scale, style=style, init='nearest')
    torch.nn.init.zeros_(layer.offset.weight)
    x = torch.randn(1, channels, 5, 7)
    with torch.no_grad():
        out = layer(x)
    torch.testing.assert_close(out, F.interpolate(x, scale_factor=scale, mode='nearest'),
                               atol=1e-5, rtol=0)
    assert not layer.init_pos.any()


# ------------------------------------------------------------ any output size

@pytest.mark.parametrize('style, dyscope', VARIANTS)
def test_forward_to_any_size(style, dyscope):
    """``forward(x, size)``: the natural size is the x2 path bit for bit; other sizes sample at
    F.interpolate's positions plus the learned offset of the sub-pixel each point falls in
    (the rational-arithmetic loop over the layer's own learned offsets); zero offsets give
    F.interpolate at odd and non-integer ratios."""
    layer = randomise(DySample(16, 2, style=style, dyscope=dyscope), std=0.5).double()
    assert DySample.accepts_size
    x = torch.randn(1, 16, 4, 6, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(layer(x, size=(8, 12)), layer(x), atol=0, rtol=0)
        out = layer(x, size=(9, 7))
        expected = dysample_to_size_scalar_loop(x, layer.learned_offsets(x), (9, 7), 2,
                                                layer.groups)
        torch.testing.assert_close(out, expected, atol=1e-12, rtol=0)
        torch.nn.init.zeros_(layer.offset.weight)
        torch.nn.init.zeros_(layer.offset.bias)
        for size in ((9, 13), (7, 10), (13, 23)):
            torch.testing.assert_close(
                layer(x, size=size),
                F.interpolate(x, size=size, mode='bilinear', align_corners=False), atol=1e-12,
                rtol=0)


def test_upsampling_site_uses_the_size_path():
    layer = randomise(DySample(16, 2), std=0.5)
    x = torch.randn(1, 16, 5, 7)
    with torch.no_grad():
        torch.testing.assert_close(upsample(layer, x, size=(11, 13)), layer(x, size=(11, 13)),
                                   atol=0, rtol=0)


@pytest.mark.parametrize('size', [(0, 4), (4, ), 8, (4.5, 4), '44'])
def test_forward_rejects_bad_sizes(size):
    with pytest.raises(ValueError, match='size must be a pair of positive integers'):
        DySample(16)(torch.randn(1, 16, 3, 3), size=size)


def check_paper_init(layer):
    weight = layer.offset.weight
    assert 0.0009 < weight.std().item() < 0.0011, weight.std()
    assert abs(weight.mean().item()) < 1e-4
    assert not layer.offset.bias.any()
    if layer.dyscope:
        assert not layer.scope.weight.any()
        if layer.scope.bias is not None:
            assert not layer.scope.bias.any()


@pytest.mark.parametrize('style, dyscope', VARIANTS)
def test_initialisation_is_the_papers_and_init_weights_restores_it(style, dyscope):
    layer = DySample(256, 2, style=style, dyscope=dyscope, scope_bias=dyscope)
    check_paper_init(layer)
    with torch.no_grad():
        for parameter in layer.parameters():
            parameter.fill_(0.3)
    layer.init_weights()
    check_paper_init(layer)
    torch.testing.assert_close(layer.init_pos.double(), reference_init_pos(2, layer.groups),
                               atol=1e-7, rtol=0)


def test_mmengine_parent_init_cfg_does_not_override_the_paper_init():
    """mmengine applies a parent's init_cfg (here Xavier on every Conv2d) to all
    descendants, then calls ``init_weights`` of children that have one: DySample's must
    restore N(0, 0.001), whether it is a direct child or inside mmengine's ModuleList."""

    class Neck(BaseModule):

        def __init__(self):
            super().__init__(init_cfg=dict(type='Xavier', layer='Conv2d', distribution='uniform'))
            self.upsample = DySample(256, 2, dyscope=True)
            self.upsamples = ModuleList([DySample(256, 2, style='pl')])
            self.lateral = torch.nn.Conv2d(256, 256, 1)

    neck = Neck()
    with torch.no_grad():
        neck.lateral.weight.zero_()
    neck.init_weights()
    assert neck.lateral.weight.std() > 0.01  # the parent's Xavier did run
    check_paper_init(neck.upsample)
    check_paper_init(neck.upsamples[0])


@pytest.mark.parametrize('style', ['lp', 'pl'])
def test_static_scope_factor_scales_the_learned_offsets(style):
    x = torch.randn(2, 32, 4, 5, dtype=torch.float64)
    reference_layer = randomise(DySample(32, 2, style=style)).double()
    state = reference_layer.state_dict()
    with torch.no_grad():
        base = reference_layer.sampling_offsets(x) - reference_layer.init_pos
        if style == 'lp':  # the raw 1x1 conv at low resolution, written out
            raw = torch.einsum('oc,bchw->bohw', state['offset.weight'][:, :, 0, 0], x) \
                + state['offset.bias'].view(1, -1, 1, 1)
            torch.testing.assert_close(base, 0.25 * raw, atol=1e-12, rtol=0)
        for factor in (0.1, 0.25, 0.5, 1.0):
            layer = DySample(32, 2, style=style, scope_factor=factor).double()
            layer.load_state_dict(state, strict=True)
            scaled = layer.sampling_offsets(x) - layer.init_pos
            torch.testing.assert_close(scaled, base * (factor / 0.25), atol=1e-12, rtol=0)


@pytest.mark.parametrize('factor', [0.1, 0.25, 0.5])
def test_dynamic_scope_is_2_factor_sigmoid(factor):
    x = torch.randn(2, 16, 4, 5, dtype=torch.float64)
    layer = randomise(DySample(16, 2, dyscope=True, scope_factor=factor)).double()
    static = DySample(16, 2, scope_factor=1.0).double()
    static.load_state_dict({k: v for k, v in layer.state_dict().items() if 'scope' not in k},
                           strict=True)
    with torch.no_grad():
        raw = static.sampling_offsets(x) - static.init_pos  # the unscaled conv output
        dynamic = (layer.sampling_offsets(x) - layer.init_pos) / raw
        scope_logits = torch.einsum('oc,bchw->bohw', layer.scope.weight[:, :, 0, 0], x)
        torch.testing.assert_close(dynamic, 2 * factor * torch.sigmoid(scope_logits),
                                   atol=1e-9, rtol=1e-9)
        # range (0, 2 * factor), and with std-1 scope weights both ends are reached
        assert dynamic.min() > 0 and dynamic.max() < 2 * factor
        assert dynamic.min() < 0.1 * factor and dynamic.max() > 1.9 * factor
        # a zero scope conv (its initialisation) gives exactly the static factor
        torch.nn.init.zeros_(layer.scope.weight)
        at_init = (layer.sampling_offsets(x) - layer.init_pos) / raw
    torch.testing.assert_close(at_init, torch.full_like(at_init, factor), atol=1e-12, rtol=0)


# ---------------------------------------------------------------- gradients

@pytest.mark.parametrize('style, dyscope', VARIANTS)
def test_gradcheck_wrt_input_and_conv_parameters(style, dyscope):
    layer = DySample(8, 2, style=style, dyscope=dyscope).double()
    randomise(layer, std=0.1)  # offsets of ~0.1 pixel: away from bilinear kinks
    names = [name for name, _ in layer.named_parameters()]
    params = tuple(p.detach().clone().requires_grad_(True) for p in layer.parameters())
    x = torch.randn(1, 8, 3, 4, dtype=torch.float64, requires_grad=True)

    def run(x, *values):
        return torch.func.functional_call(layer, dict(zip(names, values)), (x, ))

    assert torch.autograd.gradcheck(run, (x, ) + params, fast_mode=True)
    # every parameter actually receives gradient
    run(x, *params).square().sum().backward()
    for name, param in zip(names, params):
        assert param.grad is not None and param.grad.abs().max() > 0, name


# -------------------------------------------------------------- low precision

@pytest.mark.slow
@pytest.mark.parametrize('style, dyscope', VARIANTS)
def test_low_precision_error_is_the_output_rounding_at_fpn_sizes(style, dyscope):
    """bf16/fp16 features, under ``torch.autocast('cpu')`` and in a bf16/fp16 module, at an
    FPN size (width 168: bfloat16 cannot hold the coordinate 167.75) against the float64
    module on the same rounded input. Positions computed in the feature's dtype were off by
    up to 1.19 (bf16 autocast), 5.7 (bf16 module), 0.13 / 0.44 (fp16)."""
    layer = DySample(64, 2, style=style, dyscope=dyscope)
    with torch.no_grad():
        for parameter in layer.parameters():
            parameter.normal_(0, 0.02)
    x = torch.randn(1, 64, 32, 168)  # the width is what matters; short for speed
    for dtype, atol in ((torch.bfloat16, 0.06), (torch.float16, 0.01)):
        rounded = x.to(dtype)
        with torch.no_grad():
            expected = copy.deepcopy(layer).double()(rounded.double())
            with torch.autocast('cpu', dtype=dtype):
                autocast_out = layer(rounded)
            module_out = copy.deepcopy(layer).to(dtype)(rounded)
        for name, out in (('autocast', autocast_out), ('module', module_out)):
            error = (out.double() - expected).abs().max().item()
            assert error <= atol, f'{name} {dtype}: max abs error {error:.3f} > {atol}'
            assert out.dtype == dtype, name


# ------------------------------------------------------------------ errors

@pytest.mark.parametrize('kwargs, exc, pattern', [
    (dict(in_channels=10, groups=4), ValueError,
     r'in_channels \(10\) must be divisible by groups \(4\); pass groups= one of the '
     r'divisors of 10: 1, 2, 5, 10$'),
    (dict(in_channels=30), ValueError,
     r"in_channels \(30\) must be divisible by groups \(4, the default for style='lp'\); "
     r'pass groups= one of the divisors of 30: 1, 2, 3, 5, 6, 10, 15, 30$'),
    (dict(in_channels=12, style='pl'), ValueError,
     r"in_channels \(12\) must be divisible by groups \(8, the default for style='pl'\); "
     r'pass groups= one of the divisors of 12: 1, 2, 3, 4, 6, 12$'),
    (dict(in_channels=30, style='pl'), ValueError,
     r"in_channels \(30\) must be divisible by scale_factor\*\*2 \(4\) for style='pl' "
     r"\(its offsets are predicted from the pixel-shuffled map, in_channels / 4 channels\); "
     r"use style='lp', or a multiple of 4 channels \(e.g. 28 or 32\)$"),
    (dict(in_channels=5, style='pl', scale_factor=3, groups=1), ValueError,
     r"in_channels \(5\) must be divisible by scale_factor\*\*2 \(9\) .*\(e.g. 9\)$"),
    (dict(in_channels=16, style='pl', scale_factor=3), ValueError,
     r"in_channels \(16\) must be divisible by scale_factor\*\*2 \(9\) for style='pl'"),
    (dict(in_channels=72, style='pl', scale_factor=4), ValueError,
     r"in_channels \(72\) must be divisible by scale_factor\*\*2 \(16\) for style='pl'"),
    (dict(in_channels=6, style='pl', groups=2), ValueError,
     r"in_channels \(6\) must be divisible by scale_factor\*\*2 \(4\)"),
    (dict(in_channels=16, scale_factor=1.5), ValueError,
     r'scale_factor must be an integer >= 2, got 1.5'),
    (dict(in_channels=16, scale_factor=1), ValueError,
     r'scale_factor must be an integer >= 2, got 1'),
    (dict(in_channels=16, scale_factor=True), TypeError,
     r'scale_factor must be an integer >= 2, got True of type bool'),
    (dict(in_channels=16, scale_factor='2'), TypeError,
     r"scale_factor must be an integer >= 2, got '2' of type str"),
    (dict(in_channels=16, style='lpl'), ValueError,
     r"style must be one of \('lp', 'pl'\), got 'lpl'"),
    (dict(in_channels=16, init='bicubic'), ValueError,
     r"init must be one of \('bilinear', 'nearest'\), got 'bicubic'"),
    (dict(in_channels=16, scope_factor=0), ValueError,
     r'scope_factor must be a positive number, got 0'),
    (dict(in_channels=16, scope_factor=-0.25), ValueError,
     r'scope_factor must be a positive number, got -0.25'),
    (dict(in_channels=16, scope_factor=float('nan')), ValueError,
     r'scope_factor must be a positive number, got nan'),
    (dict(in_channels=16, groups=0), ValueError, r'groups must be a positive integer, got 0'),
    (dict(in_channels=0), ValueError, r'in_channels must be a positive integer, got 0'),
    (dict(in_channels=16, scope_bias=True), ValueError,
     r'scope_bias=True needs dyscope=True'),
])
def test_constructor_rejects_bad_arguments(kwargs, exc, pattern):
    with pytest.raises(exc, match=pattern):
        DySample(**kwargs)


@pytest.mark.parametrize('kwargs', [dict(dyscope='False'), dict(dyscope=1),
                                    dict(dyscope=True, scope_bias='no')])
def test_flags_must_be_booleans(kwargs):
    """``dyscope='False'`` must not silently build the dynamic-scope layer."""
    name = 'scope_bias' if 'scope_bias' in kwargs else 'dyscope'
    with pytest.raises((TypeError, ValueError), match=name):
        DySample(16, 2, **kwargs)


@pytest.mark.parametrize('x, exc, pattern', [
    (torch.zeros(16, 4, 4), ValueError,
     r'x must be a 4-D tensor of shape \(B, C, H, W\), got shape \(16, 4, 4\)'),
    (torch.zeros(1, 1, 16, 4, 4), ValueError, r'x must be a 4-D tensor'),
    (torch.zeros(1, 8, 4, 4), ValueError,
     r"x must have 16 channels \(the layer's in_channels\), got shape \(1, 8, 4, 4\)"),
    ([[0.0]], TypeError, r'x must be a torch.Tensor'),
])
@pytest.mark.parametrize('style', ['lp', 'pl'])
def test_forward_rejects_bad_input(x, exc, pattern, style):
    with pytest.raises(exc, match=pattern):
        DySample(16, 2, style=style)(x)


# ------------------------------------------------------------------- CUDA

@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA device')
@pytest.mark.parametrize('style, dyscope', VARIANTS)
def test_cuda_matches_cpu(style, dyscope):
    layer = randomise(DySample(32, 2, style=style, dyscope=dyscope), std=0.5)
    x = torch.randn(2, 32, 5, 7)
    with torch.no_grad():
        expected = layer(x)
        layer.cuda()
        torch.testing.assert_close(layer(x.cuda()).cpu(), expected, atol=1e-5, rtol=0)
        with torch.autocast('cuda', dtype=torch.float16):
            low = layer(x.cuda())
    torch.testing.assert_close(low.float().cpu(), expected, atol=2e-2, rtol=0)
