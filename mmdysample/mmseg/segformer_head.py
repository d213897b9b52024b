"""SegFormer's all-MLP head with learned upsamplers (DySample paper, Table 4).

mmseg's ``SegformerHead`` projects the four MiT features (strides 4, 8, 16, 32) to
``channels`` with 1x1 ConvModules and resizes each projection to the 1/4 size with one
interpolation. This subclass, registered in mmseg's ``MODELS`` as ``'SegformerHead'``
(replacing the upstream entry when :mod:`mmdysample` is imported), replaces those resizes by
chains of x2 upsamplers when ``upsample_cfg`` has a ``type``:

* input 1 (1/8)  -> 1 upsampler:  ``upsamplers[0]``            (to 1/4)
* input 2 (1/16) -> 2 upsamplers: ``upsamplers[1]``, ``[2]``     (to 1/8, then 1/4)
* input 3 (1/32) -> 3 upsamplers: ``upsamplers[3]``, ``[4]``, ``[5]`` (1/16, 1/8, 1/4)

(stage-major order: input ``i`` uses ``upsamplers[i*(i-1)/2 : i*(i+1)/2]``, applied in
that order, so 6 upsamplers at ``channels`` for SegFormer's four inputs). Each step goes to
the exact size of the head's projection at its output resolution, and a guided upsampler
(IndexNet, A2U, FADE, SAPA-B) gets that projection as its guide, as in the DySample
authors' segmentation code. Without a ``type`` the head is mmseg's, bit for bit.
"""
from typing import Dict, List, Optional

import torch
from mmseg.models.decode_heads.segformer_head import SegformerHead as MMSegSegformerHead
from mmseg.registry import MODELS

from .learned_steps import (UpsamplingStep, build_upsampling_steps, chain_indices,
                            upsample_chain)

__all__ = ['SegformerHead']


@MODELS.register_module(name='SegformerHead', force=True)
class SegformerHead(MMSegSegformerHead):
    """mmseg's ``SegformerHead`` whose upsampling steps can be learned upsamplers.

    Args:
        interpolate_mode: interpolation of the upstream head (``'bilinear'``); unused by
            the learned path.
        upsample_cfg: keyword-only. ``None`` (default) or a dict without ``type``: the
            upstream head. A typeless dict may only restate the interpolation
            (``dict(mode=interpolate_mode, align_corners=align_corners)``).
            A dict with ``type`` (``dict(type='DySample-S+')``, ``dict(type='CARAFE')``,
            ``dict(type='FADE')``, any name of
            :func:`mmdysample.upsamplers.registered_upsamplers`) builds the x2 upsamplers
            described in the module docstring, at ``channels`` channels (guided types get
            ``guide_channels=channels``).
        **kwargs: the arguments of mmseg's ``BaseDecodeHead`` (``in_channels``,
            ``channels``, ``num_classes``, ``in_index``, ``align_corners``...).

    Shape:
        inputs: list of ``(B, in_channels[i], H_i, W_i)``, strides 4, 8, 16, 32 (any
        rounding of odd sizes: each step goes to the size of the next finer projection);
        output: ``(B, num_classes, H_0, W_0)`` logits.
    """

    def __init__(self,
                 interpolate_mode='bilinear',
                 *,
                 upsample_cfg: Optional[Dict] = None,
                 **kwargs):
        super().__init__(interpolate_mode=interpolate_mode, **kwargs)
        name = type(self).__name__
        self.upsample_cfg, self.upsamplers = build_upsampling_steps(
            upsample_cfg, name, dict(mode=interpolate_mode, align_corners=self.align_corners),
            [UpsamplingStep(f'input {level} step {step}', self.channels, self.channels)
             for level in range(len(self.convs)) for step in range(level)])

    @staticmethod
    def upsampler_indices(level: int) -> List[int]:
        """Indices in ``upsamplers`` of the x2 steps taking input ``level`` to 1/4."""
        return chain_indices(level)

    def forward(self, inputs):
        """Logits ``(B, num_classes, H_0, W_0)`` from the backbone features."""
        if self.upsamplers is None:
            return super().forward(inputs)
        inputs = self._transform_inputs(inputs)
        projections = [conv(x) for x, conv in zip(inputs, self.convs)]
        outs = [
            upsample_chain(self.upsamplers, self.upsampler_indices(level), feat, projections)
            for level, feat in enumerate(projections)
        ]
        out = self.fusion_conv(torch.cat(outs, dim=1))
        return self.cls_seg(out)
