"""Upsampling layers, all registered in mmengine's root ``MODELS`` and built by
:func:`build_upsampler`."""
from .builder import build_upsampler, register_upsampler, registered_upsamplers
from .carafe import CARAFE
from .conv import Deconv, PixelShuffle
from .dysample import DySample, DySamplePlus, DySample_S, DySample_SPlus
from .interpolate import Interpolate
from .sites import check_interpolation_cfg, has_upsampler_type, requires_guide, upsample

__all__ = [
    'build_upsampler', 'register_upsampler', 'registered_upsamplers', 'Interpolate', 'Deconv',
    'PixelShuffle', 'CARAFE', 'DySample', 'DySamplePlus', 'DySample_S', 'DySample_SPlus',
    'has_upsampler_type', 'check_interpolation_cfg', 'requires_guide', 'upsample'
]
