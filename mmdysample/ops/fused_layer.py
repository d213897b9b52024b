"""A whole DySample layer (offset projection, scope, sampling) as one autograd node on CPU.

:class:`mmdysample.upsamplers.DySample` computes its offsets with a 1x1 projection of ``x``
and samples ``x`` at them. Composed from separate autograd nodes, a training step keeps three
input-sized gradients alive at once (the sampling's, the projection's and their sum) and runs
one projection per branch. Here the layer is one node:

* the projection is a matrix product on ``x`` viewed as ``(B, C_in, N)`` (LP style: ``C_in = C``,
  ``N = H * W``; PL style: ``C_in = C / s^2``, ``N = s^2 * H * W``: the pixel-shuffled map read
  in place), and the dynamic scope's projection is stacked under the offset's, so one product
  gives both (:func:`project_offsets`, shared with the composed path so that both compute the
  same offsets bit for bit);
* the backward adds the projection's input gradient *into* the sampling kernel's input
  gradient (``baddbmm_``), so a step holds one input-sized gradient, as bilinear
  interpolation does; only the offsets are saved, and the dynamic scope's gate is recomputed
  after the kernel's backward (see :func:`_layer_backward`);
* the sampling is the fused kernel of :mod:`mmdysample.ops.sampling`.

:func:`fused_layer_supported` says when this path applies (CPU, float32/float64 parameters and
input of one dtype, NCHW-contiguous input, no CPU autocast, the fused kernel on and built);
:class:`DySample` takes the composed path otherwise. Eager calls go through an
``autograd.Function``, ``torch.compile`` traces the custom ops ``mmdysample::dysample_layer``
and ``mmdysample::dysample_layer_backward`` (same kernels). A double backward
(``create_graph=True``) differentiates the composed reference formulation.
"""
from typing import Optional, Tuple

import torch
import torch.nn.functional as F

from .reference import grid_sample_dysample
from .sampling import (_extension, _fused_wanted_and_built, _sample_backward_cpu,
                       _sample_cpu, fused_supported)

__all__ = [
    'project_offsets', 'offsets_from_projection', 'fused_layer_supported', 'fused_dysample_layer'
]


