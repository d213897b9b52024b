"""MaskFormer's FPN pixel decoder with learned upsamplers (DySample paper, Table 5), and the
MaskFormer head rule that goes with it.

mmdet's ``PixelDecoder`` (used by mmdet's MaskFormer and, as ``'mmdet.PixelDecoder'``, by
mmseg's) is an FPN whose top-down path resizes the coarser output to each finer lateral with
nearest interpolation (3 steps for 4 inputs). :class:`PixelDecoder`, registered in mmdet's
``MODELS`` over ``'PixelDecoder'``, replaces each of those steps by one x2 upsampler when
``upsample_cfg`` has a ``type``: ``upsamplers[i]`` takes the output of level ``i + 1`` to the
size of level ``i`` (``upsamplers[2]``: 1/32 -> 1/16, ``[1]``: 1/16 -> 1/8, ``[0]``: 1/8 -> 1/4,
the same indexing as ``lateral_convs``), guided by that level's lateral.

Why the upstream class is returned without a ``type``: mmdet's ``MaskFormerHead`` adds its
``decoder_input_proj`` only when ``type(pixel_decoder) == PixelDecoder`` (an exact-type test
against the upstream class). Building the upstream class itself whenever there is no learned
upsampler keeps that test, the module, its parameters and the random-number stream exactly
upstream's, whether a config names the decoder ``'PixelDecoder'``, passes the upstream class
object (mmdet's pure-Python configs) or this class. A decoder *with* learned upsamplers is an
FPN pixel decoder too and gets the projection from :func:`add_decoder_input_proj`, which the
patched heads call (:class:`MaskFormerHead` here for mmdet; mmseg's MaskFormer head needs the
same call).
"""
import copy
import inspect
from typing import Dict, List, Optional, Tuple, Union

import torch.nn as nn
from mmcv.cnn import Conv2d
from mmdet.models.dense_heads.maskformer_head import MaskFormerHead as MMDetMaskFormerHead
from mmdet.models.layers.pixel_decoder import PixelDecoder as MMDetPixelDecoder
from mmdet.registry import MODELS
from mmdet.utils import ConfigType, OptMultiConfig
from mmengine.model import ModuleList
from torch import Tensor

from ..upsamplers import (build_upsampler, check_interpolation_cfg, has_upsampler_type,
                          upsample)

__all__ = ['PixelDecoder', 'MaskFormerHead', 'add_decoder_input_proj']


class PixelDecoder(MMDetPixelDecoder):
    """mmdet's FPN ``PixelDecoder`` whose top-down upsampling steps can be learned.

    Args:
        in_channels, feat_channels, out_channels, norm_cfg, act_cfg, init_cfg: mmdet's
            ``PixelDecoder`` arguments, in mmdet's order.
        upsample_cfg (keyword-only): ``None`` (default) or a dict without ``type``: the
            result *is* an instance of mmdet's ``PixelDecoder`` (see the module docstring;
            a typeless dict may only restate ``dict(mode='nearest')``). A dict with
            ``type`` (``dict(type='DySample-S+')``, ``dict(type='CARAFE')``...) builds
            ``len(in_channels) - 1`` x2 upsamplers at ``feat_channels``; guided types get
            the target level's lateral (``feat_channels`` channels) as their guide.

    Odd sizes follow :func:`mmdysample.upsamplers.upsample` (each step to the lateral's size).

    Shape:
        feats: list of ``(B, in_channels[i], H_i, W_i)``, each level about half the size of
        the previous one; returns ``mask_feature (B, out_channels, H_0, W_0)`` and
        ``memory = feats[-1]``.
    """

    def __new__(cls, *args, upsample_cfg: Optional[Dict] = None, **kwargs):
        if cls is PixelDecoder and not has_upsampler_type(upsample_cfg, cls.__name__):
            return _build_upstream_pixel_decoder(*args, upsample_cfg=upsample_cfg, **kwargs)
        return super().__new__(cls)

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
        if not has_upsampler_type(upsample_cfg, type(self).__name__):
            raise ValueError(f'{type(self).__name__}: a subclass built without an upsampler '
                             f'type is not supported; got upsample_cfg={upsample_cfg!r}')
        self.upsample_cfg = copy.deepcopy(dict(upsample_cfg))
        self.upsamplers = ModuleList([
            build_upsampler(self.upsample_cfg, feat_channels, 2, guide_channels=feat_channels,
                            where=f'pixel decoder top-down step {i}')
            for i in range(self.num_inputs - 1)
        ])

    def __getnewargs_ex__(self):
        # copy/pickle re-create the object with __new__(cls, *args, **kwargs) and then
        # restore its state: ask for a learned decoder, whose state then replaces it.
        return (), dict(upsample_cfg=self.upsample_cfg)

    def init_weights(self) -> None:
        """mmdet's initialisation, then each upsampler's own (mmdet's method does not
        recurse into submodules)."""
        super().init_weights()
        for upsampler in self.upsamplers:
            if hasattr(upsampler, 'init_weights'):
                upsampler.init_weights()

    def forward(self, feats: List[Tensor],
                batch_img_metas: List[dict]) -> Tuple[Tensor, Tensor]:
        """Returns ``(mask_feature, memory)`` as mmdet's ``PixelDecoder.forward``."""
        y = self.last_feat_conv(feats[-1])
        for i in range(self.num_inputs - 2, -1, -1):
            lateral = self.lateral_convs[i](feats[i])
            y = self.output_convs[i](lateral + upsample(
                self.upsamplers[i], y, size=lateral.shape[-2:], guide=lateral))
        return self.mask_feature(y), feats[-1]


