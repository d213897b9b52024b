"""A2U, affinity-aware upsampling (Dai et al., CVPR 2021, "Learning Affinity-Aware
Upsampling for Deep Image Matting"), as a guided x2 upsampler, in the 'dynamic-cs-d†'
setting the DySample paper uses (Sec. 4): upsampling kernel 3, encoding kernel 6, U and V
shared across channels ("cs"), generated from the input ("dynamic"), one kernel group.

The x2 reassembly kernels come from a bilinear (second-order) form of the guide: two 6x6
kernels ``U`` and ``V``, pooled from the guide itself and shared by all its channels, are
applied as stride-2 convolutions; the channel-summed product of the two normalised results
is the pairwise-affinity map, which a 1x1 projection (again generated from the guide, by
global pooling) turns into the ``2 x 2 x 3 x 3`` kernels of each low-resolution pixel.

The authors' module (``InterChannelUpDown``) also builds a second projection for
*downsampling* kernels (``bconv_DP``), which upsampling never uses; it is left out here
(10,790 parameters per layer at 256 channels instead of 20,042). Their reassembly is a
naive CUDA op (``biupsample_naive``): the CARAFE reassembly with zero outside the map,
which :func:`mmdysample.functional.carafe` computes on every device.
"""
import math
from typing import Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..functional import carafe, check_odd_kernel, check_positive_int, pixel_shuffle
from .builder import register_upsampler
from .guided import (GROUP_NORM_GROUPS, GuidedUpsampler, check_group_norm_channels,
                     softmax_kernels)


def adaptive_avg_pool2d_by_matmul(x: torch.Tensor, output_size: int) -> torch.Tensor:
    """``F.adaptive_avg_pool2d(x, output_size)`` as ``P_h @ x @ P_w^T``, the pooling matrices
    built from the input size (cell ``i`` of ``n`` covers ``[floor(i n / o), ceil((i + 1)
    n / o))``, as PyTorch's): equal up to float rounding, and exportable to ONNX for any
    and dynamic input sizes. ``(B, C, H, W) -> (B, C, o, o)``."""

    def pooling_matrix(size):  # (o, size): 1 / cell length inside each cell
        cell = torch.arange(output_size, device=x.device)
        start = torch.div(cell * size, output_size, rounding_mode='floor')
        end = torch.div((cell + 1) * size + output_size - 1, output_size, rounding_mode='floor')
        position = torch.arange(size, device=x.device)
        inside = (position >= start[:, None]) & (position < end[:, None])
        return inside.to(x.dtype) / (end - start).to(x.dtype)[:, None]

    return pooling_matrix(x.shape[2]) @ x @ pooling_matrix(x.shape[3]).transpose(0, 1)


