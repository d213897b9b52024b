"""mmdet's FPN whose top-down upsampling steps can be any registered upsampler.

Importing this module re-registers mmdet's ``FPN`` name (``force=True``) to
:class:`UpsamplerFPN`, so every unmodified mmdet config that says ``type='FPN'``
(Faster R-CNN, Mask R-CNN, Panoptic FPN, RetinaNet...) builds it. Without a ``type`` in
``upsample_cfg`` it *is* mmdet's FPN: same parameters, state-dict keys and output bits.
"""
from typing import List, Tuple, Union

import torch
import torch.nn.functional as F
from mmdet.models.necks.fpn import FPN
from mmdet.registry import MODELS
from mmdet.utils import ConfigType, MultiConfig, OptConfigType
from mmengine.model import ModuleList

from ..upsamplers import LearnedTopDown, build_upsampler, has_upsampler_type

__all__ = ['UpsamplerFPN']


class UpsamplerFPN(LearnedTopDown, FPN):
    """mmdet's :class:`~mmdet.models.necks.FPN` with a pluggable upsampler per top-down step.

    Takes exactly mmdet's FPN arguments; only ``upsample_cfg`` is read differently:

    - **without** ``type`` (mmdet's default ``dict(mode='nearest')``,
      ``dict(scale_factor=2, mode='nearest')``, ``dict(mode='bilinear', align_corners=False)``
      ...): nothing changes. The module is mmdet's FPN (the upstream ``forward`` runs), with
      the same state-dict keys and bit-identical outputs, so upstream checkpoints load with
      ``strict=True``.
    - **with** ``type`` (``dict(type='DySample')``, ``dict(type='DySample+')``,
      ``dict(type='CARAFE')``, ``dict(type='SAPA-B')``... any name in
      :func:`mmdysample.upsamplers.registered_upsamplers`): every top-down step gets its own
      upsampler, built by :func:`~mmdysample.upsamplers.build_upsampler` with
      ``in_channels=out_channels``, ``scale_factor=2`` and ``guide_channels=out_channels``.
      They live in ``self.upsamplers`` (an ``mmengine`` ``ModuleList``, so ``init_weights``
      reaches them after FPN's Xavier init and they keep their own initialisation),
      ordered like the pyramid: ``upsamplers[j]`` upsamples used level ``j + 1``
      (``laterals[j + 1]``) to the resolution of level ``j``; ``j = 0`` is the finest step.
      A standard 4-input ResNet FPN has 3 of them.

    Each step runs through :func:`mmdysample.upsamplers.upsample` with
    ``size=laterals[j].shape[-2:]`` and ``guide=laterals[j]``: guided upsamplers (IndexNet,
    A2U, FADE, SAPA-B) are guided by the lateral of the target level, as in the authors'
    FPN forks; odd sizes (ResNet on a 75x100 image gives 19x25 over 10x13) follow the one
    strategy of every site: DySample and interpolation produce the target size directly,
    fixed-ratio layers are resized to it bilinearly.

    Shape:
        inputs: tuple of ``len(in_channels)`` tensors ``(B, in_channels[i], H_i, W_i)``;
        outputs: tuple of ``num_outs`` tensors ``(B, out_channels, H'_k, W'_k)``.
    """

    def __init__(
        self,
        in_channels: List[int],
        out_channels: int,
        num_outs: int,
        start_level: int = 0,
        end_level: int = -1,
        add_extra_convs: Union[bool, str] = False,
        relu_before_extra_convs: bool = False,
        no_norm_on_lateral: bool = False,
        conv_cfg: OptConfigType = None,
        norm_cfg: OptConfigType = None,
        act_cfg: OptConfigType = None,
        upsample_cfg: ConfigType = dict(mode='nearest'),
        init_cfg: MultiConfig = dict(type='Xavier', layer='Conv2d', distribution='uniform')
    ) -> None:
        super().__init__(in_channels, out_channels, num_outs, start_level, end_level,
                         add_extra_convs, relu_before_extra_convs, no_norm_on_lateral,
                         conv_cfg, norm_cfg, act_cfg, upsample_cfg, init_cfg)
        self.upsamplers = None
        if not has_upsampler_type(self.upsample_cfg, type(self).__name__):
            return
        num_top_down_steps = len(self.lateral_convs) - 1
        self.upsamplers = ModuleList([
            build_upsampler(self.upsample_cfg, out_channels, 2, guide_channels=out_channels,
                            where=f'FPN top-down step {j}') for j in range(num_top_down_steps)
        ])

    def forward(self, inputs: Tuple[torch.Tensor]) -> tuple:
        """Features from the backbone -> pyramid features (see the class docstring)."""
        if self.upsamplers is None:
            return super().forward(inputs)
        laterals = self.learned_laterals(inputs)  # LearnedTopDown (upsamplers/sites.py)

        num_used_levels = len(laterals)
        outs = [self.fpn_convs[i](laterals[i]) for i in range(num_used_levels)]
        # Extra levels, exactly as mmdet's FPN.forward builds them.
        if self.num_outs > len(outs):
            if not self.add_extra_convs:
                for _ in range(self.num_outs - num_used_levels):
                    outs.append(F.max_pool2d(outs[-1], 1, stride=2))
            else:
                if self.add_extra_convs == 'on_input':
                    extra_source = inputs[self.backbone_end_level - 1]
                elif self.add_extra_convs == 'on_lateral':
                    extra_source = laterals[-1]
                else:  # 'on_output'; FPN.__init__ accepts no other value
                    extra_source = outs[-1]
                outs.append(self.fpn_convs[num_used_levels](extra_source))
                for i in range(num_used_levels + 1, self.num_outs):
                    if self.relu_before_extra_convs:
                        outs.append(self.fpn_convs[i](F.relu(outs[-1])))
                    else:
                        outs.append(self.fpn_convs[i](outs[-1]))
        return tuple(outs)


MODELS.register_module(name='FPN', module=UpsamplerFPN, force=True)
MODELS.register_module(name='UpsamplerFPN', module=UpsamplerFPN, force=True)
