"""Mask2Former's pixel decoder with learned upsamplers in its FPN-style top-down step(s).

mmdet's ``MSDeformAttnPixelDecoder`` (mmdet's Mask2Former; mmseg's Mask2Former builds it
as ``'mmdet.MSDeformAttnPixelDecoder'``) runs a deformable-attention encoder over the
coarsest ``num_encoder_levels`` inputs (1/32, 1/16, 1/8 in every standard config), then,
FPN-style, adds each finer input's lateral to the bilinearly upsampled coarser output (one
step, 1/8 -> 1/4, in the standard configs). :class:`MSDeformAttnPixelDecoder`, registered
over mmdet's name, replaces those top-down steps by learned x2 upsamplers when
``upsample_cfg`` has a ``type``; the encoder is untouched.
"""
import copy
from typing import Dict, List, Optional, Tuple, Union

import torch
from mmdet.models.layers.msdeformattn_pixel_decoder import \
    MSDeformAttnPixelDecoder as MMDetMSDeformAttnPixelDecoder
from mmdet.registry import MODELS
from mmdet.utils import ConfigType, OptMultiConfig
from mmengine.model import ModuleList
from torch import Tensor

from ..upsamplers import build_upsampler, check_interpolation_cfg, has_upsampler_type, upsample

__all__ = ['MSDeformAttnPixelDecoder']

# What mmdet's decoder does at each top-down step; a typeless upsample_cfg may restate it.
UPSTREAM_INTERPOLATION = dict(mode='bilinear', align_corners=False)


class MSDeformAttnPixelDecoder(MMDetMSDeformAttnPixelDecoder):
    """mmdet's ``MSDeformAttnPixelDecoder`` whose top-down steps can be learned.

    Args:
        in_channels, strides, feat_channels, out_channels, num_outs, norm_cfg, act_cfg,
            encoder, positional_encoding, init_cfg: mmdet's arguments, in mmdet's order.
        upsample_cfg (keyword-only): ``None`` (default) or a dict without ``type`` (which
            may only restate ``dict(mode='bilinear', align_corners=False)``): mmdet's decoder,
            bit for bit. A dict with ``type`` builds one x2 upsampler per top-down step
            (``len(in_channels) - num_encoder_levels``: 1 in the standard configs) at
            ``feat_channels``, in ``self.upsamplers``: ``upsamplers[i]`` takes the coarser
            output to input level ``i`` (the indexing of ``lateral_convs``), guided by level
            ``i``'s lateral. Odd sizes: :func:`mmdysample.upsamplers.upsample` to the
            lateral's size.
    """

    def __init__(self,
                 in_channels: Union[List[int], Tuple[int]] = [256, 512, 1024, 2048],
                 strides: Union[List[int], Tuple[int]] = [4, 8, 16, 32],
                 feat_channels: int = 256,
                 out_channels: int = 256,
                 num_outs: int = 3,
                 norm_cfg: ConfigType = dict(type='GN', num_groups=32),
                 act_cfg: ConfigType = dict(type='ReLU'),
                 encoder: ConfigType = None,
                 positional_encoding: ConfigType = dict(num_feats=128, normalize=True),
                 init_cfg: OptMultiConfig = None,
                 *,
                 upsample_cfg: Optional[Dict] = None) -> None:
        super().__init__(in_channels, strides, feat_channels, out_channels, num_outs,
                         norm_cfg, act_cfg, encoder, positional_encoding, init_cfg)
        self.upsamplers = None
        if not has_upsampler_type(upsample_cfg, type(self).__name__):
            self.upsample_cfg = check_interpolation_cfg(upsample_cfg, type(self).__name__,
                                                        UPSTREAM_INTERPOLATION)
            return
        self.upsample_cfg = copy.deepcopy(dict(upsample_cfg))
        num_steps = self.num_input_levels - self.num_encoder_levels
        self.upsamplers = ModuleList([
            build_upsampler(self.upsample_cfg, feat_channels, 2, guide_channels=feat_channels,
                            where=f'MSDeformAttnPixelDecoder top-down step {i}')
            for i in range(num_steps)
        ])

    def init_weights(self) -> None:
        """mmdet's initialisation, then each upsampler's own."""
        super().init_weights()
        for upsampler in self.upsamplers or ():
            if hasattr(upsampler, 'init_weights'):
                upsampler.init_weights()

    def forward(self, feats: List[Tensor]) -> Tuple[Tensor, List[Tensor]]:
        """Returns ``(mask_feature, multi_scale_features)`` as mmdet's decoder."""
        if self.upsamplers is None:
            return super().forward(feats)
        outs = self.encode(feats)
        for i in range(self.num_input_levels - self.num_encoder_levels - 1, -1, -1):
            lateral = self.lateral_convs[i](feats[i])
            outs.append(self.output_convs[i](lateral + upsample(
                self.upsamplers[i], outs[-1], size=lateral.shape[-2:], guide=lateral)))
        return self.mask_feature(outs[-1]), outs[:self.num_outs]

    def encode(self, feats: List[Tensor]) -> List[Tensor]:
        """The deformable encoder over the coarsest ``num_encoder_levels`` inputs, as mmdet
        runs it (no padding mask, sine positions plus a learned level embedding, reference
        points at pixel centres normalised by the level's extent).

        Returns:
            the encoded levels, coarsest first, each ``(B, feat_channels, H_l, W_l)``.
        """
        batch_size = feats[0].shape[0]
        queries, positions, masks, shapes, reference_points = [], [], [], [], []
        for i in range(self.num_encoder_levels):
            level = self.num_input_levels - i - 1
            feat = feats[level]
            mask = feat.new_zeros((batch_size, ) + feat.shape[-2:], dtype=torch.bool)
            position = (self.postional_encoding(mask) +
                        self.level_encoding.weight[i].view(1, -1, 1, 1))
            shape = torch._shape_as_tensor(feat)[2:].to(feat.device)
            points = self.point_generator.single_level_grid_priors(
                feat.shape[-2:], level, device=feat.device)
            extent = shape.unsqueeze(0).flip(dims=[0, 1]) * self.strides[level]
            queries.append(self.input_convs[i](feat).flatten(2).permute(0, 2, 1))
            positions.append(position.flatten(2).permute(0, 2, 1))
            masks.append(mask.flatten(1))
            shapes.append(shape)
            reference_points.append(points / extent)
        tokens_per_level = [h * w for h, w in shapes]
        spatial_shapes = torch.cat(shapes).view(-1, 2)
        level_start_index = torch.cat((spatial_shapes.new_zeros(
            (1, )), spatial_shapes.prod(1).cumsum(0)[:-1]))
        reference_points = torch.cat(reference_points)[None, :, None].repeat(
            batch_size, 1, self.num_encoder_levels, 1)
        memory = self.encoder(
            query=torch.cat(queries, dim=1),
            query_pos=torch.cat(positions, dim=1),
            key_padding_mask=torch.cat(masks, dim=1),
            spatial_shapes=spatial_shapes,
            reference_points=reference_points,
            level_start_index=level_start_index,
            valid_ratios=reference_points.new_ones((batch_size, self.num_encoder_levels, 2)))
        levels = torch.split(memory.permute(0, 2, 1), tokens_per_level, dim=-1)
        return [
            level.reshape(batch_size, -1, spatial_shapes[i][0], spatial_shapes[i][1])
            for i, level in enumerate(levels)
        ]


MODELS.register_module(name='MSDeformAttnPixelDecoder', module=MSDeformAttnPixelDecoder,
                       force=True)
