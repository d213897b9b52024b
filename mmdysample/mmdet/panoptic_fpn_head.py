"""Panoptic FPN's semantic head with an optional upsampler in its ``ConvUpsample`` branches.

Off by default: the paper (Table 8) swaps only the FPN's upsamplers, which
:class:`~mmdysample.mmdet.fpn.UpsamplerFPN` already does for Panoptic FPN. The semantic head
upsamples again, with hard-coded x2 bilinear interpolation after its first convolutions
(``1 + 2 + 3 = 6`` times for the default 4-level head, at ``inner_channels``); this module
lets ``semantic_head=dict(upsample_cfg=dict(type='DySample'))`` replace those too.

Importing this module re-registers mmdet's ``PanopticFPNHead`` name (``force=True``) to
:class:`UpsamplerPanopticFPNHead`, which without ``upsample_cfg`` is mmdet's head unchanged.
"""
import copy
from typing import Dict, Optional

import torch
from mmdet.models.layers import ConvUpsample
from mmdet.models.seg_heads import PanopticFPNHead
from mmdet.registry import MODELS
from mmdet.utils import ConfigType, OptConfigType, OptMultiConfig
from mmengine.model import ModuleList

from ..upsamplers import build_upsampler, upsample

__all__ = ['UpsamplerConvUpsample', 'UpsamplerPanopticFPNHead']


class UpsamplerConvUpsample(ConvUpsample):
    """mmdet's ``ConvUpsample`` (3x3 ConvModules, x2 upsampling after the first
    ``num_upsample`` of them) with its upsamplings done by built upsamplers.

    Args:
        in_channels, inner_channels, num_layers, num_upsample, conv_cfg, norm_cfg, init_cfg,
            **kwargs: mmdet's ``ConvUpsample`` arguments, in mmdet's order (``kwargs`` go to
            its ConvModules).
        upsample_cfg (keyword-only): cfg for :func:`~mmdysample.upsamplers.build_upsampler`, one upsampler
            per upsampling step, built at ``inner_channels``. ``None`` keeps mmdet's
            ``F.interpolate(scale_factor=2, mode='bilinear', align_corners=False)``;
            ``dict(mode='bilinear', align_corners=False)`` computes exactly that with
            parameter-free :class:`~mmdysample.upsamplers.Interpolate` layers.

    ``self.upsamplers[k]`` (an ``mmengine`` ``ModuleList``, so ``init_weights`` reaches it)
    follows ``self.conv[k]``. Shape: ``(B, in_channels, H, W) ->
    (B, inner_channels, 2**num_upsample * H, 2**num_upsample * W)``.
    """

    def __init__(self,
                 in_channels,
                 inner_channels,
                 num_layers=1,
                 num_upsample=None,
                 conv_cfg=None,
                 norm_cfg=None,
                 init_cfg=None,
                 *,
                 upsample_cfg: Optional[Dict] = None,
                 **kwargs):
        super().__init__(in_channels, inner_channels, num_layers, num_upsample, conv_cfg,
                         norm_cfg, init_cfg, **kwargs)
        self.upsamplers = None
        if upsample_cfg is not None:
            self.upsamplers = ModuleList([
                build_upsampler(upsample_cfg, inner_channels, 2,
                                where='PanopticFPNHead branch') for _ in range(self.num_upsample)
            ])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.upsamplers is None:
            return super().forward(x)
        for k, conv in enumerate(self.conv):
            x = conv(x)
            if k < self.num_upsample:
                x = upsample(self.upsamplers[k], x)
        return x


class UpsamplerPanopticFPNHead(PanopticFPNHead):
    """mmdet's ``PanopticFPNHead`` with an optional ``upsample_cfg`` for its branches.

    Args:
        num_things_classes, num_stuff_classes, in_channels, inner_channels, start_level,
            end_level, conv_cfg, norm_cfg, loss_seg, init_cfg: mmdet's ``PanopticFPNHead``
            arguments, in mmdet's order.
        upsample_cfg (keyword-only): ``None`` (default) leaves the head exactly as mmdet builds it (same
            modules, state-dict keys and outputs). A cfg (e.g. ``dict(type='DySample')``)
            rebuilds each branch as :class:`UpsamplerConvUpsample` with that cfg: the
            branch for level ``i`` gets ``i`` upsamplers at ``inner_channels`` (6 for the
            default ``start_level=0, end_level=4``). The convolution keys are unchanged,
            so an upstream checkpoint loads with ``strict=False`` reporting only the new
            ``...upsamplers...`` keys as missing.

    Feature maps must be exact x2 pyramids (mmdet pads inputs to a multiple of 32 for
    Panoptic FPN), as for mmdet's head, whose branches are summed without resizing.
    """

    def __init__(self,
                 num_things_classes: int = 80,
                 num_stuff_classes: int = 53,
                 in_channels: int = 256,
                 inner_channels: int = 128,
                 start_level: int = 0,
                 end_level: int = 4,
                 conv_cfg: OptConfigType = None,
                 norm_cfg: ConfigType = dict(type='GN', num_groups=32, requires_grad=True),
                 loss_seg: ConfigType = dict(
                     type='CrossEntropyLoss', ignore_index=-1, loss_weight=1.0),
                 init_cfg: OptMultiConfig = None,
                 *,
                 upsample_cfg: Optional[Dict] = None) -> None:
        super().__init__(num_things_classes, num_stuff_classes, in_channels, inner_channels,
                         start_level, end_level, conv_cfg, norm_cfg, loss_seg, init_cfg)
        self.upsample_cfg = copy.deepcopy(upsample_cfg)
        if upsample_cfg is None:
            return
        self.conv_upsample_layers = ModuleList([
            UpsamplerConvUpsample(
                in_channels,
                inner_channels,
                num_layers=branch.num_layers,
                num_upsample=branch.num_upsample,
                conv_cfg=conv_cfg,
                norm_cfg=norm_cfg,
                upsample_cfg=upsample_cfg) for branch in self.conv_upsample_layers
        ])


MODELS.register_module(name='PanopticFPNHead', module=UpsamplerPanopticFPNHead, force=True)
MODELS.register_module(name='UpsamplerPanopticFPNHead', module=UpsamplerPanopticFPNHead,
                       force=True)
