"""Mask R-CNN's FCN mask head with a learned upsampler in place of its deconvolution.

mmdet's ``FCNMaskHead`` upsamples the 14x14 RoI mask features to 28x28 once, with what
``upsample_cfg`` names through mmcv's ``build_upsample_layer``: ``'deconv'`` (default, a
2x2 stride-2 transposed conv followed by ReLU), ``'nearest'``, ``'bilinear'``, ``'carafe'``
(mmcv's CUDA-only CARAFE) or ``None`` (no upsampling). :class:`FCNMaskHead`, registered over
mmdet's name, keeps every one of those exactly and adds the plugin's upsamplers:
``roi_head.mask_head.upsample_cfg=dict(type='DySample')`` replaces the upsampling by one
DySample (x2 unless the cfg gives ``scale_factor``), in ``self.upsamplers[0]``, with no ReLU
after it and ``conv_logits`` on its output (``conv_out_channels`` channels, as after the
deconvolution). The head has no higher-resolution feature, so guided types raise.
"""
import copy

from mmdet.models.roi_heads.mask_heads.fcn_mask_head import FCNMaskHead as MMDetFCNMaskHead
from mmdet.registry import MODELS
from mmdet.utils import ConfigType, OptConfigType, OptMultiConfig
from mmengine.model import ModuleList
from torch import Tensor

from ..upsamplers import build_upsampler, upsample

__all__ = ['FCNMaskHead']

# The upsample types mmdet's head builds itself (through mmcv's build_upsample_layer).
UPSTREAM_UPSAMPLE_TYPES = (None, 'deconv', 'nearest', 'bilinear', 'carafe')


class FCNMaskHead(MMDetFCNMaskHead):
    """mmdet's ``FCNMaskHead``; an ``upsample_cfg`` type outside mmdet's own
    (``None, 'deconv', 'nearest', 'bilinear', 'carafe'``) is built by
    :func:`mmdysample.upsamplers.build_upsampler` (see the module docstring). Same signature
    as mmdet's head."""

    def __init__(self,
                 num_convs: int = 4,
                 roi_feat_size: int = 14,
                 in_channels: int = 256,
                 conv_kernel_size: int = 3,
                 conv_out_channels: int = 256,
                 num_classes: int = 80,
                 class_agnostic: int = False,
                 upsample_cfg: ConfigType = dict(type='deconv', scale_factor=2),
                 conv_cfg: OptConfigType = None,
                 norm_cfg: OptConfigType = None,
                 predictor_cfg: ConfigType = dict(type='Conv'),
                 loss_mask: ConfigType = dict(
                     type='CrossEntropyLoss', use_mask=True, loss_weight=1.0),
                 init_cfg: OptMultiConfig = None) -> None:
        learned = upsample_cfg.get('type') not in UPSTREAM_UPSAMPLE_TYPES
        super().__init__(num_convs, roi_feat_size, in_channels, conv_kernel_size,
                         conv_out_channels, num_classes, class_agnostic,
                         dict(type=None) if learned else upsample_cfg, conv_cfg, norm_cfg,
                         predictor_cfg, loss_mask, init_cfg)
        self.upsamplers = None
        if not learned:
            return
        self.upsample_cfg = copy.deepcopy(dict(upsample_cfg))
        layer_cfg = copy.deepcopy(self.upsample_cfg)
        self.scale_factor = layer_cfg.pop('scale_factor', 2)
        layer_type = layer_cfg['type']
        self.upsample_method = layer_type if isinstance(layer_type, str) else \
            layer_type.__name__
        channels = conv_out_channels if num_convs > 0 else in_channels
        self.upsamplers = ModuleList(
            [build_upsampler(layer_cfg, channels, self.scale_factor, where='FCNMaskHead')])

    def init_weights(self) -> None:
        """mmdet's initialisation, then the upsampler's own."""
        super().init_weights()
        for upsampler in self.upsamplers or ():
            if hasattr(upsampler, 'init_weights'):
                upsampler.init_weights()

    def forward(self, x: Tensor) -> Tensor:
        """RoI mask features ``(N, in_channels, h, w)`` -> mask logits
        ``(N, num_classes or 1, s*h, s*w)``."""
        if self.upsamplers is None:
            return super().forward(x)
        for conv in self.convs:
            x = conv(x)
        return self.conv_logits(upsample(self.upsamplers[0], x))


MODELS.register_module(name='FCNMaskHead', module=FCNMaskHead, force=True)
