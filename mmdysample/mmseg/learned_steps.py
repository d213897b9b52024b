"""How every patched mmseg head reads its ``upsample_cfg`` and builds its x2 steps.

One function for the SegFormer head, UPerHead, the DeepLabV3+ head and the Semantic FPN head
(the FPN neck takes upstream's own ``upsample_cfg`` and only needs the typed branch):

* no ``type``: the upstream module; a typeless cfg may only restate the interpolation the
  upstream module does anyway (:func:`mmdysample.upsamplers.check_interpolation_cfg`);
* a ``type``: one upsampler per x2 step, built by
  :func:`mmdysample.upsamplers.build_upsampler` at the step's channels, with the channels of
  the higher-resolution feature the head passes as the step's guide (``None`` where the head
  has none, so that a guided type raises an error naming the step), in an
  ``mmengine.model.ModuleList`` (``init_weights`` reaches the layers' own initialisation
  after any ``init_cfg`` of the head).
"""
import copy
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple

import torch
from mmengine.model import ModuleList

from ..upsamplers import build_upsampler, check_interpolation_cfg, has_upsampler_type, upsample

__all__ = ['UpsamplingStep', 'build_upsampling_steps', 'chain_indices', 'upsample_chain']


class UpsamplingStep(NamedTuple):
    """One x2 step of a head: where it is (for errors), its channels, its guide's channels."""
    where: str
    channels: int
    guide_channels: Optional[int]


def build_upsampling_steps(
        upsample_cfg: Optional[Dict], owner: str, interpolation: Optional[Dict],
        steps: Sequence[UpsamplingStep]) -> Tuple[Optional[Dict], Optional[ModuleList]]:
    """Read a head's ``upsample_cfg``; build its learned steps when it names a ``type``.

    Args:
        upsample_cfg: the head's argument: ``None``, a dict without ``type`` or with one.
        owner: the head's class name, for error messages.
        interpolation: what a typeless cfg may restate (e.g.
            ``dict(mode='bilinear', align_corners=False)``); ``None`` accepts any typeless
            cfg unchecked (the upstream module itself takes and uses it).
        steps: the x2 steps in the order of the ``upsamplers`` list.

    Returns:
        ``(cfg, upsamplers)``: a copy of the cfg, and the ``ModuleList`` of upsamplers
        (``None`` without a ``type``: the module is the upstream one).
    """
    if not has_upsampler_type(upsample_cfg, owner):
        if interpolation is not None:
            upsample_cfg = check_interpolation_cfg(upsample_cfg, owner, interpolation)
        return copy.deepcopy(upsample_cfg), None
    upsample_cfg = copy.deepcopy(dict(upsample_cfg))
    return upsample_cfg, ModuleList([
        build_upsampler(upsample_cfg, step.channels, 2, guide_channels=step.guide_channels,
                        where=f'{owner} {step.where}') for step in steps
    ])


def chain_indices(level: int, first: int = 0) -> List[int]:
    """Indices of the x2 steps taking pyramid ``level`` to level 0, in the stage-major
    order of the chains (level 1: ``[first]``, level 2: ``[first+1, first+2]``, level 3:
    ``[first+3, first+4, first+5]``...), applied in that order."""
    start = first + level * (level - 1) // 2
    return list(range(start, start + level))


def upsample_chain(upsamplers: ModuleList, indices: Sequence[int], feat: torch.Tensor,
                   guides: Sequence[torch.Tensor]) -> torch.Tensor:
    """Take ``feat`` (pyramid level ``len(indices)``) to level 0 one x2 step at a time.

    The step into level ``j`` goes to the exact size of ``guides[j]`` (the head's feature at
    that resolution), which is also its guide when the upsampler takes one, see
    :func:`mmdysample.upsamplers.upsample`.
    """
    for target, index in zip(range(len(indices) - 1, -1, -1), indices):
        guide = guides[target]
        feat = upsample(upsamplers[index], feat, size=guide.shape[2:], guide=guide)
    return feat
