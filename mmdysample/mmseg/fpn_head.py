"""Semantic FPN's head (mmseg ``FPNHead``) with learned upsamplers.

mmseg's ``FPNHead`` gives every input level a *scale head*: ``max(1, k)`` 3x3 ConvModules for
a level ``2**k`` times coarser than the first, each followed by a bilinear x2 ``Upsample``
when ``k > 0``; the scale heads' outputs are summed at the first level's size. For the
standard strides (4, 8, 16, 32) that is 0 + 1 + 2 + 3 = 6 x2 steps. This subclass,
registered in mmseg's ``MODELS`` as ``'FPNHead'``, runs each of those ``Upsample`` modules
as a learned upsampler when ``upsample_cfg`` has a ``type``: ``upsamplers`` holds them in
scale-head order (level 1 ``[0]``, level 2 ``[1, 2]``, level 3 ``[3, 4, 5]``), at
``channels``. A step whose output stride is the stride of an input goes to that input's exact
size, and a guided type gets that input (the neck's feature) as its guide; a step with no
input at its output stride (non power-of-2 strides) keeps the layer's own x2 size and cannot
be guided. The ``Upsample`` modules stay in ``scale_heads`` (they have no parameters), so the
state-dict keys of the convolutions do not move. Without a ``type`` it is mmseg's head, bit
for bit.
"""
from typing import Dict, List, Optional

import torch.nn as nn
from mmseg.models.decode_heads.fpn_head import FPNHead as MMSegFPNHead
from mmseg.models.utils import Upsample
from mmseg.registry import MODELS

from ..upsamplers import upsample
from .learned_steps import UpsamplingStep, build_upsampling_steps

__all__ = ['FPNHead']


@MODELS.register_module(name='FPNHead', force=True)
class FPNHead(MMSegFPNHead):
    """mmseg's Semantic FPN head whose scale heads' x2 steps can be learned upsamplers.

    Args:
        feature_strides: strides of the inputs, finest first.
        upsample_cfg: keyword-only. ``None`` (default) or a dict without ``type``: the
            upstream head (a typeless dict may only restate
            ``dict(mode='bilinear', align_corners=align_corners)``). A dict with ``type``
            builds one upsampler per ``Upsample`` of the scale heads (6 for strides
            4, 8, 16, 32), see the module docstring.
        **kwargs: the arguments of mmseg's ``BaseDecodeHead``.
    """

    def __init__(self, feature_strides, *, upsample_cfg: Optional[Dict] = None, **kwargs):
        super().__init__(feature_strides=feature_strides, **kwargs)
        # input index at each step's output stride (None where no input has that stride)
        self.step_targets: List[List[Optional[int]]] = []
        steps = []
        for level, scale_head in enumerate(self.scale_heads):
            stride, targets = self.feature_strides[level], []
            for step, _ in enumerate(m for m in scale_head if isinstance(m, Upsample)):
                stride /= 2
                target = (self.feature_strides.index(stride)
                          if stride in self.feature_strides else None)
                targets.append(target)
                steps.append(UpsamplingStep(
                    f'scale head {level} step {step}', self.channels,
                    None if target is None else self.in_channels[target]))
            self.step_targets.append(targets)
        self.upsample_cfg, self.upsamplers = build_upsampling_steps(
            upsample_cfg, type(self).__name__,
            dict(mode='bilinear', align_corners=self.align_corners), steps)

    def _run_scale_head(self, level: int, inputs, first: int):
        """``scale_heads[level]`` with its ``Upsample`` steps run by ``upsamplers[first:]``."""
        feat, index = inputs[level], first
        for module in self.scale_heads[level]:
            if not isinstance(module, Upsample):
                feat = module(feat)
                continue
            target = self.step_targets[level][index - first]
            guide = None if target is None else inputs[target]
            size = None if guide is None else guide.shape[2:]
            feat = upsample(self.upsamplers[index], feat, size=size, guide=guide)
            index += 1
        return feat

    def forward(self, inputs):
        """Logits ``(B, num_classes, H_0, W_0)``."""
        if self.upsamplers is None:
            return super().forward(inputs)
        x = self._transform_inputs(inputs)
        first, output = 0, None
        for level in range(len(self.feature_strides)):
            feat = self._run_scale_head(level, x, first)
            first += len(self.step_targets[level])
            output = feat if output is None else output + self._resize_to(feat, output)
        return self.cls_seg(output)

    def _resize_to(self, feat, output):
        """Upstream's final alignment of a scale head's output to the first one's size (a
        no-op when each step went to its input's exact size)."""
        if feat.shape[2:] == output.shape[2:]:
            return feat
        return nn.functional.interpolate(feat, size=output.shape[2:], mode='bilinear',
                                         align_corners=self.align_corners)
