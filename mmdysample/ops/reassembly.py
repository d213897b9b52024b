"""Content-aware reassembly (CARAFE, FADE, A2U, SAPA-B) without unfolded tensors.

Three operations, each the gradient of the other two (``x`` ``(B, C, H, W)``, ``masks``
``(B, G * k * k, s*H, s*W)``, output / its gradient ``(B, C, s*H, s*W)``; tap
``m = dy * k + dx`` of output pixel ``(P, Q)`` is the low-resolution neighbour
``(P // s + dy - k // 2, Q // s + dx - k // 2)``, zero outside the map; channel ``c`` uses the
kernels of group ``c // (C / G)``):

* :func:`reassemble` ``(x, masks) -> out``:
  ``out[c, P, Q] = sum_m x[c, nb_m] * masks[g k^2 + m, P, Q]``;
* ``feature_grad`` ``(grad_out, masks) -> grad_x``: the transposed map, ``reassemble``'s
  gradient wrt ``x``;
* ``mask_grad`` ``(grad_out, x) -> grad_masks``: ``sum_{c in g} grad_out[c, P, Q] * x[c, nb_m]``,
  ``reassemble``'s gradient wrt the masks, and SAPA's similarity
  (:func:`similarity`: ``<query[:, P, Q], key[:, nb_m]>``).

``reassemble``'s gradients are ``feature_grad(g, masks)`` and ``mask_grad(g, x)``;
``mask_grad``'s are ``reassemble(x, g)`` and ``feature_grad(grad_out, g)``; ``feature_grad``'s
are ``reassemble(g, masks)`` and ``mask_grad(grad_out, g)``. So the three are one autograd
family: every backward (double backward too) runs the same implementations.

Implementations, chosen per call (:func:`reassemble`, :func:`similarity`):

* the C++ CPU kernels of the extension (``csrc/reassembly.cpp``) for CPU float32/float64
  tensors of one dtype, under the rules and switches of the fused DySample kernel
  (:func:`mmdysample.ops.fused_supported`, ``MMDYSAMPLE_FUSED=0``,
  :func:`mmdysample.ops.use_fused`): an ``autograd.Function`` in eager mode, the
  ``torch.library`` custom ops ``mmdysample::reassemble`` / ``..._feature_grad`` /
  ``..._mask_grad`` (fake implementations, autograd registered) under ``torch.compile``;
* mmcv's CUDA CARAFE kernel for :func:`reassemble` on CUDA when ``mmcv.ops`` imports and its
  constraints hold (float16/32/64; ``G * k * k <= 384``, the shared-memory size of its
  kernels; a non-empty input): the masks are passed in the features' dtype (mmcv reads them
  as that dtype);
* everywhere else (CUDA without mmcv, MPS, a CPU without the extension, float16/bfloat16,
  empty inputs): the device-agnostic path (``generic_*`` below): ``k * k`` in-place
  multiply-adds of shifted windows of a nearest-upsampled copy, one chunk of channels at a
  time (temporaries at most ``1 / GENERIC_CHUNK_FRACTION`` of the output), float32
  accumulation for half types, the same autograd family (only the inputs are saved);
* under ``torch.jit`` tracing/scripting, ONNX export, ``torch.export`` and vmap (graphs of
  standard operators): the plain formulation, ``F.unfold`` + one contraction
  (:func:`reassemble_unfold`, :func:`similarity_unfold`).
"""
from typing import Callable, Optional

import torch
import torch.nn.functional as F

from .extension import load_extension
from .sampling import _fused_wanted_and_built, fused_supported, standard_operators_only

__all__ = [
    'reassemble', 'similarity', 'reassemble_unfold', 'similarity_unfold',
    'MMCV_MAX_MASK_CHANNELS', 'GENERIC_CHUNK_FRACTION'
]

#: mmcv's CUDA CARAFE kernels keep ``G * k * k`` mask values per pixel for 16 pixels in a
#: 48 KiB shared buffer (``carafe_cuda_kernel.cuh``: ``shared_mask[c * 32 + pixel]``)
MMCV_MAX_MASK_CHANNELS = 384
MMCV_DTYPES = (torch.float16, torch.float32, torch.float64)
#: the device-agnostic path's temporaries: at most this fraction of the output (in elements)
GENERIC_CHUNK_FRACTION = 8


# ------------------------------------------------------------------- plain formulation

