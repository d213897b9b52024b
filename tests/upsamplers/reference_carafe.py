"""Naive CARAFE reassembly, one output pixel and one neighbour at a time.

A re-statement of mmcv's naive CUDA kernel (``carafe_naive_forward_cuda_kernel``): output
pixel ``(p, q)`` of channel ``c`` sums, over the ``k x k`` neighbours ``(ky, kx)`` of input
pixel ``(p // s, q // s)`` that lie inside the map (zero padding), the neighbour's value times
mask channel ``group * k * k + ky * k + kx`` at ``(p, q)``, where
``group = c // (C / group_size)``.
"""
import torch


def carafe_naive(features: torch.Tensor, masks: torch.Tensor, kernel_size: int,
                 group_size: int, scale: int) -> torch.Tensor:
    """``features`` ``(B, C, H, W)``, ``masks`` ``(B, group_size*k*k, s*H, s*W)`` ->
    ``(B, C, s*H, s*W)`` in float64."""
    B, C, H, W = features.shape
    features, masks = features.double(), masks.double()
    half = (kernel_size - 1) // 2
    per_group = C // group_size
    out = torch.zeros(B, C, scale * H, scale * W, dtype=torch.float64)
    for out_row in range(scale * H):
        for out_col in range(scale * W):
            centre_row, centre_col = out_row // scale, out_col // scale
            for ky in range(kernel_size):
                row = centre_row - half + ky
                if not 0 <= row < H:
                    continue
                for kx in range(kernel_size):
                    col = centre_col - half + kx
                    if not 0 <= col < W:
                        continue
                    for group in range(group_size):
                        channels = slice(group * per_group, (group + 1) * per_group)
                        weight = masks[:, group * kernel_size * kernel_size + ky * kernel_size
                                       + kx, out_row, out_col]  # (B,)
                        out[:, channels, out_row, out_col] += (
                            features[:, channels, row, col] * weight.view(B, 1))
    return out
