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

from .ops import grid_sample_dysample, sample_fused_or_reference, sampling_grid
from .ops.reassembly import reassemble

__all__ = [
    'check_scale_factor', 'check_positive_int', 'check_bool', 'check_feature', 'check_size',
    'check_groups', 'check_odd_kernel', 'pixel_shuffle',
    'position_dtype', 'init_sampling_positions', 'sampling_grid', 'resized_sampling_grid',
    'dysample', 'dysample_to_size', 'grid_sample_dysample', 'carafe'
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


def check_odd_kernel(kernel_size, name: str) -> int:
    """Return ``kernel_size`` if it is a positive odd integer (size-preserving padding
    ``(k - 1) // 2``), else raise a ``ValueError`` naming ``name``."""
    if check_positive_int(kernel_size, name) % 2 == 0:
        raise ValueError(f'{name} must be a positive odd integer, got {kernel_size!r}')
    return int(kernel_size)


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


def check_size(size, name: str = 'size') -> tuple:
    """Return ``size`` as a ``(height, width)`` tuple of positive ints, or raise naming ``name``."""
    if (isinstance(size, (str, bytes)) or not hasattr(size, '__len__') or len(size) != 2
            or any(isinstance(v, bool) or not isinstance(v, Integral) or v < 1 for v in size)):
        raise ValueError(f'{name} must be a pair of positive integers (height, width), '
                         f'got {size!r}')
    return int(size[0]), int(size[1])


def check_groups(channels: int, groups: int, name: str, note: str = '') -> None:
    """Raise a ``ValueError`` unless ``groups`` divides ``channels`` (the channel count called
    ``name``), naming the valid choices: the divisors of ``channels``. ``note`` follows the
    group count in the message (e.g. where it came from)."""
    if channels % groups:
        divisors = ', '.join(str(d) for d in range(1, channels + 1) if channels % d == 0)
        raise ValueError(f'{name} ({channels}) must be divisible by groups ({groups}{note}); '
                         f'pass groups= one of the divisors of {channels}: {divisors}')


def position_dtype(*tensors: torch.Tensor) -> torch.dtype:
    """The dtype sampling positions are computed and used in: ``float64`` if any of
    ``tensors`` is float64, else ``float32`` (also for float16/bfloat16 features, whose 8 or 11
    significant bits cannot hold a coordinate such as 167.75: positions in the feature's own
    dtype would move sampling points by up to half a pixel)."""
    if any(t.dtype == torch.float64 for t in tensors):
        return torch.float64
    return torch.float32


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


def _check_sampling_inputs(x, offset, s: int, groups) -> tuple:
    """Check :func:`dysample`'s ``x``, ``offset`` and ``groups``; return ``x``'s shape."""
    check_feature(x, 'x')
    check_feature(offset, 'offset')
    groups = check_positive_int(groups, 'groups')
    B, C, H, W = x.shape
    check_groups(C, groups, 'channels of x')
    expected = (B, 2 * groups * s * s, H, W)
    if tuple(offset.shape) != expected:
        raise ValueError(f'offset must have shape (B, 2 * groups * s * s, H, W) = {expected} '
                         f'for x of shape {tuple(x.shape)}, groups={groups}, '
                         f'scale_factor={s}; got {tuple(offset.shape)}')
    for name, t in (('x', x), ('offset', offset)):
        if not t.is_floating_point():
            raise TypeError(f'{name} must be a floating-point tensor, got {t.dtype}')
    return B, C, H, W


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
        ``(B, C, s * H, s * W)`` tensor of ``x``'s dtype. Sampling positions are computed and
        used in float32 (float64 if ``x`` or ``offset`` is float64) whatever the feature
        dtype: a float16/bfloat16 ``x`` is sampled in float32 and the result rounded once.
    """
    s = check_scale_factor(scale_factor)
    _check_sampling_inputs(x, offset, s, groups)
    groups = int(groups)
    # Positions in float32 (float64 for float64 inputs) whatever the feature dtype; a
    # low-precision feature is sampled in that dtype and the result rounded back once. The
    # fused CPU kernel (mmdysample.ops) takes CPU inputs unless MMDYSAMPLE_FUSED=0 or
    # mmdysample.ops.use_fused(False); the grid_sample reference path everything else.
    return sample_fused_or_reference(x, offset.to(position_dtype(x, offset)), s, groups)


def _sub_pixel_index(out_size: int, in_size: int, scale_factor: int) -> torch.Tensor:
    """For each of ``out_size`` output points spread over ``in_size`` input pixels
    (``F.interpolate``'s geometry), the index of the ``1 / scale_factor`` sub-pixel its
    centre falls in: ``floor((i + 0.5) * s * in_size / out_size)``, in exact integers."""
    index = torch.arange(out_size, dtype=torch.int64)
    index = ((2 * index + 1) * (scale_factor * in_size)) // (2 * out_size)
    return index.clamp_(max=scale_factor * in_size - 1)


def _base_coordinates(out_size: int, in_size: int, init: str) -> torch.Tensor:
    """Normalised (``align_corners=False``) zero-offset position of each output point along
    one axis: ``F.interpolate(mode='bilinear')``'s source point for ``init='bilinear'``,
    the centre of the input pixel the point falls in for ``init='nearest'`` (float64)."""
    index = torch.arange(out_size, dtype=torch.float64)
    if init == 'bilinear':
        return (2 * index + 1) / out_size - 1
    pixel = torch.div((2 * index + 1) * in_size, 2 * out_size, rounding_mode='floor')
    return (2 * pixel.clamp_(max=in_size - 1) + 1) / in_size - 1


def pixel_shuffle(x: torch.Tensor, scale: int) -> torch.Tensor:
    """``F.pixel_shuffle(x, scale)``, ``(B, C * s * s, H, W) -> (B, C, s * H, s * W)``, also
    on empty tensors: there a reshape (nothing moves), because ``F.pixel_shuffle``'s CPU
    backward (``pixel_unshuffle``) returns a gradient of its input's shape for zero elements
    (pytorch/pytorch#192816)."""
    if x.numel() == 0:
        B, C, H, W = x.shape
        return x.reshape(B, C // (scale * scale), scale * H, scale * W)
    return F.pixel_shuffle(x, scale)


def resized_sampling_grid(offset: torch.Tensor, size, scale_factor: int, groups: int,
                          init: str = 'bilinear') -> torch.Tensor:
    """``grid_sample`` grid of :func:`dysample_to_size`: the zero-offset positions of an
    ``size`` output (see :func:`dysample_to_size`) plus, at each output point, the learned
    offset of the sub-pixel (of the ``s x s`` split of each input pixel) its centre falls in.

    Args:
        offset: ``(B, 2 * g * s * s, H, W)`` learned offsets in input pixels, *without* the
            initial positions, channels ordered as :func:`init_sampling_positions` returns.
        size: ``(H_out, W_out)``.

    Returns:
        ``(B * g, H_out, W_out, 2)`` grid of normalised ``(x, y)``, in ``offset``'s dtype.
    """
    s = scale_factor
    B, _, H, W = offset.shape
    out_h, out_w = size
    shuffled = pixel_shuffle(offset, s)  # (B, 2 * g, sH, sW): [x|y][group]
    rows = _sub_pixel_index(out_h, H, s).to(offset.device)
    cols = _sub_pixel_index(out_w, W, s).to(offset.device)
    picked = shuffled.index_select(2, rows).index_select(3, cols).view(B, 2, groups, out_h,
                                                                         out_w)
    base_x = _base_coordinates(out_w, W, init).to(offset.device, offset.dtype)
    base_y = _base_coordinates(out_h, H, init).to(offset.device, offset.dtype)
    grid_x = picked[:, 0] * (2.0 / W) + base_x.view(1, 1, 1, out_w)
    grid_y = picked[:, 1] * (2.0 / H) + base_y.view(1, 1, out_h, 1)
    return torch.stack([grid_x, grid_y], dim=-1).view(B * groups, out_h, out_w, 2)


def dysample_to_size(x: torch.Tensor, offset: torch.Tensor, size, scale_factor: int = 2,
                     groups: int = 1, init: str = 'bilinear') -> torch.Tensor:
    """DySample to an exact output size: :func:`dysample` for ``(H_out, W_out)`` other than
    ``(s * H, s * W)`` (odd sizes, non-integer ratios).

    Geometry (``F.interpolate``'s, ``align_corners=False``): output point ``(Y, X)`` sits at
    ``((X + 0.5) * W / W_out, (Y + 0.5) * H / H_out)`` in input pixels (pixel ``j`` spans
    ``[j, j + 1)``). With ``init='bilinear'`` its zero-offset sampling point is that position,
    i.e. ``F.interpolate(x, size, mode='bilinear', align_corners=False)``'s source point;
    with ``init='nearest'`` it is the centre of the input pixel the position falls in. The
    learned offset added to it is the one predicted for the sub-pixel it falls in: input pixel
    ``(i, j)`` is split into ``s x s`` sub-pixels, sub-pixel ``(a, b)`` owning the offset of
    channel ``(k * s + a) * s + b`` (x) of group ``k``. At ``size = (s * H, s * W)`` this is
    exactly :func:`dysample` with ``offset + init_sampling_positions(s, groups, init)``.

    Args:
        x: ``(B, C, H, W)``, ``C`` divisible by ``groups``.
        offset: ``(B, 2 * groups * s * s, H, W)`` learned offsets in input pixels, *without*
            the initial positions (those follow from ``size`` and ``init``).
        size: ``(H_out, W_out)``, positive integers (smaller than the input is allowed).
        scale_factor: ``s``, the sub-pixel split the offsets were predicted for.
        groups: offset groups ``g``.
        init: ``'bilinear'`` or ``'nearest'`` zero-offset positions.

    Returns:
        ``(B, C, H_out, W_out)`` tensor of ``x``'s dtype (positions in float32 or float64).
    """
    s = check_scale_factor(scale_factor)
    size = check_size(size)
    if init not in INIT_STYLES:
        raise ValueError(f'init must be one of {INIT_STYLES}, got {init!r}')
    B, C, H, W = _check_sampling_inputs(x, offset, s, groups)
    groups = int(groups)
    dtype = position_dtype(x, offset)
    offset = offset.to(dtype)
    if size == (s * H, s * W):  # the exact x``s`` path (fused kernel where available)
        init_pos = init_sampling_positions(s, groups, init, dtype=dtype, device=offset.device)
        return sample_fused_or_reference(x, offset + init_pos, s, groups)
    grid = resized_sampling_grid(offset, size, s, groups, init)
    out = F.grid_sample(
        x.to(dtype).reshape(B * groups, C // groups, H, W),
        grid,
        mode='bilinear',
        padding_mode='border',
        align_corners=False)
    return out.view(B, C, *size).to(x.dtype)


def carafe(features: torch.Tensor, masks: torch.Tensor, kernel_size: int, group_size: int,
           scale_factor: int) -> torch.Tensor:
    """CARAFE feature reassembly (same semantics as ``mmcv.ops.carafe``), on every device.

    Output pixel ``(p, q)`` of channel ``c`` is the weighted sum of the ``k x k`` input
    neighbourhood centred on ``(p // s, q // s)`` (zero outside the map), with the weights
    ``masks[:, g * k * k + m, p, q]`` for neighbour ``m`` (row-major) of the channel's group
    ``g = c // (C / group_size)``.

    Args:
        features: ``(B, C, H, W)``.
        masks: ``(B, group_size * k * k, s * H, s * W)`` reassembly kernels (normalised by
            the caller, e.g. softmax over each group's ``k * k`` weights); used in
            ``features``' dtype.
        kernel_size: odd ``k``.
        group_size: number of kernel groups; ``C`` must be divisible by it.
        scale_factor: integer ``s >= 2``.

    Returns:
        ``(B, C, s * H, s * W)`` in ``features``' dtype.

    No unfolded tensor is made (:func:`mmdysample.ops.reassembly.reassemble`): CPU
    float32/float64 tensors take the C++ kernel (forward and backward), CUDA tensors mmcv's
    CARAFE kernel where ``mmcv.ops`` imports, everything else a device-agnostic path whose
    memory stays within a fraction of the output; traced and exported graphs get
    ``F.unfold`` and one ``einsum`` (standard operators).
    """
    s = check_scale_factor(scale_factor)
    check_feature(features, 'features')
    check_feature(masks, 'masks')
    check_odd_kernel(kernel_size, 'kernel_size')
    B, C, H, W = features.shape
    if (isinstance(group_size, bool) or not isinstance(group_size, Integral) or group_size < 1
            or C % group_size):
        raise ValueError(f'channels of features ({C}) must be divisible by group_size '
                         f'({group_size})')
    k2 = kernel_size * kernel_size
    expected = (B, group_size * k2, s * H, s * W)
    if tuple(masks.shape) != expected:
        raise ValueError(f'masks must have shape (B, group_size * k * k, s * H, s * W) = '
                         f'{expected}, got {tuple(masks.shape)}')
    for name, t in (('features', features), ('masks', masks)):
        if not t.is_floating_point():
            raise TypeError(f'{name} must be a floating-point tensor, got {t.dtype}')
    return reassemble(features, masks.to(features.dtype), int(kernel_size), int(group_size), s)
