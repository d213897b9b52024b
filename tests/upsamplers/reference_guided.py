"""Independent re-statements of the four guided upsamplers, used as the oracles of the tests.

Written from the methods' papers and the facts of their authors' releases, not from
``mmdysample``: no ``nn.Module`` forward, no ``F.conv2d``, ``F.unfold``, ``F.pixel_shuffle``,
``F.interpolate``, ``F.group_norm`` or ``mmdysample.functional.carafe``. Convolutions,
poolings and normalisations are spelt out with explicit loops over output positions and
slices; every result is float64. The layers' parameters are read from their state dicts,
so the oracles check the computation, not the parameter layout.

Index conventions (all the authors'):

* a 2x2 pixel shuffle puts channel ``4 t + 2 a + b`` of low-res pixel ``(i, j)`` at channel
  ``t`` of high-res pixel ``(2 i + a, 2 j + b)``;
* a reassembly kernel's tap ``ky * k + kx`` weights the low-res neighbour
  ``(p // s + ky - k // 2, q // s + kx - k // 2)`` of output pixel ``(p, q)``; neighbours
  outside the map add nothing (:func:`tests.upsamplers.reference_carafe.carafe_naive`).
"""
import math

import torch

from .reference_carafe import carafe_naive


def conv2d_loops(x, weight, bias=None, stride=1, padding=0, groups=1):
    """Cross-correlation, zero padding, one output position at a time. ``x`` ``(B, C, H, W)``,
    ``weight`` ``(O, C / groups, kh, kw)``."""
    x, weight = x.double(), weight.double()
    B, C, H, W = x.shape
    O, per_group, kh, kw = weight.shape
    padded = torch.zeros(B, C, H + 2 * padding, W + 2 * padding, dtype=torch.float64)
    padded[:, :, padding:padding + H, padding:padding + W] = x
    out_h = (H + 2 * padding - kh) // stride + 1
    out_w = (W + 2 * padding - kw) // stride + 1
    out = torch.zeros(B, O, out_h, out_w, dtype=torch.float64)
    out_per_group = O // groups
    for i in range(out_h):
        for j in range(out_w):
            patch = padded[:, :, i * stride:i * stride + kh, j * stride:j * stride + kw]
            for g in range(groups):
                inputs = patch[:, g * per_group:(g + 1) * per_group]  # (B, Cg, kh, kw)
                outputs = slice(g * out_per_group, (g + 1) * out_per_group)
                out[:, outputs, i, j] = torch.einsum('bchw,ochw->bo', inputs,
                                                     weight[outputs])
    if bias is not None:
        out += bias.double().view(1, O, 1, 1)
    return out


def adaptive_avg_pool_loops(x, size):
    """``nn.AdaptiveAvgPool2d(size)``: cell ``i`` averages rows ``floor(i H / n)`` to
    ``ceil((i + 1) H / n)``."""
    B, C, H, W = x.shape
    out = torch.zeros(B, C, size, size, dtype=torch.float64)
    for i in range(size):
        r0, r1 = (i * H) // size, -(-((i + 1) * H) // size)
        for j in range(size):
            c0, c1 = (j * W) // size, -(-((j + 1) * W) // size)
            out[:, :, i, j] = x[:, :, r0:r1, c0:c1].double().mean(dim=(2, 3))
    return out


def group_norm_loops(x, groups, weight, bias, eps=1e-5):
    """GroupNorm: mean and biased variance over each group's channels and pixels."""
    x = x.double()
    B, C, H, W = x.shape
    out = torch.empty_like(x)
    per = C // groups
    for b in range(B):
        for g in range(groups):
            block = x[b, g * per:(g + 1) * per]
            mean = block.mean()
            var = ((block - mean)**2).mean()
            out[b, g * per:(g + 1) * per] = (block - mean) / math.sqrt(var + eps)
    return out * weight.double().view(1, C, 1, 1) + bias.double().view(1, C, 1, 1)


