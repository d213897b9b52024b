"""mmdetection integration: necks and heads whose upsampling steps take any registered
upsampler.

Importing it re-registers, in mmdet's ``MODELS`` (``force=True``), each of these names to a
subclass that is the upstream module unless its upsample cfg names an upsampler ``type``
(config key; learned upsamplers in the standard configs):

- ``'FPN'``: ``neck.upsample_cfg``, 3 (Faster/Mask R-CNN, Panoptic FPN, RetinaNet...);
- ``'PanopticFPNHead'``: ``semantic_head.upsample_cfg``, 6 (off by default);
- ``'CSPNeXtPAFPN'``: ``neck.upsample_cfg``, 2 (RTMDet);
- ``'YOLOXPAFPN'``: ``neck.upsample_cfg``, 2 (YOLOX);
- ``'FCNMaskHead'``: ``roi_head.mask_head.upsample_cfg``, 1 (Mask R-CNN);
- ``'PixelDecoder'``: ``pixel_decoder.upsample_cfg``, 3 (MaskFormer, mmdet and mmseg);
- ``'MSDeformAttnPixelDecoder'``: ``pixel_decoder.upsample_cfg``, 1 (Mask2Former, mmdet and
  mmseg).
"""
from .fcn_mask_head import FCNMaskHead
from .fpn import UpsamplerFPN
from .msdeformattn_pixel_decoder import MSDeformAttnPixelDecoder
from .pafpn import CSPNeXtPAFPN, YOLOXPAFPN
from .panoptic_fpn_head import UpsamplerConvUpsample, UpsamplerPanopticFPNHead
from .pixel_decoder import PixelDecoder

__all__ = [
    'UpsamplerFPN', 'UpsamplerConvUpsample', 'UpsamplerPanopticFPNHead', 'CSPNeXtPAFPN',
    'YOLOXPAFPN', 'FCNMaskHead', 'PixelDecoder', 'MSDeformAttnPixelDecoder'
]
