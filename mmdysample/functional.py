"""Pure tensor functions behind the upsampler layers.

No ``nn.Module`` and no registry here: the layers in :mod:`mmdysample.upsamplers` are thin
wrappers that own parameters and call these functions, the way ``torchvision.ops`` pairs
``deform_conv2d`` with ``DeformConv2d``.

Coordinates follow ``F.grid_sample(align_corners=False)``: the low-resolution pixel ``(i, j)``
has its centre at ``(j + 0.5, i + 0.5)`` in pixel units, and an offset of ``(dx, dy)`` moves a
sampling point by ``dx`` low-resolution pixels to the right and ``dy`` pixels down.
"""
from numbers import Integral, Real
from typing import Optional

import torch
import torch.nn.functional as F

__all__ = [
    'check_scale_factor', 'check_positive_int', 'check_bool', 'check_feature',
    'init_sampling_positions', 'sampling_grid', 'dysample', 'grid_sample_dysample', 'carafe'
]

INIT_STYLES = ('bilinear', 'nearest')


def check_scale_factor(scale_factor, name: str = 'scale_factor') -> int:
    """Return ``scale_factor`` as an ``int`` >= 2, or raise naming ``name``.

    Integer-valued floats (``2.0``) are accepted; ``1.5``, ``1``, ``True`` and strings are not.
    """
    if isinstance(scale_factor, bool) or not isinstance(scale_factor, Real):
        raise TypeError(f'{name} must be an integer >= 2, got {scale_factor!r} '
                        f'of type {type(scale_factor).__name__}')
    if not isinstance(scale_factor, Integral) and not float(scale_factor).is_integer():
        raise ValueError(f'{name} must be an integer >= 2, got {scale_factor!r}')
    if int(scale_factor) < 2:
        raise ValueError(f'{name} must be an integer >= 2, got {scale_factor!r}')
    return int(scale_factor)


def check_positive_int(value, name: str) -> int:
    """Return ``value`` as an ``int`` >= 1, or raise a ``ValueError`` naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, Integral) or value < 1:
        raise ValueError(f'{name} must be a positive integer, got {value!r}')
    return int(value)


def check_bool(value, name: str) -> bool:
    """Return ``value`` if it is a ``bool``, else raise a ``TypeError`` naming ``name``
    (so that ``dyscope='False'`` cannot silently mean ``True``)."""
    if not isinstance(value, bool):
        raise TypeError(f'{name} must be True or False, got {value!r}')
    return value


def check_feature(x, name: str = 'x', channels: Optional[int] = None) -> None:
    """Raise unless ``x`` is a 4-D (B, C, H, W) tensor with ``channels`` channels if given."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f'{name} must be a torch.Tensor of shape (B, C, H, W), '
                        f'got {type(x).__name__}')
    if x.dim() != 4:
        raise ValueError(f'{name} must be a 4-D tensor of shape (B, C, H, W), '
                         f'got shape {tuple(x.shape)}')
    if channels is not None and x.shape[1] != channels:
        raise ValueError(f'{name} must have {channels} channels (the layer\'s in_channels), '
                         f'got shape {tuple(x.shape)}')


def init_sampling_positions(scale_factor: int,
                            groups: int = 1,
                            init: str = 'bilinear',
                            dtype: torch.dtype = torch.float32,
                            device=None) -> torch.Tensor:
    """Initial offsets of the ``s x s`` output points of each input pixel.

    Args:
        scale_factor: the upsampling ratio ``s``.
        groups: number of sampling groups ``g``; every group gets the same positions.
        init: ``'bilinear'`` puts sub-pixel ``(a, b)`` of a ``s x s`` block at
            ``((b + 0.5) / s - 0.5, (a + 0.5) / s - 0.5)``, so that zero learned offsets
            reproduce bilinear interpolation (paper Fig. 3b); ``'nearest'`` puts all of
            them at the pixel centre, reproducing nearest interpolation (Fig. 3a).

    Returns:
        Tensor of shape ``(1, 2 * g * s * s, 1, 1)``, laid out as
        ``[x or y][group][row a][column b]``: the channel order :func:`dysample` expects.
    """
    s = check_scale_factor(scale_factor)
    groups = check_positive_int(groups, 'groups')
    if init not in INIT_STYLES:
        raise ValueError(f'init must be one of {INIT_STYLES}, got {init!r}')
    if init == 'nearest':
        return torch.zeros(1, 2 * groups * s * s, 1, 1, dtype=dtype, device=device)
    steps = (torch.arange(s, dtype=torch.float64) + 0.5) / s - 0.5
    pos_y, pos_x = torch.meshgrid(steps, steps, indexing='ij')  # (s, s): row a, column b
    positions = torch.stack([pos_x, pos_y])  # (2, s, s)
    positions = positions[:, None].expand(2, groups, s, s)
    return positions.reshape(1, -1, 1, 1).to(dtype=dtype, device=device)


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


