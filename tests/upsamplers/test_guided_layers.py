"""The guided upsamplers of the paper's Table 4 (IndexNet HIN, A2U dynamic-cs-d, FADE without
gating, SAPA-B) against loop oracles, at realistic sizes and under autocast."""
import copy

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from mmdysample.functional import carafe
from mmdysample.ops import use_fused
from mmdysample.upsamplers import (A2U, FADE, SAPA_B, IndexNet, build_upsampler,
                                   registered_upsamplers, upsample)
from mmdysample.upsamplers.guided import group_norm_pointwise_conv, pointwise_conv

from .reference_guided import (a2u_kernels_reference, a2u_reference, fade_reference,
                               indexnet_reference, sapa_kernels_reference, sapa_reference,
                               state_of)

LAYERS = {'IndexNet': IndexNet, 'A2U': A2U, 'FADE': FADE, 'SAPA-B': SAPA_B}
#: layers whose reassembly kernels are normalised (IndexNet's index map is not)
KERNEL_LAYERS = ('A2U', 'FADE', 'SAPA-B')


def n_params(module):
    return sum(p.numel() for p in module.parameters())


def randomise(layer, std=0.5):
    """Random weights (and BatchNorm statistics) far from the initialisation, so that every
    term of the computation matters."""
    with torch.no_grad():
        for p in layer.parameters():
            p.normal_(0, std)
        for m in layer.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    return layer


def inputs(batch, channels, guide_channels, height, width, dtype=torch.float64, scale=2):
    x = torch.randn(batch, channels, height, width, dtype=dtype)
    guide = torch.randn(batch, guide_channels, scale * height, scale * width, dtype=dtype)
    return x, guide


# ------------------------------------------------------------------ registration, interface

def test_registered_and_flagged_as_guided():
    for name, cls in LAYERS.items():
        assert name in registered_upsamplers()
        assert cls.requires_guide is True and cls.accepts_size is False
        layer = build_upsampler(dict(type=name), 64, guide_channels=64)
        assert type(layer) is cls and layer.guide_channels == 64


@pytest.mark.parametrize('name', LAYERS)
def test_guided_type_without_guide_at_the_site_is_refused(name):
    with pytest.raises(ValueError, match=rf"upsampler type '{name}' is a guided upsampler .*"
                       r"SegFormer step 1 has no such feature"):
        build_upsampler(dict(type=name), 64, where='SegFormer step 1')


# ------------------------------------------------------------------ against the loop oracles

@pytest.mark.parametrize('training', [True, False])
def test_indexnet_matches_loop_reference(training):
    layer = randomise(IndexNet(5, guide_channels=8)).double().train(training)
    x, guide = inputs(2, 5, 8, 3, 4)
    expected = indexnet_reference(state_of(layer), x, guide, bn_training=training)
    torch.testing.assert_close(layer(x, guide), expected, atol=1e-10, rtol=1e-10)


@pytest.mark.parametrize('height, width', [(3, 4), (2, 5)])
def test_a2u_matches_loop_reference(height, width):
    # 6 x 8 and 4 x 10 guides: the 6 x 6 adaptive pooling has overlapping, uneven cells
    layer = randomise(A2U(5, guide_channels=32)).double()
    x, guide = inputs(2, 5, 32, height, width)
    expected = a2u_reference(state_of(layer), x, guide)
    torch.testing.assert_close(layer(x, guide), expected, atol=1e-10, rtol=1e-10)
    torch.testing.assert_close(layer.kernels(guide), a2u_kernels_reference(state_of(layer),
                                                                           guide),
                               atol=1e-12, rtol=1e-10)


@pytest.mark.parametrize('scale', [2, 3])
def test_fade_matches_loop_reference(scale):
    layer = randomise(FADE(6, scale, guide_channels=4, compressed_channels=8)).double()
    x, guide = inputs(2, 6, 4, 3 if scale == 2 else 2, 4 if scale == 2 else 3, scale=scale)
    expected = fade_reference(state_of(layer), x, guide, scale=scale)
    torch.testing.assert_close(layer(x, guide), expected, atol=1e-10, rtol=1e-10)


