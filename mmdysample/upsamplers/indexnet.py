"""IndexNet (Lu et al., ICCV 2019, "Indices Matter: Learning to Index for Deep Image
Matting") as a guided x2 upsampler, in the 'HIN' setting the DySample paper uses (Sec. 4):
holistic index, nonlinear index block, with context.

The index block looks at the high-resolution guide and predicts, for every low-resolution
pixel, one index value for each of its 2 x 2 output pixels; the output is the
nearest-upsampled input multiplied by that index map (the "decoder index" of the paper).
"""
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..functional import pixel_shuffle
from .builder import register_upsampler
from .guided import GuidedUpsampler


@register_upsampler('IndexNet')
class IndexNet(GuidedUpsampler):
    """IndexNet upsampler, holistic nonlinear index block with context ('HIN').

    Index block on the guide ``(B, C_g, 2H, 2W)``: conv ``C_g -> 2 C_g`` (kernel 4, stride 2,
    padding 1, no bias; "context" is the 4x4 window instead of 2x2) -> BatchNorm -> ReLU6 ->
    conv 1x1 ``2 C_g -> 4`` (no bias), giving ``(B, 4, H, W)``; ``sigmoid`` then
    ``pixel_shuffle(2)`` make the ``(B, 1, 2H, 2W)`` index map. Output:
    ``index * nearest_upsample(x)``.

    Parameters: ``32 C_g^2 + 12 C_g`` (2,100,224 at ``C_g = 256``: the paper's +12.6M for the
    six steps of SegFormer-B1).

    Args:
        in_channels: channels ``C`` of ``x``.
        scale_factor: must be 2 (the index block predicts 2 x 2 indices).
        guide_channels: channels ``C_g`` of ``guide``; ``None`` means ``in_channels``.

    Shape:
        ``x (B, C, H, W)``, ``guide (B, C_g, 2H, 2W)`` -> ``(B, C, 2H, 2W)``.

    Weights keep PyTorch's default initialisation (as the authors' module).
    """
    supported_scale_factors = (2, )

    def __init__(self, in_channels: int, scale_factor: int = 2,
                 guide_channels: Optional[int] = None):
        super().__init__(in_channels, scale_factor, guide_channels)
        hidden = 2 * self.guide_channels
        self.index_block = nn.Sequential(
            nn.Conv2d(self.guide_channels, hidden, kernel_size=4, stride=2, padding=1,
                      bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU6(inplace=True),
            nn.Conv2d(hidden, 4, kernel_size=1, bias=False),
        )

    def index_map(self, guide: torch.Tensor) -> torch.Tensor:
        """``(B, 1, 2H, 2W)`` index map in (0, 1) predicted from the guide."""
        return pixel_shuffle(torch.sigmoid(self.index_block(guide)), 2)

    def forward(self, x: torch.Tensor, guide: torch.Tensor) -> torch.Tensor:
        self.check_inputs(x, guide)
        index = self.index_map(guide)
        upsampled = F.interpolate(x, scale_factor=2, mode='nearest')
        return upsampled * index.to(upsampled.dtype)
