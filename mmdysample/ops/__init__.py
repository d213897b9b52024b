"""Fused kernels: DySample's point sampling as one C++ pass on CPU, as ``torch.library``
custom ops (``mmdysample::dysample_sample`` and its backward).

:func:`mmdysample.functional.dysample` (and so every DySample layer) calls
:func:`sample_fused_or_reference`: CPU inputs (sampled in float32/float64, see
:func:`mmdysample.functional.position_dtype`) go to the fused kernel, which computes each output
point's four corner indices and bilinear weights once per channel group and reuses them for the
group's channels, forward and backward, with the same results as the ``grid_sample`` reference
path (bit-identical forward, gradients equal up to summation order; a double backward,
``create_graph=True``, differentiates the reference formulation). ``torch.compile`` keeps the
kernel (the op has a fake implementation and registered autograd). Everything else takes the
reference path, which lives here too (:mod:`.reference`), so that this package imports nothing
of the rest: in eager mode (CUDA, MPS, XPU, CPU with the kernel off, float16/bfloat16
features) as one ``autograd.Function`` that saves ``x`` and the offsets and computes the
gradients with aten's ``grid_sampler_2d_backward`` (the values autograd computes); under
``torch.jit`` tracing, ``torch.export``, ONNX export, ``torch.compile`` and vmap as the plain
composition of standard operators.

:mod:`.fused_layer` runs a whole DySample layer on CPU (offset projection as one matrix
product, scope, sampling) as one autograd node whose backward holds one input-sized gradient;
:mod:`.lean_layer` does the same with PyTorch operators on every other device (the composed
path). :class:`mmdysample.upsamplers.DySample` uses the first that applies.

The kernel is compiled on first use and cached (see :mod:`mmdysample.ops.extension`); when it
cannot be built, a single warning is issued and the reference path is used. To force the
reference path::

    MMDYSAMPLE_FUSED=0 python ...              # whole process
    mmdysample.ops.use_fused(False)            # from now on, in this thread
    with mmdysample.ops.use_fused(False): ...  # inside a block

``python -m mmdysample.ops`` builds the cache ahead of time and prints its location.
"""
from .extension import (FUSED_ENV_VAR, extension_available, extension_cache_dir,
                        fused_enabled, load_extension, use_fused)
from .reference import grid_sample_dysample, sampling_grid
from .sampling import fused_dysample, fused_supported, sample_fused_or_reference

__all__ = [
    'FUSED_ENV_VAR', 'use_fused', 'fused_enabled', 'load_extension', 'extension_available',
    'extension_cache_dir', 'fused_dysample', 'fused_supported', 'sample_fused_or_reference',
    'grid_sample_dysample', 'sampling_grid'
]
