"""mmsegmentation integration: mmseg's heads and FPN neck whose upsampling steps take any
registered upsampler.

Importing it re-registers, in mmseg's ``MODELS`` (``force=True``), each of these names to a
subclass that is the upstream module unless its ``upsample_cfg`` names an upsampler ``type``
(config key; learned x2 steps for the standard configs):

- ``'SegformerHead'``: ``decode_head.upsample_cfg``, 6 (SegFormer, 4 inputs);
- ``'UPerHead'``: ``decode_head.upsample_cfg``, 9 (3 top-down + 1 + 2 + 3 to 1/4);
- ``'DepthwiseSeparableASPPHead'``: ``decode_head.upsample_cfg``, 1 (DeepLabV3+);
- ``'FPN'``: ``neck.upsample_cfg``, 3 (Semantic FPN);
- ``'FPNHead'``: ``decode_head.upsample_cfg``, 6 (0 + 1 + 2 + 3);

and registers the DepthFormer modules (:mod:`mmdysample.mmseg.depth`, Table 9).

mmseg's ``MaskFormerHead`` and ``Mask2FormerHead`` are not re-registered: they build their
pixel decoder from mmdet's registry (``'mmdet.PixelDecoder'``,
``'mmdet.MSDeformAttnPixelDecoder'``), where :mod:`mmdysample.mmdet` has put the patched
decoders, so ``decode_head.pixel_decoder.upsample_cfg`` swaps their upsamplers. The patched
``PixelDecoder`` compares equal to mmdet's class, so mmseg's (that is, mmdet's)
``MaskFormerHead.__init__`` still gives it the input projection it gives mmdet's decoder.
"""
from . import depth  # noqa: F401  (DepthFormer modules, Table 9)
from .fpn import FPN
from .fpn_head import FPNHead
from .segformer_head import SegformerHead
from .sep_aspp_head import DepthwiseSeparableASPPHead
from .uper_head import UPerHead

__all__ = [
    'SegformerHead', 'UPerHead', 'DepthwiseSeparableASPPHead', 'FPN', 'FPNHead'
]
