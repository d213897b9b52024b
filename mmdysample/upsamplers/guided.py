"""What the guided upsamplers (IndexNet, A2U, FADE, SAPA-B) share: the constructor
arguments every guided layer takes and the check of ``forward(x, guide)``'s inputs.

A guided upsampler maps the low-resolution ``x`` ``(B, C, H, W)`` to ``(B, C, s*H, s*W)``
using ``guide`` ``(B, C_guide, s*H, s*W)``, a feature the network already has at the output
resolution (an FPN lateral, a decoder skip). Sites call it through
:func:`mmdysample.upsamplers.sites.upsample`, which resizes the guide to ``(s*H, s*W)`` when
the site's target size differs (odd sizes).
"""
from typing import Optional, Tuple

import torch
import torch.nn as nn

from ..functional import check_feature, check_positive_int, check_scale_factor

__all__ = [
    'GuidedUpsampler', 'check_group_norm_channels', 'softmax_kernels', 'GROUP_NORM_GROUPS'
]

#: GroupNorm groups used by A2U and SAPA-B (their authors' setting).
GROUP_NORM_GROUPS = 32


def check_group_norm_channels(channels: int, name: str) -> int:
    """Return ``channels`` if ``GroupNorm(32, channels)`` can normalise it, else raise a
    ``ValueError`` naming ``name``."""
    if channels % GROUP_NORM_GROUPS:
        raise ValueError(f'{name} must be divisible by {GROUP_NORM_GROUPS} (the GroupNorm '
                         f'groups of this upsampler), got {channels}')
    return channels


def softmax_kernels(logits: torch.Tensor) -> torch.Tensor:
    """Softmax over dim 1 (the ``k * k`` taps of each output pixel's kernel), computed in at
    least float32 so that fp16/bf16 logits under autocast give normalised kernels."""
    return logits.softmax(1, dtype=torch.promote_types(logits.dtype, torch.float32))


class GuidedUpsampler(nn.Module):
    """Base of the guided upsamplers: argument checks shared by all of them.

    Args:
        in_channels: channels ``C`` of the low-resolution input ``x``.
        scale_factor: integer ratio ``s``; a subclass may restrict it through
            ``supported_scale_factors``.
        guide_channels: channels of ``guide``; ``None`` means ``in_channels``.
    """
    requires_guide = True
    accepts_size = False
    #: ratios a subclass supports; ``None``: every integer >= 2.
    supported_scale_factors: Optional[Tuple[int, ...]] = None

    def __init__(self, in_channels: int, scale_factor: int = 2,
                 guide_channels: Optional[int] = None):
        super().__init__()
        self.in_channels = check_positive_int(in_channels, 'in_channels')
        self.scale_factor = check_scale_factor(scale_factor)
        allowed = self.supported_scale_factors
        if allowed is not None and self.scale_factor not in allowed:
            raise ValueError(f'{type(self).__name__} supports scale_factor in {allowed}, '
                             f'got {scale_factor!r}')
        self.guide_channels = (self.in_channels if guide_channels is None else
                               check_positive_int(guide_channels, 'guide_channels'))

    def init_weights(self):
        """PyTorch's default initialisation of every submodule (what IndexNet's and A2U's
        authors use); restores it after a parent module's ``init_cfg`` (e.g. FPN's Xavier
        init of every ``Conv2d``). Subclasses with their own scheme extend this."""
        for module in self.modules():
            if module is not self and hasattr(module, 'reset_parameters'):
                module.reset_parameters()

    def check_inputs(self, x: torch.Tensor, guide: torch.Tensor) -> None:
        """Raise unless ``x`` is ``(B, in_channels, H, W)`` and ``guide`` is
        ``(B, guide_channels, s*H, s*W)``."""
        check_feature(x, 'x', self.in_channels)
        check_feature(guide, 'guide')
        B, _, H, W = x.shape
        s = self.scale_factor
        expected = (B, self.guide_channels, s * H, s * W)
        if tuple(guide.shape) != expected:
            raise ValueError(
                f'guide must have shape (B, guide_channels, scale_factor * H, '
                f'scale_factor * W) = {expected} for x of shape {tuple(x.shape)} '
                f'(guide_channels={self.guide_channels}, scale_factor={s}); got '
                f'{tuple(guide.shape)}')

    def extra_repr(self) -> str:
        return (f'in_channels={self.in_channels}, scale_factor={self.scale_factor}, '
                f'guide_channels={self.guide_channels}')
