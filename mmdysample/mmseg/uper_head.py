"""UPerNet's head (mmseg ``UPerHead``) with learned upsamplers.

mmseg's ``UPerHead`` resizes bilinearly in two places: the FPN top-down path (level
``i + 1`` to the size of level ``i``, 3 steps for 4 inputs) and the resize of the fused
levels 1/8, 1/16, 1/32 to 1/4 before ``fpn_bottleneck``. This subclass, registered in
mmseg's ``MODELS`` as ``'UPerHead'``, makes every one of those a chain of learned x2 steps
when ``upsample_cfg`` has a ``type``, 9 upsamplers at ``channels`` for 4 inputs:

* ``upsamplers[0:3]``: top-down, ``upsamplers[j]`` takes ``laterals[j + 1]`` (already summed
  with the coarser ones) to ``laterals[j]``, whose own lateral is its guide; finest first,
  as the FPN neck's;
* ``upsamplers[3:9]``: the fused levels to 1/4, stage-major as in the SegFormer head: level
  1 ``[3]``; level 2 ``[4, 5]``; level 3 ``[6, 7, 8]``; each step goes to the exact size of
  the fused (``fpn_convs``) output at its resolution, which is its guide.

Without a ``type`` it is mmseg's head, parameter for parameter and bit for bit.
"""
from typing import Dict, Optional

import torch
from mmseg.models.decode_heads.uper_head import UPerHead as MMSegUPerHead
from mmseg.registry import MODELS

from ..upsamplers import upsample
from .learned_steps import (UpsamplingStep, build_upsampling_steps, chain_indices,
                            upsample_chain)

__all__ = ['UPerHead']


@MODELS.register_module(name='UPerHead', force=True)
class UPerHead(MMSegUPerHead):
    """mmseg's ``UPerHead`` whose resizes can be learned x2 upsamplers.

    Args:
        pool_scales: of the upstream head's pyramid pooling module.
        upsample_cfg: keyword-only. ``None`` (default) or a dict without ``type``: the
            upstream head (a typeless dict may only restate
            ``dict(mode='bilinear', align_corners=align_corners)``). A dict with ``type``
            (``dict(type='DySample')``, any name of
            :func:`mmdysample.upsamplers.registered_upsamplers`; guided types get
            ``guide_channels=channels``) builds the ``(n - 1) + n (n - 1) / 2`` upsamplers
            of the module docstring for ``n`` inputs (9 for 4).
        **kwargs: the arguments of mmseg's ``BaseDecodeHead``.

    Shape:
        inputs: list of ``(B, in_channels[i], H_i, W_i)``, each about half the size of the
        previous one; output: ``(B, num_classes, H_0, W_0)`` logits.
    """

    def __init__(self, pool_scales=(1, 2, 3, 6), *, upsample_cfg: Optional[Dict] = None,
                 **kwargs):
        super().__init__(pool_scales=pool_scales, **kwargs)
        num_levels = len(self.in_channels)
        steps = [UpsamplingStep(f'top-down step {j}', self.channels, self.channels)
                 for j in range(num_levels - 1)]
        steps += [UpsamplingStep(f'level {level} to level 0 step {step}', self.channels,
                                 self.channels)
                  for level in range(num_levels) for step in range(level)]
        self.upsample_cfg, self.upsamplers = build_upsampling_steps(
            upsample_cfg, type(self).__name__,
            dict(mode='bilinear', align_corners=self.align_corners), steps)

    def _forward_feature(self, inputs):
        """The fused feature ``(B, channels, H_0, W_0)`` before ``cls_seg``."""
        if self.upsamplers is None:
            return super()._forward_feature(inputs)
        inputs = self._transform_inputs(inputs)
        laterals = [conv(inputs[i]) for i, conv in enumerate(self.lateral_convs)]
        laterals.append(self.psp_forward(inputs))
        num_levels = len(laterals)
        for j in range(num_levels - 2, -1, -1):
            guide = laterals[j]
            laterals[j] = guide + upsample(self.upsamplers[j], laterals[j + 1],
                                           size=guide.shape[2:], guide=guide)
        fpn_outs = [self.fpn_convs[j](laterals[j]) for j in range(num_levels - 1)]
        fpn_outs.append(laterals[-1])
        fused = [
            upsample_chain(self.upsamplers, chain_indices(level, num_levels - 1), feat,
                           fpn_outs) for level, feat in enumerate(fpn_outs)
        ]
        return self.fpn_bottleneck(torch.cat(fused, dim=1))
