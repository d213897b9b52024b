"""mmsegmentation integration: a SegFormer head and a MaskFormer pixel decoder whose upsampling
steps take any registered upsampler.

Importing it replaces, in the registries, mmseg's ``SegformerHead`` and mmdet's
``PixelDecoder`` (used by mmseg's MaskFormer) by subclasses that are the upstream modules
unless their ``upsample_cfg`` names an upsampler ``type``.
"""
from . import depth  # noqa: F401  (DepthFormer modules, Table 9)
from .pixel_decoder import PixelDecoder
from .segformer_head import SegformerHead

__all__ = ['SegformerHead', 'PixelDecoder']