def dysample(x: torch.Tensor, offset: torch.Tensor, scale_factor: int = 2,
             groups: int = 1) -> torch.Tensor:
    """Upsample ``x`` by sampling it at learned positions (DySample, paper Eq. 1-5).

    Each of the ``s * s`` output pixels born from input pixel ``(i, j)`` is a bilinear sample
    of ``x`` at the pixel centre plus its offset; points outside the map take the nearest
    border value (``padding_mode='border'``). Channels are split into ``groups`` groups of
    ``C / groups`` channels, each group sampled at its own positions.

    Args:
        x: ``(B, C, H, W)`` feature map, ``C`` divisible by ``groups``.
        offset: ``(B, 2 * groups * s * s, H, W)`` positions relative to the low-res pixel
            centres, in low-res pixel units (include the initial positions from
            :func:`init_sampling_positions`); the first ``groups * s * s`` channels are x
            offsets, the rest y offsets.
        scale_factor: integer ``s >= 2``.
        groups: number of offset groups ``g``.

    Returns:
        ``(B, C, s * H, s * W)`` tensor of ``x``'s dtype.
    """
    s = check_scale_factor(scale_factor)
    check_feature(x, 'x')
    check_feature(offset, 'offset')
    groups = check_positive_int(groups, 'groups')
    B, C, H, W = x.shape
    if C % groups:
        raise ValueError(f'channels of x ({C}) must be divisible by groups ({groups})')
    expected = (B, 2 * groups * s * s, H, W)
    if tuple(offset.shape) != expected:
        raise ValueError(f'offset must have shape (B, 2 * groups * s * s, H, W) = {expected} '
                         f'for x of shape {tuple(x.shape)}, groups={groups}, '
                         f'scale_factor={s}; got {tuple(offset.shape)}')
    # Fused CPU kernel (mmdysample.ops): same values and gradients as the grid_sample path
    # below, in one pass. Used for CPU float32/float64 inputs unless MMDYSAMPLE_FUSED=0 or
    # mmdysample.ops.use_fused(False); returns None otherwise. Imported here: loads on use.
    from .ops import fused_dysample_if_supported
    fused_out = fused_dysample_if_supported(x, offset, s, groups)
    if fused_out is not None:
        return fused_out
    return grid_sample_dysample(x, offset, s, groups)


def grid_sample_dysample(x: torch.Tensor, offset: torch.Tensor, scale_factor: int,
                         groups: int) -> torch.Tensor:
    """The reference path of :func:`dysample` (normalised grid + ``F.grid_sample``), without
    its argument checks or the fused-kernel dispatch: what the fused kernel reproduces, and
    what its double backward differentiates. Same arguments and result as :func:`dysample`.
    """
    B, C, H, W = x.shape
    grid = sampling_grid(offset, scale_factor, groups).to(x.dtype)
    out = F.grid_sample(
        x.reshape(B * groups, C // groups, H, W),
        grid,
        mode='bilinear',
        padding_mode='border',
        align_corners=False)
    return out.view(B, C, scale_factor * H, scale_factor * W)


def carafe(features: torch.Tensor, masks: torch.Tensor, kernel_size: int, group_size: int,
           scale_factor: int) -> torch.Tensor:
    """CARAFE feature reassembly in plain PyTorch (same semantics as ``mmcv.ops.carafe``).

    Output pixel ``(p, q)`` of channel ``c`` is the weighted sum of the ``k x k`` input
    neighbourhood centred on ``(p // s, q // s)`` (zero outside the map), with the weights
    ``masks[:, g * k * k + m, p, q]`` for neighbour ``m`` (row-major) of the channel's group
    ``g = c // (C / group_size)``.

    Args:
        features: ``(B, C, H, W)``.
        masks: ``(B, group_size * k * k, s * H, s * W)`` reassembly kernels (normalised by
            the caller, e.g. softmax over each group's ``k * k`` weights).
        kernel_size: odd ``k``.
        group_size: number of kernel groups; ``C`` must be divisible by it.
        scale_factor: integer ``s >= 2``.

    Returns:
        ``(B, C, s * H, s * W)``.

    The neighbourhoods are gathered at low resolution (``unfold``) and combined with the
    ``s * s`` kernels of each input pixel by one batched contraction, so memory grows with
    ``C * k * k * H * W`` rather than with the upsampled size.
    """
    s = check_scale_factor(scale_factor)
    check_feature(features, 'features')
    check_feature(masks, 'masks')
    if kernel_size < 1 or kernel_size % 2 == 0:
        raise ValueError(f'kernel_size must be a positive odd integer, got {kernel_size!r}')
    B, C, H, W = features.shape
    if group_size < 1 or C % group_size:
        raise ValueError(f'channels of features ({C}) must be divisible by group_size '
                         f'({group_size})')
    k2 = kernel_size * kernel_size
    expected = (B, group_size * k2, s * H, s * W)
    if tuple(masks.shape) != expected:
        raise ValueError(f'masks must have shape (B, group_size * k * k, s * H, s * W) = '
                         f'{expected}, got {tuple(masks.shape)}')
    neighbours = F.unfold(features, kernel_size, padding=kernel_size // 2)
    neighbours = neighbours.view(B, group_size, C // group_size, k2, H, W)
    kernels = masks.view(B, group_size, k2, H, s, W, s).to(features.dtype)
    out = torch.einsum('bgckhw,bgkhiwj->bgchiwj', neighbours, kernels)
    return out.reshape(B, C, s * H, s * W)