def project_offsets(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor],
                    scale_factor: int, style: str) -> torch.Tensor:
    """DySample's 1x1 offset projection of ``x``, ``(B, O * r, H, W)`` where ``O`` is
    ``weight``'s output channels and ``r = 1`` ('lp') or ``s^2`` ('pl', the projection of the
    pixel-shuffled map, unshuffled back: ``pixel_unshuffle(conv(pixel_shuffle(x)))``).

    Computed as one matrix product on ``x`` viewed as ``(B, C_in, N)`` (input channel
    ``c * s^2 + k`` of the PL style is sub-pixel ``k`` of shuffled channel ``c``, so ``x``
    viewed as ``(B, C / s^2, s^2 * H * W)`` *is* the shuffled map), in eager mode and under
    ``torch.compile``. Traced, scripted and ONNX-exported graphs take the convolution form
    (``Conv`` nodes, what deployment tools fuse and FLOP counters read; equal to the product up
    to float rounding, ~1e-6 relative in float32).

    Args:
        weight: ``(O, C_in, 1, 1)`` (a 1x1 convolution's weight; several stacked along ``O``).
        bias: ``(O,)`` or ``None``.
    """
    s = scale_factor
    if torch.jit.is_scripting() or torch.jit.is_tracing() or torch.onnx.is_in_onnx_export():
        if style == 'pl':
            return F.pixel_unshuffle(F.conv2d(F.pixel_shuffle(x, s), weight, bias), s)
        return F.conv2d(x, weight, bias)
    B, C, H, W = x.shape
    out_channels, in_channels = weight.shape[:2]
    # bmm over the expanded weight: torch.matmul(2-D, 3-D) folds the batch by copying x
    proj = torch.bmm(weight.view(1, out_channels, in_channels).expand(B, -1, -1),
                     _as_matrix(x, in_channels))
    if bias is not None:  # in place (one offset-sized tensor less) unless autocast lowered proj
        bias = bias.view(out_channels, 1)
        proj = proj.add_(bias) if proj.dtype == bias.dtype else proj + bias
    return proj.view(B, out_channels * (C // in_channels), H, W)


def _as_matrix(x: torch.Tensor, in_channels: int) -> torch.Tensor:
    """``x`` as the projection's ``(B, C_in, N)`` input (sizes spelt out: an empty batch
    cannot infer ``N``)."""
    B, C, H, W = x.shape
    return x.reshape(B, in_channels, (C // in_channels) * H * W)


def offsets_from_projection(projection: torch.Tensor, init_pos: Optional[torch.Tensor],
                            scope_factor: float, dyscope: bool, dtype: torch.dtype,
                            inplace: bool = False) -> torch.Tensor:
    """Sampling offsets in ``dtype`` from the projection: static scope ``p * f + init``;
    dynamic scope (``projection`` = offset half then scope half along channels)
    ``o * (sigmoid(z) * 2f) + init`` (paper Eq. 5 and 6). ``init_pos=None``: the learned part
    alone. ``inplace``: the static scope reuses ``projection``'s memory (same arithmetic)."""
    projection = projection.to(dtype)
    if dyscope:
        offset, scope = projection.chunk(2, dim=1)
        learned = offset * (scope.sigmoid() * (2 * scope_factor))
    elif inplace:
        learned = projection.mul_(scope_factor)
    else:
        learned = projection * scope_factor
    if init_pos is None:
        return learned
    if inplace and not dyscope:
        return learned.add_(init_pos.to(dtype))
    return learned + init_pos.to(dtype)


def fused_layer_supported(x: torch.Tensor, *params: Optional[torch.Tensor]) -> bool:
    """Whether :func:`fused_dysample_layer` handles ``x`` with these parameters: what the
    fused sampling kernel takes (:func:`mmdysample.ops.fused_supported`, switches on, kernel
    built), plus an NCHW-contiguous ``x``, parameters of ``x``'s dtype on the CPU as plain
    tensors, and no CPU autocast (whose reduced-precision projection the composed path
    reproduces). Under ``torch.compile`` the layer is the custom op ``mmdysample::dysample_layer``
    (decided when the graph is traced)."""
    if not x.is_contiguous():
        return False
    if torch.is_autocast_enabled('cpu'):
        return False
    compiling = torch.compiler.is_compiling()
    for param in params:
        if param is not None and (param.dtype != x.dtype or param.device != x.device or (
                not compiling and type(param) not in (torch.Tensor, torch.nn.Parameter))):
            return False
    return fused_supported(x, x) and _fused_wanted_and_built()


def _composed(x, weight, bias, init_pos, config) -> torch.Tensor:
    """The layer composed of differentiable operators, reference sampling (double backward)."""
    s, groups, style, scope_factor, dyscope = config
    projection = project_offsets(x, weight, bias, s, style)
    offset = offsets_from_projection(projection, init_pos, scope_factor, dyscope, x.dtype)
    return grid_sample_dysample(x, offset, s, groups)


def layer_offsets(x, weight, bias, init_pos, config) -> torch.Tensor:
    """A layer's sampling offsets from ``x`` (``init_pos=None``: the learned part), in ``x``'s
    dtype, computed in the projection's memory (freed on return unless it is reused)."""
    s, _, style, scope_factor, dyscope = config
    return offsets_from_projection(project_offsets(x, weight, bias, s, style), init_pos,
                                   scope_factor, dyscope, x.dtype, inplace=True)


def _layer_forward(x, weight, bias, init_pos, config):
    """(output, offsets) by the fused kernel."""
    offset = layer_offsets(x, weight, bias, init_pos, config)
    return _sample_cpu(x, offset, *config[:2]), offset


def _layer_backward(grad_out, x, weight, bias, init_pos, offset, config, needs):
    """Gradients wrt (x, weight, bias), ``None`` where not needed.

    Memory: besides ``x`` only the offsets are saved; with the dynamic scope its gate is
    recomputed after the sampling kernel's backward (one product of the scope rows on ``x``),
    and the chain rule runs in place on the kernel's offset gradient and the gate (the
    learned offset ``o * gate * 2f`` is recovered as ``offset - init_pos``, a rounding of
    ``init_pos``'s last bit, ~1e-8 px). So the kernel's backward, then the chain rule, each
    hold at most three offset-sized tensors (offsets, their gradient, and the kernel's
    scratch or the gate). The projection's input gradient is added into the kernel's input
    gradient."""
    s, groups, style, scope_factor, dyscope = config
    need_x, need_weight, need_bias = needs
    need_projection = need_weight or need_bias or need_x
    grad_x, grad_offset = _sample_backward_cpu(grad_out.contiguous(), x, offset, s, groups,
                                               need_x, need_projection)
    grad_x = grad_x if need_x else None
    if not need_projection:
        return grad_x, None, None
    # gradient wrt the projection, by rows of the weight: [(rows, gradient)]
    if dyscope:  # d/do = g * gate * 2f; d/dz = g * L * (1 - gate), in place
        half = weight.shape[0] // 2
        gate = project_offsets(x, weight[half:], None if bias is None else bias[half:], s,
                               style).sigmoid_()
        _extension().dyscope_chain(grad_offset, gate, offset,
                                   init_pos.reshape(-1).to(offset.dtype).contiguous(),
                                   scope_factor)
        parts = [(slice(0, half), grad_offset), (slice(half, None), gate)]
    else:
        parts = [(slice(None), grad_offset.mul_(scope_factor))]
    grad_weight, grad_bias = projection_backward(parts, x, weight, bias, grad_x, need_weight,
                                                 need_bias)
    return grad_x, grad_weight, grad_bias


def projection_backward(parts, x: torch.Tensor, weight: torch.Tensor,
                        bias: Optional[torch.Tensor], grad_x: Optional[torch.Tensor],
                        need_weight: bool, need_bias: bool):
    """The backward of :func:`project_offsets` (eager form): gradients wrt ``weight`` and
    ``bias`` (``None`` where not needed), and the input gradient added in place into
    ``grad_x`` (NCHW-contiguous, skipped when ``None``), so that a layer's backward holds one
    input-sized gradient.

    Args:
        parts: ``[(rows, gradient)]``: for a slice of ``weight``'s rows, the gradient wrt those
            rows' projection, ``(B, rows * r, H, W)`` contiguous.
    """
    B, in_channels = x.shape[0], weight.shape[1]
    x_matrix = _as_matrix(x, in_channels)
    matrix = weight.view(weight.shape[0], in_channels)
    grad_weight = torch.empty_like(matrix) if need_weight else None
    grad_bias = torch.empty_like(bias) if need_bias else None
    for rows, grad in parts:
        grad = grad.view(B, matrix[rows].shape[0], x_matrix.shape[2])
        if need_weight:
            torch.sum(torch.bmm(grad, x_matrix.transpose(1, 2)), 0, out=grad_weight[rows])
        if need_bias:
            torch.sum(grad, (0, 2), out=grad_bias[rows])
        if grad_x is not None:  # the projection's input gradient, added in place
            grad_x.view(B, in_channels, x_matrix.shape[2]).baddbmm_(
                matrix[rows].t().unsqueeze(0).expand(B, -1, -1), grad)
    return (grad_weight.view_as(weight) if need_weight else None), grad_bias


def _double_backward(grad_out, x, weight, bias, init_pos, config, needs):
    """``create_graph=True``: differentiable gradients through the composed formulation."""
    inputs = [t for t, need in zip((x, weight, bias), needs) if need]
    grads = iter(torch.autograd.grad(_composed(x, weight, bias, init_pos, config), inputs,
                                     grad_out, create_graph=True))
    return tuple(next(grads) if need else None for need in needs)


def layer_function(name: str, layer_forward, layer_backward, doc: str):
    """An ``autograd.Function`` class running a DySample layer as one node: ``layer_forward(x,
    weight, bias, init_pos, config) -> (output, saved)`` with ``saved`` the one offset-sized
    tensor kept for ``layer_backward(grad_out, x, weight, bias, init_pos, saved, config,
    needs) -> (grad_x, grad_weight, grad_bias)``. A double backward (``create_graph=True``)
    differentiates the composed formulation. Applied as ``cls.apply(x, weight, bias,
    init_pos, config)``."""

    def forward(ctx, x, weight, bias, init_pos, config):
        out, saved = layer_forward(x, weight, bias, init_pos, config)
        ctx.config = config
        ctx.save_for_backward(x, weight, bias, init_pos, saved)
        return out

    def backward(ctx, grad_out):
        x, weight, bias, init_pos, saved = ctx.saved_tensors
        needs = tuple(ctx.needs_input_grad[:3])
        if torch.is_grad_enabled():
            grads = _double_backward(grad_out, x, weight, bias, init_pos, ctx.config, needs)
        else:
            grads = layer_backward(grad_out, x, weight, bias, init_pos, saved, ctx.config,
                                   needs)
        return grads + (None, None)

    return type(name, (torch.autograd.Function, ),
                dict(forward=staticmethod(forward), backward=staticmethod(backward),
                     __doc__=doc, __module__=__name__))


_FusedDySampleLayer = layer_function(
    '_FusedDySampleLayer', _layer_forward, _layer_backward,
    'The eager path. Saves ``x`` (already held by the caller) and the offsets.')


# ------------------------------------------------------------- torch.compile: custom ops
# The same forward and backward as torch.library custom ops, which AOTAutograd keeps as
# opaque nodes (an autograd.Function calling the extension would break the graph). Eager
# calls go through _FusedDySampleLayer (the ops' Python dispatch costs more per call).

@torch.library.custom_op('mmdysample::dysample_layer', mutates_args=())
def _layer_op(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor],
              init_pos: torch.Tensor, scale_factor: int, groups: int, style: str,
              scope_factor: float, dyscope: bool) -> Tuple[torch.Tensor, torch.Tensor]:
    config = (scale_factor, groups, style, scope_factor, dyscope)
    return _layer_forward(x, weight, bias, init_pos, config)


@_layer_op.register_fake
def _layer_op_fake(x, weight, bias, init_pos, scale_factor, groups, style, scope_factor,
                   dyscope):
    B, C, H, W = x.shape
    return (x.new_empty((B, C, scale_factor * H, scale_factor * W)),
            x.new_empty((B, 2 * groups * scale_factor**2, H, W)))


@torch.library.custom_op('mmdysample::dysample_layer_backward', mutates_args=())
def _layer_backward_op(grad_out: torch.Tensor, x: torch.Tensor, weight: torch.Tensor,
                       bias: Optional[torch.Tensor], init_pos: torch.Tensor,
                       offset: torch.Tensor, scale_factor: int,
                       groups: int, style: str, scope_factor: float, dyscope: bool,
                       need_x: bool, need_weight: bool,
                       need_bias: bool) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    config = (scale_factor, groups, style, scope_factor, dyscope)
    grads = _layer_backward(grad_out, x, weight, bias, init_pos, offset, config,
                            (need_x, need_weight, need_bias))
    return tuple(x.new_empty(0) if g is None else g for g in grads)


@_layer_backward_op.register_fake
def _layer_backward_op_fake(grad_out, x, weight, bias, init_pos, offset, scale_factor,
                            groups, style, scope_factor, dyscope, need_x, need_weight,
                            need_bias):
    return (torch.empty_like(x) if need_x else x.new_empty(0),
            torch.empty_like(weight) if need_weight else x.new_empty(0),
            torch.empty_like(bias) if need_bias and bias is not None else x.new_empty(0))


def _layer_op_setup_context(ctx, inputs, output):
    x, weight, bias, init_pos, *config = inputs
    _, offset = output
    ctx.config = tuple(config)
    ctx.save_for_backward(x, weight, bias, init_pos, offset)


def _layer_op_backward(ctx, grad_out, _grad_offset):
    x, weight, bias, init_pos, offset = ctx.saved_tensors
    needs = (ctx.needs_input_grad[0], ctx.needs_input_grad[1],
             ctx.needs_input_grad[2] and bias is not None)
    if torch.is_grad_enabled():
        grads = _double_backward(grad_out, x, weight, bias, init_pos, ctx.config, needs)
    else:
        grads = _layer_backward_op(grad_out, x, weight, bias, init_pos, offset, *ctx.config,
                                   *needs)
        grads = tuple(g if need else None for g, need in zip(grads, needs))
    return grads + (None, ) * 6


_layer_op.register_autograd(_layer_op_backward, setup_context=_layer_op_setup_context)


def fused_dysample_layer(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor],
                         init_pos: torch.Tensor, scale_factor: int, groups: int, style: str,
                         scope_factor: float, dyscope: bool) -> torch.Tensor:
    """A DySample layer's output ``(B, C, s*H, s*W)`` as one autograd node (see the module
    docstring); arguments unchecked (:class:`mmdysample.upsamplers.DySample` checks them and
    :func:`fused_layer_supported` must hold).

    Args:
        weight, bias: the offset projection's (``(O, C_in, 1, 1)``, ``(O,)``), with the dynamic
            scope's stacked under them when ``dyscope`` (bias zeros where the scope has none).
        init_pos: ``(1, O, 1, 1)`` initial positions (``O = 2 * groups * s^2``).
    """
    config: Tuple = (int(scale_factor), int(groups), style, float(scope_factor), bool(dyscope))
    if torch.compiler.is_compiling():
        return _layer_op(x, weight, bias, init_pos, *config)[0]
    return _FusedDySampleLayer.apply(x, weight, bias, init_pos, config)
