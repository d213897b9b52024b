"""DepthFormer's two-branch encoder: Swin Transformer plus a convolutional stem.

DepthFormer (Li et al., 2022) feeds the image to two branches: a Swin Transformer (strides
4, 8, 16, 32) for long-range correlation and a ResNet stem (7x7 convolution, stride 2, batch
norm, ReLU; the toolbox's ``num_stages=0``) whose 64-channel stride-2 feature keeps local
detail. The encoder returns five levels, the stem's first::

    [(B, 64, H/2, W/2), (B, C, H/4, W/4), (B, 2C, H/8, W/8), (B, 4C, H/16, W/16),
     (B, 8C, H/32, W/32)]

with ``C = embed_dims`` (96 for Swin-T: 64, 96, 192, 384, 768 channels).
"""
from typing import Dict, List, Optional

import torch
import torch.nn as nn
from mmcv.cnn import build_conv_layer, build_norm_layer
from mmseg.models.backbones import SwinTransformer
from mmseg.registry import MODELS

__all__ = ['DepthFormerSwin']


@MODELS.register_module()
class DepthFormerSwin(SwinTransformer):
    """mmseg's ``SwinTransformer`` with DepthFormer's convolutional stem branch.

    Args:
        stem_channels: output channels of the stem (64 in DepthFormer).
        conv_cfg: convolution of the stem (``None``: ``nn.Conv2d``).
        conv_norm_cfg: normalisation of the stem (``dict(type='BN')`` in DepthFormer; the
            Swin branch keeps ``norm_cfg``, LayerNorm).
        **kwargs: the arguments of mmseg's ``SwinTransformer`` (``embed_dims``, ``depths``,
            ``num_heads``, ``window_size``, ``drop_path_rate``, ``init_cfg``...). A
            ``Pretrained`` ``init_cfg`` loads the Swin branch (strict=False, as upstream);
            the stem keeps PyTorch's initialisation, as in the toolbox.

    The stem is named ``conv1``/``bn1`` as in the Monocular Depth Estimation Toolbox, so its
    DepthFormer checkpoints keep their backbone keys.
    """

    def __init__(self,
                 stem_channels: int = 64,
                 conv_cfg: Optional[Dict] = None,
                 conv_norm_cfg: Dict = dict(type='BN', requires_grad=True),
                 **kwargs):
        super().__init__(**kwargs)
        if isinstance(stem_channels, bool) or not isinstance(stem_channels, int) \
                or stem_channels < 1:
            raise ValueError(f'stem_channels must be a positive int, got {stem_channels!r}')
        self.stem_channels = stem_channels
        self.conv1 = build_conv_layer(
            conv_cfg, self.patch_embed.projection.in_channels, stem_channels,
            kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1_name, bn1 = build_norm_layer(conv_norm_cfg, stem_channels, postfix=1)
        self.add_module(self.bn1_name, bn1)
        self.stem_relu = nn.ReLU(inplace=True)

    @property
    def out_channels(self) -> List[int]:
        """Channels of the five outputs, the stem's first."""
        return [self.stem_channels] + [self.num_features[i] for i in self.out_indices]

    def conv_stem(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 3, H, W) -> (B, stem_channels, ceil(H/2), ceil(W/2))``."""
        return self.stem_relu(getattr(self, self.bn1_name)(self.conv1(x)))

    def forward(self, x: torch.Tensor) -> List[torch.Tensor]:
        """The stem feature followed by Swin's ``out_indices`` features."""
        return [self.conv_stem(x)] + list(super().forward(x))
