"""Helpers shared by the patched SegFormer head and MaskFormer pixel decoder.

Both take an ``upsample_cfg`` the way mmdet's FPN does: a config *with* a ``type`` builds
learned upsamplers (:func:`mmdysample.upsamplers.build_upsampler`), one per x2 step; ``None``
or a config *without* ``type`` keeps the upstream interpolation, and then may only restate it.
"""
from typing import Optional, Sequence

import torch
import torch.nn.functional as F

from ..upsamplers.sites import check_interpolation_cfg, has_upsampler_type  # noqa: F401

__all__ = ['has_upsampler_type', 'check_interpolation_cfg', 'fit_to_size']

_MODES_WITH_ALIGN_CORNERS = ('linear', 'bilinear', 'bicubic', 'trilinear')


def fit_to_size(feat: torch.Tensor, size: Sequence[int], num_steps: int, mode: str,
                align_corners: Optional[bool], what: str) -> torch.Tensor:
    """Resize a feature upsampled by ``num_steps`` x2 steps to the size it must reach.

    With inputs whose side is not divisible by the total stride, a pyramid level of side
    ``h / 2**k`` rounded up (or down) comes back from ``num_steps`` x2 steps at most
    ``2**num_steps - 1`` pixels off; such a feature is interpolated to ``size`` (what the
    upstream module does to every level). A larger mismatch means the features are not a
    x2 pyramid, which the chained upsamplers cannot serve.

    Args:
        feat: ``(B, C, h * 2**num_steps, w * 2**num_steps)``.
        size: target ``(H, W)``.
        num_steps: x2 steps ``feat`` went through.
        mode, align_corners: interpolation used when the size differs; ``align_corners``
            is ignored for modes that do not take it (nearest, area).
        what: the feature's name, for the error message.

    Returns:
        ``(B, C, H, W)``; ``feat`` itself when it already has that size.

    Raises:
        ValueError: a side is ``2**num_steps`` or more pixels off.
    """
    size = tuple(int(s) for s in size)
    got = tuple(feat.shape[-2:])
    if got == size:
        return feat
    if any(abs(g - s) >= 2**num_steps for g, s in zip(got, size)):
        raise ValueError(
            f'{what} reaches {got} after {num_steps} x2 upsampling steps, but must reach '
            f'{size}: with a learned upsampler each input must be half the size of the '
            f'previous one (a stride-x2 feature pyramid)')
    if mode not in _MODES_WITH_ALIGN_CORNERS:
        align_corners = None
    return F.interpolate(feat, size=size, mode=mode, align_corners=align_corners)
