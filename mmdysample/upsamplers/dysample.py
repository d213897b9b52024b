"""DySample: upsampling by learned point sampling (Liu et al., ICCV 2023, Sec. 3)."""
from numbers import Real

import torch
import torch.nn as nn

from ..functional import INIT_STYLES, check_bool, check_feature, check_groups, \
    check_positive_int, check_scale_factor, check_size, dysample, dysample_to_size, \
    init_sampling_positions, position_dtype
from ..ops.fused_layer import fused_dysample_layer, fused_layer_supported, \
    offsets_from_projection, project_offsets
from ..ops.lean_layer import lean_dysample_layer, lean_layer_supported
from .builder import register_upsampler

STYLES = ('lp', 'pl')
DEFAULT_GROUPS = {'lp': 4, 'pl': 8}


@register_upsampler('DySample')
class DySample(nn.Module):
    """DySample upsampler.

    A 1x1 convolution predicts, for each input pixel, the offsets of its ``s x s`` output
    points (per channel group); the output is the input bilinearly sampled at the initial
    positions plus the offsets (paper Eq. 4/5).

    Args:
        in_channels: channels ``C`` of the input.
        scale_factor: integer upsampling ratio ``s >= 2``.
        style: ``'lp'`` (linear then pixel shuffle: conv ``C -> 2*g*s*s`` at low resolution)
            or ``'pl'`` (pixel shuffle then linear: conv ``C/(s*s) -> 2*g`` at high
            resolution, offsets pixel-unshuffled back).
        groups: offset groups ``g``; ``None`` takes the paper's default (4 for 'lp',
            8 for 'pl'). ``C`` must be divisible by ``g``.
        dyscope: add the dynamic scope: offsets scaled by
            ``2 * scope_factor * sigmoid(scope(x))`` instead of ``scope_factor``.
        init: initial sampling positions, ``'bilinear'`` (paper default) or ``'nearest'``.
        scope_factor: static scope factor (0.25 in the paper); positive.
        scope_bias: give the dynamic-scope conv a bias (zero-initialised). The public module
            has none; the authors' detection fork has one, so its checkpoints need this.

    Shape:
        ``(B, C, H, W) -> (B, C, s*H, s*W)``, or ``(B, C, *size)`` with ``forward(x, size)``:
        any output size, sampled at ``F.interpolate(x, size, mode='bilinear',
        align_corners=False)``'s positions plus the learned offsets (see
        :func:`mmdysample.functional.dysample_to_size`).

    Precision: sampling positions are computed and used in float32 (float64 for float64
    inputs) whatever the dtype of ``x`` or of the module (bf16/fp16 weights, autocast); the
    output has ``x``'s dtype.

    Parameters and buffers are named as in the authors' public module (``offset``,
    ``scope``, ``init_pos``), so its state dicts load with ``strict=True``.
    """
    requires_guide = False
    accepts_size = True

    def __init__(self,
                 in_channels: int,
                 scale_factor: int = 2,
                 style: str = 'lp',
                 groups=None,
                 dyscope: bool = False,
                 init: str = 'bilinear',
                 scope_factor: float = 0.25,
                 scope_bias: bool = False):
        super().__init__()
        s = check_scale_factor(scale_factor)
        if style not in STYLES:
            raise ValueError(f'style must be one of {STYLES}, got {style!r}')
        default_groups = groups is None
        if default_groups:
            groups = DEFAULT_GROUPS[style]
        groups = check_positive_int(groups, 'groups')
        check_bool(dyscope, 'dyscope')
        check_bool(scope_bias, 'scope_bias')
        if init not in INIT_STYLES:
            raise ValueError(f'init must be one of {INIT_STYLES}, got {init!r}')
        if (isinstance(scope_factor, bool) or not isinstance(scope_factor, Real)
                or not scope_factor > 0):
            raise ValueError(f'scope_factor must be a positive number, got {scope_factor!r}')
        in_channels = check_positive_int(in_channels, 'in_channels')
        if style == 'pl' and in_channels % (s * s):
            lower = in_channels // (s * s) * (s * s)
            examples = ' or '.join(str(c) for c in (lower, lower + s * s) if c > 0)
            raise ValueError(
                f"in_channels ({in_channels}) must be divisible by scale_factor**2 ({s * s}) "
                f"for style='pl' (its offsets are predicted from the pixel-shuffled map, "
                f"in_channels / {s * s} channels); use style='lp', or a multiple of {s * s} "
                f"channels (e.g. {examples})")
        check_groups(in_channels, groups, 'in_channels',
                     f", the default for style={style!r}" if default_groups else '')

        self.in_channels = in_channels
        self.scale_factor = s
        self.style = style
        self.groups = groups
        self.dyscope = dyscope
        self.init = init
        self.scope_factor = float(scope_factor)

        if style == 'pl':
            conv_in, conv_out = in_channels // (s * s), 2 * groups
        else:
            conv_in, conv_out = in_channels, 2 * groups * s * s
        self.offset = nn.Conv2d(conv_in, conv_out, 1)
        if dyscope:
            self.scope = nn.Conv2d(conv_in, conv_out, 1, bias=scope_bias)
        elif scope_bias:
            raise ValueError('scope_bias=True needs dyscope=True (there is no scope conv '
                             'without the dynamic scope)')
        self.register_buffer('init_pos', init_sampling_positions(s, groups, init))
        self.init_weights()

    def init_weights(self):
        """Paper initialisation: offsets ~ N(0, 0.001), zero bias, zero scope weights."""
        nn.init.normal_(self.offset.weight, std=0.001)
        nn.init.zeros_(self.offset.bias)
        if self.dyscope:
            nn.init.zeros_(self.scope.weight)
            if self.scope.bias is not None:
                nn.init.zeros_(self.scope.bias)

    def projection_parameters(self):
        """Weight ``(O, C_in, 1, 1)`` and bias ``(O,)`` of the offset projection, with the
        dynamic scope's stacked under them (one matrix product computes both; a scope without
        bias contributes zeros)."""
        if not self.dyscope:
            return self.offset.weight, self.offset.bias
        scope_bias = self.scope.bias if self.scope.bias is not None else \
            torch.zeros_like(self.offset.bias)
        return (torch.cat([self.offset.weight, self.scope.weight]),
                torch.cat([self.offset.bias, scope_bias]))

    def _offsets(self, x: torch.Tensor, init_pos, weight=None, bias=None) -> torch.Tensor:
        if weight is None:
            weight, bias = self.projection_parameters()
        projection = project_offsets(x, weight, bias, self.scale_factor, self.style)
        return offsets_from_projection(projection, init_pos, self.scope_factor, self.dyscope,
                                       position_dtype(x))

    def learned_offsets(self, x: torch.Tensor) -> torch.Tensor:
        """The learned part of the sampling offsets, in input pixels, scaled by the static or
        dynamic scope, in float32 (float64 for float64 ``x``).

        Returns ``(B, 2 * groups * s * s, H, W)``, laid out as :func:`sampling_offsets`. The
        PL style's projection reads ``x`` as the pixel-shuffled map in place (see
        :func:`mmdysample.ops.fused_layer.project_offsets`).
        """
        return self._offsets(x, None)

    def initial_positions(self, dtype: torch.dtype) -> torch.Tensor:
        """``init_pos`` in ``dtype``: the buffer itself, or recomputed when the module was cast
        to a dtype that cannot hold it (e.g. 1/3 in bfloat16)."""
        if self.init_pos.dtype == dtype or self.init_pos.dtype == torch.float64:
            return self.init_pos.to(dtype)
        return init_sampling_positions(self.scale_factor, self.groups, self.init, dtype=dtype,
                                       device=self.init_pos.device)

    def sampling_offsets(self, x: torch.Tensor) -> torch.Tensor:
        """Sampling positions relative to the input pixel centres, in input pixels, in float32
        (float64 for float64 ``x``).

        Returns ``(B, 2 * groups * s * s, H, W)``: the ``offset`` argument of
        :func:`mmdysample.functional.dysample` (initial positions included).
        """
        return self._offsets(x, self.initial_positions(position_dtype(x)))

    def forward(self, x: torch.Tensor, size=None) -> torch.Tensor:
        """``(B, C, H, W) -> (B, C, s*H, s*W)``, or exactly ``size = (H_out, W_out)``."""
        check_feature(x, 'x', self.in_channels)
        s = self.scale_factor
        if size is not None:
            size = check_size(size)
        if size is None or size == (s * x.shape[2], s * x.shape[3]):
            weight, bias = self.projection_parameters()
            init_pos = self.initial_positions(position_dtype(x))
            config = (s, self.groups, self.style, self.scope_factor, self.dyscope)
            # one result, three paths: the fused CPU layer; the lean composed layer (one
            # autograd node of PyTorch operators: other devices, the kernel switched off);
            # the plain composition (autocast, mixed dtypes, compile, trace, export)
            if fused_layer_supported(x, weight, bias, init_pos):
                return fused_dysample_layer(x, weight, bias, init_pos, *config)
            if lean_layer_supported(x, weight, bias, init_pos):
                return lean_dysample_layer(x, weight, bias, init_pos, *config)
            return dysample(x, self._offsets(x, init_pos, weight, bias), s, self.groups)
        return dysample_to_size(x, self.learned_offsets(x), size, s, self.groups, self.init)

    def extra_repr(self):
        return (f'in_channels={self.in_channels}, scale_factor={self.scale_factor}, '
                f'style={self.style!r}, groups={self.groups}, dyscope={self.dyscope}, '
                f'init={self.init!r}, scope_factor={self.scope_factor}')


def _variant(name: str, doc: str, **defaults):
    """A registered DySample subclass whose constructor defaults are the paper's variant."""

    def __init__(self, in_channels, scale_factor=2, **kwargs):
        DySample.__init__(self, in_channels, scale_factor, **{**defaults, **kwargs})

    cls = type(name.replace('-', '_').replace('+', 'Plus'), (DySample, ),
               dict(__init__=__init__, __doc__=doc, __module__=__name__))
    return register_upsampler(name)(cls)


DySamplePlus = _variant('DySample+', 'DySample+: LP style, 4 groups, dynamic scope.',
                        style='lp', dyscope=True)
DySample_S = _variant('DySample-S', 'DySample-S: PL style, 8 groups, static scope.',
                      style='pl')
DySample_SPlus = _variant('DySample-S+', 'DySample-S+: PL style, 8 groups, dynamic scope.',
                          style='pl', dyscope=True)
