"""Helpers shared by the tests of mmdysample.ops: which path ran, layers with far-reaching
offsets, the plain composition autograd runs through, peak memory (the tools' helper)."""
import importlib.util
import sys
from pathlib import Path

import torch

from mmdysample.ops.fused_layer import offsets_from_projection, project_offsets
from mmdysample.ops.reference import grid_sample_dysample
from mmdysample.upsamplers import build_upsampler

VARIANTS = ['DySample', 'DySample+', 'DySample-S', 'DySample-S+']
# autograd node names: the eager autograd.Function, the custom op (torch.compile)
FUSED_NODES = ('_FusedSampleBackward', 'mmdysample_dysample_sample')
FUSED_LAYER_NODE = '_FusedDySampleLayerBackward'
LEAN_LAYER_NODE = '_LeanDySampleLayerBackward'
LEAN_SAMPLE_NODE = '_LeanSampleBackward'


def took_fused_path(output: torch.Tensor) -> bool:
    """Whether ``output`` (requiring grad) came out of the fused kernel."""
    return any(name in type(output.grad_fn).__name__ for name in FUSED_NODES)


def node_name(output: torch.Tensor) -> str:
    return type(output.grad_fn).__name__


def _tool_helpers():
    """tools/tool_helpers.py, loaded by path (the tools are not a package)."""
    name = '_mmdysample_tool_helpers'
    if name not in sys.modules:
        path = Path(__file__).resolve().parents[2] / 'tools' / 'tool_helpers.py'
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


def peak_bytes(fn, device='cpu') -> int:
    """Peak tensor memory allocated while ``fn()`` runs (the benchmark's measure:
    ``tools/tool_helpers.peak_memory_bytes``; on CPU torch profiler allocation events, the
    fused kernel's scratch included; on CUDA the caching allocator's high-water mark)."""
    return _tool_helpers().peak_memory_bytes(fn, device)


def bilinear(x):
    """The memory and time yardstick: bilinear x2 interpolation (align_corners=False)."""
    return torch.nn.functional.interpolate(x, scale_factor=2, mode='bilinear',
                                           align_corners=False)


def training_step_peak(forward, x, grad_out, layer=None, device='cpu') -> int:
    """:func:`peak_bytes` of ``forward(x).backward(grad_out)`` (the output gradient given, as
    inside a network); the gradients of ``x`` and ``layer`` are released afterwards."""

    def step():
        forward(x).backward(grad_out)
        x.grad = None
        if layer is not None:
            layer.zero_grad(set_to_none=True)

    return peak_bytes(step, device)


def make_layer(name, channels, dtype=torch.float32, scope_bias=False, scale=2):
    """A layer whose offsets reach a few pixels (the paper's init keeps them ~0.01 px, where
    bilinear sampling is nearly linear and a wrong gradient could hide)."""
    kwargs = dict(scope_bias=True) if scope_bias else {}
    layer = build_upsampler(dict(type=name, **kwargs), channels, scale).to(dtype)
    with torch.no_grad():
        for module in (layer.offset, getattr(layer, 'scope', None)):
            if module is not None:
                module.weight.normal_(0, 2.0 / module.weight.shape[1] ** 0.5)
                if module.bias is not None:
                    module.bias.normal_(0, 0.5)
    return layer


def composition(layer, x):
    """The layer as the plain composition of differentiable operators (what traced, exported
    and compiled graphs hold, and what autograd differentiates there)."""
    weight, bias = layer.projection_parameters()
    projection = project_offsets(x, weight, bias, layer.scale_factor, layer.style)
    offset = offsets_from_projection(projection, layer.initial_positions(x.dtype),
                                     layer.scope_factor, layer.dyscope, x.dtype)
    return grid_sample_dysample(x, offset, layer.scale_factor, layer.groups)


def grads_of(layer, x, grad_out, forward=None):
    """(output, grad x, {parameter: grad}, autograd node name) of ``forward(layer, x)``
    (default: the layer's own forward)."""
    layer.zero_grad(set_to_none=True)
    x = x.detach().requires_grad_(True)
    out = layer(x) if forward is None else forward(layer, x)
    out.backward(grad_out)
    named = {name: p.grad.clone() for name, p in layer.named_parameters()}
    return out.detach(), x.grad, named, node_name(out)


def relative_error(actual, expected):
    return ((actual - expected).abs().max() / expected.abs().max()).item()


def compile_recording_graphs(fn):
    """``torch.compile(fn, fullgraph=True)`` with AOTAutograd graphs run as traced (no code
    generation); returns the compiled function and {'forward'/'backward': op targets}."""
    from functorch.compile import make_boxed_func
    from torch._dynamo.backends.common import aot_autograd

    graphs = {}

    def recorder(kind):
        def compiler(graph_module, example_inputs):
            graphs[kind] = {str(node.target) for node in graph_module.graph.nodes}
            return make_boxed_func(graph_module.forward)
        return compiler

    torch._dynamo.reset()
    backend = aot_autograd(fw_compiler=recorder('forward'), bw_compiler=recorder('backward'))
    return torch.compile(fn, backend=backend, fullgraph=True), graphs
