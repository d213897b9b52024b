"""mmseg's FPN neck (Semantic FPN) with learned top-down upsamplers.

mmseg has its own ``FPN`` neck (``mmseg.models.necks.FPN``, registered as ``'FPN'`` in
mmseg's ``MODELS``; Semantic FPN and a few other configs use it), which resizes level
``j + 1`` to level ``j`` with ``resize(**upsample_cfg)`` (3 top-down steps for 4 inputs).
This subclass, registered over that name, builds one learned x2 upsampler per top-down step
when ``upsample_cfg`` has a ``type``: ``upsamplers[j]`` takes ``laterals[j + 1]`` (summed
with the coarser ones) to the exact size of ``laterals[j]``, which is its guide for a guided
type; ``j = 0`` is the finest step. Without a ``type`` the upstream ``forward`` runs with
the upstream ``upsample_cfg`` (``dict(mode='nearest')``, ``dict(scale_factor=2)``...): same
parameters, keys and output bits.
"""
from typing import List

import torch
import torch.nn.functional as F
from mmseg.models.necks.fpn import FPN as MMSegFPN
from mmseg.registry import MODELS

from ..upsamplers import LearnedTopDown
from .learned_steps import UpsamplingStep, build_upsampling_steps

__all__ = ['FPN']


@MODELS.register_module(name='FPN', force=True)
class FPN(LearnedTopDown, MMSegFPN):
    """mmseg's ``FPN`` neck whose top-down steps can be learned upsamplers.

    Takes exactly mmseg's arguments, in mmseg's order; ``upsample_cfg`` without ``type`` is
    upstream's interpolation config, with a ``type`` (``dict(type='DySample')``...) it builds
    ``len(lateral_convs) - 1`` upsamplers at ``out_channels`` (guided types get
    ``guide_channels=out_channels``).

    Shape:
        inputs: tuple of ``len(in_channels)`` tensors ``(B, in_channels[i], H_i, W_i)``;
        outputs: tuple of ``num_outs`` tensors ``(B, out_channels, H'_k, W'_k)``.
    """

    def __init__(self,
                 in_channels,
                 out_channels,
                 num_outs,
                 start_level=0,
                 end_level=-1,
                 add_extra_convs=False,
                 extra_convs_on_inputs=False,
                 relu_before_extra_convs=False,
                 no_norm_on_lateral=False,
                 conv_cfg=None,
                 norm_cfg=None,
                 act_cfg=None,
                 upsample_cfg=dict(mode='nearest'),
                 init_cfg=dict(type='Xavier', layer='Conv2d', distribution='uniform')):
        super().__init__(in_channels, out_channels, num_outs, start_level, end_level,
                         add_extra_convs, extra_convs_on_inputs, relu_before_extra_convs,
                         no_norm_on_lateral, conv_cfg, norm_cfg, act_cfg, upsample_cfg,
                         init_cfg)
        self.upsample_cfg, self.upsamplers = build_upsampling_steps(
            self.upsample_cfg, type(self).__name__, None,
            [UpsamplingStep(f'top-down step {j}', out_channels, out_channels)
             for j in range(len(self.lateral_convs) - 1)])

    def forward(self, inputs):
        """Features from the backbone -> ``num_outs`` pyramid features."""
        if self.upsamplers is None:
            return super().forward(inputs)
        laterals = self.learned_laterals(inputs)  # LearnedTopDown (upsamplers/sites.py)
        outs = [fpn_conv(lateral) for fpn_conv, lateral in zip(self.fpn_convs, laterals)]
        return tuple(outs + self.extra_levels(inputs, laterals, outs))

    def extra_levels(self, inputs, laterals, outs) -> List[torch.Tensor]:
        """The levels above the backbone's, built as mmseg's ``FPN.forward`` builds them."""
        extra = []
        num_used = len(outs)
        if self.num_outs <= num_used:
            return extra
        if not self.add_extra_convs:
            last = outs[-1]
            for _ in range(self.num_outs - num_used):
                last = F.max_pool2d(last, 1, stride=2)
                extra.append(last)
            return extra
        source = {'on_input': inputs[self.backbone_end_level - 1], 'on_lateral': laterals[-1],
                  'on_output': outs[-1]}[self.add_extra_convs]
        extra.append(self.fpn_convs[num_used](source))
        for i in range(num_used + 1, self.num_outs):
            last = F.relu(extra[-1]) if self.relu_before_extra_convs else extra[-1]
            extra.append(self.fpn_convs[i](last))
        return extra
