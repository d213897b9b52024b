"""Upsampling layers, all registered in mmengine's root ``MODELS`` and built by
:func:`build_upsampler`."""
from .builder import build_upsampler, register_upsampler, registered_upsamplers
from .carafe import CARAFE
from .conv import Deconv, PixelShuffle
from .dysample import DySample, DySamplePlus, DySample_S, DySample_SPlus
from .interpolate import Interpolate

__all__ = [
    'build_upsampler', 'register_upsampler', 'registered_upsamplers', 'Interpolate', 'Deconv',
    'PixelShuffle', 'CARAFE', 'DySample', 'DySamplePlus', 'DySample_S', 'DySample_SPlus'
]