@pytest.mark.parametrize('scale, norm', [(2, True), (3, False)])
def test_sapa_matches_loop_reference(scale, norm):
    layer = randomise(SAPA_B(32, scale, guide_channels=64, embedding_dim=8, norm=norm))
    layer = layer.double()
    x, guide = inputs(2, 32, 64, 3 if scale == 2 else 2, 4 if scale == 2 else 2, scale=scale)
    state = state_of(layer)
    expected = sapa_reference(state, x, guide, scale=scale, norm=norm)
    torch.testing.assert_close(layer(x, guide), expected, atol=1e-10, rtol=1e-10)
    torch.testing.assert_close(layer.kernels(x, guide),
                               sapa_kernels_reference(state, x, guide, scale=scale, norm=norm),
                               atol=1e-12, rtol=1e-10)


def test_sapa_outside_neighbours_enter_the_softmax_with_logit_zero():
    """At a corner, 16 of the 25 neighbours are outside: each keeps weight exp(0) / Z (not 0,
    as a -inf mask would give), and the output is the in-map part of the sum."""
    layer = randomise(SAPA_B(32, embedding_dim=8), std=0.1).double()
    x, guide = inputs(1, 32, 32, 4, 4)
    kernels = layer.kernels(x, guide)
    corner = kernels[0, :, 0, 0].view(5, 5)
    outside = torch.ones(5, 5, dtype=torch.bool)
    outside[2:, 2:] = False
    inside_logits = torch.log(corner[~outside] / corner[outside][0])  # logit - 0
    # each outside tap: exp(0) / (16 exp(0) + sum over the 9 inside taps of exp(logit))
    expected = 1 / (16 + inside_logits.exp().sum())
    torch.testing.assert_close(corner[outside], expected.expand(16), atol=1e-12, rtol=0)
    assert corner[outside].sum() > 0.3  # small logits: the outside taps take a large share


# ------------------------------------------------------------------ properties

@pytest.mark.parametrize('name', LAYERS)
def test_gradcheck_float64(name):
    channels = 32
    layer = randomise(LAYERS[name](channels), std=0.2).double()
    x, guide = inputs(2, channels, channels, 2, 3)
    x.requires_grad_(True)
    guide.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda a, b: layer(a, b), (x, guide), fast_mode=True)


@pytest.mark.parametrize('name', KERNEL_LAYERS)
def test_normalised_kernels_reproduce_a_constant_input_away_from_the_borders(name):
    layer = randomise(LAYERS[name](32), std=0.05)
    x = torch.full((1, 32, 8, 9), 3.25)
    guide = torch.randn(1, 32, 16, 18)
    out = layer(x, guide)
    half = layer.up_kernel // 2
    interior = out[:, :, 2 * half:2 * (8 - half), 2 * half:2 * (9 - half)]
    torch.testing.assert_close(interior, torch.full_like(interior, 3.25), atol=1e-5, rtol=0)
    # at the border the out-of-map neighbours add zero, so the value drops
    assert out[0, 0, 0, 0] < 3.25 - 1e-3
    kernels = layer.kernels(guide) if name == 'A2U' else layer.kernels(x, guide)
    torch.testing.assert_close(kernels.sum(1), torch.ones(1, 16, 18), atol=1e-6, rtol=0)
    assert (kernels > 0).all()


def test_indexnet_scales_the_nearest_upsampled_input_by_an_index_in_0_1():
    layer = randomise(IndexNet(32), std=0.05).eval()
    x = torch.full((1, 32, 4, 5), 2.0)
    out = layer(x, torch.randn(1, 32, 8, 10))
    assert ((out > 0) & (out < 2.0)).all()
    assert torch.allclose(out, out[:, :1].expand_as(out))  # one index map for all channels


