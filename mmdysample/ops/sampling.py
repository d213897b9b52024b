"""The fused DySample sampling kernel as ``torch.library`` custom ops, and the dispatch rule
between it and the reference path.

Two operators (namespace ``mmdysample``), so that ``torch.compile`` and ``torch.export`` see the
kernel as one opaque node with a known output shape instead of falling back:

* ``mmdysample::dysample_sample(x, offset, scale_factor, groups) -> out``
* ``mmdysample::dysample_sample_backward(grad_out, x, offset, scale_factor, groups,
  need_x_grad, need_offset_grad) -> (grad_x, grad_offset)``

Each has the C++ kernel for CPU tensors, the reference formulation for any other device
(``F.grid_sample`` forward; the backward written out with aten's ``grid_sampler_2d_backward``,
:func:`.reference.grid_sample_dysample_backward`, so it works inside the op, where autograd is
off), and a fake (meta) implementation for tracing. Autograd is registered on the forward op; a
double backward (``create_graph=True``) differentiates the reference formulation. Eager calls
reach the same CPU kernels through an ``autograd.Function`` (the op's Python dispatch measured
0.4 ms a call against 15 us for the kernel on a 1x8x4x5 input, on the shared 2-core dev machine
under load); ``torch.compile`` traces the op.

Where the kernel does not apply (other devices, float16/bfloat16 features, the kernel switched
off), eager calls take the lean reference path: the same ``F.grid_sample`` forward in one
``autograd.Function`` that saves ``x`` and the offsets instead of the grid and ``x``'s
float32 copy, and computes the gradients with :func:`.reference.grid_sample_dysample_backward`
(the values autograd computes). Traced, scripted, exported and compiled graphs take the plain
composition of standard operators.
"""
import threading
import warnings
from typing import Tuple

import torch

from .extension import fused_enabled, load_extension
from .reference import grid_sample_dysample, grid_sample_dysample_backward

__all__ = [
    'fused_dysample', 'fused_supported', 'sample_fused_or_reference', 'FUSED_DTYPES',
    'plane_fits_kernel', 'eager_plain_tensors', 'standard_operators_only', 'autocast_enabled'
]

FUSED_DTYPES = (torch.float32, torch.float64)
# The kernel indexes a channels-last [H * W][CB] buffer with int32, CB up to 32 channels
# (float32; 16 for float64): planes of at most (2**31 - 1) // 32 points (kMaxPlane in the .cpp)
_MAX_BLOCK = 32
_MAX_PLANE = (2**31 - 1) // _MAX_BLOCK

_rounding_lock = threading.Lock()
_fused_unnormalize = {}  # dtype -> bool, see _unnormalize_rounding


def _dense(tensor: torch.Tensor) -> torch.Tensor:
    """``tensor`` if it is NCHW- or channels_last-contiguous, else an NCHW copy."""
    if tensor.is_contiguous() or tensor.is_contiguous(memory_format=torch.channels_last):
        return tensor
    return tensor.contiguous()


def _extension():
    extension = load_extension()
    if extension is None:
        raise RuntimeError('the fused DySample CPU kernel is not available (see the warning '
                           'issued when building it)')
    return extension


# ----------------------------------------------------------------------------- the ops

def _sample_reference(x: torch.Tensor, offset: torch.Tensor, scale_factor: int,
                      groups: int) -> torch.Tensor:
    """The op's default: the reference formulation, for every device without a kernel."""
    return grid_sample_dysample(x, offset, scale_factor, groups).contiguous()


_sample_op = torch.library.custom_op('mmdysample::dysample_sample', _sample_reference,
                                     mutates_args=())


@_sample_op.register_kernel('cpu')
def _sample_cpu(x, offset, scale_factor, groups):
    extension = _extension()
    return extension.forward(_dense(x), offset.contiguous(), scale_factor, groups,
                             _unnormalize_rounding(extension, x.dtype))


@_sample_op.register_fake
def _sample_fake(x, offset, scale_factor, groups):
    B, C, H, W = x.shape
    return x.new_empty((B, C, scale_factor * H, scale_factor * W))


def _sample_backward_reference(grad_out: torch.Tensor, x: torch.Tensor, offset: torch.Tensor,
                               scale_factor: int, groups: int, need_x_grad: bool,
                               need_offset_grad: bool) -> Tuple[torch.Tensor, torch.Tensor]:
    """The backward op's default: the reference formulation's gradients without autograd
    (an empty tensor for a gradient not asked for)."""
    grad_x, grad_offset = grid_sample_dysample_backward(grad_out, x, offset, scale_factor,
                                                        groups, need_x_grad, need_offset_grad)
    return (x.new_empty(0) if grad_x is None else grad_x,
            offset.new_empty(0) if grad_offset is None else grad_offset)


