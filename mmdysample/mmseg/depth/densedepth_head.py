"""DepthFormer's fusion decoder (the toolbox's ``DenseDepthHead``), with learned upsamplers.

The head fuses the five neck levels from the coarsest up. With ``up_sample_channels``
``U = [64, 96, 192, 384, 768]`` and inputs ``F_0 .. F_4`` (finest first)::

    D_4 = conv1x1(F_4)                                           # conv_list[0], U_4 channels
    D_j = convB(convA(cat[up_j(D_{j+1}) to F_j's size, F_j]))    # conv_list[4 - j], U_j
    depth = ReLU(conv3x3(D_0)) + min_depth                       # conv_depth, 1 channel

Each ``convA``/``convB`` is a 3x3 ConvModule (``norm_cfg``, ``act_cfg``: LeakyReLU in
DepthFormer). ``up_j`` is the stage the DySample paper swaps (Table 9, "four upsampling
stages in the fusion module"):

* ``upsample_cfg`` ``None`` or without ``type``: bilinear interpolation with
  ``align_corners=True`` to the skip's size, the toolbox's ``UpSample`` (a typeless cfg may
  only restate ``dict(mode='bilinear', align_corners=True)``);
* with a ``type``: one learned x2 upsampler per stage in ``upsamplers`` (a
  :class:`mmengine.model.ModuleList`), finest step first: ``upsamplers[j]`` takes ``D_{j+1}``
  (``U_{j+1}`` channels: 96, 192, 384, 768) to ``F_j``'s size, built by
  ``build_upsampler(cfg, U_{j+1}, 2, guide_channels=in_channels[j])`` and run through
  :func:`mmdysample.upsamplers.sites.upsample`, so guided types (IndexNet, A2U, FADE,
  SAPA-B) get ``F_j`` as their guide and odd sizes are handled once for every site.

At inference the depth is clamped to ``[min_depth, max_depth]`` (the toolbox's
``encode_decode``) before mmseg resizes it to the input. Module names follow the toolbox
(``conv_list``, ``convA``, ``convB``, ``conv_depth``), so its checkpoints keep their keys.
"""
import copy
from numbers import Real
from typing import Dict, List, Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmcv.cnn import ConvModule
from mmengine.model import ModuleList
from mmseg.models.decode_heads.decode_head import BaseDecodeHead
from mmseg.models.utils import resize
from mmseg.registry import MODELS
from mmseg.utils import SampleList

from ...upsamplers import build_upsampler
from ...upsamplers.sites import check_interpolation_cfg, has_upsampler_type, upsample

__all__ = ['DenseDepthHead', 'DepthFusionBlock']

#: the interpolation of the toolbox's fusion stages
STAGE_INTERPOLATION = dict(mode='bilinear', align_corners=True)


