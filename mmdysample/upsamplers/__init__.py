"""Upsampling layers, all registered in mmengine's root ``MODELS`` and built by
:func:`build_upsampler`."""
# registration order is the order registered_upsamplers() lists (error messages, benchmark
# tables): the fixed-kernel layers first, then the others alphabetically
from .conv import Deconv, PixelShuffle  # isort: skip
from .a2u import A2U
from .builder import build_upsampler, register_upsampler, registered_upsamplers
from .carafe import CARAFE
from .dysample import DySample, DySamplePlus, DySample_S, DySample_SPlus
from .fade import FADE
from .indexnet import IndexNet
from .interpolate import Interpolate
from .sapa import SAPA_B
from .sites import (LearnedTopDown, check_interpolation_cfg, has_upsampler_type,
                    requires_guide, upsample)

__all__ = [
    'build_upsampler', 'register_upsampler', 'registered_upsamplers', 'Interpolate', 'Deconv',
    'PixelShuffle', 'CARAFE', 'DySample', 'DySamplePlus', 'DySample_S', 'DySample_SPlus',
    'IndexNet', 'A2U', 'FADE', 'SAPA_B',
    'has_upsampler_type', 'check_interpolation_cfg', 'requires_guide', 'upsample',
    'LearnedTopDown'
]
