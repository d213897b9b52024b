"""CARAFE (Wang et al., ICCV 2019) on every device.

mmcv's ``CARAFEPack`` only runs on CUDA (its op has no CPU kernel). :class:`CARAFE` is that
module with the same parameters, state-dict keys and initialisation; it reassembles with
mmcv's CUDA kernel on CUDA tensors and with :func:`mmdysample.functional.carafe` elsewhere.
"""
from mmcv.ops import CARAFEPack
from mmcv.ops import carafe as mmcv_carafe

from ..functional import carafe, check_feature, check_positive_int, check_scale_factor
from .builder import register_upsampler
from .conv import check_odd_kernel


@register_upsampler('CARAFE')
class CARAFE(CARAFEPack):
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
        in_channels = check_positive_int(in_channels, 'in_channels')
        s = check_scale_factor(scale_factor)
        if in_channels % check_positive_int(up_group, 'up_group'):
            raise ValueError(f'in_channels ({in_channels}) must be divisible by up_group '
                             f'({up_group})')
        check_odd_kernel(up_kernel, 'up_kernel')
        check_odd_kernel(encoder_kernel, 'encoder_kernel')
        check_positive_int(encoder_dilation, 'encoder_dilation')
        check_positive_int(compressed_channels, 'compressed_channels')
        super().__init__(in_channels, s, up_kernel=up_kernel, up_group=up_group,
                         encoder_kernel=encoder_kernel, encoder_dilation=encoder_dilation,
                         compressed_channels=compressed_channels)
        self.in_channels = in_channels

    def feature_reassemble(self, x, mask):
        if x.is_cuda:
            return mmcv_carafe(x, mask, self.up_kernel, self.up_group, self.scale_factor)
        return carafe(x, mask, self.up_kernel, self.up_group, self.scale_factor)

    def forward(self, x):
        check_feature(x, 'x', self.in_channels)
        return super().forward(x)