class DepthFusionBlock(nn.Module):
    """``convB(convA(cat[upsampled, skip]))``: two 3x3 ConvModules (the toolbox's
    ``UpSample`` without its interpolation, which the head does)."""

    def __init__(self, in_channels: int, out_channels: int, conv_cfg=None, norm_cfg=None,
                 act_cfg=None):
        super().__init__()
        conv = dict(kernel_size=3, padding=1, conv_cfg=conv_cfg, norm_cfg=norm_cfg,
                    act_cfg=act_cfg)
        self.convA = ConvModule(in_channels, out_channels, **conv)
        self.convB = ConvModule(out_channels, out_channels, **conv)

    def forward(self, upsampled: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.convB(self.convA(torch.cat([upsampled, skip], dim=1)))


@MODELS.register_module()
class DenseDepthHead(BaseDecodeHead):
    """DepthFormer's fusion head for mmseg's ``DepthEstimator``.

    Args:
        in_channels: channels of the neck outputs, finest first
            (``[64, 96, 192, 384, 768]``).
        up_sample_channels: output channels of each fusion stage, finest first (the same in
            DepthFormer); the coarsest is the 1x1 projection of the coarsest input.
        channels: channels fed to ``conv_depth``; must equal ``up_sample_channels[0]``.
        min_depth, max_depth: the depth is ``ReLU(conv) + min_depth`` and, at inference,
            clamped to ``[min_depth, max_depth]`` (1e-3 and 10 m on NYU).
        upsample_cfg: see the module docstring.
        conv_cfg, norm_cfg, act_cfg: of the fusion ConvModules (DepthFormer: no norm,
            LeakyReLU); the 1x1 projection has neither norm nor activation.
        align_corners: of mmseg's resizes of the depth map (loss and prediction); the
            toolbox's DepthFormer sets ``True``.
        loss_decode: a loss config or a list of them (``dict(type='SiLogLoss')``).
        in_index, input_transform: which neck outputs to take (all five, as a list).
        init_cfg: ``None``: PyTorch's initialisation, as in the toolbox.

    Shape:
        inputs: ``[(B, in_channels[l], H / 2**(l+1), W / 2**(l+1))]``;
        output: ``(B, 1, H/2, W/2)`` depth in the units of the ground truth (metres).
    """
    num_classes = 1
    out_channels = 1

    def __init__(self,
                 in_channels: Sequence[int] = (64, 96, 192, 384, 768),
                 up_sample_channels: Sequence[int] = (64, 96, 192, 384, 768),
                 channels: int = 64,
                 min_depth: float = 1e-3,
                 max_depth: float = 10.0,
                 upsample_cfg: Optional[Dict] = None,
                 conv_cfg: Optional[Dict] = None,
                 norm_cfg: Optional[Dict] = None,
                 act_cfg: Dict = dict(type='LeakyReLU', inplace=True),
                 align_corners: bool = True,
                 loss_decode=dict(type='SiLogLoss'),
                 in_index: Sequence[int] = (0, 1, 2, 3, 4),
                 input_transform: str = 'multiple_select',
                 init_cfg=None):
        # BaseDecodeHead.__init__ builds a segmentation classifier (conv_seg, dropout,
        # threshold); a depth head takes only BaseModule's, as mmseg's VPDDepthHead does.
        super(BaseDecodeHead, self).__init__(init_cfg=init_cfg)
        owner = type(self).__name__
        if input_transform != 'multiple_select':
            raise ValueError(f"{owner}: input_transform must be 'multiple_select' (the head "
                             f'fuses a list of levels), got {input_transform!r}')
        self._init_inputs(list(in_channels), list(in_index), input_transform)
        up_sample_channels = list(up_sample_channels)
        if len(up_sample_channels) != len(self.in_channels) or len(self.in_channels) < 2:
            raise ValueError(f'{owner}: up_sample_channels ({up_sample_channels}) must have '
                             f'one entry per input (in_channels={self.in_channels}), at '
                             f'least 2')
        if channels != up_sample_channels[0]:
            raise ValueError(f'{owner}: channels ({channels}) must equal '
                             f'up_sample_channels[0] ({up_sample_channels[0]}), the channels '
                             f'of the finest fused feature that conv_depth reads')
        for value, name in ((min_depth, 'min_depth'), (max_depth, 'max_depth')):
            if isinstance(value, bool) or not isinstance(value, Real) or not value > 0:
                raise ValueError(f'{owner}: {name} must be a positive number, got {value!r}')
        if not min_depth < max_depth:
            raise ValueError(f'{owner}: min_depth ({min_depth}) must be below max_depth '
                             f'({max_depth})')
        self.up_sample_channels = up_sample_channels
        self.channels = channels
        self.min_depth = float(min_depth)
        self.max_depth = float(max_depth)
        self.conv_cfg, self.norm_cfg, self.act_cfg = conv_cfg, norm_cfg, act_cfg
        self.align_corners = align_corners
        self.ignore_index = None
        self.sampler = None
        if isinstance(loss_decode, dict):
            self.loss_decode = MODELS.build(loss_decode)
        elif isinstance(loss_decode, (list, tuple)):
            self.loss_decode = nn.ModuleList([MODELS.build(loss) for loss in loss_decode])
        else:
            raise TypeError(f'{owner}: loss_decode must be a dict or a list of dicts, got '
                            f'{type(loss_decode).__name__}')

        # coarsest first, as the toolbox builds (and names) them
        self.conv_list = nn.ModuleList([
            ConvModule(self.in_channels[-1], up_sample_channels[-1], 1, conv_cfg=conv_cfg,
                       act_cfg=None)
        ])
        for level in reversed(range(len(self.in_channels) - 1)):
            self.conv_list.append(
                DepthFusionBlock(self.in_channels[level] + up_sample_channels[level + 1],
                                 up_sample_channels[level], conv_cfg, norm_cfg, act_cfg))
        self.conv_depth = nn.Conv2d(channels, 1, kernel_size=3, padding=1)

        if has_upsampler_type(upsample_cfg, owner):
            self.upsample_cfg = copy.deepcopy(dict(upsample_cfg))
            self.upsamplers = ModuleList([
                build_upsampler(self.upsample_cfg, up_sample_channels[level + 1], 2,
                                guide_channels=self.in_channels[level],
                                where=f'{owner} fusion stage to level {level}')
                for level in range(len(self.in_channels) - 1)
            ])
        else:
            self.upsample_cfg = check_interpolation_cfg(upsample_cfg, owner,
                                                        STAGE_INTERPOLATION)
            self.upsamplers = None

    def fusion_block(self, level: int) -> DepthFusionBlock:
        """The block producing fused level ``level`` (``conv_list`` is coarsest first)."""
        return self.conv_list[len(self.in_channels) - 1 - level]

    def upsample_stage(self, level: int, coarse: torch.Tensor,
                       skip: torch.Tensor) -> torch.Tensor:
        """Fused level ``level + 1`` brought to the size of input ``level`` (``skip``)."""
        if self.upsamplers is None:
            return F.interpolate(coarse, size=skip.shape[-2:], **STAGE_INTERPOLATION)
        return upsample(self.upsamplers[level], coarse, size=skip.shape[-2:], guide=skip)

    def forward(self, inputs: List[torch.Tensor]) -> torch.Tensor:
        """Depth ``(B, 1, H_0, W_0)`` at the finest input's resolution."""
        feats = self._transform_inputs(inputs)
        fused = self.conv_list[0](feats[-1])
        for level in reversed(range(len(feats) - 1)):
            upsampled = self.upsample_stage(level, fused, feats[level])
            fused = self.fusion_block(level)(upsampled, feats[level])
        return F.relu(self.conv_depth(fused)) + self.min_depth

    def loss_by_feat(self, depth: torch.Tensor, batch_data_samples: SampleList) -> dict:
        """Losses of the predicted depth, resized to the ground truth's size."""
        gt_depth = torch.stack([s.gt_depth_map.data for s in batch_data_samples])
        depth = resize(depth, size=gt_depth.shape[2:], mode='bilinear',
                       align_corners=self.align_corners, warning=False)
        losses = {}
        loss_modules = (self.loss_decode
                        if isinstance(self.loss_decode, nn.ModuleList) else [self.loss_decode])
        for loss_module in loss_modules:
            value = loss_module(depth, gt_depth)
            name = loss_module.loss_name
            losses[name] = losses[name] + value if name in losses else value
        return losses

    def predict_by_feat(self, depth: torch.Tensor, batch_img_metas: List[dict]) -> torch.Tensor:
        """The depth clamped to ``[min_depth, max_depth]`` and resized to the input."""
        return super().predict_by_feat(depth.clamp(self.min_depth, self.max_depth),
                                       batch_img_metas)