@pytest.mark.parametrize('name', LAYERS)
def test_odd_sizes_batch_one_and_exact_site_sizes(name):
    layer = LAYERS[name](32, guide_channels=64).eval()
    x = torch.randn(1, 32, 5, 7)
    assert layer(x, torch.randn(1, 64, 10, 14)).shape == (1, 32, 10, 14)
    # a site asking for 11 x 15 (odd target): guide resized to 10 x 14, result to 11 x 15
    guide = torch.randn(1, 64, 11, 15)
    out = upsample(layer, x, size=(11, 15), guide=guide)
    resize = lambda t, size: F.interpolate(t, size, mode='bilinear', align_corners=False)  # noqa
    expected = resize(layer(x, resize(guide, (10, 14))), (11, 15))
    torch.testing.assert_close(out, expected, atol=0, rtol=0)


@pytest.mark.parametrize('name', LAYERS)
@pytest.mark.parametrize('training', [True, False])
def test_empty_batch_forward_and_backward(name, training):
    """Issue 23: a batch of 0 (an empty shard of a distributed batch) gives an empty output
    of the right shape, zero gradients for every parameter and empty input gradients, and
    leaves IndexNet's BatchNorm statistics alone."""
    layer = randomise(LAYERS[name](32, guide_channels=64), std=0.2).train(training)
    state = {k: v.clone() for k, v in layer.state_dict().items()}
    x = torch.randn(0, 32, 5, 7, requires_grad=True)
    guide = torch.randn(0, 64, 10, 14, requires_grad=True)
    out = layer(x, guide)
    assert out.shape == (0, 32, 10, 14)
    out.sum().backward()
    assert x.grad.shape == x.shape and guide.grad.shape == guide.shape
    for pname, p in layer.named_parameters():
        assert p.grad is not None and not p.grad.any(), pname
    for key, value in layer.state_dict().items():
        if not key.endswith('num_batches_tracked'):
            assert torch.equal(value, state[key]), key


@pytest.mark.parametrize('name', KERNEL_LAYERS)
def test_device_agnostic_path_matches_the_kernel(name):
    """The layers reassemble (and SAPA-B computes its similarities) with the CPU kernels, or
    with the device-agnostic path when they are switched off (as on a device without
    kernels): same output and gradients, float32, odd size, batch 2."""
    layer = randomise(LAYERS[name](64), std=0.1)
    x, guide = inputs(2, 64, 64, 9, 11, dtype=torch.float32)
    grad_out = torch.randn(2, 64, 18, 22)
    results = []
    for fused in (True, False):
        layer.zero_grad(set_to_none=True)
        xi, gi = x.clone().requires_grad_(), guide.clone().requires_grad_()
        with use_fused(fused):
            out = layer(xi, gi)
            out.backward(grad_out)
        results.append([out, xi.grad, gi.grad] + [p.grad for p in layer.parameters()])
    for kernel, generic in zip(*results):
        scale = generic.abs().max().item()
        torch.testing.assert_close(kernel, generic, rtol=1e-5, atol=1e-5 * scale)


@pytest.mark.parametrize('name', LAYERS)
def test_every_parameter_gets_a_gradient(name):
    """No unused submodule: a loss on the output reaches every parameter."""
    layer = randomise(LAYERS[name](32), std=0.2)
    x, guide = inputs(2, 32, 32, 4, 4, dtype=torch.float32)
    layer(x, guide).square().sum().backward()
    for pname, p in layer.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, pname


@pytest.mark.parametrize('name', LAYERS)
@pytest.mark.parametrize('dtype, atol', [(torch.bfloat16, 0.08), (torch.float16, 0.01)])
def test_cpu_autocast_runs_close_to_float32(name, dtype, atol):
    layer = randomise(LAYERS[name](64), std=0.1).eval()
    x, guide = inputs(2, 64, 64, 12, 10, dtype=torch.float32)
    expected = layer(x, guide)
    with torch.autocast('cpu', dtype=dtype):
        out = layer(x, guide)
    assert out.shape == expected.shape and torch.isfinite(out).all()
    torch.testing.assert_close(out.float(), expected, atol=atol * expected.abs().max().item(),
                               rtol=0)