def _build_upstream_pixel_decoder(*args, upsample_cfg=None, **kwargs) -> MMDetPixelDecoder:
    """mmdet's ``PixelDecoder`` for a cfg without an upsampler type (which may only
    restate the decoder's own nearest interpolation)."""
    check_interpolation_cfg(upsample_cfg, 'PixelDecoder', dict(mode='nearest'))
    return MMDetPixelDecoder(*args, **kwargs)


def add_decoder_input_proj(head: nn.Module, in_channels: List[int],
                           enforce_decoder_input_project: bool) -> None:
    """Give a MaskFormer head built on a learned :class:`PixelDecoder` the
    ``decoder_input_proj`` mmdet's head gives to its own FPN pixel decoder.

    mmdet's rule (``MaskFormerHead.__init__``): a ``1x1`` ``Conv2d`` from ``in_channels[-1]``
    to the transformer decoder's width when the decoder is the FPN pixel decoder and the
    widths differ (or ``enforce_decoder_input_project``), ``Identity`` otherwise. mmdet
    tests the decoder's exact type, which a learned :class:`PixelDecoder` fails; this
    applies the rule to it, in place (``decoder_input_proj`` keeps its position in the
    head's modules, so state-dict keys come in upstream's order). Other decoders are left
    alone.
    """
    if type(head.pixel_decoder) is not PixelDecoder:
        return
    if head.decoder_embed_dims != in_channels[-1] or enforce_decoder_input_project:
        head.decoder_input_proj = Conv2d(in_channels[-1], head.decoder_embed_dims,
                                         kernel_size=1)


class MaskFormerHead(MMDetMaskFormerHead):
    """mmdet's ``MaskFormerHead``; with a learned :class:`PixelDecoder` it also gets the
    ``decoder_input_proj`` mmdet gives its FPN pixel decoder (see
    :func:`add_decoder_input_proj`). Same signature as mmdet's head."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        bound = _MASKFORMER_HEAD_SIGNATURE.bind(self, *args, **kwargs)
        bound.apply_defaults()
        add_decoder_input_proj(self, bound.arguments['in_channels'],
                               bound.arguments['enforce_decoder_input_project'])


# inspect.signature(PixelDecoder) reads __new__; it takes what __init__ takes.
PixelDecoder.__new__.__signature__ = inspect.signature(PixelDecoder.__init__)
_MASKFORMER_HEAD_SIGNATURE = inspect.signature(MMDetMaskFormerHead.__init__)
MaskFormerHead.__init__.__signature__ = _MASKFORMER_HEAD_SIGNATURE

MODELS.register_module(name='PixelDecoder', module=PixelDecoder, force=True)
MODELS.register_module(name='MaskFormerHead', module=MaskFormerHead, force=True)
