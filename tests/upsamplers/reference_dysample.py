"""An independent re-statement of DySample (paper Sec. 3) used as the oracle of the tests.

Written from the paper and from the public module's documented layout, not from
``mmdysample``: it shares no code with the library and does not call ``F.grid_sample``,
``F.pixel_shuffle`` or ``F.pixel_unshuffle``. Every index is spelt out:

* The offset conv predicts, for each channel group ``k`` and each of the ``s x s`` output
  pixels ``(s*i + a, s*j + b)`` born from input pixel ``(i, j)``, a displacement ``(dx, dy)``
  in input pixels. LP reads it at low resolution from channel ``xy*g*s*s + k*s*s + a*s + b``
  of a 1x1 conv ``C -> 2*g*s*s``; PL reads it at high resolution from channel ``xy*g + k`` of
  a 1x1 conv ``C/s^2 -> 2*g`` applied to the pixel-shuffled input, whose channel ``c'`` at
  ``(s*i + a, s*j + b)`` is input channel ``c'*s*s + a*s + b`` at ``(i, j)``.
* The raw displacement is multiplied by the static factor (0.25) or by
  ``2 * factor * sigmoid(scope)``, then the initial position of sub-pixel ``(a, b)`` is added:
  ``((b + 0.5)/s - 0.5, (a + 0.5)/s - 0.5)`` (bilinear init) or ``(0, 0)`` (nearest init).
* The authors sample with ``grid_sample(align_corners=False, padding_mode='border')`` at the
  normalised position ``2 * (centre + offset) / size - 1`` where ``centre = j + 0.5``.
  Un-normalising with ``align_corners=False`` (``index = ((g + 1) * size - 1) / 2``) gives the
  array index ``j + dx``: the output is the bilinear interpolation of the group's channels at
  index ``(j + dx, i + dy)``, the index clamped to ``[0, W - 1] x [0, H - 1]`` first (border
  padding). That is what :func:`bilinear_sample_border` computes with explicit gathers, and
  :func:`bilinear_sample_border_scalar` with plain Python floats.
"""
import math
from fractions import Fraction
from typing import List, Sequence

import torch
import torch.nn as nn


def reference_init_pos(scale: int, groups: int, init: str = 'bilinear') -> torch.Tensor:
    """``(1, 2*g*s*s, 1, 1)`` float64 tensor, channel ``xy*g*s*s + k*s*s + a*s + b``."""
    values = []
    for xy in range(2):
        for _group in range(groups):
            for row in range(scale):
                for col in range(scale):
                    if init == 'nearest':
                        values.append(0.0)
                    else:
                        sub = col if xy == 0 else row
                        values.append((sub + 0.5) / scale - 0.5)
    return torch.tensor(values, dtype=torch.float64).view(1, -1, 1, 1)


def bilinear_sample_border_scalar(plane: Sequence[Sequence[float]], index_x: float,
                                  index_y: float) -> float:
    """Bilinear value of a 2-D list ``plane[row][col]`` at array index ``(index_x, index_y)``,
    the index clamped into the map first (``grid_sample`` border padding)."""
    height, width = len(plane), len(plane[0])
    index_x = min(max(index_x, 0.0), width - 1.0)
    index_y = min(max(index_y, 0.0), height - 1.0)
    col0, row0 = int(math.floor(index_x)), int(math.floor(index_y))
    frac_x, frac_y = index_x - col0, index_y - row0
    total = 0.0
    for row, weight_y in ((row0, 1.0 - frac_y), (row0 + 1, frac_y)):
        for col, weight_x in ((col0, 1.0 - frac_x), (col0 + 1, frac_x)):
            if weight_x * weight_y != 0.0:  # the far neighbour of an index on the last row/col
                total += weight_x * weight_y * plane[row][col]
    return total


