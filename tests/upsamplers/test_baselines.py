"""The paper's baselines (Sec. 4): interpolation, deconvolution, pixel shuffle, CARAFE."""
import math

import pytest
import torch
import torch.nn.functional as F
from mmcv.ops import CARAFEPack

from mmdysample.upsamplers import CARAFE, Deconv, Interpolate, PixelShuffle, build_upsampler

from .reference_carafe import carafe_naive
from .reference_dysample import bilinear_sample_border


def n_params(module):
    return sum(p.numel() for p in module.parameters())


# ------------------------------------------------------------------ Interpolate

@pytest.mark.parametrize('scale', [2, 3, 4])
def test_nearest_repeats_each_pixel(scale):
    x = torch.randn(2, 3, 5, 7)
    layer = Interpolate(3, scale, mode='nearest')
    expected = x.repeat_interleave(scale, dim=2).repeat_interleave(scale, dim=3)
    assert torch.equal(layer(x), expected)
    assert n_params(layer) == 0 and not list(layer.buffers())


@pytest.mark.parametrize('scale', [2, 3, 4])
def test_bilinear_is_half_pixel_bilinear_interpolation(scale):
    """align_corners=False: output pixel p reads input index (p + 0.5) / s - 0.5."""
    x = torch.randn(2, 3, 5, 7, dtype=torch.float64)
    layer = Interpolate(3, scale, mode='bilinear', align_corners=False)
    index_y = ((torch.arange(scale * 5, dtype=torch.float64) + 0.5) / scale - 0.5)
    index_x = ((torch.arange(scale * 7, dtype=torch.float64) + 0.5) / scale - 0.5)
    grid_y, grid_x = torch.meshgrid(index_y, index_x, indexing='ij')
    expected = bilinear_sample_border(x, grid_x.expand(2, -1, -1), grid_y.expand(2, -1, -1))
    torch.testing.assert_close(layer(x), expected, atol=1e-12, rtol=0)


@pytest.mark.parametrize('mode', ['bicubic', 'nearest-exact', 'area'])
def test_other_interpolation_modes_follow_f_interpolate(mode):
    x = torch.randn(1, 2, 5, 3)
    torch.testing.assert_close(Interpolate(2, 3, mode=mode)(x),
                               F.interpolate(x, scale_factor=3, mode=mode), atol=0, rtol=0)