def reassemble_unfold(features: torch.Tensor, masks: torch.Tensor, kernel_size: int,
                      groups: int, scale: int) -> torch.Tensor:
    """:func:`reassemble` as ``F.unfold`` + one ``einsum`` (what traced and exported graphs
    hold): the neighbourhoods gathered at low resolution, combined with the ``s * s``
    kernels of each input pixel; memory ``C * k * k * H * W``."""
    B, C, H, W = features.shape
    s, k2 = scale, kernel_size * kernel_size
    neighbours = F.unfold(features, kernel_size, padding=kernel_size // 2)
    neighbours = neighbours.view(B, groups, C // groups, k2, H, W)
    kernels = masks.view(B, groups, k2, H, s, W, s)
    out = torch.einsum('bgckhw,bgkhiwj->bgchiwj', neighbours, kernels)
    return out.reshape(B, C, s * H, s * W)


def similarity_unfold(query: torch.Tensor, key: torch.Tensor, kernel_size: int,
                      scale: int) -> torch.Tensor:
    """:func:`similarity` as ``F.unfold`` + one batched matrix product: a
    ``(k^2 x E) @ (E x s^2)`` product per low-resolution pixel, on contiguous operands."""
    B, E, H, W = key.shape
    s, k2 = scale, kernel_size * kernel_size
    neighbours = F.unfold(key, kernel_size, padding=kernel_size // 2).view(B, E, k2, H, W)
    neighbours = neighbours.permute(0, 3, 4, 2, 1).contiguous()  # (B, H, W, k^2, E)
    query = query.view(B, E, H, s, W, s).permute(0, 2, 4, 1, 3, 5).reshape(B, H, W, E, s * s)
    logits = torch.matmul(neighbours, query)  # (B, H, W, k^2, s^2)
    logits = logits.view(B, H, W, k2, s, s).permute(0, 3, 1, 4, 2, 5)
    return logits.reshape(B, k2, s * H, s * W)


# --------------------------------------------------------------- device-agnostic path

def _accumulation_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.promote_types(dtype, torch.float32)


def _channel_step(group_channels: int, per_channel: int, out_numel: int) -> int:
    """Channels per chunk: temporaries of ``per_channel`` elements a channel stay within
    ``1 / GENERIC_CHUNK_FRACTION`` of the output (at least one channel)."""
    budget = max(out_numel // GENERIC_CHUNK_FRACTION, 1)
    return max(1, min(group_channels, budget // max(per_channel, 1)))


def _upsampled_padded(x: torch.Tensor, radius: int, scale: int) -> torch.Tensor:
    """``x`` zero-padded by ``radius`` pixels and nearest-upsampled by ``scale``: the
    neighbour ``(dy, dx)`` of every output pixel is then the window
    ``[s * dy : s * dy + s * H, s * dx : s * dx + s * W]``."""
    B, C, H, W = x.shape
    padded = F.pad(x, (radius, radius, radius, radius))
    Hp, Wp = H + 2 * radius, W + 2 * radius
    return padded[:, :, :, None, :, None].expand(B, C, Hp, scale, Wp, scale).reshape(
        B, C, Hp * scale, Wp * scale)


def _chunks(channels: int, groups: int, step: int):
    """``(group, first, last)`` channel ranges of at most ``step`` channels within a group."""
    per_group = channels // groups
    for group in range(groups):
        for first in range(0, per_group, step):
            yield group, group * per_group + first, group * per_group + min(per_group,
                                                                             first + step)


def generic_reassemble(features: torch.Tensor, masks: torch.Tensor, kernel_size: int,
                       groups: int, scale: int) -> torch.Tensor:
    """:func:`reassemble` by ``k * k`` in-place multiply-adds of shifted windows of the
    nearest-upsampled input, one chunk of channels at a time."""
    B, C, H, W = features.shape
    k, s, r = kernel_size, scale, kernel_size // 2
    out = features.new_empty(B, C, s * H, s * W)
    if out.numel() == 0:
        return out
    acc = _accumulation_dtype(features.dtype)
    in_place = acc == features.dtype
    per_channel = s * s * (H + 2 * r) * (W + 2 * r) + (0 if in_place else s * s * H * W)
    step = _channel_step(C // groups, per_channel, out.numel())
    masks = masks.view(B, groups, k * k, s * H, s * W)
    group_masks = None
    for group, first, last in _chunks(C, groups, step):
        if first == group * (C // groups):
            group_masks = masks[:, group].to(acc)
        up = _upsampled_padded(features[:, first:last].to(acc), r, s)
        total = out[:, first:last] if in_place else up.new_empty(B, last - first, s * H, s * W)
        total.zero_()
        for dy in range(k):
            for dx in range(k):
                window = up[:, :, s * dy:s * dy + s * H, s * dx:s * dx + s * W]
                total.addcmul_(window, group_masks[:, dy * k + dx:dy * k + dx + 1])
        if not in_place:
            out[:, first:last] = total
    return out


def generic_mask_grad(grad_out: torch.Tensor, features: torch.Tensor, kernel_size: int,
                      groups: int, scale: int) -> torch.Tensor:
    """``mask_grad``: per tap, the channel sum of the output gradient times the shifted
    window of the nearest-upsampled input, one chunk of channels at a time."""
    B, C, H, W = features.shape
    k, s, r = kernel_size, scale, kernel_size // 2
    acc = _accumulation_dtype(features.dtype)
    sums = torch.zeros(B, groups, k * k, s * H, s * W, dtype=acc, device=features.device)
    if sums.numel() and features.numel():
        per_channel = 2 * s * s * (H + 2 * r) * (W + 2 * r) + s * s * H * W
        step = _channel_step(C // groups, per_channel, grad_out.numel())
        for group, first, last in _chunks(C, groups, step):
            up = _upsampled_padded(features[:, first:last].to(acc), r, s)
            grad = grad_out[:, first:last].to(acc)
            for dy in range(k):
                for dx in range(k):
                    window = up[:, :, s * dy:s * dy + s * H, s * dx:s * dx + s * W]
                    sums[:, group, dy * k + dx] += (grad * window).sum(1)
    return sums.view(B, groups * k * k, s * H, s * W).to(features.dtype)


def generic_feature_grad(grad_out: torch.Tensor, masks: torch.Tensor, kernel_size: int,
                         groups: int, scale: int) -> torch.Tensor:
    """``feature_grad``: the output gradient times each tap's kernel added into a shifted
    window of an upsampled, padded buffer, whose ``s x s`` blocks are then summed."""
    B, C, oH, oW = grad_out.shape
    k, s, r = kernel_size, scale, kernel_size // 2
    H, W = oH // s, oW // s
    grad_x = grad_out.new_empty(B, C, H, W)
    if grad_x.numel() == 0:
        return grad_x
    acc = _accumulation_dtype(grad_out.dtype)
    per_channel = s * s * (H + 2 * r) * (W + 2 * r) + s * s * H * W
    step = _channel_step(C // groups, per_channel, grad_out.numel())
    masks = masks.view(B, groups, k * k, oH, oW)
    group_masks = None
    for group, first, last in _chunks(C, groups, step):
        if first == group * (C // groups):
            group_masks = masks[:, group].to(acc)
        grad = grad_out[:, first:last].to(acc)
        spread = grad.new_zeros(B, last - first, s * (H + 2 * r), s * (W + 2 * r))
        for dy in range(k):
            for dx in range(k):
                window = spread[:, :, s * dy:s * dy + oH, s * dx:s * dx + oW]
                window.addcmul_(grad, group_masks[:, dy * k + dx:dy * k + dx + 1])
        centre = spread[:, :, s * r:s * r + oH, s * r:s * r + oW]
        grad_x[:, first:last] = centre.unflatten(3, (W, s)).unflatten(2, (H, s)).sum((3, 5))
    return grad_x


# ---------------------------------------------------------------------- CPU kernels

def _extension():
    extension = load_extension()
    if extension is None:
        raise RuntimeError('the mmdysample CPU extension is not available (see the warning '
                           'issued when building it)')
    return extension


def kernel_reassemble(features, masks, kernel_size, groups, scale):
    return _extension().reassemble(features.contiguous(), masks.contiguous(), kernel_size,
                                   groups, scale)


def kernel_feature_grad(grad_out, masks, kernel_size, groups, scale):
    return _extension().reassemble_feature_grad(grad_out.contiguous(), masks.contiguous(),
                                                kernel_size, groups, scale)


def kernel_mask_grad(grad_out, features, kernel_size, groups, scale):
    return _extension().reassemble_mask_grad(grad_out.contiguous(), features.contiguous(),
                                             kernel_size, groups, scale)


# ------------------------------------------------------------------- autograd family

def _family_backwards(family: Callable[[], tuple]):
    """The backward of each of (reassemble, feature_grad, mask_grad) in terms of the others:
    ``family()`` returns the three callables ``(tensor_a, tensor_b, kernel_size, groups,
    scale) -> tensor`` to use (differentiable themselves, so that ``create_graph=True`` stays
    in the family). ``ctx`` holds the two tensor inputs (saved) and ``config`` (the rest)."""

    def reassemble_backward(ctx, grad):  # inputs (features, masks)
        features, masks = ctx.saved_tensors
        _, feature_grad, mask_grad = family()
        need_features, need_masks = ctx.needs_input_grad[:2]
        return (feature_grad(grad, masks, *ctx.config) if need_features else None,
                mask_grad(grad, features, *ctx.config) if need_masks else None,
                None, None, None)

    def feature_grad_backward(ctx, grad):  # inputs (grad_out, masks)
        grad_out, masks = ctx.saved_tensors
        reassemble, _, mask_grad = family()
        need_grad_out, need_masks = ctx.needs_input_grad[:2]
        return (reassemble(grad, masks, *ctx.config) if need_grad_out else None,
                mask_grad(grad_out, grad, *ctx.config) if need_masks else None,
                None, None, None)

    def mask_grad_backward(ctx, grad):  # inputs (grad_out, features)
        grad_out, features = ctx.saved_tensors
        reassemble, feature_grad, _ = family()
        need_grad_out, need_features = ctx.needs_input_grad[:2]
        return (reassemble(features, grad, *ctx.config) if need_grad_out else None,
                feature_grad(grad_out, grad, *ctx.config) if need_features else None,
                None, None, None)

    return reassemble_backward, feature_grad_backward, mask_grad_backward


def _save(ctx, a, b, config):
    ctx.save_for_backward(a, b)
    ctx.config = tuple(config)


def _autograd_family(name: str, reassemble_fn: Callable, feature_grad_fn: Callable,
                     mask_grad_fn: Callable):
    """Three ``autograd.Function`` classes over one implementation, ``{name}Reassemble``,
    ``{name}FeatureGrad`` and ``{name}MaskGrad``, each differentiated by the others.
    Arguments: ``(tensor_a, tensor_b, kernel_size, groups, scale)``; only the two tensors are
    saved."""
    classes = []
    backwards = _family_backwards(lambda: tuple(cls.apply for cls in classes))
    for suffix, fn, backward in zip(('Reassemble', 'FeatureGrad', 'MaskGrad'),
                                    (reassemble_fn, feature_grad_fn, mask_grad_fn), backwards):

        def forward(ctx, a, b, kernel_size, groups, scale, _fn=fn):
            _save(ctx, a, b, (kernel_size, groups, scale))
            return _fn(a, b, kernel_size, groups, scale)

        classes.append(type(name + suffix, (torch.autograd.Function, ),
                            dict(forward=staticmethod(forward), backward=staticmethod(backward),
                                 __module__=__name__)))
    return tuple(classes)


KernelReassemble, KernelFeatureGrad, KernelMaskGrad = _autograd_family(
    'Kernel', kernel_reassemble, kernel_feature_grad, kernel_mask_grad)
GenericReassemble, GenericFeatureGrad, GenericMaskGrad = _autograd_family(
    'Generic', generic_reassemble, generic_feature_grad, generic_mask_grad)


# ------------------------------------------------------------ custom ops (torch.compile)

@torch.library.custom_op('mmdysample::reassemble', mutates_args=())
def _reassemble_op(features: torch.Tensor, masks: torch.Tensor, kernel_size: int, groups: int,
                   scale: int) -> torch.Tensor:
    """Every device without a kernel of its own: the device-agnostic path."""
    return generic_reassemble(features, masks, kernel_size, groups, scale)


@torch.library.custom_op('mmdysample::reassemble_feature_grad', mutates_args=())
def _feature_grad_op(grad_out: torch.Tensor, masks: torch.Tensor, kernel_size: int,
                     groups: int, scale: int) -> torch.Tensor:
    return generic_feature_grad(grad_out, masks, kernel_size, groups, scale)


@torch.library.custom_op('mmdysample::reassemble_mask_grad', mutates_args=())
def _mask_grad_op(grad_out: torch.Tensor, features: torch.Tensor, kernel_size: int,
                  groups: int, scale: int) -> torch.Tensor:
    return generic_mask_grad(grad_out, features, kernel_size, groups, scale)


_reassemble_op.register_kernel('cpu')(kernel_reassemble)
_feature_grad_op.register_kernel('cpu')(kernel_feature_grad)
_mask_grad_op.register_kernel('cpu')(kernel_mask_grad)


@_reassemble_op.register_fake
def _(features, masks, kernel_size, groups, scale):
    B, C, H, W = features.shape
    return features.new_empty(B, C, scale * H, scale * W)


@_feature_grad_op.register_fake
def _(grad_out, masks, kernel_size, groups, scale):
    B, C, oH, oW = grad_out.shape
    return grad_out.new_empty(B, C, oH // scale, oW // scale)


@_mask_grad_op.register_fake
def _(grad_out, features, kernel_size, groups, scale):
    B, C, oH, oW = grad_out.shape
    return grad_out.new_empty(B, groups * kernel_size * kernel_size, oH, oW)


def _setup(ctx, inputs, output):
    _save(ctx, inputs[0], inputs[1], inputs[2:])


for _op, _backward in zip(
        (_reassemble_op, _feature_grad_op, _mask_grad_op),
        _family_backwards(lambda: (_reassemble_op, _feature_grad_op, _mask_grad_op))):
    _op.register_autograd(_backward, setup_context=_setup)


# ------------------------------------------------------------------------- dispatch

def _kernel_applies(a: torch.Tensor, b: torch.Tensor) -> bool:
    """The CPU kernel: the fused DySample kernel's rules (CPU, one float32/float64 dtype,
    eager or torch.compile, no empty channel or spatial dimension, not traced or exported)
    and switches, and a successful build."""
    return fused_supported(a, b) and _fused_wanted_and_built()


def mmcv_carafe() -> Optional[Callable]:
    """mmcv's CARAFE op (``mmcv.ops.carafe``), or ``None`` where ``mmcv.ops`` cannot be
    imported (imported on first use only: importing mmdysample never loads mmcv)."""
    try:
        from mmcv.ops import carafe
    except Exception:  # not installed, or built without its ops
        return None
    return carafe


def on_mmcv_device(tensor: torch.Tensor) -> bool:
    """Whether mmcv's CARAFE kernel can run on ``tensor``'s device (it has CUDA kernels only)."""
    return tensor.is_cuda


def _mmcv_applies(features: torch.Tensor, kernel_size: int, groups: int) -> bool:
    return (on_mmcv_device(features) and features.dtype in MMCV_DTYPES
            and groups * kernel_size * kernel_size <= MMCV_MAX_MASK_CHANNELS
            and features.numel() > 0)


def reassemble(features: torch.Tensor, masks: torch.Tensor, kernel_size: int, groups: int,
               scale: int) -> torch.Tensor:
    """Content-aware reassembly (see the module docstring), differentiable wrt both inputs.

    No argument checking here (:func:`mmdysample.functional.carafe` checks them).

    Args:
        features: ``(B, C, H, W)``.
        masks: ``(B, groups * k * k, s*H, s*W)`` in ``features``' dtype.

    Returns:
        ``(B, C, s*H, s*W)`` in ``features``' dtype.
    """
    if _kernel_applies(features, masks):
        apply = _reassemble_op if torch.compiler.is_compiling() else KernelReassemble.apply
        return apply(features, masks, kernel_size, groups, scale)
    if standard_operators_only(features, masks):
        return reassemble_unfold(features, masks, kernel_size, groups, scale)
    if _mmcv_applies(features, kernel_size, groups):
        carafe = mmcv_carafe()
        if carafe is not None:
            return carafe(features.contiguous(), masks.to(features.dtype).contiguous(),
                          kernel_size, groups, scale)
    return GenericReassemble.apply(features, masks, kernel_size, groups, scale)


def similarity(query: torch.Tensor, key: torch.Tensor, kernel_size: int,
               scale: int) -> torch.Tensor:
    """SAPA's similarity logits: the dot product of each high-resolution query with the
    ``k x k`` low-resolution keys around its parent pixel (0 for a neighbour outside the map),
    differentiable wrt both inputs. No argument checking here.

    Args:
        query: ``(B, E, s*H, s*W)``.
        key: ``(B, E, H, W)``, ``query``'s dtype.

    Returns:
        ``(B, k * k, s*H, s*W)``; channel ``dy * k + dx`` is the neighbour
        ``(P // s + dy - k // 2, Q // s + dx - k // 2)``.
    """
    if _kernel_applies(query, key):
        apply = _mask_grad_op if torch.compiler.is_compiling() else KernelMaskGrad.apply
        return apply(query, key, kernel_size, 1, scale)
    if standard_operators_only(query, key):
        return similarity_unfold(query, key, kernel_size, scale)
    return GenericMaskGrad.apply(query, key, kernel_size, 1, scale)
