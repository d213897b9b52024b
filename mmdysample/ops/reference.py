"""The reference formulation of DySample's point sampling: a normalised sampling grid and
``F.grid_sample`` (bilinear, border padding, ``align_corners=False``), and its gradients
written out with aten's ``grid_sampler_2d_backward``. What the fused kernel reproduces, what
runs wherever the kernel does not (CUDA, MPS, tracing, ONNX export), and what a double
backward differentiates. Pure PyTorch operators; re-exported by :mod:`mmdysample.functional`.
"""
from typing import Optional, Tuple

import torch
import torch.nn.functional as F

__all__ = ['sampling_grid', 'grid_sample_dysample', 'grid_sample_dysample_backward']

# aten::grid_sampler_2d's enums: interpolation mode bilinear, padding mode border
_BILINEAR, _BORDER = 0, 1


def sampling_grid(offset: torch.Tensor, scale_factor: int, groups: int) -> torch.Tensor:
    """Turn low-res offsets into a ``grid_sample`` grid.

    Args:
        offset: ``(B, 2 * g * s * s, H, W)`` offsets in low-res pixel units, relative to each
            low-res pixel centre, channels ordered as :func:`init_sampling_positions` returns.

    Returns:
        ``(B * g, s * H, s * W, 2)`` grid of normalised ``(x, y)`` in ``[-1, 1]``
        (``align_corners=False`` convention): output point ``(i * s + a, j * s + b)`` of group
        ``k`` takes channel ``(k * s + a) * s + b`` (x, and that plus ``g * s * s`` for y) at
        low-res pixel ``(i, j)``.
    """
    s = scale_factor
    B, _, H, W = offset.shape
    # (x|y, B, g, H, a, W, b): the grid's element order, as a view (one copy, in the stack).
    # Rearranged by permute rather than pixel_shuffle, whose CPU backward (pixel_unshuffle)
    # returns the wrong shape for an empty batch (pytorch/pytorch#192816).
    offset = offset.view(B, 2, groups, s, s, H, W).permute(1, 0, 2, 5, 3, 6, 4)
    centre_x = torch.arange(W, dtype=offset.dtype, device=offset.device) + 0.5
    centre_y = torch.arange(H, dtype=offset.dtype, device=offset.device) + 0.5
    # absolute positions normalised to [-1, 1]: x / W * 2 - 1
    grid_x = (offset[0] + centre_x.view(W, 1)) * (2.0 / W) - 1
    grid_y = (offset[1] + centre_y.view(H, 1, 1, 1)) * (2.0 / H) - 1
    return torch.stack([grid_x, grid_y], dim=-1).reshape(B * groups, s * H, s * W, 2)


def offset_gradient(grad_grid: torch.Tensor, batch: int, scale_factor: int, groups: int,
                    height: int, width: int) -> torch.Tensor:
    """The gradient wrt the offsets of :func:`sampling_grid` given its grid's gradient:
    the grid's layout undone and the normalisation's factors ``2 / W`` (x) and ``2 / H`` (y)
    applied, as autograd does through :func:`sampling_grid` (same products)."""
    s = scale_factor
    # (B, g, H, a, W, b, x|y) -> (B, x|y, g, a, b, H, W)
    grad = grad_grid.view(batch, groups, height, s, width, s, 2).permute(0, 6, 1, 3, 5, 2, 4)
    out = grad_grid.new_empty((batch, 2, groups, s, s, height, width))
    torch.mul(grad[:, 0], 2.0 / width, out=out[:, 0])
    torch.mul(grad[:, 1], 2.0 / height, out=out[:, 1])
    return out.view(batch, 2 * groups * s * s, height, width)


def grid_sample_dysample(x: torch.Tensor, offset: torch.Tensor, scale_factor: int,
                         groups: int, init_pos: Optional[torch.Tensor] = None) -> torch.Tensor:
    """The reference path of :func:`dysample` (normalised grid + ``F.grid_sample``), without
    its argument checks, dtype handling or the fused-kernel dispatch: what the fused kernel
    reproduces, and what its double backward differentiates. ``x`` and ``offset`` must share
    a float32/float64 dtype (:func:`dysample` sees to it); otherwise as :func:`dysample`.
    With ``init_pos`` given, ``offset`` holds the learned offsets and the sampling offsets
    ``offset + init_pos`` exist only while the grid is built.
    """
    B, C, H, W = x.shape
    grid = sampling_grid(offset if init_pos is None else offset + init_pos, scale_factor,
                         groups)
    out = F.grid_sample(
        x.reshape(B * groups, C // groups, H, W),
        grid,
        mode='bilinear',
        padding_mode='border',
        align_corners=False)
    return out.view(B, C, scale_factor * H, scale_factor * W)


def grid_sample_dysample_backward(
        grad_out: torch.Tensor, x: torch.Tensor, offset: torch.Tensor, scale_factor: int,
        groups: int, need_x_grad: bool, need_offset_grad: bool,
        init_pos: Optional[torch.Tensor] = None
) -> Tuple[Optional[torch.Tensor], Optional[torch.Tensor]]:
    """Gradients of :func:`grid_sample_dysample` wrt ``x`` and ``offset`` (``None`` where not
    asked for), without autograd: aten's ``grid_sampler_2d_backward`` on the recomputed grid,
    then :func:`offset_gradient`. The same operations autograd runs through the reference
    path, so the same values (bit for bit on CPU); runs on any device and inside a custom
    op's kernel, where autograd is off.

    Memory: the grid is recomputed here and released before the offsets' gradient is laid
    out, so at most two offset-sized tensors are alive besides ``offset``. With ``init_pos``
    given, ``offset`` holds the learned offsets and the sampling offsets ``offset + init_pos``
    (rounded as the forward rounded them) exist only while the grid is built.

    Args:
        grad_out: ``(B, C, s * H, s * W)``, ``x``'s dtype.
        x: ``(B, C, H, W)``.
        offset: ``(B, 2 * g * s * s, H, W)``, ``x``'s dtype.
        init_pos: ``(1, 2 * g * s * s, 1, 1)`` or ``None``.

    Returns:
        ``(grad_x, grad_offset)``: ``grad_x`` NCHW-contiguous of ``x``'s shape,
        ``grad_offset`` of ``offset``'s shape.
    """
    B, C, H, W = x.shape
    s = scale_factor
    grid = sampling_grid(offset if init_pos is None else offset + init_pos, s, groups)
    grad_x, grad_grid = torch.ops.aten.grid_sampler_2d_backward(
        grad_out.reshape(B * groups, C // groups, s * H, s * W),
        x.reshape(B * groups, C // groups, H, W), grid, _BILINEAR, _BORDER, False,
        [need_x_grad, need_offset_grad])
    del grid
    if need_x_grad:
        grad_x = grad_x.view(B, C, H, W)
    grad_offset = offset_gradient(grad_grid, B, s, groups, H, W) if need_offset_grad else None
    return (grad_x if need_x_grad else None), grad_offset
