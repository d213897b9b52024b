"""DeepLabV3+'s head (mmseg ``DepthwiseSeparableASPPHead``) with a learned upsampler.

mmseg's head resizes the ASPP output (1/8 in the ``-d8`` configs) bilinearly to the
low-level feature ``c1`` (1/4) before concatenating them. This subclass, registered in
mmseg's ``MODELS`` as ``'DepthwiseSeparableASPPHead'``, makes that resize one learned
upsampler, ``upsamplers[0]``, at ``channels``, when ``upsample_cfg`` has a ``type``. It goes
to the exact size of ``c1`` (any ratio: DySample samples there directly, a fixed-ratio layer
is resized after its x2, see :func:`mmdysample.upsamplers.upsample`), and a guided type gets
the projected low-level feature (``c1_bottleneck``'s output, ``c1_channels``) as its guide.
Without a ``type`` it is mmseg's head, bit for bit.
"""
from typing import Dict, Optional

import torch
from mmseg.models.decode_heads.sep_aspp_head import \
    DepthwiseSeparableASPPHead as MMSegDepthwiseSeparableASPPHead
from mmseg.registry import MODELS

from ..upsamplers import upsample
from .learned_steps import UpsamplingStep, build_upsampling_steps

__all__ = ['DepthwiseSeparableASPPHead']


@MODELS.register_module(name='DepthwiseSeparableASPPHead', force=True)
class DepthwiseSeparableASPPHead(MMSegDepthwiseSeparableASPPHead):
    """mmseg's DeepLabV3+ head whose ASPP-to-low-level resize can be a learned upsampler.

    Args:
        c1_in_channels: channels of the low-level input (``inputs[0]``); ``0`` disables the
            low-level branch (and then there is nothing to upsample: a typed
            ``upsample_cfg`` raises).
        c1_channels: channels of the projected low-level feature.
        upsample_cfg: keyword-only. ``None`` (default) or a dict without ``type``: the
            upstream head (a typeless dict may only restate
            ``dict(mode='bilinear', align_corners=align_corners)``). A dict with ``type``
            builds one upsampler at ``channels``.
        **kwargs: the arguments of mmseg's ``ASPPHead`` (``dilations``...) and
            ``BaseDecodeHead``.
    """

    def __init__(self, c1_in_channels, c1_channels, *, upsample_cfg: Optional[Dict] = None,
                 **kwargs):
        super().__init__(c1_in_channels=c1_in_channels, c1_channels=c1_channels, **kwargs)
        name = type(self).__name__
        self.upsample_cfg, self.upsamplers = build_upsampling_steps(
            upsample_cfg, name, dict(mode='bilinear', align_corners=self.align_corners),
            [UpsamplingStep('ASPP output to c1', self.channels, c1_channels)])
        if self.upsamplers is not None and self.c1_bottleneck is None:
            raise ValueError(
                f'{name}: upsample_cfg with a type needs the low-level branch '
                f'(c1_in_channels > 0, got {c1_in_channels}); without it the head does not '
                'upsample')

    def forward(self, inputs):
        """Logits ``(B, num_classes, H_c1, W_c1)``."""
        if self.upsamplers is None:
            return super().forward(inputs)
        output = self._forward_feature(inputs)  # upstream ASPPHead: pooling, ASPP, bottleneck
        c1_output = self.c1_bottleneck(inputs[0])
        output = upsample(self.upsamplers[0], output, size=c1_output.shape[2:],
                          guide=c1_output)
        output = self.sep_bottleneck(torch.cat([output, c1_output], dim=1))
        return self.cls_seg(output)
