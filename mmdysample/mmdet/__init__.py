"""mmdetection integration: necks and heads whose upsampling steps take any registered
upsampler.

Importing it re-registers, in mmdet's ``MODELS`` (``force=True``):

- ``'FPN'`` -> :class:`UpsamplerFPN` (mmdet's FPN unless ``upsample_cfg`` has a ``type``);
- ``'PanopticFPNHead'`` -> :class:`UpsamplerPanopticFPNHead` (mmdet's head unless
  ``upsample_cfg`` is given).
"""
from .fpn import UpsamplerFPN
from .panoptic_fpn_head import UpsamplerConvUpsample, UpsamplerPanopticFPNHead

__all__ = [
    'UpsamplerFPN', 'UpsamplerConvUpsample', 'UpsamplerPanopticFPNHead'
]
