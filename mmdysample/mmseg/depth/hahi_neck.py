"""DepthFormer's HAHI neck (Hierarchical Aggregation and Heterogeneous Interaction).

Inputs: the five levels of :class:`DepthFormerSwin` (the convolutional stem's first, then the
four Swin levels). After a 1x1 projection of every level (``lateral_convs``):

1. **Hierarchical aggregation** (deformable self-attention): the Swin levels are projected to
   ``embedding_dim`` (``trans_proj``), flattened and concatenated into one token sequence,
   given a sine positional encoding plus a learned per-level embedding, and attended by a
   :class:`mmcv.ops.MultiScaleDeformableAttention` whose reference point of each token is
   the centre of its own pixel on every level (``self_attn``; residual included).
2. **Heterogeneous interaction** (deformable cross-attention): the stem feature, projected to
   ``embedding_dim`` (``conv_proj``), queries the aggregated Swin tokens at reference points
   predicted from its positional encoding by a linear layer and a sigmoid (``multi_att``).
3. **Fusion**: each level is concatenated with its attended feature and fused back to its
   own channels by a 3x3 ConvModule (``conv_fusion`` for the stem, ``trans_fusion`` for the
   Swin levels).

Output: five features of ``out_channels``, each at its input's resolution.

mmcv 2.1's ``MultiScaleDeformableAttention`` runs its CUDA kernel on GPU and
``multi_scale_deformable_attn_pytorch`` (``F.grid_sample``) on CPU. Module and parameter names
follow the Monocular Depth Estimation Toolbox, so its DepthFormer checkpoints keep their keys.
"""
import copy
from typing import Dict, List, Sequence, Tuple

import torch
import torch.nn as nn
from mmcv.cnn import ConvModule
from mmcv.ops import MultiScaleDeformableAttention
from mmdet.models.layers import positional_encoding as _mmdet_positional_encodings  # noqa
from mmdet.registry import MODELS as MMDET_MODELS
from mmengine.model import BaseModule
from mmseg.registry import MODELS

__all__ = ['HAHIHeteroNeck', 'pixel_centre_reference_points']


def pixel_centre_reference_points(spatial_shapes: Sequence[Tuple[int, int]], batch_size: int,
                                  device=None) -> torch.Tensor:
    """Normalised ``(x, y)`` centres of every pixel of every level, for self-attention.

    Token ``k`` (level ``l``, row ``i``, column ``j``, levels flattened in order) gets
    ``((j + 0.5) / W_l, (i + 0.5) / H_l)`` repeated over all levels (no padding, so every
    level's valid ratio is 1).

    Returns:
        ``(batch_size, sum(H_l * W_l), num_levels, 2)``.
    """
    points = []
    for height, width in spatial_shapes:
        ys = (torch.arange(height, dtype=torch.float32, device=device) + 0.5) / height
        xs = (torch.arange(width, dtype=torch.float32, device=device) + 0.5) / width
        grid_y, grid_x = torch.meshgrid(ys, xs, indexing='ij')
        points.append(torch.stack((grid_x.reshape(-1), grid_y.reshape(-1)), dim=-1))
    points = torch.cat(points, dim=0)
    return points[None, :, None].expand(batch_size, -1, len(spatial_shapes), -1)


def _check_channel_list(value, name: str) -> List[int]:
    if not isinstance(value, (list, tuple)) or not value or not all(
            isinstance(c, int) and not isinstance(c, bool) and c > 0 for c in value):
        raise ValueError(f'{name} must be a non-empty list of positive ints, got {value!r}')
    return list(value)