def bilinear_sample_border(features: torch.Tensor, index_x: torch.Tensor,
                           index_y: torch.Tensor) -> torch.Tensor:
    """Vectorised :func:`bilinear_sample_border_scalar`.

    Args:
        features: ``(N, C, H, W)``.
        index_x, index_y: ``(N, P, Q)`` array indices (column, row), any real values.

    Returns:
        ``(N, C, P, Q)``.
    """
    N, C, H, W = features.shape
    index_x = index_x.clamp(0, W - 1)
    index_y = index_y.clamp(0, H - 1)
    col0 = index_x.floor()
    row0 = index_y.floor()
    frac_x = index_x - col0
    frac_y = index_y - row0
    col0, row0 = col0.long(), row0.long()
    col1 = (col0 + 1).clamp(max=W - 1)
    row1 = (row0 + 1).clamp(max=H - 1)
    batch = torch.arange(N).view(N, 1, 1)

    def gather(rows, cols):  # (N, P, Q, C) -> (N, C, P, Q)
        return features[batch, :, rows, cols].permute(0, 3, 1, 2)

    frac_x, frac_y = frac_x.unsqueeze(1), frac_y.unsqueeze(1)
    return (gather(row0, col0) * (1 - frac_x) * (1 - frac_y)
            + gather(row0, col1) * frac_x * (1 - frac_y)
            + gather(row1, col0) * (1 - frac_x) * frac_y
            + gather(row1, col1) * frac_x * frac_y)


def dysample_scalar_loop(x: torch.Tensor, offset: torch.Tensor, scale: int,
                         groups: int) -> torch.Tensor:
    """DySample's sampling step, one output value at a time in plain Python (tiny inputs only).

    ``offset`` is ``(B, 2*g*s*s, H, W)`` in input pixels relative to each pixel centre, initial
    positions included; returns ``(B, C, s*H, s*W)`` float64.
    """
    B, C, H, W = x.shape
    planes: List = x.double().tolist()
    offsets: List = offset.double().tolist()
    per_group = C // groups
    out = torch.empty(B, C, scale * H, scale * W, dtype=torch.float64)
    for n in range(B):
        for channel in range(C):
            group = channel // per_group
            for out_row in range(scale * H):
                row, sub_row = divmod(out_row, scale)
                for out_col in range(scale * W):
                    col, sub_col = divmod(out_col, scale)
                    k = group * scale * scale + sub_row * scale + sub_col
                    dx = offsets[n][k][row][col]
                    dy = offsets[n][groups * scale * scale + k][row][col]
                    out[n, channel, out_row, out_col] = bilinear_sample_border_scalar(
                        planes[n][channel], col + dx, row + dy)
    return out


def _pointwise_conv(features: torch.Tensor, conv: nn.Conv2d) -> torch.Tensor:
    """A 1x1 convolution written as a channel contraction."""
    out = torch.einsum('oc,bchw->bohw', conv.weight[:, :, 0, 0], features)
    if conv.bias is not None:
        out = out + conv.bias.view(1, -1, 1, 1)
    return out


