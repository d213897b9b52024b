"""CARAFE (Wang et al., ICCV 2019) on every device, without importing mmcv.

mmcv's ``CARAFEPack`` only runs on CUDA (its op has no CPU kernel), and importing it loads
``mmcv.ops``. :class:`CARAFE` has the same submodules, parameter names, state-dict keys and
initialisation (Xavier-uniform convolutions, then N(0, 0.001) content encoder, zero biases),
so ``CARAFEPack`` checkpoints load strictly. It reassembles with
:func:`mmdysample.functional.carafe`: the C++ kernel on CPU, mmcv's CUDA kernel on CUDA
tensors (``mmcv.ops`` imported then), a device-agnostic path elsewhere.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..functional import carafe, check_feature, check_odd_kernel, check_positive_int, \
    check_scale_factor, pixel_shuffle
from .builder import register_upsampler


@register_upsampler('CARAFE')
class CARAFE(nn.Module):
    """CARAFE upsampler with mmcv's defaults (the paper's setting).

    Args:
        in_channels: input channels.
        scale_factor: integer ratio >= 2.
        up_kernel: reassembly kernel size (5).
        up_group: kernel groups (1).
        encoder_kernel: content-encoder kernel size (3).
        encoder_dilation: content-encoder dilation (1).
        compressed_channels: channel-compressor output channels (64).
    """
    requires_guide = False

    def __init__(self, in_channels: int, scale_factor: int = 2, up_kernel: int = 5,
                 up_group: int = 1, encoder_kernel: int = 3, encoder_dilation: int = 1,
                 compressed_channels: int = 64):
        super().__init__()
        in_channels = check_positive_int(in_channels, 'in_channels')
        s = check_scale_factor(scale_factor)
        if in_channels % check_positive_int(up_group, 'up_group'):
            raise ValueError(f'in_channels ({in_channels}) must be divisible by up_group '
                             f'({up_group})')
        check_odd_kernel(up_kernel, 'up_kernel')
        check_odd_kernel(encoder_kernel, 'encoder_kernel')
        check_positive_int(encoder_dilation, 'encoder_dilation')
        check_positive_int(compressed_channels, 'compressed_channels')
        self.in_channels = self.channels = in_channels  # `channels`: CARAFEPack's name
        self.scale_factor = s
        self.up_kernel = up_kernel
        self.up_group = up_group
        self.encoder_kernel = encoder_kernel
        self.encoder_dilation = encoder_dilation
        self.compressed_channels = compressed_channels
        self.channel_compressor = nn.Conv2d(in_channels, compressed_channels, 1)
        self.content_encoder = nn.Conv2d(
            compressed_channels, up_kernel * up_kernel * up_group * s * s, encoder_kernel,
            padding=(encoder_kernel - 1) * encoder_dilation // 2, dilation=encoder_dilation)
        self.init_weights()

    def init_weights(self):
        """mmcv's: Xavier-uniform weights and zero biases, then N(0, 0.001) for the encoder."""
        for conv in (self.channel_compressor, self.content_encoder):
            nn.init.xavier_uniform_(conv.weight)
            nn.init.zeros_(conv.bias)
        nn.init.normal_(self.content_encoder.weight, 0, 0.001)
        nn.init.zeros_(self.content_encoder.bias)

    def kernel_normalizer(self, mask: torch.Tensor) -> torch.Tensor:
        """``(B, g*k*k*s*s, H, W)`` encoder output -> ``(B, g*k*k, sH, sW)`` kernels, each
        group's ``k*k`` weights softmax-normalised (``CARAFEPack``'s, bit for bit)."""
        mask = pixel_shuffle(mask, self.scale_factor)
        B, channels, height, width = mask.shape
        taps = self.up_kernel**2
        mask = mask.view(B, channels // taps, taps, height, width)
        return F.softmax(mask, dim=2).view(B, channels, height, width)

    def feature_reassemble(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``x`` reassembled with the normalised kernels ``mask``."""
        return carafe(x, mask, self.up_kernel, self.up_group, self.scale_factor)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W) -> (B, C, s*H, s*W)``."""
        check_feature(x, 'x', self.in_channels)
        mask = self.kernel_normalizer(self.content_encoder(self.channel_compressor(x)))
        return self.feature_reassemble(x, mask)

    def extra_repr(self):
        return (f'in_channels={self.in_channels}, scale_factor={self.scale_factor}, '
                f'up_kernel={self.up_kernel}, up_group={self.up_group}, '
                f'encoder_kernel={self.encoder_kernel}, '
                f'encoder_dilation={self.encoder_dilation}, '
                f'compressed_channels={self.compressed_channels}')
