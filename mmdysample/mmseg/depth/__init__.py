"""Monocular depth estimation: DepthFormer-SwinT (DySample paper, Table 9) for mmseg 1.x.

DepthFormer (Li et al., 2022; Monocular Depth Estimation Toolbox) as mmseg 1.x modules,
registered in mmseg's ``MODELS`` for its ``DepthEstimator``:

* :class:`DepthFormerSwin`: Swin Transformer plus a convolutional stem (five levels);
* :class:`HAHIHeteroNeck`: deformable self-attention over the Swin levels and
  cross-attention from the stem level;
* :class:`DenseDepthHead`: the four-stage fusion decoder whose upsamplings take
  ``upsample_cfg`` (any registered upsampler, guided ones included);
* :class:`NYUCrop`, :class:`DepthColorAug`: the toolbox's NYU training transforms that
  mmseg lacks (registered in mmseg's ``TRANSFORMS``).
"""
from .densedepth_head import DenseDepthHead, DepthFusionBlock
from .depthformer_swin import DepthFormerSwin
from .hahi_neck import HAHIHeteroNeck, pixel_centre_reference_points
from .transforms import NYU_CROP_BOX, DepthColorAug, NYUCrop

__all__ = [
    'DenseDepthHead', 'DepthFusionBlock', 'DepthFormerSwin', 'HAHIHeteroNeck',
    'pixel_centre_reference_points', 'NYUCrop', 'DepthColorAug', 'NYU_CROP_BOX'
]