@pytest.mark.parametrize('name', LAYERS)
def test_realistic_size_float32_matches_float64(name):
    """1 x 256 x 32 x 32 with its 64 x 64 guide (SegFormer-B1's 1/16 -> 1/8 step at 512 x 512):
    the float32 kernels (IndexNet: index map) stay within 1e-5 of the same layer's float64
    ones, and so does the float32 reassembly with them (checked on 8 of the 256 channels,
    which are all reassembled alike: the full 256-channel reassembly is the CARAFE function's,
    tested with it)."""
    layer = randomise(LAYERS[name](256), std=0.05).eval()
    x, guide = inputs(1, 256, 256, 32, 32, dtype=torch.float32)
    with torch.no_grad():
        if name == 'IndexNet':
            kernels = layer.index_map(guide)
            kernels64 = layer.double().index_map(guide.double())
        elif name == 'A2U':
            kernels = layer.kernels(guide)
            kernels64 = layer.double().kernels(guide.double())
        else:
            kernels = layer.kernels(x, guide)
            kernels64 = layer.double().kernels(x.double(), guide.double())
        assert kernels.dtype == torch.float32
        torch.testing.assert_close(kernels.double(), kernels64, atol=1e-5, rtol=0)
        if name == 'IndexNet':
            return
        x8 = x[:, :8]
        out = carafe(x8, kernels, layer.up_kernel, 1, 2)
        expected = carafe(x8.double(), kernels64, layer.up_kernel, 1, 2)
    torch.testing.assert_close(out.double(), expected, atol=1e-5 * expected.abs().max().item(),
                               rtol=0)


# ------------------------------------------------------------------ 1x1 projections

def projection_grads(fn, x, modules, grad_out):
    """Output and the gradients wrt ``x`` and every parameter of ``modules``."""
    x = x.detach().clone().requires_grad_()
    params = [p for m in modules for p in m.parameters()]
    out = fn(x)
    return [out] + list(torch.autograd.grad(out, [x] + params, grad_out))


@pytest.mark.parametrize('bias', [True, False])
@pytest.mark.parametrize('dtype, size, rel', [(torch.float64, (2, 64, 5, 7), 1e-12),
                                              (torch.float32, (1, 256, 128, 128), 1e-5)])
def test_group_norm_pointwise_conv_is_the_modules(bias, dtype, size, rel):
    """SAPA-B's GroupNorm -> 1x1 projection as one product on the raw input: the modules'
    output and gradients (input, GroupNorm's affine, the conv's weight and bias), float64 to
    1e-12 and float32 at SAPA-B's 1/4-scale guide to 1e-5 of the largest magnitude."""
    norm = nn.GroupNorm(32, size[1]).to(dtype)
    conv = nn.Conv2d(size[1], 32, 1, bias=bias).to(dtype)
    randomise(norm, std=1.0)
    randomise(conv, std=0.1)
    x = torch.randn(size, dtype=torch.float64).mul(3).add(1).to(dtype)
    grad_out = torch.randn(size[0], 32, *size[2:], dtype=dtype)
    got = projection_grads(lambda t: group_norm_pointwise_conv(t, norm, conv), x, (norm, conv),
                           grad_out)
    expected = projection_grads(lambda t: conv(norm(t)), x.double(),
                                (norm.double(), conv.double()), grad_out.double())
    for a, b in zip(got, expected):
        assert a.dtype == dtype
        torch.testing.assert_close(a.double(), b, rtol=rel, atol=rel * b.abs().max().item())
    assert type(got[0].grad_fn).__name__ == '_GroupNormPointwiseConvBackward'