_sample_backward_op = torch.library.custom_op('mmdysample::dysample_sample_backward',
                                              _sample_backward_reference, mutates_args=())


@_sample_backward_op.register_kernel('cpu')
def _sample_backward_cpu(grad_out, x, offset, scale_factor, groups, need_x_grad,
                         need_offset_grad):
    extension = _extension()
    grad_x, grad_offset = extension.backward(
        _dense(grad_out), _dense(x), offset.contiguous(), scale_factor, groups,
        _unnormalize_rounding(extension, x.dtype), need_x_grad, need_offset_grad)
    return (grad_x if need_x_grad else x.new_empty(0),
            grad_offset if need_offset_grad else offset.new_empty(0))


@_sample_backward_op.register_fake
def _sample_backward_fake(grad_out, x, offset, scale_factor, groups, need_x_grad,
                          need_offset_grad):
    return (torch.empty_like(x) if need_x_grad else x.new_empty(0),
            torch.empty_like(offset, memory_format=torch.contiguous_format)
            if need_offset_grad else offset.new_empty(0))


def _setup_context(ctx, inputs, output):
    x, offset, scale_factor, groups = inputs
    ctx.save_for_backward(x, offset)
    ctx.config = (scale_factor, groups)


def _gradients(grad_out, x, offset, scale_factor, groups, need_x, need_offset, fused_backward):
    """Gradients wrt ``x`` and ``offset`` (``None`` where not needed): by ``fused_backward``,
    or, when a double backward will follow (``create_graph=True``: grad mode is on inside a
    backward), through the reference formulation so that they are differentiable."""
    if torch.is_grad_enabled():
        wanted = [t for t, need in ((x, need_x), (offset, need_offset)) if need]
        grads = iter(torch.autograd.grad(
            grid_sample_dysample(x, offset, scale_factor, groups), wanted, grad_out,
            create_graph=True))
        return (next(grads) if need_x else None), (next(grads) if need_offset else None)
    grad_x, grad_offset = fused_backward(grad_out, x, offset, scale_factor, groups, need_x,
                                         need_offset)
    return (grad_x if need_x else None), (grad_offset if need_offset else None)


def _backward(ctx, grad_out):
    x, offset = ctx.saved_tensors
    need_x, need_offset = ctx.needs_input_grad[:2]
    return _gradients(grad_out, x, offset, *ctx.config, need_x, need_offset,
                      _sample_backward_op) + (None, None)


_sample_op.register_autograd(_backward, setup_context=_setup_context)


class _FusedSample(torch.autograd.Function):
    """The eager path to the same CPU kernels as the custom op, without the op's Python
    dispatch cost (see the module docstring)."""

    @staticmethod
    def forward(ctx, x, offset, scale_factor, groups):
        ctx.save_for_backward(x, offset)
        ctx.config = (scale_factor, groups)
        return _sample_cpu(x, offset, scale_factor, groups)

    @staticmethod
    def backward(ctx, grad_out):
        x, offset = ctx.saved_tensors
        need_x, need_offset = ctx.needs_input_grad[:2]
        return _gradients(grad_out, x, offset, *ctx.config, need_x, need_offset,
                          _sample_backward_cpu) + (None, None)


class _LeanSample(torch.autograd.Function):
    """The reference path in eager mode, any device: ``F.grid_sample``'s forward, saving ``x``
    in its own dtype and the offsets (autograd through the composition saves the grid and,
    for a float16/bfloat16 ``x``, its float32 copy), gradients by
    :func:`.reference.grid_sample_dysample_backward` (the grid and ``x``'s copy recomputed).
    ``offset`` is in the position dtype (float32/float64), ``x`` in any floating dtype; the
    output has ``x``'s dtype."""

    @staticmethod
    def forward(ctx, x, offset, scale_factor, groups):
        ctx.save_for_backward(x, offset)
        ctx.config = (scale_factor, groups)
        return grid_sample_dysample(x.to(offset.dtype), offset, scale_factor,
                                    groups).to(x.dtype)

    @staticmethod
    def backward(ctx, grad_out):
        x, offset = ctx.saved_tensors
        need_x, need_offset = ctx.needs_input_grad[:2]
        grad_x, grad_offset = _gradients(grad_out.to(offset.dtype), x.to(offset.dtype), offset,
                                         *ctx.config, need_x, need_offset,
                                         grid_sample_dysample_backward)
        return (None if grad_x is None else grad_x.to(x.dtype)), grad_offset, None, None


# ------------------------------------------------------------------- rounding probe

