"""A whole DySample layer as one autograd node in pure PyTorch: the composed path (CUDA, MPS,
XPU, and CPU without the fused kernel) with the fused CPU layer's memory.

Autograd through the composition (offset projection, scope, :func:`.reference.sampling_grid`,
``F.grid_sample``) keeps the grid for the backward and, in the backward, holds three
input-sized gradients at once: ``grid_sample``'s, the projection's and their sum (a training
step at 2x256x128x128 peaked at 1.40x bilinear interpolation's memory). Here:

* the forward runs the composition's own operators (:func:`.fused_layer.project_offsets`,
  :func:`.fused_layer.offsets_from_projection`, :func:`.reference.grid_sample_dysample`), so
  its output is the composition's bit for bit; it saves ``x`` (which the caller holds
  anyway), the parameters and the learned offsets (the offsets before the initial positions
  are added), one offset-sized tensor;
* the backward recomputes the grid from them (the same sum and operators as the forward) and
  calls aten's ``grid_sampler_2d_backward``, the operator autograd calls
  (:func:`.reference.grid_sample_dysample_backward`); the dynamic scope's gate is recomputed
  (one product of the scope rows with ``x``) and its chain rule runs in place on the offset
  gradient and the gate; the projection's input gradient is added into ``grid_sample``'s
  input gradient (:func:`.fused_layer.projection_backward`), so one input-sized gradient is
  alive, as with bilinear interpolation.

:func:`lean_layer_supported` says when it applies: eager mode on plain tensors (no
``torch.compile``, tracing, scripting, ``torch.export`` or ONNX export, vmap: those get the
composition of standard operators), float32/float64 input and parameters of one dtype on
one device, and no autocast on the input's device (its reduced-precision projection and
gradients are autograd's; that case takes the composition, whose sampling still saves
only ``x`` and the offsets, see :func:`.sampling.sample_fused_or_reference`).
:class:`mmdysample.upsamplers.DySample` uses it where the fused CPU layer does not apply.
"""
from typing import Optional, Tuple

import torch

from .fused_layer import layer_function, layer_offsets, project_offsets, projection_backward
from .reference import grid_sample_dysample, grid_sample_dysample_backward
from .sampling import autocast_enabled, eager_plain_tensors

__all__ = ['lean_layer_supported', 'lean_dysample_layer']

LEAN_DTYPES = (torch.float32, torch.float64)


def lean_layer_supported(x: torch.Tensor, *params: Optional[torch.Tensor]) -> bool:
    """Whether :func:`lean_dysample_layer` runs ``x`` with these parameters (``None`` entries
    are skipped): see the module docstring."""
    params = tuple(p for p in params if p is not None)
    if not eager_plain_tensors(x, *params) or x.dtype not in LEAN_DTYPES:
        return False
    if autocast_enabled(x.device.type):
        return False
    return all(p.dtype == x.dtype and p.device == x.device for p in params)


def _lean_forward(x, weight, bias, init_pos, config):
    """(output, learned offsets): the composition's operators."""
    learned = layer_offsets(x, weight, bias, None, config)
    return grid_sample_dysample(x, learned, *config[:2], init_pos=init_pos), learned


def _lean_backward(grad_out, x, weight, bias, init_pos, learned, config, needs):
    """Gradients wrt (x, weight, bias), ``None`` where not needed.

    Memory, besides ``x``, the output and its gradient: the learned offsets (saved), and at
    most two more offset-sized tensors at a time: the grid and its gradient, then the
    offsets' gradient and (dynamic scope) the recomputed gate, on which the chain rule runs in
    place (no temporary):

        gate <- gate * g            (g * gate)
        g    <- (g - gate) * L      (g * (1 - gate) * L: the gradient wrt the scope logits)
        gate <- gate * 2f           (g * gate * 2f: the gradient wrt the raw offsets)

    with ``L = o * gate * 2f`` the learned offsets (paper Eq. 6)."""
    s, groups, style, scope_factor, dyscope = config
    need_x, need_weight, need_bias = needs
    need_projection = need_weight or need_bias or need_x
    grad_x, grad_offset = grid_sample_dysample_backward(grad_out, x, learned, s, groups, need_x,
                                                        need_projection, init_pos=init_pos)
    if not need_projection:
        return grad_x, None, None
    if dyscope:
        half = weight.shape[0] // 2
        gate = project_offsets(x, weight[half:], None if bias is None else bias[half:], s,
                               style).sigmoid_()
        gate.mul_(grad_offset)
        grad_offset.sub_(gate).mul_(learned)
        parts = [(slice(0, half), gate.mul_(2 * scope_factor)),
                 (slice(half, None), grad_offset)]
    else:
        parts = [(slice(None), grad_offset.mul_(scope_factor))]
    grad_weight, grad_bias = projection_backward(parts, x, weight, bias, grad_x, need_weight,
                                                 need_bias)
    return grad_x, grad_weight, grad_bias


_LeanDySampleLayer = layer_function(
    '_LeanDySampleLayer', _lean_forward, _lean_backward,
    'The lean composed layer. Saves ``x`` (already held by the caller) and the learned '
    'offsets.')


def lean_dysample_layer(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor],
                        init_pos: torch.Tensor, scale_factor: int, groups: int, style: str,
                        scope_factor: float, dyscope: bool) -> torch.Tensor:
    """A DySample layer's output ``(B, C, s*H, s*W)`` as one autograd node of PyTorch
    operators (see the module docstring); arguments unchecked
    (:class:`mmdysample.upsamplers.DySample` checks them and :func:`lean_layer_supported` must
    hold). Arguments as :func:`mmdysample.ops.fused_layer.fused_dysample_layer`'s."""
    config: Tuple = (int(scale_factor), int(groups), style, float(scope_factor), bool(dyscope))
    return _LeanDySampleLayer.apply(x, weight, bias, init_pos, config)
