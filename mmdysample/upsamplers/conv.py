"""Learned fixed-kernel upsamplers: transposed convolution and pixel shuffle (paper Sec. 4)."""
import torch.nn as nn
import torch.nn.functional as F

from ..functional import check_feature, check_positive_int, check_scale_factor
from .builder import register_upsampler


def check_odd_kernel(kernel_size, name: str) -> int:
    """Return ``kernel_size`` if it is a positive odd integer (size-preserving padding
    ``(k - 1) // 2``), else raise a ``ValueError`` naming ``name``."""
    if check_positive_int(kernel_size, name) % 2 == 0:
        raise ValueError(f'{name} must be a positive odd integer, got {kernel_size!r}')
    return int(kernel_size)


@register_upsampler('Deconv')
class Deconv(nn.ConvTranspose2d):
    """Transposed convolution ``C -> C``: kernel 3, stride ``s``, padding 1, output padding
    ``s - 1`` (the paper's setting for ``s = 2``: k3 s2 p1 op1), so ``H -> s * H`` exactly.

    Weights keep PyTorch's default ``ConvTranspose2d`` initialisation.
    """
    requires_guide = False

    def __init__(self, in_channels: int, scale_factor: int = 2, kernel_size: int = 3):
        in_channels = check_positive_int(in_channels, 'in_channels')
        s = check_scale_factor(scale_factor)
        check_odd_kernel(kernel_size, 'kernel_size')
        super().__init__(in_channels, in_channels, kernel_size, stride=s,
                         padding=(kernel_size - 1) // 2, output_padding=s - 1)
        self.scale_factor = s

    def init_weights(self):
        self.reset_parameters()

    def forward(self, x):
        check_feature(x, 'x', self.in_channels)
        return super().forward(x)


@register_upsampler('PixelShuffle')
class PixelShuffle(nn.Module):
    """``kernel_size`` convolution ``C -> s*s*C`` then ``F.pixel_shuffle`` (paper: 3x3).

    Initialisation: Xavier-uniform weights, zero bias, as mmcv's ``PixelShufflePack``.
    """
    requires_guide = False

    def __init__(self, in_channels: int, scale_factor: int = 2, kernel_size: int = 3):
        super().__init__()
        self.in_channels = check_positive_int(in_channels, 'in_channels')
        self.scale_factor = check_scale_factor(scale_factor)
        check_odd_kernel(kernel_size, 'kernel_size')
        self.upsample_conv = nn.Conv2d(in_channels, in_channels * self.scale_factor**2,
                                       kernel_size, padding=(kernel_size - 1) // 2)
        self.init_weights()

    def init_weights(self):
        nn.init.xavier_uniform_(self.upsample_conv.weight)
        nn.init.zeros_(self.upsample_conv.bias)

    def forward(self, x):
        check_feature(x, 'x', self.in_channels)
        out = self.upsample_conv(x)
        if out.numel() == 0:
            # nothing to move; a reshape keeps the gradient's shape right (the backward of
            # pixel_shuffle, CPU pixel_unshuffle, returns its input's shape for zero elements:
            # pytorch/pytorch#192816)
            B, C, H, W = out.shape
            s = self.scale_factor
            return out.reshape(B, C // (s * s), s * H, s * W)
        return F.pixel_shuffle(out, self.scale_factor)