class ReferenceDySample(nn.Module):
    """DySample as the authors' public module defines it (same parameter names and shapes),
    generalised to the ablation knobs (``init``, ``scope_factor``, ``scope_bias``)."""

    def __init__(self, in_channels: int, scale: int = 2, style: str = 'lp', groups: int = 4,
                 dyscope: bool = False, init: str = 'bilinear', scope_factor: float = 0.25,
                 scope_bias: bool = False):
        super().__init__()
        self.scale, self.style, self.groups = scale, style, groups
        self.scope_factor = scope_factor
        if style == 'pl':
            conv_in, conv_out = in_channels // (scale * scale), 2 * groups
        else:
            conv_in, conv_out = in_channels, 2 * groups * scale * scale
        self.offset = nn.Conv2d(conv_in, conv_out, 1)
        if dyscope:
            self.scope = nn.Conv2d(conv_in, conv_out, 1, bias=scope_bias)
        self.register_buffer('init_pos', reference_init_pos(scale, groups, init).float())

    def _scaled(self, features: torch.Tensor) -> torch.Tensor:
        raw = _pointwise_conv(features, self.offset)
        if hasattr(self, 'scope'):
            return raw * torch.sigmoid(_pointwise_conv(features, self.scope)) \
                * (2 * self.scope_factor)
        return raw * self.scope_factor

    def relative_positions(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 2, g, s*H, s*W)``: displacement (x then y) of every output pixel from the
        centre of the input pixel it is born from, initial position included."""
        B, C, H, W = x.shape
        s, g = self.scale, self.groups
        init_pos = self.init_pos.to(x.dtype).view(2, g, s, s)
        out_rows = torch.arange(s * H)
        out_cols = torch.arange(s * W)
        sub_row = (out_rows % s).view(-1, 1)
        sub_col = (out_cols % s).view(1, -1)
        if self.style == 'lp':
            scaled = self._scaled(x).view(B, 2, g, s, s, H, W)
            # output (s*i + a, s*j + b) <- element [..., a, b, i, j]
            rel = scaled[:, :, :, sub_row, sub_col, (out_rows // s).view(-1, 1),
                         (out_cols // s).view(1, -1)]
        else:
            shuffled_channels = torch.arange(C // (s * s)).view(-1, 1, 1)
            source_channel = shuffled_channels * s * s + sub_row * s + sub_col
            x_high = x[:, source_channel, (out_rows // s).view(1, -1, 1),
                       (out_cols // s).view(1, 1, -1)]  # (B, C/s^2, sH, sW)
            rel = self._scaled(x_high).view(B, 2, g, s * H, s * W)
        return rel + init_pos[:, :, sub_row, sub_col].unsqueeze(0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, C, H, W = x.shape
        s, g = self.scale, self.groups
        rel = self.relative_positions(x)
        index_x = rel[:, 0] + (torch.arange(s * W) // s).to(x.dtype).view(1, 1, 1, -1)
        index_y = rel[:, 1] + (torch.arange(s * H) // s).to(x.dtype).view(1, 1, -1, 1)
        out = bilinear_sample_border(x.reshape(B * g, C // g, H, W),
                                     index_x.reshape(B * g, s * H, s * W),
                                     index_y.reshape(B * g, s * H, s * W))
        return out.reshape(B, C, s * H, s * W)


def dysample_to_size_scalar_loop(x: torch.Tensor, offset: torch.Tensor, size, scale: int,
                                 groups: int, init: str = 'bilinear') -> torch.Tensor:
    """DySample to an exact ``size``, one output value at a time (tiny inputs only), from the
    stated geometry with exact rational arithmetic: output point ``(Y, X)`` lies at
    ``((X + 1/2) W / W_out, (Y + 1/2) H / H_out)`` in input pixels (pixel ``j`` spans
    ``[j, j + 1)``); its base sampling index is that point minus 1/2 (``'bilinear'``) or the
    index of the pixel it lies in (``'nearest'``); it adds the learned offset of the
    ``1/s``-sub-pixel it lies in. ``offset``: ``(B, 2*g*s*s, H, W)`` learned offsets only
    (no initial positions). Returns ``(B, C, H_out, W_out)`` float64.
    """
    B, C, H, W = x.shape
    out_h, out_w = size
    planes: List = x.double().tolist()
    offsets: List = offset.double().tolist()
    per_group = C // groups
    out = torch.empty(B, C, out_h, out_w, dtype=torch.float64)

    def locate(out_index, out_size, in_size):
        point = (out_index + Fraction(1, 2)) * in_size / out_size  # in [0, in_size)
        sub = min(math.floor(point * scale), scale * in_size - 1)
        pixel, sub_index = divmod(sub, scale)
        base = point - Fraction(1, 2) if init == 'bilinear' else min(math.floor(point),
                                                                      in_size - 1)
        return pixel, sub_index, float(base)

    for out_row in range(out_h):
        row, sub_row, base_y = locate(out_row, out_h, H)
        for out_col in range(out_w):
            col, sub_col, base_x = locate(out_col, out_w, W)
            for n in range(B):
                for channel in range(C):
                    k = (channel // per_group) * scale * scale + sub_row * scale + sub_col
                    dx = offsets[n][k][row][col]
                    dy = offsets[n][groups * scale * scale + k][row][col]
                    out[n, channel, out_row, out_col] = bilinear_sample_border_scalar(
                        planes[n][channel], base_x + dx, base_y + dy)
    return out