def _unnormalize_rounding(extension, dtype: torch.dtype) -> bool:
    """Whether this PyTorch build's ``grid_sample`` rounds its unnormalisation
    ``(g + 1) * size / 2 - 0.5`` once (a fused multiply-add, as its AVX2 kernels compiled with
    FMA contraction do) or twice (plain builds).

    Decided once per dtype by sampling a one-hot map at points where the two roundings give
    different positions: the kernel then reproduces the reference path's positions bit for bit,
    so the border clamp switches at exactly the same offsets. If neither rounding reproduces
    ``grid_sample`` (a build whose kernel rounds some other way), one ``RuntimeWarning`` per
    dtype says so and the rounding that matches more probe points is used: the fused path then
    stays within float rounding of ``grid_sample`` (its positions may differ in the last bit,
    which moves a point across the border clamp only when it sits on it).
    """
    if dtype not in _fused_unnormalize:
        with _rounding_lock:
            if dtype not in _fused_unnormalize:
                _fused_unnormalize[dtype] = _probe_rounding(extension, dtype)
    return _fused_unnormalize[dtype]


def _probe_rounding(extension, dtype: torch.dtype) -> bool:
    x, offset = rounding_probe(dtype)
    reference = grid_sample_dysample(x, offset, 4, 1)
    matches = {}
    for fused in (True, False):
        out = extension.forward(x, offset, 4, 1, fused)
        if torch.equal(out, reference):
            return fused
        matches[fused] = int((out == reference).sum())
    choice = max(matches, key=lambda fused: (matches[fused], fused))
    warnings.warn(
        f'mmdysample: the fused DySample CPU kernel reproduces F.grid_sample for {dtype} '
        f'neither with its unnormalisation (g + 1) * size / 2 - 0.5 rounded once (fused '
        f'multiply-add: {matches[True]} of {reference.numel()} probe points equal) nor rounded '
        f'twice ({matches[False]} equal); using the {"once" if choice else "twice"}-rounded '
        f'form. The fused path may then differ from F.grid_sample in the last bit of a '
        f'sampling position, and so at border clamps; mmdysample.ops.use_fused(False) or '
        f'MMDYSAMPLE_FUSED=0 gives the reference path.',
        RuntimeWarning, stacklevel=2)
    return choice


def rounding_probe(dtype: torch.dtype):
    """A (1, 7, 1, 7) one-hot map (channel c is 1 at column c) and scale-4 offsets spread over
    [-4, 4): each output is a bilinear weight, i.e. the exact fractional source position."""
    width = 7
    x = torch.eye(width, dtype=dtype).view(1, width, 1, width)
    generator = torch.Generator().manual_seed(0)
    offset = torch.rand(1, 2 * 16, 1, width, generator=generator, dtype=torch.float64) * 8 - 4
    return x, offset.to(dtype)


# ----------------------------------------------------------------------- dispatch

def _capturing_graph() -> bool:
    """``torch.jit`` tracing or scripting, ONNX export or ``torch.export``: graphs that must be
    made of standard operators."""
    return (torch.jit.is_scripting() or torch.jit.is_tracing()
            or torch.onnx.is_in_onnx_export() or torch.compiler.is_exporting())


def _plain(*tensors: torch.Tensor) -> bool:
    """Plain tensors: no subclass (the functional tensors of jit/export and others), no
    functorch wrapper (vmap, grad transforms)."""
    if not all(type(t) in (torch.Tensor, torch.nn.Parameter) for t in tensors):
        return False
    is_wrapped = getattr(torch._C._functorch, 'is_functorch_wrapped_tensor', None)
    return is_wrapped is None or not any(is_wrapped(t) for t in tensors)


def standard_operators_only(*tensors: torch.Tensor) -> bool:
    """Graphs that must be made of standard operators: ``torch.jit`` tracing or scripting,
    ONNX export, ``torch.export``, vmap/grad transforms and tensor subclasses
    (``torch.compile`` is not one: its FakeTensors are subclasses, but they trace custom ops
    and ``autograd.Function`` s)."""
    return _capturing_graph() or not (torch.compiler.is_compiling() or _plain(*tensors))


def autocast_enabled(device_type: str) -> bool:
    """Whether autocast is on for ``device_type`` (``False`` where it has no autocast)."""
    return torch.amp.is_autocast_available(device_type) and torch.is_autocast_enabled(
        device_type)


def eager_plain_tensors(*tensors: torch.Tensor) -> bool:
    """Eager mode (no ``torch.compile``, tracing, scripting or export) on plain tensors: where
    one of our ``autograd.Function`` s may stand in for a composition of standard operators.
    Everywhere else the composition itself runs (``torch.compile``'s partitioner then
    decides what to save)."""
    return not torch.compiler.is_compiling() and not _capturing_graph() and _plain(*tensors)


