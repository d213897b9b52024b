"""FLOPs of upsamplers and models: handlers that mmengine's tracing
:class:`~mmengine.analysis.FlopAnalyzer` lacks for the operators the upsamplers use, and
:func:`count_flops`, which runs it with them. Nothing here is a FLOP counter of its own.

FLOP convention (mmengine's/fvcore's): one fused multiply-add counts as one FLOP, and only
the multiply-adds of the per-channel work are counted:

==========================================  ===============================================
operator                                    FLOPs
==========================================  ===============================================
``aten::_convolution``, ``linear``, mm...   mmengine's handlers (MACs)
``aten::grid_sampler`` (DySample)           per output element (``N*C*Hout*Wout``): 4 for
                                            bilinear (the weighted sum of 4 neighbours), 16
                                            for bicubic, 0 for nearest (a copy). The
                                            channel-independent work (weights from the
                                            coordinates) is not counted.
``aten::einsum`` (CARAFE's reassembly)      two operands: the product of the sizes of all
                                            distinct indices (each is one MAC), exact;
                                            mmengine's handler reads it back from
                                            ``numpy.einsum_path``'s printout, rounded to 4
                                            significant digits. More operands: mmengine's.
mmcv's ``CARAFEFunction`` (CUDA op,         ``N*C*Hout*Wout*k_up**2``, the same count.
traced as ``prim::PythonOp``)
``aten::scaled_dot_product_attention``      ``B*heads*L*S*(E + Ev)``: the two matmuls.
``aten::pixel_shuffle``, ``pixel_unshuffle``,
``aten::im2col`` (``F.unfold``)             0: pure data movement.
``aten::upsample_{nearest,bilinear}2d``     mmengine's: 1 and 4 per output element.
==========================================  ===============================================

Elementwise arithmetic (``add``, ``mul``, ``sigmoid``, ``softmax``...) is not counted, as in
mmengine and fvcore; :attr:`FlopCount.uncounted` lists what was skipped so reports can say so.

Transposed convolutions (``Deconv``) are mmengine's: ``Cin * Cout * k * k`` per *input*
pixel, the multiply-adds a stride-2 transposed convolution really performs. The paper's
Table 4 gives Deconv the same +34.4G as PixelShuffle, i.e. it counts the layer like a
``k x k`` convolution evaluated at every *output* pixel (4x more at x2); expect that factor
when comparing the Deconv rows.
"""
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn

__all__ = [
    'grid_sampler_flops', 'einsum_flops', 'mmcv_carafe_flops', 'sdpa_flops', 'flop_handlers',
    'FlopCount', 'count_flops'
]


def _shape(value) -> Optional[List[int]]:
    """Static shape of a traced tensor value (``None`` when it is not a complete tensor)."""
    if value.isCompleteTensor():
        return value.type().sizes()
    return None


def _numel(shape: Sequence[int]) -> int:
    return int(math.prod(shape))


# per-output-element multiply-adds of grid_sampler, by its interpolation_mode argument
_GRID_SAMPLER_MACS = {0: 4, 1: 0, 2: 16}  # bilinear, nearest, bicubic


def grid_sampler_flops(inputs: List[Any], outputs: List[Any]) -> int:
    """``aten::grid_sampler(input, grid, interpolation_mode, padding_mode, align_corners)``:
    4 (bilinear), 16 (bicubic) or 0 (nearest) multiply-adds per output element."""
    mode = inputs[2].toIValue()
    if mode not in _GRID_SAMPLER_MACS:
        raise ValueError(f'grid_sampler interpolation_mode must be one of '
                         f'{sorted(_GRID_SAMPLER_MACS)} (bilinear, nearest, bicubic), got {mode!r}')
    return _GRID_SAMPLER_MACS[mode] * _numel(_shape(outputs[0]))