@pytest.mark.parametrize('layout', ['channels_last', 'transposed'])
def test_group_norm_pointwise_conv_takes_non_contiguous_inputs(layout):
    """A channels_last input (what a SegFormer decode head hands SAPA-B after its fusion)
    and a strided view: the same output and gradients as the modules."""
    norm, conv = randomise(nn.GroupNorm(4, 16)).double(), randomise(nn.Conv2d(16, 8, 1)).double()
    x = torch.randn(2, 16, 5, 7, dtype=torch.float64)
    x = x.contiguous(memory_format=torch.channels_last) if layout == 'channels_last' else \
        x.transpose(2, 3).contiguous().transpose(2, 3)
    assert not x.is_contiguous()
    grad_out = torch.randn(2, 8, 5, 7, dtype=torch.float64)
    got = projection_grads(lambda t: group_norm_pointwise_conv(t, norm, conv), x, (norm, conv),
                           grad_out)
    expected = projection_grads(lambda t: conv(norm(t)), x, (norm, conv), grad_out)
    for a, b in zip(got, expected):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_group_norm_pointwise_conv_double_backward_and_fallbacks():
    norm, conv = randomise(nn.GroupNorm(4, 8)).double(), randomise(nn.Conv2d(8, 3, 1)).double()
    x = torch.randn(2, 8, 2, 3, dtype=torch.float64, requires_grad=True)
    params = (norm.weight, norm.bias, conv.weight, conv.bias)

    def fn(x, *values):
        names = ['0.weight', '0.bias', '1.weight', '1.bias']
        pair = nn.ModuleList([norm, conv])
        with torch.nn.utils.stateless._reparametrize_module(pair, dict(zip(names, values))):
            return group_norm_pointwise_conv(x, norm, conv)

    assert torch.autograd.gradgradcheck(fn, (x, ) + params, fast_mode=True)
    # autocast and traced graphs keep the modules (their per-op dtypes, Conv nodes)
    projection = Projection(group_norm_pointwise_conv, norm, conv)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        assert copy.deepcopy(projection).float()(x.float()).dtype == torch.bfloat16
    traced = torch.jit.trace(projection, x.detach())
    kinds = {node.kind() for node in traced.inlined_graph.nodes()}
    assert {'aten::group_norm', 'aten::_convolution'} <= kinds


class Projection(nn.Module):
    """``fn(x, *modules)`` as a module (what torch.jit.trace takes)."""

    def __init__(self, fn, *modules):
        super().__init__()
        self.fn, self.parts = fn, nn.ModuleList(modules)

    def forward(self, x):
        return self.fn(x, *self.parts)


def test_pointwise_conv_is_the_convolution():
    conv = randomise(nn.Conv2d(16, 8, 1), std=0.3).double()
    x = torch.randn(2, 16, 5, 3, dtype=torch.float64)
    grad_out = torch.randn(2, 8, 5, 3, dtype=torch.float64)
    for a, b in zip(projection_grads(lambda t: pointwise_conv(t, conv), x, (conv, ), grad_out),
                    projection_grads(conv, x, (conv, ), grad_out)):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    traced = torch.jit.trace(Projection(pointwise_conv, conv), x)
    assert 'aten::_convolution' in {node.kind() for node in traced.inlined_graph.nodes()}


# ------------------------------------------------------------------ parameters and init

@pytest.mark.parametrize('name, at_256, formula', [
    ('IndexNet', 2_100_224, lambda c, g: 32 * g * g + 12 * g),
    ('A2U', 10_790, lambda c, g: 4 * g + 38 * g + 38),
    ('FADE', 47_257, lambda c, g: (g + 1) * 64 + c * 64 + 9 * 64 * 25 + 25),
    ('SAPA-B', 17_472, lambda c, g: 2 * g + 2 * c + (g + c) * 32 + 2 * 32),
])
def test_parameter_counts(name, at_256, formula):
    """Per-layer counts at 256 channels (the paper's settings) and the closed forms with
    separate input (C) and guide (C_g) channels."""
    assert n_params(LAYERS[name](256)) == at_256 == formula(256, 256)
    assert n_params(LAYERS[name](64, guide_channels=96)) == formula(64, 96)