def plane_fits_kernel(height: int, width: int) -> bool:
    """Whether the fused kernel's 32-bit buffer indices reach an ``height x width`` plane:
    ``H * W * 32 <= 2**31 - 1`` (32: the widest channel block, float32). The C++ kernel
    checks the same rule."""
    return height * width <= _MAX_PLANE


def fused_supported(x: torch.Tensor, offset: torch.Tensor) -> bool:
    """Whether the fused kernel handles these inputs (it does not check the switches).

    Supported: CPU tensors, both float32 or both float64, a ``H * W`` plane of at most
    ``(2**31 - 1) // 32`` points (:func:`plane_fits_kernel`), any batch size (an empty batch
    too), in eager mode or under ``torch.compile`` (the custom op). Everything else (CUDA,
    float16/bfloat16 tensors passed directly, mixed dtypes, an empty channel or spatial
    dimension, tensor subclasses, vmap, ``torch.jit`` tracing/scripting, ``torch.export`` and
    ONNX export, which need graphs of standard operators) takes the reference path.
    """
    if standard_operators_only(x, offset):
        return False
    if x.device.type != 'cpu' or offset.device.type != 'cpu':
        return False
    if x.dtype not in FUSED_DTYPES or offset.dtype != x.dtype:
        return False
    return x.dim() == 4 and 0 not in x.shape[1:] and plane_fits_kernel(x.shape[2], x.shape[3])


def fused_dysample(x: torch.Tensor, offset: torch.Tensor, scale_factor: int,
                   groups: int) -> torch.Tensor:
    """DySample point sampling by the fused CPU kernel (differentiable wrt ``x`` and ``offset``).

    Same arguments, result and gradients as :func:`mmdysample.functional.dysample` (which
    calls this automatically); no argument checking here.

    Args:
        x: ``(B, C, H, W)`` CPU float32/float64 tensor.
        offset: ``(B, 2 * groups * s * s, H, W)``, same dtype.

    Returns:
        ``(B, C, s * H, s * W)`` NCHW-contiguous tensor.

    Raises:
        RuntimeError: if the extension cannot be built.
    """
    _extension()  # raise here, not inside the op, when the kernel cannot be built
    sample = _sample_op if torch.compiler.is_compiling() else _FusedSample.apply
    return sample(_dense(x), offset.contiguous(), int(scale_factor), int(groups))


def _fused_wanted_and_built() -> bool:
    """The switches are on and the kernel is built (building it if needed). Under
    ``torch.compile`` this is read once, when the graph is traced (see
    :func:`mark_compile_constants`)."""
    return fused_enabled() and load_extension() is not None


def mark_compile_constants(dynamo_module) -> None:
    """Tell ``torch.compile`` to read :func:`_fused_wanted_and_built` once, when tracing.

    Run right after ``torch._dynamo`` is imported (:mod:`mmdysample.integration_hooks`),
    not as a decorator: ``torch.compiler.assume_constant_result`` imports
    ``torch._dynamo``, which costs more CPU time than the rest of ``import
    mmdysample.upsamplers`` and replaces ``torch.manual_seed``. It marks the function in
    place (``dynamo_module``, the trigger, is not used).
    """
    torch.compiler.assume_constant_result(_fused_wanted_and_built)


def sample_fused_or_reference(x: torch.Tensor, offset: torch.Tensor, scale_factor: int,
                              groups: int) -> torch.Tensor:
    """DySample's point sampling by the best path for the inputs: :func:`fused_dysample` when
    enabled, supported and built; in eager mode otherwise the lean reference path (one
    ``autograd.Function`` saving ``x`` and the offsets, see :class:`_LeanSample`); the plain
    composition of standard operators when compiling, tracing or exporting. Every path gives
    the same output.

    ``offset`` is in the position dtype (float32, or float64 if either input is float64:
    :func:`mmdysample.functional.position_dtype`), ``x`` in any floating dtype, sampled in
    ``offset``'s; the result has ``x``'s dtype. Arguments are not checked.

    Under ``torch.compile`` the choice is made when the graph is traced: switching
    :func:`use_fused` later does not change a compiled graph (``torch._dynamo.reset()`` does).
    """
    if fused_supported(x, offset) and _fused_wanted_and_built():
        return fused_dysample(x, offset, scale_factor, groups)
    if eager_plain_tensors(x, offset):
        return _LeanSample.apply(x, offset, int(scale_factor), int(groups))
    return grid_sample_dysample(x.to(offset.dtype), offset, scale_factor, groups).to(x.dtype)
