"""mmdysample: DySample and baseline upsamplers for mmdetection 3.x and mmsegmentation 1.x.

``import mmdysample`` (what ``custom_imports=dict(imports=['mmdysample'])`` does) applies the
compatibility fixes for current PyTorch, registers the upsamplers and the runner hooks, and
registers the patched mmdet / mmseg necks and heads as soon as mmdet / mmseg are imported
(at once if they already are; :mod:`mmdysample.integration_hooks`). It imports no task
library itself, so ``import mmdysample.upsamplers`` needs only torch and mmengine.
"""
from . import compat  # noqa: F401  (first: fixes mmengine before anything loads a checkpoint)
from . import engine  # noqa: F401  (RandomStateHook)
from .integration_hooks import register_integrations
from .upsamplers import build_upsampler, registered_upsamplers  # noqa: F401
from .version import __version__  # noqa: F401

register_integrations()
