"""MaskFormer's FPN pixel decoder with learned upsamplers (DySample paper, Table 5).

mmdet's ``PixelDecoder`` (used by mmdet's MaskFormer and, as ``'mmdet.PixelDecoder'``, by
mmseg's) is an FPN whose top-down path resizes the coarser output to each finer lateral with
nearest interpolation (3 steps for 4 inputs). :class:`PixelDecoder`, registered in mmdet's
``MODELS`` over ``'PixelDecoder'``, replaces each of those steps by one x2 upsampler when
``upsample_cfg`` has a ``type``: ``upsamplers[i]`` takes the output of level ``i + 1`` to the
size of level ``i`` (``upsamplers[2]``: 1/32 -> 1/16, ``[1]``: 1/16 -> 1/8, ``[0]``: 1/8 -> 1/4,
the same indexing as ``lateral_convs``), guided by that level's lateral. Without a ``type``
it is mmdet's decoder, bit for bit.

mmdet's ``MaskFormerHead`` (and mmseg's, which runs mmdet's ``__init__``) adds its
``decoder_input_proj`` only when ``type(pixel_decoder) == PixelDecoder``, an exact-type test
against mmdet's class. The plugin's class is still mmdet's FPN pixel decoder, so it compares
equal to mmdet's class (:class:`CountsAsMMDetPixelDecoder`): the test, and with it the head's
modules, their order and its random initial weights, stay upstream's whether a config names
the decoder ``'PixelDecoder'``, mmdet's class object (mmdet's pure-Python configs) or this
class, with or without learned upsamplers. Nothing in mmdet's module is rebound.
"""
import copy
from typing import Dict, List, Optional, Tuple, Union

from mmdet.models.layers.pixel_decoder import PixelDecoder as MMDetPixelDecoder
from mmdet.registry import MODELS
from mmdet.utils import ConfigType, OptMultiConfig
from mmengine.model import ModuleList
from torch import Tensor

from ..upsamplers import (build_upsampler, check_interpolation_cfg, has_upsampler_type,
                          upsample)

__all__ = ['PixelDecoder', 'CountsAsMMDetPixelDecoder']


class CountsAsMMDetPixelDecoder(type(MMDetPixelDecoder)):
    """Metaclass of :class:`PixelDecoder`: the class compares equal to mmdet's
    ``PixelDecoder`` (and to itself), so that upstream's ``type(decoder) == PixelDecoder``
    holds for it. Subclasses of it (and mmdet's ``TransformerEncoderPixelDecoder``) do not.
    Hashing stays by identity."""

    def __eq__(cls, other):
        return cls is other or (cls is PixelDecoder and other is MMDetPixelDecoder)

    __hash__ = type.__hash__


class PixelDecoder(MMDetPixelDecoder, metaclass=CountsAsMMDetPixelDecoder):
    """mmdet's FPN ``PixelDecoder`` whose top-down upsampling steps can be learned.

    Args:
        in_channels, feat_channels, out_channels, norm_cfg, act_cfg, init_cfg: mmdet's
            ``PixelDecoder`` arguments, in mmdet's order.
        upsample_cfg (keyword-only): ``None`` (default) or a dict without ``type`` (which
            may only restate ``dict(mode='nearest')``): mmdet's decoder. A dict with ``type``
            (``dict(type='DySample-S+')``, ``dict(type='CARAFE')``...) builds
            ``len(in_channels) - 1`` x2 upsamplers at ``feat_channels``; guided types get
            the target level's lateral (``feat_channels`` channels) as their guide.

    Odd sizes follow :func:`mmdysample.upsamplers.upsample` (each step to the lateral's size).

    Shape:
        feats: list of ``(B, in_channels[i], H_i, W_i)``, each level about half the size of
        the previous one; returns ``mask_feature (B, out_channels, H_0, W_0)`` and
        ``memory = feats[-1]``.
    """

    def __init__(self,
                 in_channels: Union[List[int], Tuple[int]],
                 feat_channels: int,
                 out_channels: int,
                 norm_cfg: ConfigType = dict(type='GN', num_groups=32),
                 act_cfg: ConfigType = dict(type='ReLU'),
                 init_cfg: OptMultiConfig = None,
                 *,
                 upsample_cfg: Optional[Dict] = None) -> None:
        super().__init__(in_channels, feat_channels, out_channels, norm_cfg, act_cfg,
                         init_cfg)
        self.upsamplers = None
        if not has_upsampler_type(upsample_cfg, type(self).__name__):
            self.upsample_cfg = check_interpolation_cfg(upsample_cfg, type(self).__name__,
                                                        dict(mode='nearest'))
            return
        self.upsample_cfg = copy.deepcopy(dict(upsample_cfg))
        self.upsamplers = ModuleList([
            build_upsampler(self.upsample_cfg, feat_channels, 2, guide_channels=feat_channels,
                            where=f'pixel decoder top-down step {i}')
            for i in range(self.num_inputs - 1)
        ])

    def init_weights(self) -> None:
        """mmdet's initialisation, then each upsampler's own (mmdet's method does not
        recurse into submodules)."""
        super().init_weights()
        for upsampler in self.upsamplers or ():
            if hasattr(upsampler, 'init_weights'):
                upsampler.init_weights()

    def forward(self, feats: List[Tensor],
                batch_img_metas: List[dict]) -> Tuple[Tensor, Tensor]:
        """Returns ``(mask_feature, memory)`` as mmdet's ``PixelDecoder.forward``."""
        if self.upsamplers is None:
            return super().forward(feats, batch_img_metas)
        y = self.last_feat_conv(feats[-1])
        for i in range(self.num_inputs - 2, -1, -1):
            lateral = self.lateral_convs[i](feats[i])
            y = self.output_convs[i](lateral + upsample(
                self.upsamplers[i], y, size=lateral.shape[-2:], guide=lateral))
        return self.mask_feature(y), feats[-1]


MODELS.register_module(name='PixelDecoder', module=PixelDecoder, force=True)
