"""Fused kernels: DySample's point sampling as one C++ pass on CPU.

:func:`mmdysample.functional.dysample` (and so every DySample layer) calls
:func:`fused_dysample_if_supported` first: CPU float32/float64 inputs are sampled by a fused
kernel that computes each output point's four corner indices and bilinear weights once per
channel group and reuses them for the group's channels, forward and backward, with the same
results as the ``grid_sample`` reference path (bit-identical forward, gradients equal up to
summation order; a double backward, ``create_graph=True``, differentiates the reference
formulation). Everything else (CUDA, float16/bfloat16, mixed dtypes, tracing, ONNX export,
``torch.compile``) takes the reference path.

The kernel is compiled on first use and cached (see :mod:`mmdysample.ops.extension`); when it
cannot be built, a single warning is issued and the reference path is used. To force the
reference path::

    MMDYSAMPLE_FUSED=0 python ...              # whole process
    mmdysample.ops.use_fused(False)            # from now on
    with mmdysample.ops.use_fused(False): ...  # inside a block

``python -m mmdysample.ops`` builds the cache ahead of time and prints its location.
"""
from .extension import (FUSED_ENV_VAR, extension_available, extension_cache_dir,
                        fused_enabled, load_extension, use_fused)
from .sampling import fused_dysample, fused_dysample_if_supported, fused_supported

__all__ = [
    'FUSED_ENV_VAR', 'use_fused', 'fused_enabled', 'load_extension', 'extension_available',
    'extension_cache_dir', 'fused_dysample', 'fused_dysample_if_supported', 'fused_supported'
]
