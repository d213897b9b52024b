"""mmsegmentation integration: a SegFormer head and a MaskFormer pixel decoder whose upsampling
steps take any registered upsampler.

Importing it replaces, in the registries, mmseg's ``SegformerHead`` by a subclass that is
the upstream module unless its ``upsample_cfg`` names an upsampler ``type``. (MaskFormer's
pixel decoder is mmdet's module: :mod:`mmdysample.mmdet.pixel_decoder`.)
"""
from . import depth  # noqa: F401  (DepthFormer modules, Table 9)
from .segformer_head import SegformerHead

__all__ = ['SegformerHead']
