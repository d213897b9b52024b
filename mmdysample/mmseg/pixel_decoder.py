"""MaskFormer's FPN pixel decoder with learned upsamplers (DySample paper, Table 5).

mmseg 1.2's MaskFormer (``decode_head=dict(type='MaskFormerHead', pixel_decoder=dict(
type='mmdet.PixelDecoder'))``) builds mmdet's ``PixelDecoder`` from mmdet's ``MODELS``: an FPN
whose top-down path resizes the coarser output to each finer lateral with nearest
interpolation (3 steps for 4 inputs). This subclass, registered in mmdet's ``MODELS`` as
``'PixelDecoder'`` (replacing the upstream entry when :mod:`mmdysample` is imported),
replaces each of those steps by one x2 upsampler when ``upsample_cfg`` has a ``type``:
``upsamplers[i]`` takes the output of level ``i + 1`` to the size of level ``i``
(``upsamplers[2]``: 1/32 -> 1/16, ``[1]``: 1/16 -> 1/8, ``[0]``: 1/8 -> 1/4, the same
indexing as ``lateral_convs``). Without a ``type`` it is mmdet's decoder, bit for bit.

mmdet's ``MaskFormerHead`` adds its ``decoder_input_proj`` only when
``type(pixel_decoder) == PixelDecoder``, comparing with the name bound in
``mmdet.models.dense_heads.maskformer_head``. Since the registry now builds this subclass,
that name is rebound to it; otherwise every MaskFormer built from a config (mmseg's ADE20K
ones, mmdet's Swin-L one) would silently lose its input projection.
"""
import copy
from typing import Dict, List, Optional, Tuple

import mmdet.models.dense_heads.maskformer_head as mmdet_maskformer_head
import torch.nn.functional as F
from mmdet.models.layers.pixel_decoder import PixelDecoder as MMDetPixelDecoder
from mmdet.registry import MODELS
from mmengine.model import ModuleList
from torch import Tensor

from ..upsamplers import build_upsampler
from .upsample_cfg import check_interpolation_cfg, fit_to_size, has_upsampler_type

__all__ = ['PixelDecoder']


@MODELS.register_module(name='PixelDecoder', force=True)
class PixelDecoder(MMDetPixelDecoder):
    """mmdet's FPN ``PixelDecoder`` whose top-down upsampling steps can be learned.

    Args:
        in_channels: channels of the input features, finest first.
        feat_channels: FPN channels; the upsamplers work at this width.
        out_channels: channels of the mask feature.
        upsample_cfg: ``None`` (default) or a dict without ``type``: mmdet's decoder
            (a typeless dict may only restate ``dict(mode='nearest')``). A dict with
            ``type`` (``dict(type='DySample-S+')``, ``dict(type='CARAFE')``...) builds
            ``len(in_channels) - 1`` x2 upsamplers at ``feat_channels``.
        **kwargs: ``norm_cfg``, ``act_cfg``, ``init_cfg`` of mmdet's ``PixelDecoder``.

    Shape:
        feats: list of ``(B, in_channels[i], H_i, W_i)``, each level half the size of the
        previous one; returns ``mask_feature (B, out_channels, H_0, W_0)`` and
        ``memory = feats[-1]``.
    """

    def __init__(self,
                 in_channels,
                 feat_channels: int,
                 out_channels: int,
                 upsample_cfg: Optional[Dict] = None,
                 **kwargs) -> None:
        super().__init__(in_channels, feat_channels, out_channels, **kwargs)
        if has_upsampler_type(upsample_cfg, type(self).__name__):
            self.upsample_cfg = copy.deepcopy(dict(upsample_cfg))
            self.upsamplers = ModuleList([
                build_upsampler(self.upsample_cfg, feat_channels, 2)
                for _ in range(self.num_inputs - 1)
            ])
        else:
            self.upsample_cfg = check_interpolation_cfg(upsample_cfg, type(self).__name__,
                                                        dict(mode='nearest'))
            self.upsamplers = None

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
            cur_feat = self.lateral_convs[i](feats[i])
            up = fit_to_size(self.upsamplers[i](y), cur_feat.shape[-2:], 1, 'nearest', None,
                             f'pixel decoder level {i + 1}')
            y = self.output_convs[i](cur_feat + up)
        return self.mask_feature(y), feats[-1]


# See the module docstring: keep mmdet's exact-type test meaning "the FPN pixel decoder".
mmdet_maskformer_head.PixelDecoder = PixelDecoder