def pixel_shuffle2_loops(z):
    """``(B, 4 T, H, W)`` -> ``(B, T, 2H, 2W)``: channel ``4 t + 2 a + b`` of ``(i, j)`` goes to
    channel ``t`` of ``(2 i + a, 2 j + b)``."""
    B, C4, H, W = z.shape
    out = torch.empty(B, C4 // 4, 2 * H, 2 * W, dtype=torch.float64)
    for t in range(C4 // 4):
        for a in range(2):
            for b in range(2):
                out[:, t, a::2, b::2] = z[:, 4 * t + 2 * a + b]
    return out


def nearest_loops(x, s):
    """Nearest upsampling: output ``(p, q)`` reads input ``(p // s, q // s)``."""
    B, C, H, W = x.shape
    rows = torch.arange(s * H) // s
    cols = torch.arange(s * W) // s
    return x.double()[:, :, rows][:, :, :, cols]


def softmax_taps(logits):
    """Softmax over dim 1 written out."""
    shifted = logits - logits.max(dim=1, keepdim=True).values
    e = shifted.exp()
    return e / e.sum(dim=1, keepdim=True)


def indexnet_reference(state, x, guide, bn_training: bool, eps=1e-5):
    """HIN IndexNet: conv k4 s2 p1 -> BN -> ReLU6 -> 1x1 (4 outputs) on the guide; sigmoid;
    2x2 pixel shuffle; times nearest-upsampled ``x``. ``bn_training``: normalise with the
    batch statistics (biased variance), else with the running ones."""
    h = conv2d_loops(guide, state['index_block.0.weight'], stride=2, padding=1)
    if bn_training:
        mean = h.mean(dim=(0, 2, 3))
        var = h.var(dim=(0, 2, 3), unbiased=False)
    else:
        mean = state['index_block.1.running_mean'].double()
        var = state['index_block.1.running_var'].double()
    h = (h - mean.view(1, -1, 1, 1)) / torch.sqrt(var.view(1, -1, 1, 1) + eps)
    h = h * state['index_block.1.weight'].double().view(1, -1, 1, 1) + \
        state['index_block.1.bias'].double().view(1, -1, 1, 1)
    h = h.clamp(0, 6)
    z = conv2d_loops(h, state['index_block.3.weight'])
    index = pixel_shuffle2_loops(torch.sigmoid(z))  # (B, 1, 2H, 2W)
    return nearest_loops(x, 2) * index


def a2u_kernels_reference(state, guide, up_kernel=3, encoder_kernel=6):
    """A2U 'dynamic-cs-d': kernels ``(B, k^2, 2H, 2W)`` from the guide, per sample."""
    B, C, H2, W2 = guide.shape
    guide = guide.double()
    e = encoder_kernel
    kernels = []
    for b in range(B):
        g = guide[b:b + 1]
        mapped = []
        for name in ('u', 'v'):
            pooled = adaptive_avg_pool_loops(g, e)
            kernel = conv2d_loops(pooled, state[f'kernel_{name}.1.weight'],
                                  state[f'kernel_{name}.1.bias'])  # (1, 1, e, e)
            # the same kernel on every channel: a depthwise conv with C copies
            per_channel = conv2d_loops(g, kernel.expand(C, 1, e, e), stride=2,
                                       padding=(e - 1) // 2, groups=C)
            normed = group_norm_loops(per_channel, 32, state[f'norm_{name}.0.weight'],
                                      state[f'norm_{name}.0.bias'])
            mapped.append(torch.where(normed >= 0, normed, 0.01 * normed))
        affinity = (mapped[0] * mapped[1]).sum(dim=1, keepdim=True) / math.sqrt(C)
        global_mean = g.mean(dim=(2, 3))  # (1, C)
        weights = state['projection.1.weight'].double().flatten(1)  # (4 k^2, C)
        projection = global_mean @ weights.T + state['projection.1.bias'].double()
        logits = affinity * projection.view(1, -1, 1, 1)  # (1, 4 k^2, H, W)
        kernels.append(softmax_taps(torch.sigmoid(pixel_shuffle2_loops(logits))))
    return torch.cat(kernels)


def a2u_reference(state, x, guide, up_kernel=3, encoder_kernel=6):
    kernels = a2u_kernels_reference(state, guide, up_kernel, encoder_kernel)
    return carafe_naive(x, kernels, up_kernel, 1, 2)


def fade_kernels_reference(state, x, guide, scale=2):
    """FADE without gating: semi-shift conv (shared 3x3 on the compressed guide at high
    resolution and on the compressed input at low resolution, nearest-upsampled), softmax."""
    enc = conv2d_loops(guide, state['compress_guide.weight'], state['compress_guide.bias'])
    dec = conv2d_loops(x, state['compress_x.weight'])
    w, b = state['content_encoder.weight'], state['content_encoder.bias']
    pad = w.shape[-1] // 2
    logits = conv2d_loops(enc, w, b, padding=pad) + nearest_loops(
        conv2d_loops(dec, w, b, padding=pad), scale)
    return softmax_taps(logits)


def fade_reference(state, x, guide, up_kernel=5, scale=2):
    return carafe_naive(x, fade_kernels_reference(state, x, guide, scale), up_kernel, 1, scale)


def sapa_kernels_reference(state, x, guide, up_kernel=5, scale=2, norm=True):
    """SAPA-B: ``softmax_k <q(p), key(p // s + delta_k)>``, an outside neighbour's logit 0."""
    if norm:
        x = group_norm_loops(x, 32, state['norm_x.weight'], state['norm_x.bias'])
        guide = group_norm_loops(guide, 32, state['norm_guide.weight'],
                                 state['norm_guide.bias'])
    query = conv2d_loops(guide, state['query.weight'], state.get('query.bias'))
    key = conv2d_loops(x, state['key.weight'], state.get('key.bias'))
    return softmax_taps(similarity_loops(query, key, up_kernel, scale))


def similarity_loops(query, key, up_kernel, scale):
    """SAPA's logits ``<query(p, q), key(p // s + ky - k // 2, q // s + kx - k // 2)>`` at
    channel ``ky * k + kx``, 0 for a neighbour outside the map (float64)."""
    B, E, H, W = key.shape
    half = up_kernel // 2
    logits = torch.zeros(B, up_kernel**2, scale * H, scale * W, dtype=torch.float64)
    for p in range(scale * H):
        for q in range(scale * W):
            for ky in range(up_kernel):
                for kx in range(up_kernel):
                    row, col = p // scale + ky - half, q // scale + kx - half
                    if 0 <= row < H and 0 <= col < W:
                        logits[:, ky * up_kernel + kx, p, q] = (
                            query[:, :, p, q].double() * key[:, :, row, col].double()).sum(1)
    return logits


def sapa_reference(state, x, guide, up_kernel=5, scale=2, norm=True):
    kernels = sapa_kernels_reference(state, x, guide, up_kernel, scale, norm)
    return carafe_naive(x, kernels, up_kernel, 1, scale)


def state_of(layer) -> dict:
    """The layer's state dict, detached."""
    return {k: v.detach() for k, v in layer.state_dict().items()}


__all__ = [
    'conv2d_loops', 'adaptive_avg_pool_loops', 'group_norm_loops', 'pixel_shuffle2_loops',
    'nearest_loops', 'softmax_taps', 'similarity_loops', 'indexnet_reference', 'a2u_reference',
    'a2u_kernels_reference', 'fade_reference', 'fade_kernels_reference', 'sapa_reference',
    'sapa_kernels_reference', 'state_of'
]
