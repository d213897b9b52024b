"""RTMDet's and YOLOX's PAFPN necks with learned upsamplers in their top-down path.

mmdet's ``CSPNeXtPAFPN`` (RTMDet) and ``YOLOXPAFPN`` (YOLOX) build one
``nn.Upsample(**upsample_cfg)`` (default ``dict(scale_factor=2, mode='nearest')``) and apply
it at every top-down step: the coarser level, reduced by a 1x1 conv to the finer level's
channels, is upsampled x2 and concatenated with the finer input. The subclasses here,
registered over mmdet's names, read ``upsample_cfg`` as mmdet's FPN does: without ``type``
it goes to ``nn.Upsample`` exactly as upstream (any of its keys: ``scale_factor``, ``size``,
``mode``, ``align_corners``); with a ``type`` every top-down step gets its own upsampler.
"""
import copy
import math
from typing import Sequence, Tuple

import torch
from mmdet.models.necks.cspnext_pafpn import CSPNeXtPAFPN as MMDetCSPNeXtPAFPN
from mmdet.models.necks.yolox_pafpn import YOLOXPAFPN as MMDetYOLOXPAFPN
from mmdet.registry import MODELS
from mmdet.utils import ConfigType, OptMultiConfig
from mmengine.model import ModuleList
from torch import Tensor

from ..upsamplers import build_upsampler, has_upsampler_type, upsample

__all__ = ['CSPNeXtPAFPN', 'YOLOXPAFPN']

# mmdet's default upsample_cfg of both necks, given to the upstream constructor when the
# user's cfg names a learned upsampler (which nn.Upsample cannot take).
NEAREST_X2 = dict(scale_factor=2, mode='nearest')
KAIMING_INIT = dict(type='Kaiming', layer='Conv2d', a=math.sqrt(5), distribution='uniform',
                    mode='fan_in', nonlinearity='leaky_relu')


class LearnedTopDownPAFPN:
    """The part both PAFPN necks share: one learned upsampler per top-down step.

    ``upsamplers[j]`` takes the reduced coarser feature (``in_channels[j]`` channels) to the
    size of input ``j`` and is guided by input ``j`` (same channels); ``j = 0`` is the finest
    step, so a 3-input neck has 2. Odd sizes: :func:`mmdysample.upsamplers.upsample` to input
    ``j``'s size (mmdet's necks need sizes divisible by the largest stride).
    """

    def _build_upsamplers(self, upsample_cfg) -> None:
        self.upsample_cfg = copy.deepcopy(dict(upsample_cfg))
        self.upsample = None  # the upstream nn.Upsample (parameter-free) is not used
        self.upsamplers = ModuleList([
            build_upsampler(self.upsample_cfg, channels, 2, guide_channels=channels,
                            where=f'{type(self).__name__} top-down step {j}')
            for j, channels in enumerate(self.in_channels[:-1])
        ])

    def forward(self, inputs: Tuple[Tensor, ...]) -> Tuple[Tensor, ...]:
        """Input levels, finest first -> output levels (``out_channels`` each), as mmdet's."""
        if self.upsamplers is None:
            return super().forward(inputs)
        num_levels = len(self.in_channels)
        if len(inputs) != num_levels:
            raise ValueError(f'{type(self).__name__} expects {num_levels} input levels '
                             f'(in_channels={self.in_channels}), got {len(inputs)}')
        top_down = [inputs[-1]]
        for j in range(num_levels - 2, -1, -1):
            block = num_levels - 2 - j  # reduce_layers / top_down_blocks run coarse first
            coarse = self.reduce_layers[block](top_down[0])
            top_down[0] = coarse
            fine = inputs[j]
            upsampled = upsample(self.upsamplers[j], coarse, size=fine.shape[-2:], guide=fine)
            top_down.insert(0, self.top_down_blocks[block](torch.cat([upsampled, fine], 1)))
        outs = [top_down[0]]
        for j in range(num_levels - 1):
            downsampled = self.downsamples[j](outs[-1])
            outs.append(self.bottom_up_blocks[j](torch.cat([downsampled, top_down[j + 1]], 1)))
        return tuple(conv(out) for conv, out in zip(self.out_convs, outs))


class CSPNeXtPAFPN(LearnedTopDownPAFPN, MMDetCSPNeXtPAFPN):
    """mmdet's ``CSPNeXtPAFPN`` (RTMDet); ``upsample_cfg`` with a ``type`` gives one learned
    upsampler per top-down step (2 for the 3-level RTMDet configs), see
    :class:`LearnedTopDownPAFPN`. Same signature as mmdet's."""

    def __init__(self,
                 in_channels: Sequence[int],
                 out_channels: int,
                 num_csp_blocks: int = 3,
                 use_depthwise: bool = False,
                 expand_ratio: float = 0.5,
                 upsample_cfg: ConfigType = dict(scale_factor=2, mode='nearest'),
                 conv_cfg: bool = None,
                 norm_cfg: ConfigType = dict(type='BN', momentum=0.03, eps=0.001),
                 act_cfg: ConfigType = dict(type='Swish'),
                 init_cfg: OptMultiConfig = KAIMING_INIT) -> None:
        learned = has_upsampler_type(upsample_cfg, type(self).__name__)
        super().__init__(in_channels, out_channels, num_csp_blocks, use_depthwise,
                         expand_ratio, NEAREST_X2 if learned else upsample_cfg, conv_cfg,
                         norm_cfg, act_cfg, init_cfg)
        self.upsamplers = None
        if learned:
            self._build_upsamplers(upsample_cfg)


class YOLOXPAFPN(LearnedTopDownPAFPN, MMDetYOLOXPAFPN):
    """mmdet's ``YOLOXPAFPN``; ``upsample_cfg`` with a ``type`` gives one learned upsampler
    per top-down step (2 for the 3-level YOLOX configs), see :class:`LearnedTopDownPAFPN`.
    Same signature as mmdet's."""

    def __init__(self,
                 in_channels,
                 out_channels,
                 num_csp_blocks=3,
                 use_depthwise=False,
                 upsample_cfg=dict(scale_factor=2, mode='nearest'),
                 conv_cfg=None,
                 norm_cfg=dict(type='BN', momentum=0.03, eps=0.001),
                 act_cfg=dict(type='Swish'),
                 init_cfg=KAIMING_INIT):
        learned = has_upsampler_type(upsample_cfg, type(self).__name__)
        super().__init__(in_channels, out_channels, num_csp_blocks, use_depthwise,
                         NEAREST_X2 if learned else upsample_cfg, conv_cfg, norm_cfg, act_cfg,
                         init_cfg)
        self.upsamplers = None
        if learned:
            self._build_upsamplers(upsample_cfg)


MODELS.register_module(name='CSPNeXtPAFPN', module=CSPNeXtPAFPN, force=True)
MODELS.register_module(name='YOLOXPAFPN', module=YOLOXPAFPN, force=True)
