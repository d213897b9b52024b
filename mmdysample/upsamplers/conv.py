"""Learned fixed-kernel upsamplers: transposed convolution and pixel shuffle (paper Sec. 4)."""
import torch.nn as nn

from ..functional import check_feature, check_odd_kernel, check_positive_int, \
    check_scale_factor, pixel_shuffle
from .builder import register_upsampler


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
    """``kernel_size`` convolution ``C -> s*s*C`` then a pixel shuffle (paper: 3x3).

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
        return pixel_shuffle(self.upsample_conv(x), self.scale_factor)