@register_upsampler('A2U')
class A2U(GuidedUpsampler):
    """A2U upsampler ('dynamic-cs-d†').

    Kernel generation from the guide ``g`` ``(B, C_g, 2H, 2W)``:

    - ``U = conv1x1(adaptive_avg_pool(g, e))``, ``V`` likewise: per-sample ``e x e`` kernels
      (``C_g -> 1`` each, with bias), shared by all channels of ``g``;
    - ``a = g * U`` and ``b = g * V``, each a per-channel stride-2 convolution (padding
      ``(e - 1) // 2``) followed by GroupNorm(32) and LeakyReLU(0.01), ``(B, C_g, H, W)``;
    - ``affinity = sum_c(a * b) / sqrt(C_g)``, ``(B, 1, H, W)``;
    - ``P = conv1x1(global_avg_pool(g))``: per-sample ``4 k^2`` weights (with bias); the
      logits ``P * affinity`` ``(B, 4 k^2, H, W)`` are pixel-shuffled to ``(B, k^2, 2H, 2W)``
      and normalised as the authors do, ``softmax(sigmoid(.))`` over the ``k^2`` taps.

    Output: CARAFE reassembly of ``x`` with those kernels (``k x k`` neighbourhood of the
    low-resolution pixel ``(p // 2, q // 2)``, zero outside the map).

    Parameters: ``4 C_g + (4 k^2 + 2) C_g + 4 k^2 + 2`` (10,790 at ``C_g = 256``, ``k = 3``).

    Args:
        in_channels: channels ``C`` of ``x``.
        scale_factor: must be 2.
        guide_channels: channels ``C_g`` of ``guide`` (divisible by 32); ``None`` means
            ``in_channels``.
        up_kernel: reassembly kernel size ``k`` (odd; 3).
        encoder_kernel: size ``e`` of the pooled kernels ``U`` and ``V`` (6; any size
            >= 1 keeps ``H x W``: padding ``(e - 1) // 2``, stride 2).

    Shape:
        ``x (B, C, H, W)``, ``guide (B, C_g, 2H, 2W)`` -> ``(B, C, 2H, 2W)``.

    Weights keep PyTorch's default initialisation (as the authors' module).
    """
    supported_scale_factors = (2, )

    def __init__(self, in_channels: int, scale_factor: int = 2,
                 guide_channels: Optional[int] = None, up_kernel: int = 3,
                 encoder_kernel: int = 6):
        super().__init__(in_channels, scale_factor, guide_channels)
        c = check_group_norm_channels(self.guide_channels, 'guide_channels')
        self.up_kernel = check_odd_kernel(up_kernel, 'up_kernel')
        self.encoder_kernel = encoder_kernel = check_positive_int(encoder_kernel,
                                                                  'encoder_kernel')
        self.kernel_u = nn.Sequential(
            nn.AdaptiveAvgPool2d(encoder_kernel), nn.Conv2d(c, 1, 1))
        self.kernel_v = nn.Sequential(
            nn.AdaptiveAvgPool2d(encoder_kernel), nn.Conv2d(c, 1, 1))
        self.norm_u = nn.Sequential(nn.GroupNorm(GROUP_NORM_GROUPS, c), nn.LeakyReLU())
        self.norm_v = nn.Sequential(nn.GroupNorm(GROUP_NORM_GROUPS, c), nn.LeakyReLU())
        self.projection = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), nn.Conv2d(c, 4 * self.up_kernel**2, 1))

    def _shared_strided_conv(self, guide: torch.Tensor,
                             kernels: torch.Tensor) -> Sequence[torch.Tensor]:
        """Convolve every channel of ``guide`` ``(B, C_g, 2H, 2W)`` with each of its sample's
        ``kernels`` ``(B, K, e, e)``, stride 2 -> ``K`` maps ``(B, C_g, H, W)``."""
        e = self.encoder_kernel
        kernels = kernels.to(guide.dtype)
        batch, channels, height, width = guide.shape
        count = kernels.shape[1]
        if torch.onnx.is_in_onnx_export():
            # ONNX Conv takes its group count as a constant: ``groups=B`` would freeze the
            # batch size (the legacy exporter) or fail (dynamo, dynamic batch). Every kernel
            # on every sample instead, keeping sample b's kernels on sample b (a 0/1 mask
            # over the B x B pairs): the same products and sums, B times the work.
            planes = guide.reshape(batch * channels, 1, height, width)
            index = torch.arange(batch, device=guide.device)
            same_sample = (index[:, None] == index[None, :]).to(guide.dtype)
            maps = []
            for k in range(count):
                out = F.conv2d(planes, kernels[:, k:k + 1], stride=2,
                               padding=(e - 1) // 2)  # (B * C_g, B, H, W)
                out = out.reshape(batch, channels, batch, out.shape[-2], out.shape[-1])
                maps.append((out * same_sample[:, None, :, None, None]).sum(2))
            return maps
        # Per kernel one depthwise convolution over the B * C_g planes, each with its
        # sample's kernel. Measured on the 2-core dev machine, 2 threads, A2U's forward at
        # 1x256x64x64: 14.4x bilinear with a grouped convolution (channels as the batch,
        # groups = B), 3.6x this way; one depthwise convolution with K kernels per plane
        # (channel multiplier K) took 7.0x: oneDNN's fast depthwise path wants multiplier 1.
        planes = guide.reshape(1, batch * channels, height, width)
        outs = [F.conv2d(planes, kernels[:, k:k + 1].repeat_interleave(channels, 0), stride=2,
                         padding=(e - 1) // 2, groups=batch * channels) for k in range(count)]
        return [out.view(batch, channels, out.shape[-2], out.shape[-1]) for out in outs]

    def kernels(self, guide: torch.Tensor) -> torch.Tensor:
        """Normalised reassembly kernels ``(B, k^2, 2H, 2W)`` from the guide."""
        channels = guide.shape[1]
        if torch.onnx.is_in_onnx_export():
            # The exporters cannot pool to e x e at any size: the legacy one refuses sizes
            # that are not multiples of e and dynamic sizes, dynamo's graph keeps the
            # traced size's cells (wrong results at another size). The same average as
            # two matrix products, whose cells follow the input size.
            pooled = adaptive_avg_pool2d_by_matmul(guide, self.encoder_kernel)
        else:
            pooled = F.adaptive_avg_pool2d(guide, self.encoder_kernel)
        # U and V from one pooling and one 1x1 projection (their weights stacked), then one
        # strided convolution for both: one guide-sized gradient each instead of two
        conv_u, conv_v = self.kernel_u[1], self.kernel_v[1]
        kernels_uv = F.conv2d(pooled, torch.cat([conv_u.weight, conv_v.weight]),
                              torch.cat([conv_u.bias, conv_v.bias]))  # (B, 2, e, e)
        conv_u, conv_v = self._shared_strided_conv(guide, kernels_uv)
        a, b = self.norm_u(conv_u), self.norm_v(conv_v)
        affinity = (a * b).sum(1, keepdim=True) / math.sqrt(channels)
        logits = affinity * self.projection(guide)  # (B, 4 k^2, H, W)
        logits = pixel_shuffle(logits, 2)
        return softmax_kernels(torch.sigmoid(logits))

    def forward(self, x: torch.Tensor, guide: torch.Tensor) -> torch.Tensor:
        self.check_inputs(x, guide)
        if guide.shape[0] == 0:
            # an empty batch: the per-sample convolutions cannot take zero groups, so the
            # kernels are those of two zero guides, of which none is kept (every parameter
            # and the guide still get their zero / empty gradients; two, because training
            # GroupNorm refuses one value per group, as on a 1x1 map of one sample)
            kernels = self.kernels(torch.cat([guide, guide.new_zeros((2, ) + guide.shape[1:])]))
            kernels = kernels[:0]
        else:
            kernels = self.kernels(guide)
        return carafe(x, kernels, self.up_kernel, 1, 2)

    def extra_repr(self) -> str:
        return (f'{super().extra_repr()}, up_kernel={self.up_kernel}, '
                f'encoder_kernel={self.encoder_kernel}')
