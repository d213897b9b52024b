"""The reference formulation of DySample's point sampling: a normalised sampling grid and
``F.grid_sample`` (bilinear, border padding, ``align_corners=False``). What the fused kernel
reproduces, what runs wherever the kernel does not (CUDA, tracing, ONNX export), and what a
double backward differentiates. Re-exported by :mod:`mmdysample.functional`."""
import torch
import torch.nn.functional as F

__all__ = ['sampling_grid', 'grid_sample_dysample']


def sampling_grid(offset: torch.Tensor, scale_factor: int, groups: int) -> torch.Tensor:
    """Turn low-res offsets into a ``grid_sample`` grid.

    Args:
        offset: ``(B, 2 * g * s * s, H, W)`` offsets in low-res pixel units, relative to each
            low-res pixel centre, channels ordered as :func:`init_sampling_positions` returns.

    Returns:
        ``(B * g, s * H, s * W, 2)`` grid of normalised ``(x, y)`` in ``[-1, 1]``
        (``align_corners=False`` convention).
    """
    s = scale_factor
    B, _, H, W = offset.shape
    offset = offset.view(B, 2, groups * s * s, H, W)
    centre_x = torch.arange(W, dtype=offset.dtype, device=offset.device) + 0.5
    centre_y = torch.arange(H, dtype=offset.dtype, device=offset.device) + 0.5
    # absolute positions normalised to [-1, 1]: x / W * 2 - 1
    grid_x = (offset[:, 0] + centre_x.view(1, 1, 1, W)) * (2.0 / W) - 1
    grid_y = (offset[:, 1] + centre_y.view(1, 1, H, 1)) * (2.0 / H) - 1
    grid = torch.stack([grid_x, grid_y], dim=1).view(B, 2 * groups * s * s, H, W)
    grid = F.pixel_shuffle(grid, s)  # (B, 2 * g, sH, sW)
    grid = grid.view(B, 2, groups, s * H, s * W).permute(0, 2, 3, 4, 1)
    return grid.reshape(B * groups, s * H, s * W, 2)


def grid_sample_dysample(x: torch.Tensor, offset: torch.Tensor, scale_factor: int,
                         groups: int) -> torch.Tensor:
    """The reference path of :func:`dysample` (normalised grid + ``F.grid_sample``), without
    its argument checks, dtype handling or the fused-kernel dispatch: what the fused kernel
    reproduces, and what its double backward differentiates. ``x`` and ``offset`` must share
    a float32/float64 dtype (:func:`dysample` sees to it); otherwise as :func:`dysample`.
    """
    B, C, H, W = x.shape
    grid = sampling_grid(offset, scale_factor, groups)
    out = F.grid_sample(
        x.reshape(B * groups, C // groups, H, W),
        grid,
        mode='bilinear',
        padding_mode='border',
        align_corners=False)
    return out.view(B, C, scale_factor * H, scale_factor * W)
