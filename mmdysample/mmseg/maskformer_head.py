"""mmseg's MaskFormer head, given the input projection its learned pixel decoder needs.

mmseg's ``MaskFormerHead`` is mmdet's head (it builds ``'mmdet.PixelDecoder'``), and mmdet's
head adds ``decoder_input_proj`` only when the pixel decoder's type is exactly mmdet's FPN
``PixelDecoder``. The mmdet integration builds mmdet's own class when ``upsample_cfg`` has no
``type`` (so nothing changes then) and its learned :class:`mmdysample.mmdet.PixelDecoder`
otherwise, which fails that test: this subclass, registered in mmseg's ``MODELS`` as
``'MaskFormerHead'``, applies mmdet's rule to it as well
(:func:`mmdysample.mmdet.pixel_decoder.add_decoder_input_proj`, the one place of that rule).
With mmdet's decoder it is mmseg's head, bit for bit.
"""
from mmseg.models.decode_heads.maskformer_head import MaskFormerHead as MMSegMaskFormerHead
from mmseg.registry import MODELS

from ..mmdet.pixel_decoder import add_decoder_input_proj

__all__ = ['MaskFormerHead']


@MODELS.register_module(name='MaskFormerHead', force=True)
class MaskFormerHead(MMSegMaskFormerHead):
    """mmseg's ``MaskFormerHead``; same signature (mmdet's head's arguments in ``kwargs``)."""

    def __init__(self, num_classes: int = 150, align_corners: bool = False,
                 ignore_index: int = 255, **kwargs) -> None:
        super().__init__(num_classes=num_classes, align_corners=align_corners,
                         ignore_index=ignore_index, **kwargs)
        add_decoder_input_proj(self, kwargs['in_channels'],
                               kwargs.get('enforce_decoder_input_project', False))