@MODELS.register_module()
class HAHIHeteroNeck(BaseModule):
    """HAHI neck of DepthFormer for a convolutional level plus transformer levels.

    Args:
        in_channels: channels of the inputs, the convolutional (stem) level first
            (DepthFormer-SwinT: ``[64, 96, 192, 384, 768]``); at least two.
        out_channels: channels of the outputs, one per input (DepthFormer: the same).
        embedding_dim: channels inside the attention (256).
        positional_encoding: mmdet positional encoding config
            (``dict(type='SinePositionalEncoding', num_feats=128)``); must give
            ``embedding_dim`` channels.
        num_heads, num_points: of both deformable attentions (8 and 8).
        cross_att, self_att: apply the cross-/self-attention (both in DepthFormer).
        norm_cfg, act_cfg: of the ConvModules (BN, ReLU).
        init_cfg: unused; the initialisation is the toolbox's (:meth:`init_weights`).

    Shape:
        inputs: ``[(B, in_channels[l], H_l, W_l)]``; outputs: ``(B, out_channels[l], H_l, W_l)``.
    """

    def __init__(self,
                 in_channels: Sequence[int],
                 out_channels: Sequence[int],
                 embedding_dim: int = 256,
                 positional_encoding: Dict = dict(type='SinePositionalEncoding',
                                                  num_feats=128),
                 num_heads: int = 8,
                 num_points: int = 8,
                 cross_att: bool = True,
                 self_att: bool = True,
                 norm_cfg: Dict = dict(type='BN', requires_grad=True),
                 act_cfg: Dict = dict(type='ReLU', inplace=True),
                 init_cfg=None):
        super().__init__(init_cfg=init_cfg)
        self.in_channels = _check_channel_list(in_channels, 'in_channels')
        self.out_channels = _check_channel_list(out_channels, 'out_channels')
        if len(self.in_channels) != len(self.out_channels) or len(self.in_channels) < 2:
            raise ValueError('in_channels and out_channels must have the same length, at '
                             f'least 2 (a convolutional level and transformer levels); got '
                             f'{self.in_channels} and {self.out_channels}')
        if not isinstance(embedding_dim, int) or embedding_dim < 1 or embedding_dim % num_heads:
            raise ValueError(f'embedding_dim must be a positive int divisible by num_heads '
                             f'({num_heads}), got {embedding_dim!r}')
        for flag, name in ((cross_att, 'cross_att'), (self_att, 'self_att')):
            if not isinstance(flag, bool):
                raise TypeError(f'{name} must be a bool, got {flag!r}')
        self.embedding_dim = embedding_dim
        self.cross_att = cross_att
        self.self_att = self_att
        self.num_trans_levels = len(self.in_channels) - 1
        conv = dict(norm_cfg=norm_cfg, act_cfg=act_cfg)

        self.lateral_convs = nn.ModuleList([
            ConvModule(c_in, c_out, 1, **conv)
            for c_in, c_out in zip(self.in_channels, self.out_channels)
        ])
        self.trans_proj = nn.ModuleList(
            [ConvModule(c, embedding_dim, 1, **conv) for c in self.out_channels[1:]])
        self.trans_fusion = nn.ModuleList([
            ConvModule(c + embedding_dim, c, 3, padding=1, **conv)
            for c in self.out_channels[1:]
        ])
        # one-element Sequentials: the toolbox's state-dict keys (conv_proj.0.conv.weight)
        self.conv_proj = nn.Sequential(
            ConvModule(self.out_channels[0], embedding_dim, 1, **conv))
        self.conv_fusion = nn.Sequential(
            ConvModule(self.out_channels[0] + embedding_dim, self.out_channels[0], 3,
                       padding=1, **conv))

        # mmdet's encodings, whatever the default scope of the config (mmseg's)
        positional_encoding = dict(copy.deepcopy(positional_encoding))
        positional_encoding.setdefault('_scope_', 'mmdet')
        self.trans_positional_encoding = MMDET_MODELS.build(positional_encoding)
        self.conv_positional_encoding = MMDET_MODELS.build(positional_encoding)
        pos_channels = 2 * getattr(self.trans_positional_encoding, 'num_feats', -1)
        if pos_channels != embedding_dim:
            raise ValueError(f'positional_encoding must give embedding_dim ({embedding_dim}) '
                             f'channels, i.e. num_feats={embedding_dim // 2}; got '
                             f'{positional_encoding!r}')
        self.reference_points = nn.Linear(embedding_dim, 2)
        self.level_embed = nn.Parameter(torch.empty(self.num_trans_levels, embedding_dim))
        attention = dict(embed_dims=embedding_dim, num_levels=self.num_trans_levels,
                         num_heads=num_heads, num_points=num_points, batch_first=True)
        self.multi_att = MultiScaleDeformableAttention(**attention)
        self.self_attn = MultiScaleDeformableAttention(**attention)
        nn.init.normal_(self.level_embed)

    def init_weights(self):
        """The toolbox's initialisation: Xavier-uniform for every weight matrix and
        convolution (zero conv biases), N(0, 1) level embeddings, zero reference-point bias,
        and the deformable attentions' own initialisation."""
        for p in self.parameters():
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)
        nn.init.constant_(self.reference_points.bias, 0.)
        nn.init.normal_(self.level_embed)
        for m in self.modules():
            if isinstance(m, nn.Conv2d) and m.bias is not None:
                nn.init.constant_(m.bias, 0.)
            if isinstance(m, MultiScaleDeformableAttention):
                m.init_weights()
        self._is_init = True

    @staticmethod
    def _no_padding_mask(feat: torch.Tensor) -> torch.Tensor:
        return feat.new_zeros((feat.shape[0], ) + tuple(feat.shape[-2:]), dtype=torch.bool)

    def forward(self, inputs: Sequence[torch.Tensor]) -> Tuple[torch.Tensor, ...]:
        if len(inputs) != len(self.in_channels):
            raise ValueError(f'{type(self).__name__} takes {len(self.in_channels)} features '
                             f'(in_channels={self.in_channels}), got {len(inputs)}')
        projected = [conv(x) for conv, x in zip(self.lateral_convs, inputs)]
        feat_conv, feats_trans = projected[0], projected[1:]
        batch_size = feat_conv.shape[0]

        # hierarchical aggregation: deformable self-attention over the transformer levels
        tokens, pos_embeds, spatial_shapes = [], [], []
        for level, feat in enumerate(feats_trans):
            spatial_shapes.append(tuple(feat.shape[-2:]))
            pos = self.trans_positional_encoding(self._no_padding_mask(feat))
            pos_embeds.append(pos.flatten(2).transpose(1, 2) + self.level_embed[level])
            tokens.append(self.trans_proj[level](feat).flatten(2).transpose(1, 2))
        tokens = torch.cat(tokens, 1)
        pos_embeds = torch.cat(pos_embeds, 1).to(tokens.dtype)
        shapes = torch.as_tensor(spatial_shapes, dtype=torch.long, device=tokens.device)
        level_start_index = torch.cat((shapes.new_zeros(1), shapes.prod(1).cumsum(0)[:-1]))
        if self.self_att:
            tokens = self.self_attn(
                tokens, query_pos=pos_embeds,
                reference_points=pixel_centre_reference_points(
                    spatial_shapes, batch_size, tokens.device).to(tokens.dtype),
                spatial_shapes=shapes, level_start_index=level_start_index)

        # heterogeneous interaction: the convolutional feature queries the aggregated tokens
        query_map = self.conv_proj(feat_conv)
        height, width = query_map.shape[-2:]
        query = query_map.flatten(2).transpose(1, 2)
        query_pos = self.conv_positional_encoding(self._no_padding_mask(query_map))
        query_pos = query_pos.flatten(2).transpose(1, 2).to(query.dtype)
        if self.cross_att:
            reference = self.reference_points(query_pos).sigmoid()
            query = self.multi_att(
                query, value=tokens, query_pos=query_pos,
                reference_points=reference[:, :, None].expand(-1, -1, len(spatial_shapes), -1),
                spatial_shapes=shapes, level_start_index=level_start_index)
        attended_conv = query.transpose(1, 2).reshape(batch_size, self.embedding_dim, height,
                                                      width)
        outs = [self.conv_fusion(torch.cat([attended_conv, feat_conv], dim=1))]

        # fusion of every transformer level with its attended tokens
        per_level = tokens.split([h * w for h, w in spatial_shapes], dim=1)
        for level, (feat, level_tokens) in enumerate(zip(feats_trans, per_level)):
            attended = level_tokens.transpose(1, 2).reshape(batch_size, self.embedding_dim,
                                                            *feat.shape[-2:])
            outs.append(self.trans_fusion[level](torch.cat([feat, attended], dim=1)))
        return tuple(outs)
