"""Parameter-free interpolation (nearest, bilinear...) with the upsampler interface."""
import torch.nn as nn
import torch.nn.functional as F

from ..functional import check_feature, check_positive_int, check_scale_factor
from .builder import register_upsampler

INTERPOLATION_MODES = ('nearest', 'bilinear', 'bicubic', 'nearest-exact', 'area')


@register_upsampler('Interpolate')
class Interpolate(nn.Module):
    """``F.interpolate`` by an integer ratio: what you get from an upsample cfg without type.

    Args:
        in_channels: channels of the input (checked, not used otherwise).
        scale_factor: integer ratio >= 2.
        mode: one of ``nearest, bilinear, bicubic, nearest-exact, area``.
        align_corners: as in ``F.interpolate``; the paper's bilinear baseline uses False.
    """
    requires_guide = False
    accepts_size = True

    def __init__(self, in_channels: int, scale_factor: int = 2, mode: str = 'nearest',
                 align_corners=None):
        super().__init__()
        if mode not in INTERPOLATION_MODES:
            raise ValueError(f'mode must be one of {INTERPOLATION_MODES}, got {mode!r}')
        if align_corners is not None and mode not in ('bilinear', 'bicubic'):
            raise ValueError(f'align_corners is only valid for bilinear/bicubic modes, '
                             f'got align_corners={align_corners!r} with mode={mode!r}')
        self.in_channels = check_positive_int(in_channels, 'in_channels')
        self.scale_factor = check_scale_factor(scale_factor)
        self.mode = mode
        self.align_corners = align_corners

    def forward(self, x, size=None):
        """``(B, C, H, W) -> (B, C, s*H, s*W)``, or exactly ``size`` when given."""
        check_feature(x, 'x', self.in_channels)
        if size is not None:
            return F.interpolate(x, size=tuple(size), mode=self.mode,
                                 align_corners=self.align_corners)
        return F.interpolate(x, scale_factor=self.scale_factor, mode=self.mode,
                             align_corners=self.align_corners)

    def extra_repr(self):
        return (f'in_channels={self.in_channels}, scale_factor={self.scale_factor}, '
                f'mode={self.mode!r}, align_corners={self.align_corners}')
