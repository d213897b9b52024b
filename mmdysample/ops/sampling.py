"""Autograd wrapper and dispatch rule of the fused DySample sampling kernel."""
import threading
from typing import Optional

import torch

from ..functional import grid_sample_dysample as reference_dysample
from .extension import fused_enabled, load_extension

__all__ = [
    'fused_dysample', 'fused_dysample_if_supported', 'fused_supported', 'reference_dysample'
]

FUSED_DTYPES = (torch.float32, torch.float64)
_MAX_PLANE = (2**31 - 1) // 16  # the kernel indexes a [H * W][16] buffer with int32

_rounding_lock = threading.Lock()
_fused_unnormalize = {}  # dtype -> bool, see _unnormalize_rounding


def _dense(tensor: torch.Tensor) -> torch.Tensor:
    """``tensor`` if it is NCHW- or channels_last-contiguous, else an NCHW copy."""
    if tensor.is_contiguous() or tensor.is_contiguous(memory_format=torch.channels_last):
        return tensor
    return tensor.contiguous()


def _unnormalize_rounding(extension, dtype: torch.dtype) -> bool:
    """Whether this PyTorch build's ``grid_sample`` rounds its unnormalisation
    ``(g + 1) * size / 2 - 0.5`` once (a fused multiply-add, as its AVX2 kernels compiled with
    FMA contraction do) or twice (plain builds).

    Decided once per dtype by sampling a one-hot map at points where the two roundings give
    different positions: the kernel then reproduces the reference path's positions bit for bit,
    so the border clamp switches at exactly the same offsets.
    """
    if dtype not in _fused_unnormalize:
        with _rounding_lock:
            if dtype not in _fused_unnormalize:
                x, offset = rounding_probe(dtype)
                reference = reference_dysample(x, offset, 4, 1)
                choice = True
                for fused in (True, False):
                    if torch.equal(extension.forward(x, offset, 4, 1, fused), reference):
                        choice = fused
                        break
                _fused_unnormalize[dtype] = choice
    return _fused_unnormalize[dtype]


def rounding_probe(dtype: torch.dtype):
    """A (1, 7, 1, 7) one-hot map (channel c is 1 at column c) and scale-4 offsets spread over
    [-4, 4): each output is a bilinear weight, i.e. the exact fractional source position."""
    width = 7
    x = torch.eye(width, dtype=dtype).view(1, width, 1, width)
    generator = torch.Generator().manual_seed(0)
    offset = torch.rand(1, 2 * 16, 1, width, generator=generator, dtype=torch.float64) * 8 - 4
    return x, offset.to(dtype)


class _FusedDySampleFunction(torch.autograd.Function):

    @staticmethod
    def forward(ctx, x, offset, scale_factor, groups, fused_unnormalize):
        ctx.save_for_backward(x, offset)
        ctx.config = (scale_factor, groups, fused_unnormalize)
        return load_extension().forward(x, offset, scale_factor, groups, fused_unnormalize)

    @staticmethod
    def backward(ctx, grad_out):
        x, offset = ctx.saved_tensors
        scale_factor, groups, fused_unnormalize = ctx.config
        need_x, need_offset = ctx.needs_input_grad[:2]
        if torch.is_grad_enabled():
            # create_graph=True (double backward, e.g. a gradient penalty): the gradients must
            # themselves be differentiable, so take them through the reference formulation
            wanted = [t for t, need in ((x, need_x), (offset, need_offset)) if need]
            grads = iter(torch.autograd.grad(
                reference_dysample(x, offset, scale_factor, groups), wanted, grad_out,
                create_graph=True))
            grad_x = next(grads) if need_x else None
            grad_offset = next(grads) if need_offset else None
            return grad_x, grad_offset, None, None, None
        grad_x, grad_offset = load_extension().backward(
            _dense(grad_out), x, offset, scale_factor, groups, fused_unnormalize, need_x,
            need_offset)
        return grad_x, grad_offset, None, None, None


def fused_supported(x: torch.Tensor, offset: torch.Tensor) -> bool:
    """Whether the fused kernel handles these inputs (it does not check the switches).

    Supported: plain CPU tensors, both float32 or both float64, a ``H * W`` plane below 2**27
    points. Everything else (CUDA, float16/bfloat16, mixed dtypes, tensor subclasses, tracing,
    scripting, ``torch.compile``/``torch.export`` and ONNX export) takes the reference path.
    """
    if type(x) is not torch.Tensor or type(offset) not in (torch.Tensor, torch.nn.Parameter):
        return False  # FakeTensor, functional tensors of export/compile, other subclasses
    if x.device.type != 'cpu' or offset.device.type != 'cpu':
        return False
    if x.dtype not in FUSED_DTYPES or offset.dtype != x.dtype:
        return False
    if x.dim() != 4 or x.shape[2] * x.shape[3] > _MAX_PLANE or x.numel() == 0:
        return False
    if torch.jit.is_scripting() or torch.jit.is_tracing() or torch.onnx.is_in_onnx_export():
        return False
    if torch.compiler.is_compiling():
        return False
    is_wrapped = getattr(torch._C._functorch, 'is_functorch_wrapped_tensor', None)
    if is_wrapped is not None and (is_wrapped(x) or is_wrapped(offset)):
        return False  # vmap / grad transforms
    return True


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
    extension = load_extension()
    if extension is None:
        raise RuntimeError('the fused DySample CPU kernel is not available (see the warning '
                           'issued when building it)')
    fused_unnormalize = _unnormalize_rounding(extension, x.dtype)
    return _FusedDySampleFunction.apply(_dense(x), offset.contiguous(), int(scale_factor),
                                        int(groups), fused_unnormalize)


def fused_dysample_if_supported(x: torch.Tensor, offset: torch.Tensor, scale_factor: int,
                                groups: int) -> Optional[torch.Tensor]:
    """:func:`fused_dysample` when enabled, supported and built; otherwise ``None`` (the caller
    then runs the reference path). Arguments are assumed checked by the caller."""
    if not fused_enabled() or not fused_supported(x, offset):
        return None
    if load_extension() is None:
        return None
    return fused_dysample(x, offset, scale_factor, groups)
