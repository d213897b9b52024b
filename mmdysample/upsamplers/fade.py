"""FADE (Lu et al., ECCV 2022, "FADE: Fusing the Assets of Decoder and Encoder for
Task-Agnostic Upsampling") without its gating mechanism, the setting the DySample paper
uses (Sec. 4), as a guided upsampler.

The reassembly kernels are predicted from both the high-resolution guide (the encoder
feature) and the low-resolution input (the decoder feature) by a "semi-shift" convolution:
one 3x3 convolution, shared by both, runs on the compressed guide at high resolution and on
the compressed input at low resolution, and the low-resolution result is nearest-upsampled
and added. The authors' CUDA version reassembles with mmcv's CARAFE op, their pure-PyTorch
version with unfold and einsum; :func:`mmdysample.functional.carafe` is that computation
(zero outside the map) on every device, without the unfolded tensor.
"""
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..functional import carafe, check_odd_kernel, check_positive_int
from .builder import register_upsampler
from .guided import GuidedUpsampler, pointwise_conv, softmax_kernels


@register_upsampler('FADE')
class FADE(GuidedUpsampler):
    """FADE upsampler without gating.

    Kernels: ``softmax(conv3x3(compress_guide(guide)) + nearest(conv3x3(compress_x(x))))``
    over the ``k^2`` taps, ``(B, k^2, s*H, s*W)``, where ``compress_guide`` is a 1x1 conv
    ``C_g -> m`` with bias, ``compress_x`` a 1x1 conv ``C -> m`` without bias and the 3x3
    conv ``m -> k^2`` (with bias) is the same module for both. Output: CARAFE reassembly of
    ``x`` with those kernels (``k x k`` neighbourhood of input pixel ``(p // s, q // s)``,
    zero outside the map).

    Parameters: ``(C_g + 1) m + C m + 9 m k^2 + k^2`` (47,257 at ``C = C_g = 256``,
    ``m = 64``, ``k = 5``).

    Args:
        in_channels: channels ``C`` of ``x``.
        scale_factor: integer ratio ``s >= 2`` (2 in the paper).
        guide_channels: channels ``C_g`` of ``guide``; ``None`` means ``in_channels``.
        up_kernel: reassembly kernel size ``k`` (odd; 5).
        compressed_channels: channels ``m`` of both compressors (64).
        encoder_kernel: size of the shared content-encoder conv (odd; 3).

    Shape:
        ``x (B, C, H, W)``, ``guide (B, C_g, s*H, s*W)`` -> ``(B, C, s*H, s*W)``.

    Initialisation: Xavier-uniform weights, zero biases (as the authors').
    """

    def __init__(self, in_channels: int, scale_factor: int = 2,
                 guide_channels: Optional[int] = None, up_kernel: int = 5,
                 compressed_channels: int = 64, encoder_kernel: int = 3):
        super().__init__(in_channels, scale_factor, guide_channels)
        self.up_kernel = check_odd_kernel(up_kernel, 'up_kernel')
        self.encoder_kernel = check_odd_kernel(encoder_kernel, 'encoder_kernel')
        m = self.compressed_channels = check_positive_int(compressed_channels,
                                                          'compressed_channels')
        self.compress_guide = nn.Conv2d(self.guide_channels, m, 1)
        self.compress_x = nn.Conv2d(self.in_channels, m, 1, bias=False)
        self.content_encoder = nn.Conv2d(m, self.up_kernel**2, self.encoder_kernel,
                                         padding=self.encoder_kernel // 2)
        self.init_weights()

    def init_weights(self):
        """Xavier-uniform weights, zero biases (also restores them after a parent module's
        ``init_cfg`` initialised every ``Conv2d``)."""
        for conv in (self.compress_guide, self.compress_x, self.content_encoder):
            nn.init.xavier_uniform_(conv.weight)
            if conv.bias is not None:
                nn.init.zeros_(conv.bias)

    def kernels(self, x: torch.Tensor, guide: torch.Tensor) -> torch.Tensor:
        """Normalised reassembly kernels ``(B, k^2, s*H, s*W)`` (semi-shift convolution)."""
        from_guide = self.content_encoder(pointwise_conv(guide, self.compress_guide))
        from_x = self.content_encoder(pointwise_conv(x, self.compress_x))
        from_x = F.interpolate(from_x, scale_factor=self.scale_factor, mode='nearest')
        return softmax_kernels(from_guide + from_x)

    def forward(self, x: torch.Tensor, guide: torch.Tensor) -> torch.Tensor:
        self.check_inputs(x, guide)
        return carafe(x, self.kernels(x, guide), self.up_kernel, 1, self.scale_factor)

    def extra_repr(self) -> str:
        return (f'{super().extra_repr()}, up_kernel={self.up_kernel}, '
                f'compressed_channels={self.compressed_channels}, '
                f'encoder_kernel={self.encoder_kernel}')
