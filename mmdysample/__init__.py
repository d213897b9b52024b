"""mmdysample: DySample and baseline upsamplers for mmdetection 3.x and mmsegmentation 1.x.

Importing the package (``custom_imports=dict(imports=['mmdysample'])``) applies the
compatibility fixes for current PyTorch and registers the upsamplers and the patched
necks/heads.
"""
from . import compat  # noqa: F401  (first: fixes mmengine before anything loads a checkpoint)
from . import engine  # noqa: F401  (RandomStateHook)
from . import mmdet as mmdet_integration  # noqa: F401
from . import mmseg as mmseg_integration  # noqa: F401
from .upsamplers import build_upsampler, registered_upsamplers  # noqa: F401

__version__ = '0.1.0'