@pytest.mark.parametrize('kwargs, pattern', [
    (dict(mode='linear'), r"mode must be one of \('nearest', 'bilinear', 'bicubic', "
     r"'nearest-exact', 'area'\), got 'linear'"),
    (dict(mode='nearest', align_corners=False),
     r"align_corners is only valid for bilinear/bicubic modes, got align_corners=False "
     r"with mode='nearest'"),
    (dict(scale_factor=1.5), r'scale_factor must be an integer >= 2, got 1.5'),
])
def test_interpolate_rejects_bad_arguments(kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        Interpolate(4, **kwargs)


# ----------------------------------------------------------------------- Deconv

def deconv_by_scatter(x, weight, bias, scale, padding):
    """Transposed convolution written as its definition: input pixel (i, j) adds
    ``x[:, c, i, j] * weight[c, o, ky, kx]`` at output (s*i - p + ky, s*j - p + kx)."""
    B, C, H, W = x.shape
    k = weight.shape[-1]
    canvas = torch.zeros(B, weight.shape[1], scale * H + k, scale * W + k, dtype=x.dtype)
    for ky in range(k):
        for kx in range(k):
            contribution = torch.einsum('bchw,co->bohw', x, weight[:, :, ky, kx])
            canvas[:, :, ky:ky + scale * H:scale, kx:kx + scale * W:scale] += contribution
    out = canvas[:, :, padding:padding + scale * H, padding:padding + scale * W]
    return out + bias.view(1, -1, 1, 1)


def test_deconv_has_the_papers_settings():
    layer = Deconv(16, 2)
    assert isinstance(layer, torch.nn.ConvTranspose2d)
    assert layer.kernel_size == (3, 3)
    assert layer.stride == (2, 2)
    assert layer.padding == (1, 1)
    assert layer.output_padding == (1, 1)
    assert (layer.in_channels, layer.out_channels) == (16, 16)


@pytest.mark.parametrize('scale', [2, 3, 4])
def test_deconv_matches_scatter_definition(scale):
    layer = Deconv(4, scale).double()
    x = torch.randn(2, 4, 5, 3, dtype=torch.float64)
    out = layer(x)
    assert out.shape == (2, 4, scale * 5, scale * 3)
    expected = deconv_by_scatter(x, layer.weight, layer.bias, scale, padding=1)
    torch.testing.assert_close(out, expected, atol=1e-12, rtol=0)


def test_deconv_init_weights_is_pytorch_default():
    layer = Deconv(32, 2)
    with torch.no_grad():
        layer.weight.fill_(0.3)
        layer.bias.fill_(0.3)
    layer.init_weights()
    bound = 1 / math.sqrt(32 * 9)  # kaiming_uniform(a=sqrt(5)) on fan_in = C * 3 * 3
    assert layer.weight.abs().max() <= bound and layer.weight.std() > bound / 3
    assert layer.bias.abs().max() <= bound and layer.bias.std() > 0


# ----------------------------------------------------------------- PixelShuffle

def test_pixel_shuffle_has_the_papers_settings():
    layer = PixelShuffle(16, 3)
    conv = layer.upsample_conv
    assert conv.kernel_size == (3, 3) and conv.padding == (1, 1) and conv.stride == (1, 1)
    assert (conv.in_channels, conv.out_channels) == (16, 9 * 16)


@pytest.mark.parametrize('scale', [2, 3, 4])
def test_pixel_shuffle_layout(scale):
    """Output channel c at (s*i + a, s*j + b) is conv channel c*s*s + a*s + b at (i, j)."""
    layer = PixelShuffle(3, scale).double()
    x = torch.randn(2, 3, 4, 5, dtype=torch.float64)
    conv = F.conv2d(x, layer.upsample_conv.weight, layer.upsample_conv.bias, padding=1)
    out = layer(x)
    assert out.shape == (2, 3, scale * 4, scale * 5)
    for channel in range(3):
        for a in range(scale):
            for b in range(scale):
                torch.testing.assert_close(out[:, channel, a::scale, b::scale],
                                           conv[:, channel * scale * scale + a * scale + b],
                                           atol=1e-12, rtol=0)


def test_pixel_shuffle_init_is_xavier_uniform_zero_bias():
    layer = PixelShuffle(32, 2)
    with torch.no_grad():
        layer.upsample_conv.weight.fill_(0.3)
        layer.upsample_conv.bias.fill_(0.3)
    layer.init_weights()
    bound = math.sqrt(6 / (32 * 9 + 128 * 9))
    weight = layer.upsample_conv.weight
    assert weight.abs().max() <= bound and weight.std() > bound / 3
    assert not layer.upsample_conv.bias.any()


# ------------------------------------------------------------------------ CARAFE

def carafe_layer_reference(layer, x):
    """CARAFE layer by hand: compressor, encoder, explicit mask pixel shuffle, per-group
    softmax over the k*k weights, then the naive reassembly loop."""
    s, k, groups = layer.scale_factor, layer.up_kernel, layer.up_group
    B, C, H, W = x.shape
    compressed = F.conv2d(x, layer.channel_compressor.weight, layer.channel_compressor.bias)
    encoded = F.conv2d(compressed, layer.content_encoder.weight, layer.content_encoder.bias,
                       padding=(layer.encoder_kernel - 1) * layer.encoder_dilation // 2,
                       dilation=layer.encoder_dilation)  # (B, g*k*k*s*s, H, W)
    masks = torch.empty(B, groups * k * k, s * H, s * W, dtype=x.dtype)
    for channel in range(groups * k * k):
        for a in range(s):
            for b in range(s):
                masks[:, channel, a::s, b::s] = encoded[:, channel * s * s + a * s + b]
    masks = masks.view(B, groups, k * k, s * H, s * W).softmax(dim=2).view_as(masks)
    return carafe_naive(x, masks, k, groups, s)


def test_carafe_has_mmcv_defaults():
    layer = CARAFE(16, 2)
    assert (layer.up_kernel, layer.up_group, layer.encoder_kernel, layer.encoder_dilation,
            layer.compressed_channels) == (5, 1, 3, 1, 64)
    assert layer.content_encoder.out_channels == 25 * 4
    assert layer.content_encoder.kernel_size == (3, 3)


@pytest.mark.parametrize('up_group', [1, 2])
@pytest.mark.parametrize('scale', [2, 3])
def test_carafe_layer_matches_naive_reference(up_group, scale):
    layer = CARAFE(4, scale, up_group=up_group, compressed_channels=8).double()
    with torch.no_grad():  # sharper kernels than the N(0, 0.001) init
        layer.content_encoder.weight.normal_(0, 0.5)
    x = torch.randn(2, 4, 3, 4, dtype=torch.float64)
    out = layer(x)
    assert out.shape == (2, 4, scale * 3, scale * 4)
    torch.testing.assert_close(out, carafe_layer_reference(layer, x), atol=1e-12, rtol=0)


@pytest.mark.parametrize('kwargs', [dict(), dict(up_group=2, up_kernel=3, encoder_kernel=1)])
@pytest.mark.parametrize('scale', [2, 4])
def test_carafe_state_dict_is_mmcv_carafepack(kwargs, scale):
    pack = CARAFEPack(16, scale, **kwargs)
    with torch.no_grad():
        for parameter in pack.parameters():
            parameter.normal_(0, 0.2)
    layer = CARAFE(16, scale, **kwargs)
    assert {k: v.shape for k, v in layer.state_dict().items()} == \
        {k: v.shape for k, v in pack.state_dict().items()}
    layer.load_state_dict(pack.state_dict(), strict=True)
    x = torch.randn(1, 16, 4, 3)
    # mmcv's op has no CPU kernel: compare with the reference using the pack's weights
    torch.testing.assert_close(layer(x).double(), carafe_layer_reference(pack.double(), x.double()),
                               atol=1e-5, rtol=0)


def test_carafe_init_weights_restores_mmcv_init():
    layer = CARAFE(64, 2)
    with torch.no_grad():
        for parameter in layer.parameters():
            parameter.fill_(0.3)
    layer.init_weights()
    encoder = layer.content_encoder.weight
    assert 0.0009 < encoder.std().item() < 0.0011
    assert not layer.content_encoder.bias.any() and not layer.channel_compressor.bias.any()
    bound = math.sqrt(6 / (64 + 64))  # Xavier-uniform, 1x1 conv 64 -> 64
    compressor = layer.channel_compressor.weight
    assert compressor.abs().max() <= bound and compressor.std() > bound / 3


@pytest.mark.parametrize('size', [(1, 5, 7), (2, 1, 1), (0, 5, 7)])
def test_carafe_batch_sizes_and_odd_sizes_forward_and_backward(size):
    """Batch 1, 1 x 1 maps and an empty batch (issue 23: was 'cannot reshape tensor of 0
    elements'): output shape, gradients of the input and of every parameter (zero for an
    empty batch), against the naive reference where there is something to compare."""
    batch, height, width = size
    layer = CARAFE(8, 2, compressed_channels=8).double()
    with torch.no_grad():
        layer.content_encoder.weight.normal_(0, 0.5)
    x = torch.randn(batch, 8, height, width, dtype=torch.float64, requires_grad=True)
    out = layer(x)
    assert out.shape == (batch, 8, 2 * height, 2 * width)
    out.square().sum().backward()
    assert x.grad.shape == x.shape
    for name, parameter in layer.named_parameters():
        assert parameter.grad is not None, name
        assert parameter.grad.any() == (batch > 0), name
    if batch:
        torch.testing.assert_close(out, carafe_layer_reference(layer, x.detach()), atol=1e-12,
                                   rtol=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA device')
@pytest.mark.parametrize('up_group', [1, 2])
def test_carafe_cuda_kernel_matches_pure_path(up_group):
    layer = CARAFE(8, 2, up_group=up_group)
    with torch.no_grad():
        layer.content_encoder.weight.normal_(0, 0.5)
    x = torch.randn(2, 8, 5, 7)
    expected = layer(x)
    torch.testing.assert_close(layer.cuda()(x.cuda()).cpu(), expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize('kwargs, pattern', [
    (dict(in_channels=6, up_group=4),
     r'in_channels \(6\) must be divisible by up_group \(4\)'),
    (dict(in_channels=6, up_kernel=4), r'up_kernel must be a positive odd integer, got 4'),
    (dict(in_channels=6, scale_factor=1.5), r'scale_factor must be an integer >= 2'),
])
def test_carafe_rejects_bad_arguments(kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        CARAFE(**kwargs)


# ------------------------------------------------------- shared properties

BASELINES = [
    ('nearest', lambda c, s: Interpolate(c, s, mode='nearest')),
    ('bilinear', lambda c, s: Interpolate(c, s, mode='bilinear', align_corners=False)),
    ('deconv', Deconv),
    ('pixel_shuffle', PixelShuffle),
    ('carafe', lambda c, s: CARAFE(c, s, compressed_channels=8)),
]


@pytest.mark.parametrize('name, make', BASELINES)
@pytest.mark.parametrize('scale', [2, 3, 4])
@pytest.mark.parametrize('size', [(1, 1), (5, 7)])
def test_baseline_shapes(name, make, scale, size):
    layer = make(6, scale)
    assert layer.requires_guide is False
    out = layer(torch.randn(1, 6, *size))
    assert out.shape == (1, 6, scale * size[0], scale * size[1])


UPSTREAM_DEFAULTS = {  # name -> upstream's computation (the upsampler's definition)
    'nearest': lambda layer, x: F.interpolate(x, scale_factor=layer.scale_factor),
    'bilinear': lambda layer, x: F.interpolate(x, scale_factor=layer.scale_factor,
                                               mode='bilinear', align_corners=False),
    'deconv': lambda layer, x: torch.nn.ConvTranspose2d.forward(layer, x),
    'pixel_shuffle': lambda layer, x: F.pixel_shuffle(layer.upsample_conv(x), layer.scale_factor),
}


@pytest.mark.parametrize('name', list(UPSTREAM_DEFAULTS))
@pytest.mark.parametrize('scale', [2, 3])
def test_empty_batch_forward_and_backward(name, scale):
    """B=0: the empty tensor upstream's computation returns (shape and dtype), and a backward
    giving x's gradient of x's shape and every parameter a zero gradient (pixel shuffle's own
    backward fails there: PyTorch's CPU pixel_unshuffle of zero elements keeps its input's
    shape)."""
    layer = dict(BASELINES)[name](6, scale)
    x = torch.randn(0, 6, 5, 7, requires_grad=True)
    out = layer(x)
    upstream = UPSTREAM_DEFAULTS[name](layer, x.detach())
    assert out.shape == upstream.shape == (0, 6, 5 * scale, 7 * scale)
    assert out.dtype == upstream.dtype
    out.sum().backward()
    assert x.grad.shape == x.shape
    for parameter_name, parameter in layer.named_parameters():
        assert parameter.grad is not None and not parameter.grad.any(), parameter_name
    if isinstance(layer, Interpolate):
        assert layer(x, size=(11, 9)).shape == (0, 6, 11, 9)


@pytest.mark.parametrize('name, make', BASELINES)
def test_baseline_gradcheck(name, make):
    layer = make(2, 2).double()
    names = [n for n, _ in layer.named_parameters()]
    params = tuple(p.detach().clone().requires_grad_(True) for p in layer.parameters())
    x = torch.randn(1, 2, 3, 4, dtype=torch.float64, requires_grad=True)

    def run(x, *values):
        return torch.func.functional_call(layer, dict(zip(names, values)), (x, ))

    assert torch.autograd.gradcheck(run, (x, ) + params, fast_mode=True)


@pytest.mark.parametrize('name, make', BASELINES)
def test_baseline_channels_last_and_autocast(name, make):
    layer = make(8, 2)
    x = torch.randn(2, 8, 5, 7)
    with torch.no_grad():
        expected = layer(x)
        torch.testing.assert_close(layer(x.contiguous(memory_format=torch.channels_last)),
                                   expected)
        with torch.autocast('cpu', dtype=torch.bfloat16):
            low = layer(x)
    assert low.shape == expected.shape
    torch.testing.assert_close(low.float(), expected, atol=5e-2, rtol=2e-2)


@pytest.mark.parametrize('name, make', BASELINES)
def test_baseline_rejects_wrong_input(name, make):
    layer = make(8, 2)
    with pytest.raises(ValueError, match=r'x must have 8 channels'):
        layer(torch.randn(1, 4, 3, 3))
    with pytest.raises(ValueError, match=r'x must be a 4-D tensor'):
        layer(torch.randn(8, 3, 3))


@pytest.mark.parametrize('scale', [2, 3, 4])
def test_parameter_counts(scale):
    C = 32
    assert n_params(Interpolate(C, scale)) == 0
    assert n_params(Deconv(C, scale)) == C * C * 9 + C
    assert n_params(PixelShuffle(C, scale)) == C * scale**2 * C * 9 + scale**2 * C
    assert n_params(CARAFE(C, scale)) == (C * 64 + 64) + (64 * 25 * scale**2 * 9
                                                          + 25 * scale**2)


def test_counts_reproduce_the_papers_table4_increments():
    """Table 4 (SegFormer-B1) reports the parameters each upsampler adds. They are
    reproduced by six x2 upsamplers at 256 channels (the head brings stages 2, 3, 4 to 1/4
    with 1 + 2 + 3 cascaded x2 steps), counting weights only (the DySample rows only match
    without biases: 6 * 1024 = 6.1K, not 6 * 1040 = 6.2K)."""

    def increment(cfg):
        layer = build_upsampler(cfg, 256, 2)
        return 6 * sum(p.numel() for n, p in layer.named_parameters() if n.endswith('weight'))

    assert round(increment(dict(type='Deconv')) / 1e6, 1) == 3.5
    assert round(increment(dict(type='PixelShuffle')) / 1e6, 1) == 14.2
    assert round(increment(dict(type='CARAFE')) / 1e6, 1) == 0.4
    assert round(increment(dict(type='DySample-S')) / 1e3, 1) == 6.1
    assert round(increment(dict(type='DySample-S+')) / 1e3, 1) == 12.3
    assert round(increment(dict(type='DySample')) / 1e3, 1) == 49.2
    assert round(increment(dict(type='DySample+')) / 1e6, 1) == 0.1


@pytest.mark.parametrize('name, make', BASELINES)
@pytest.mark.parametrize('in_channels', [0, -1, '8', True])
def test_baseline_constructors_reject_bad_in_channels(name, make, in_channels):
    """Like DySample (and build_upsampler), every layer checks in_channels up front instead
    of failing later inside torch or building a layer that rejects every input."""
    with pytest.raises((ValueError, TypeError), match=r'in_channels must be a positive integer'):
        make(in_channels, 2)


def test_carafe_rejects_even_encoder_kernel():
    """An even encoder kernel changes the mask's spatial size; say so at construction."""
    with pytest.raises(ValueError, match=r'encoder_kernel'):
        CARAFE(8, 2, encoder_kernel=4)
