"""SegFormer's all-MLP head with learned upsamplers (DySample paper, Table 4).

mmseg's ``SegformerHead`` projects the four MiT features (strides 4, 8, 16, 32) to
``channels`` with 1x1 ConvModules and resizes each projection to the 1/4 size with one
interpolation. This subclass, registered in mmseg's ``MODELS`` as ``'SegformerHead'``
(replacing the upstream entry when :mod:`mmdysample` is imported), replaces those resizes by
chains of x2 upsamplers when ``upsample_cfg`` has a ``type``:

* input 1 (1/8)  -> 1 upsampler:  ``upsamplers[0]``
* input 2 (1/16) -> 2 upsamplers: ``upsamplers[1]``, ``upsamplers[2]``
* input 3 (1/32) -> 3 upsamplers: ``upsamplers[3]``, ``upsamplers[4]``, ``upsamplers[5]``

(stage-major order: input ``i`` uses ``upsamplers[i*(i-1)/2 : i*(i+1)/2]``, applied in
that order, so 6 upsamplers at ``channels`` for SegFormer's four inputs). Without a
``type`` the head is mmseg's, parameter for parameter and bit for bit.
"""
import copy
from typing import Dict, List, Optional

import torch
from mmengine.model import ModuleList
from mmseg.models.decode_heads.segformer_head import SegformerHead as MMSegSegformerHead
from mmseg.registry import MODELS

from ..upsamplers import build_upsampler
from .upsample_cfg import check_interpolation_cfg, fit_to_size, has_upsampler_type

__all__ = ['SegformerHead']


@MODELS.register_module(name='SegformerHead', force=True)
class SegformerHead(MMSegSegformerHead):
    """mmseg's ``SegformerHead`` whose upsampling steps can be learned upsamplers.

    Args:
        interpolate_mode: interpolation of the upstream head (``'bilinear'``); with a
            learned upsampler it only resizes chained outputs whose size is a few pixels
            off the 1/4 size (inputs not divisible by 32).
        upsample_cfg: ``None`` (default) or a dict without ``type``: the upstream head.
            A typeless dict may only restate the interpolation
            (``dict(mode=interpolate_mode, align_corners=align_corners)``).
            A dict with ``type`` (``dict(type='DySample-S+')``, ``dict(type='CARAFE')``,
            any name of :func:`mmdysample.upsamplers.registered_upsamplers`) builds the
            x2 upsamplers described in the module docstring, at ``channels`` channels.
        **kwargs: the arguments of mmseg's ``BaseDecodeHead`` (``in_channels``,
            ``channels``, ``num_classes``, ``in_index``, ``align_corners``...).

    Shape:
        inputs: list of ``(B, in_channels[i], H / 2**(i+2), W / 2**(i+2))``;
        output: ``(B, num_classes, H / 4, W / 4)`` logits.

    The learned upsamplers live in an ``mmengine.model.ModuleList``, so
    ``init_weights()`` runs their own initialisation after any ``init_cfg`` of the head
    (DySample's offset conv stays N(0, 0.001)).
    """

    def __init__(self,
                 interpolate_mode: str = 'bilinear',
                 upsample_cfg: Optional[Dict] = None,
                 **kwargs):
        super().__init__(interpolate_mode=interpolate_mode, **kwargs)
        if has_upsampler_type(upsample_cfg, type(self).__name__):
            self.upsample_cfg = copy.deepcopy(dict(upsample_cfg))
            self.upsamplers = ModuleList([
                build_upsampler(self.upsample_cfg, self.channels, 2)
                for level in range(len(self.convs)) for _ in range(level)
            ])
        else:
            self.upsample_cfg = check_interpolation_cfg(
                upsample_cfg, type(self).__name__,
                dict(mode=interpolate_mode, align_corners=self.align_corners))
            self.upsamplers = None

    @staticmethod
    def upsampler_indices(level: int) -> List[int]:
        """Indices in ``upsamplers`` of the x2 steps taking input ``level`` to 1/4."""
        first = level * (level - 1) // 2
        return list(range(first, first + level))

    def forward(self, inputs):
        """Logits ``(B, num_classes, H/4, W/4)`` from the backbone features."""
        if self.upsamplers is None:
            return super().forward(inputs)
        inputs = self._transform_inputs(inputs)
        size = inputs[0].shape[2:]
        outs = []
        for level, (x, conv) in enumerate(zip(inputs, self.convs)):
            feat = conv(x)
            for index in self.upsampler_indices(level):
                feat = self.upsamplers[index](feat)
            outs.append(
                fit_to_size(feat, size, level, self.interpolate_mode, self.align_corners,
                            f'decode_head input {level}'))
        out = self.fusion_conv(torch.cat(outs, dim=1))
        return self.cls_seg(out)
