"""What every patched neck/head (an *upsampling site*) needs from the layers package.

One interface for all integrations (mmdet, mmseg, depth), so that they never import each
other and never special-case an upsampler by name:

* :func:`has_upsampler_type` / :func:`check_interpolation_cfg`: read a site's
  ``upsample_cfg`` the way mmdet's FPN does (no ``type``: upstream interpolation, and the cfg
  may only restate it; a ``type``: learned upsamplers);
* :func:`build_upsampler` (in :mod:`.builder`) with ``guide_channels``: a site that has a
  higher-resolution feature to offer passes its channel count; a site without one passes
  nothing, and a guided type then raises an error saying so;
* :class:`LearnedTopDown`: the learned top-down pathway of an FPN-style neck (mmdet's and
  mmseg's ``FPN``), written once for both;
* :func:`upsample`: run any upsampler to an exact output size, with the guide when the layer
  takes one. The odd-size strategy lives here, once:

  - layers whose class sets ``accepts_size = True`` (DySample, :class:`Interpolate`) are
    called as ``layer(x, size=size)`` and produce that size directly (DySample samples at
    ``F.interpolate``'s positions for that size plus its learned offsets);
  - fixed-ratio layers (Deconv, PixelShuffle, CARAFE, the guided layers) produce
    ``(s * H, s * W)``; when ``size`` differs, a guided layer's guide is first resized to
    ``(s * H, s * W)`` and the result is resized to ``size``, both with
    ``F.interpolate(mode='bilinear', align_corners=False)``.
"""
import copy
from typing import Dict, List, Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ['has_upsampler_type', 'check_interpolation_cfg', 'upsample', 'requires_guide',
           'LearnedTopDown']


def has_upsampler_type(upsample_cfg: Optional[Dict], owner: str) -> bool:
    """``True`` when ``upsample_cfg`` names an upsampler ``type``.

    Args:
        upsample_cfg: ``None`` or a dict.
        owner: the module taking the cfg, for error messages.

    Raises:
        TypeError: ``upsample_cfg`` is neither ``None`` nor a dict.
    """
    if upsample_cfg is None:
        return False
    if not isinstance(upsample_cfg, dict):
        raise TypeError(f'{owner}: upsample_cfg must be None or a dict, '
                        f'got {type(upsample_cfg).__name__}')
    return 'type' in upsample_cfg


def check_interpolation_cfg(upsample_cfg: Optional[Dict], owner: str,
                            interpolation: Dict) -> Optional[Dict]:
    """Validate a typeless ``upsample_cfg`` against the interpolation the module does anyway.

    Args:
        upsample_cfg: ``None`` or a dict without ``type``.
        owner: the module taking the cfg, for error messages.
        interpolation: the keys a typeless cfg may set and the only values they may take,
            e.g. ``dict(mode='bilinear', align_corners=False)``.

    Returns:
        A copy of ``upsample_cfg`` (``None`` stays ``None``).

    Raises:
        ValueError: an unknown key, or a value that differs from ``interpolation``.
    """
    if upsample_cfg is None:
        return None
    unknown = sorted(set(upsample_cfg) - set(interpolation))
    if unknown:
        raise ValueError(
            f'{owner}: an upsample_cfg without type only restates the interpolation '
            f'({", ".join(sorted(interpolation))}); got unexpected keys {unknown}. '
            f"Give a type (e.g. dict(type='DySample')) to use a learned upsampler.")
    for key, value in upsample_cfg.items():
        if value != interpolation[key]:
            raise ValueError(f'{owner}: upsample_cfg {key}={value!r} differs from the '
                             f'module\'s own {key}={interpolation[key]!r}; set it there '
                             f'(an upsample_cfg without type cannot change it)')
    return copy.deepcopy(dict(upsample_cfg))


def requires_guide(layer_or_cls) -> bool:
    """Whether an upsampler (instance or class) takes ``forward(x, guide)``."""
    return bool(getattr(layer_or_cls, 'requires_guide', False))


def _resize(t: torch.Tensor, size) -> torch.Tensor:
    return F.interpolate(t, size=size, mode='bilinear', align_corners=False)


def upsample(layer: nn.Module,
             x: torch.Tensor,
             size: Optional[Sequence[int]] = None,
             guide: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Upsample ``x`` with ``layer`` to ``size`` (default ``s * H, s * W``).

    Args:
        layer: any upsampler built by :func:`build_upsampler`.
        x: ``(B, C, H, W)``.
        size: exact output ``(H_out, W_out)``; ``None`` means the layer's own ratio.
        guide: ``(B, C_guide, H_out, W_out)`` higher-resolution feature, used (and required)
            only by guided layers (``requires_guide = True``); ignored otherwise.

    Returns:
        ``(B, C, H_out, W_out)``.
    """
    s = layer.scale_factor
    natural = (s * x.shape[-2], s * x.shape[-1])
    size = natural if size is None else (int(size[0]), int(size[1]))
    if requires_guide(layer):
        if guide is None:
            raise ValueError(f'{type(layer).__name__} is a guided upsampler: it needs the '
                             'higher-resolution feature (guide), and none was given')
        if tuple(guide.shape[-2:]) != natural:
            guide = _resize(guide, natural)
        out = layer(x, guide)
    elif getattr(layer, 'accepts_size', False):
        return layer(x, size=size)
    else:
        out = layer(x)
    if tuple(out.shape[-2:]) != size:
        out = _resize(out, size)
    return out


class LearnedTopDown:
    """Mixin: the learned top-down pathway of an FPN-style neck.

    For the FPN necks of mmdet and mmseg (``mmdysample.mmdet.UpsamplerFPN``,
    ``mmdysample.mmseg.FPN``), which differ only in how they build the extra levels. The
    class it is mixed into has upstream's ``in_channels``, ``start_level`` and
    ``lateral_convs``, and ``upsamplers``: one built upsampler per top-down step,
    ``upsamplers[j]`` taking level ``j + 1`` to level ``j`` (``j = 0`` is the finest step).
    """

    def learned_laterals(self, inputs: Sequence[torch.Tensor]) -> List[torch.Tensor]:
        """The lateral convolutions of the used input levels, then :meth:`top_down`.

        Raises:
            ValueError: ``inputs`` has not ``len(in_channels)`` levels.
        """
        if len(inputs) != len(self.in_channels):
            raise ValueError(f'FPN expects {len(self.in_channels)} input levels '
                             f'(in_channels={self.in_channels}), got {len(inputs)}')
        laterals = [
            lateral_conv(inputs[i + self.start_level])
            for i, lateral_conv in enumerate(self.lateral_convs)
        ]
        return self.top_down(laterals)

    def top_down(self, laterals: List[torch.Tensor]) -> List[torch.Tensor]:
        """Top-down pathway with the learned upsamplers, coarsest step first.

        ``laterals[j] <- laterals[j] + upsample(upsamplers[j], laterals[j + 1],
        size=laterals[j].shape[-2:], guide=laterals[j])`` for ``j = len(laterals) - 2, ...,
        0`` (:func:`upsample`: exact sizes at odd inputs; the target level guides a guided
        type). Returns a new list; the input list is not changed.
        """
        laterals = list(laterals)
        for j in range(len(laterals) - 2, -1, -1):
            guide = laterals[j]
            laterals[j] = guide + upsample(self.upsamplers[j], laterals[j + 1],
                                           size=guide.shape[-2:], guide=guide)
        return laterals