def test_init_weights_restores_the_authors_initialisation_after_a_parent_init():
    sapa, fade, indexnet = SAPA_B(256), FADE(256), IndexNet(64)
    for layer in (sapa, fade, indexnet):
        for m in layer.modules():
            if isinstance(m, nn.Conv2d):  # what FPN's init_cfg does to every Conv2d
                nn.init.constant_(m.weight, 1.0)
                if m.bias is not None:
                    nn.init.constant_(m.bias, 1.0)
        layer.init_weights()
    for conv in (sapa.query, sapa.key):
        assert 0.015 < conv.weight.std() < 0.025 and not conv.bias.any()
    bound = (6 / (64 + 256))**0.5  # Xavier-uniform bound of the 1x1 256 -> 64 compressor
    assert fade.compress_x.weight.abs().max() <= bound and not fade.compress_guide.bias.any()
    assert indexnet.index_block[0].weight.abs().max() < 0.1  # PyTorch's default (kaiming)


# ------------------------------------------------------------------ argument errors

@pytest.mark.parametrize('cls, kwargs, error, pattern', [
    (IndexNet, dict(in_channels=32, scale_factor=4), ValueError,
     r'IndexNet supports scale_factor in \(2,\), got 4'),
    (A2U, dict(in_channels=32, scale_factor=3), ValueError,
     r'A2U supports scale_factor in \(2,\), got 3'),
    (A2U, dict(in_channels=32, guide_channels=48), ValueError,
     r'guide_channels must be divisible by 32 \(the GroupNorm groups of this upsampler\), '
     r'got 48'),
    (A2U, dict(in_channels=32, up_kernel=4), ValueError,
     r'up_kernel must be a positive odd integer, got 4'),
    (FADE, dict(in_channels=32, up_kernel=0), ValueError,
     r'up_kernel must be a positive integer, got 0'),
    (FADE, dict(in_channels=32, compressed_channels=0), ValueError,
     r'compressed_channels must be a positive integer, got 0'),
    (SAPA_B, dict(in_channels=40), ValueError,
     r'in_channels must be divisible by 32 .*got 40'),
    (SAPA_B, dict(in_channels=32, norm='yes'), TypeError, r"norm must be True or False"),
    (SAPA_B, dict(in_channels=32, guide_channels=0), ValueError,
     r'guide_channels must be a positive integer, got 0'),
])
def test_bad_arguments_are_named(cls, kwargs, error, pattern):
    with pytest.raises(error, match=pattern):
        cls(**kwargs)


def test_sapa_without_norm_takes_any_channels():
    assert SAPA_B(40, norm=False, guide_channels=24)(
        torch.randn(1, 40, 3, 3), torch.randn(1, 24, 6, 6)).shape == (1, 40, 6, 6)


@pytest.mark.parametrize('name', LAYERS)
def test_bad_inputs_are_named(name):
    layer = LAYERS[name](32, guide_channels=64)
    x = torch.randn(2, 32, 4, 5)
    with pytest.raises(ValueError, match=r'guide must have shape \(B, guide_channels, '
                       r'scale_factor \* H, scale_factor \* W\) = \(2, 64, 8, 10\) for x of '
                       r'shape \(2, 32, 4, 5\) .*got \(2, 64, 8, 9\)'):
        layer(x, torch.randn(2, 64, 8, 9))
    with pytest.raises(ValueError, match=r'= \(2, 64, 8, 10\) .*got \(2, 32, 8, 10\)'):
        layer(x, torch.randn(2, 32, 8, 10))
    with pytest.raises(ValueError, match=r"x must have 32 channels"):
        layer(torch.randn(2, 16, 4, 5), torch.randn(2, 64, 8, 10))
    with pytest.raises(TypeError, match=r'guide must be a torch.Tensor'):
        layer(x, None)