def einsum_flops(inputs: List[Any], outputs: List[Any]) -> Union[int, float]:
    """``aten::einsum(equation, operands)``: exact multiply-adds of a two-operand
    contraction (the size of its iteration space); mmengine's estimate otherwise."""
    from mmengine.analysis.jit_handles import einsum_flop_jit

    equation = inputs[0].toIValue().replace(' ', '')
    operands = list(inputs[1].node().inputs())
    lhs = equation.split('->')[0].split(',')
    if len(operands) != 2 or len(lhs) != 2 or '.' in equation:
        return einsum_flop_jit(inputs, outputs)
    sizes: Dict[str, int] = {}
    for subscripts, operand in zip(lhs, operands):
        shape = _shape(operand)
        if shape is None or len(shape) != len(subscripts):
            return einsum_flop_jit(inputs, outputs)
        for letter, size in zip(subscripts, shape):
            sizes[letter] = max(sizes.get(letter, 1), size)  # broadcasting size-1 dims
    return _numel(sizes.values())


def mmcv_carafe_flops(inputs: List[Any], outputs: List[Any]) -> int:
    """mmcv's ``CARAFEFunction`` (the CUDA op, traced as ``prim::PythonOp``): every output
    element is a ``kernel_size**2`` weighted sum, ``numel(output) * kernel_size**2``
    multiply-adds; ``kernel_size`` is the op's first non-tensor argument."""
    kernel_size = int(outputs[0].node().scalar_args()[0])
    return _numel(_shape(outputs[0])) * kernel_size * kernel_size


def sdpa_flops(inputs: List[Any], outputs: List[Any]) -> int:
    """``aten::scaled_dot_product_attention(q, k, v, ...)``: ``Q K^T`` and ``A V``,
    ``prod(batch dims) * L * S * (E + Ev)`` multiply-adds."""
    q_shape, k_shape, v_shape = (_shape(v) for v in inputs[:3])
    *batch, length, embed = q_shape
    source = k_shape[-2]
    return _numel(batch) * length * source * (embed + v_shape[-1])


def _zero_flops(inputs: List[Any], outputs: List[Any]) -> int:
    return 0


def flop_handlers() -> Dict[str, Callable]:
    """Handlers to add to mmengine's ``FlopAnalyzer`` (see the module docstring)."""
    return {
        'aten::grid_sampler': grid_sampler_flops,
        'aten::einsum': einsum_flops,
        'prim::PythonOp.CARAFEFunction': mmcv_carafe_flops,
        'aten::scaled_dot_product_attention': sdpa_flops,
        'aten::pixel_shuffle': _zero_flops,
        'aten::pixel_unshuffle': _zero_flops,
        'aten::im2col': _zero_flops,
    }


@dataclass
class FlopCount:
    """FLOPs (multiply-adds) of one traced forward pass.

    Attributes:
        total: all counted FLOPs.
        by_operator: FLOPs per operator name (``conv``, ``grid_sampler``...).
        uncounted: operators met in the trace that have no handler, with their number of
            calls (elementwise arithmetic, mostly).
    """
    total: int
    by_operator: Dict[str, int] = field(default_factory=dict)
    uncounted: Dict[str, int] = field(default_factory=dict)


def count_flops(model: nn.Module, inputs: Union[torch.Tensor, Tuple]) -> FlopCount:
    """Trace ``model(*inputs)`` with mmengine's ``FlopAnalyzer`` plus :func:`flop_handlers`.

    Args:
        model: module whose forward takes ``inputs`` positionally and returns tensors.
        inputs: a tensor or a tuple of tensors.
    """
    from mmengine.analysis import FlopAnalyzer

    if isinstance(inputs, torch.Tensor):
        inputs = (inputs, )
    was_training = model.training
    model.eval()
    try:
        analyzer = FlopAnalyzer(model, inputs)
        analyzer.set_op_handle(**flop_handlers())
        analyzer.unsupported_ops_warnings(False)
        analyzer.uncalled_modules_warnings(False)
        analyzer.tracer_warnings('none')
        with torch.no_grad():
            total = analyzer.total()
            by_operator = {k: int(v) for k, v in analyzer.by_operator().items()}
            uncounted = dict(analyzer.unsupported_ops())
    finally:
        model.train(was_training)
    return FlopCount(int(total), by_operator, uncounted)
