"""mmdysample: DySample and baseline upsamplers for mmdetection 3.x and mmsegmentation 1.x.

``import mmdysample`` (what ``custom_imports=dict(imports=['mmdysample'])`` does) checks the
installed versions, registers the upsamplers in mmengine's root ``MODELS``, and registers
everything else for when the module it extends is imported (at once if it already is;
:mod:`mmdysample.integration_hooks`): the compatibility fixes for current PyTorch when the
mmengine modules they fix are, the runner hooks when ``mmengine.runner`` is, the patched
mmdet / mmseg necks and heads when ``mmdet.models`` / ``mmseg.models`` are. It imports no task
library and none of mmengine's runner, model or optimizer packages itself, and changes no
attribute of torch, mmengine or NumPy, so ``import mmdysample.upsamplers`` (which runs this
file first) costs little more than ``import torch, mmengine.registry``; the one addition to
the interpreter is the finder that waits for those imports (docs/design.md).
"""
from .versions import check_installed

check_installed()  # first: before torch is imported

from .integration_hooks import register_integrations  # noqa: E402
from .upsamplers import build_upsampler, registered_upsamplers  # noqa: E402,F401
from .version import __version__  # noqa: E402,F401

register_integrations()
