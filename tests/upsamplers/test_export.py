"""DySample through torch.jit.trace and torch.compile; every registered upsampler through both
ONNX exporters (dynamo, the default, and the TorchScript-based legacy one) and onnxruntime."""
import io
import logging
import os
import warnings

import onnx  # the 'test' extra
import onnxruntime as ort
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from mmdysample.upsamplers import (A2U, DySample, build_upsampler, registered_upsamplers,
                                   requires_guide, upsample)
from mmdysample.upsamplers.a2u import adaptive_avg_pool2d_by_matmul

from .test_dysample import VARIANTS, randomise


def make_layer(style, dyscope, channels=16):
    layer = randomise(DySample(channels, 2, style=style, dyscope=dyscope), std=0.5).eval()
    for parameter in layer.parameters():
        parameter.requires_grad_(False)
    return layer


@pytest.mark.parametrize('style, dyscope', VARIANTS)
def test_jit_trace_matches_eager_on_the_traced_and_other_shapes(style, dyscope):
    """The trace records sizes symbolically (the coordinate normalisation by W and H
    included), so it also serves other batch sizes and spatial sizes; only the input checks
    are frozen (the traced graph does not raise on a wrong channel count). The trace records
    the offset projection as a convolution, eager mode computes it as a matrix product: equal
    up to float32 rounding of the offsets."""
    layer = make_layer(style, dyscope)
    x = torch.randn(1, 16, 5, 7)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')  # deprecation and TracerWarnings from the input checks
        traced = torch.jit.trace(layer, x)
    assert any(node.kind() == 'aten::_convolution' for node in traced.inlined_graph.nodes())
    torch.testing.assert_close(traced(x), layer(x), atol=1e-5, rtol=0)
    other = torch.randn(2, 16, 6, 9)
    out = traced(other)
    assert out.shape == (2, 16, 12, 18)
    torch.testing.assert_close(out, layer(other), atol=1e-5, rtol=0)


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get('MMDYSAMPLE_TEST_INDUCTOR') != '1',
                    reason='inductor C++ code generation takes ~75 s cold on the 2-core dev '
                    'machine; run with MMDYSAMPLE_TEST_INDUCTOR=1')
@pytest.mark.parametrize('style', ['lp', 'pl'])
def test_torch_compile_inductor_matches_eager(style):
    torch._dynamo.reset()
    layer = make_layer(style, dyscope=True)
    compiled = torch.compile(layer, fullgraph=True)
    x = torch.randn(2, 16, 5, 7)
    torch.testing.assert_close(compiled(x), layer(x), atol=1e-5, rtol=1e-5)


# ------------------------------------------------------------------------------ ONNX export

OPSET = 18  # the dynamo exporter's own opset (>= 16 for GridSample)
EXPORTERS = ['legacy', 'dynamo']
#: onnxruntime against eager PyTorch: absolute difference, outputs of magnitude ~1-10
ATOL = 1e-4


def randomise_at_scale(module):
    """Random weights that keep activations at unit scale (conv/linear weights with standard
    deviation 1/sqrt(fan-in), biases and norm affines N(0, 0.5), BatchNorm statistics away
    from 0/1): every branch matters (DySample's offsets reach a fraction of a pixel, kernels
    are far from uniform), and outputs keep the magnitude of a trained network's, which is
    what an absolute tolerance is about."""
    with torch.no_grad():
        for p in module.parameters():
            if p.dim() > 1:
                p.normal_(0, p[0].numel()**-0.5)
            else:
                p.normal_(0, 0.5)
        for m in module.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_mean.normal_(0, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    return module.eval()


class AllUpsamplers(nn.Module):
    """Every registered upsampler side by side, on one ``x`` and one ``guide`` at the output
    size (read by the guided layers): one export covers them all."""

    def __init__(self, channels):
        super().__init__()
        self.names = registered_upsamplers()
        self.layers = nn.ModuleList(
            randomise_at_scale(build_upsampler(dict(type=name), channels, 2,
                                               guide_channels=channels))
            for name in self.names)

    def forward(self, x, guide):
        return tuple(layer(x, guide) if requires_guide(layer) else layer(x)
                     for layer in self.layers)


def export_onnx(module, args, input_names, output_names, exporter, dynamic_axes=None):
    """The ONNX model (bytes) of ``module(*args)``; ``dynamic_axes``: ``{input name: {axis:
    name}}`` (legacy), ``torch.export.Dim.AUTO`` on the same axes (dynamo)."""
    buffer = io.BytesIO()
    options = dict(opset_version=OPSET, input_names=input_names, output_names=output_names)
    logger = logging.getLogger('torch.onnx')  # a warning per torchvision op it cannot find
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter('ignore')  # deprecation and TracerWarnings
            if exporter == 'dynamo':
                shapes = None if dynamic_axes is None else tuple(
                    {axis: torch.export.Dim.AUTO for axis in dynamic_axes[name]}
                    for name in input_names)
                program = torch.onnx.export(module, args, dynamo=True, dynamic_shapes=shapes,
                                            verbose=False, **options)
                return program.model_proto.SerializeToString()
            torch.onnx.export(module, args, buffer, dynamo=False, dynamic_axes=dynamic_axes,
                              **options)
    finally:
        logger.setLevel(level)
    return buffer.getvalue()


def run_onnx(model_bytes, feeds):
    """The outputs of onnxruntime (CPU, one thread) on ``feeds`` (inputs the graph does not
    read, such as one whose size became a constant, are left out)."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(model_bytes, options, providers=['CPUExecutionProvider'])
    graph_inputs = {i.name for i in session.get_inputs()}
    return [torch.from_numpy(out) for out in session.run(None, {
        name: tensor.numpy() for name, tensor in feeds.items() if name in graph_inputs})]


def assert_matches_eager(module, model_bytes, x, guide):
    with torch.no_grad():
        expected = module(x, guide)
    got = run_onnx(model_bytes, dict(x=x, guide=guide))
    for name, ours, ref in zip(module.names, got, expected):
        assert ours.shape == ref.shape, name
        torch.testing.assert_close(ours, ref, atol=ATOL, rtol=0, msg=lambda m: f'{name}: {m}')


@pytest.fixture(autouse=True)
def one_thread(one_intra_op_thread):
    """One intra-op thread (tests/conftest.py): on the shared 2-core machine, two threads made
    the reassembly layers 10x slower at 256 x 64 x 64."""
    yield


@pytest.fixture(scope='module')
def exported_upsamplers():
    """``exporter -> (module, ONNX bytes)``: all upsamplers at 256 channels, exported once per
    exporter at ``x`` 2 x 256 x 5 x 7 with dynamic batch, height and width. (A batch of 1
    would be fixed by torch.export's 0/1 specialisation: dynamo's graph would keep 1 in its
    reshapes even where the batch is declared dynamic.)"""
    torch.manual_seed(0)
    module = AllUpsamplers(256).eval()  # the exporters restore this mode when they are done
    x, guide = torch.randn(2, 256, 5, 7), torch.randn(2, 256, 10, 14)
    axes = {'x': {0: 'batch', 2: 'height', 3: 'width'},
            'guide': {0: 'batch', 2: 'guide_height', 3: 'guide_width'}}
    outputs = [f'out{i}' for i in range(len(module.names))]
    return {exporter: (module, export_onnx(module, (x, guide), ['x', 'guide'], outputs,
                                           exporter, axes))
            for exporter in EXPORTERS}


@pytest.mark.slow
@pytest.mark.parametrize('exporter', EXPORTERS)
def test_every_upsampler_exports_and_matches_eager_at_any_size(exported_upsamplers, exporter):
    """Both exporters, opset 18: a valid model whose outputs follow the input size (batch,
    height and width declared dynamic), within 1e-4 (absolute) of eager PyTorch at the traced
    size, at another batch and odd size, and at a realistic FPN size (1 x 256 x 64 x 64 -> 128
    x 128, where eager DySample runs the fused CPU kernel and the graph GridSample)."""
    module, model_bytes = exported_upsamplers[exporter]
    model = onnx.load_from_string(model_bytes)
    onnx.checker.check_model(model, full_check=True)
    assert {o.domain: o.version for o in model.opset_import}[''] == OPSET
    for graph_input in model.graph.input:  # nothing frozen to the traced size
        dims = graph_input.type.tensor_type.shape.dim
        assert [bool(d.dim_param) for d in dims] == [True, False, True, True], graph_input.name
    assert 'GridSample' in {node.op_type for node in model.graph.node}  # DySample
    for batch, height, width in [(2, 5, 7), (3, 6, 9), (1, 64, 64)]:
        x = torch.randn(batch, 256, height, width)
        guide = torch.randn(batch, 256, 2 * height, 2 * width)
        assert_matches_eager(module, model_bytes, x, guide)


@pytest.mark.parametrize('exporter', ['legacy', pytest.param('dynamo', marks=pytest.mark.slow)])
def test_dysample_to_an_exact_odd_size_exports(exporter):
    """DySample to an exact odd size. Legacy: as the necks call it, ``upsample(layer, x,
    size)``, which turns the size into ints: constants of the graph. Dynamo: ``layer(x,
    size=target.shape[-2:])``, a size that follows the target's (the legacy exporter cannot
    take this form: DySample wants ints, the tracer gives tensors)."""
    torch.manual_seed(0)

    class ToSize(nn.Module):
        def __init__(self):
            super().__init__()
            self.layer = randomise_at_scale(DySample(64, 2, dyscope=True))

        def forward(self, x, target):
            if exporter == 'legacy':
                return upsample(self.layer, x, size=target.shape[-2:])
            return self.layer(x, size=target.shape[-2:])

    module = ToSize()
    x, target = torch.randn(2, 64, 5, 7), torch.randn(1, 1, 9, 15)
    axes = {'x': {0: 'batch', 2: 'height', 3: 'width'},
            'target': {2: 'target_height', 3: 'target_width'}}
    model_bytes = export_onnx(module, (x, target), ['x', 'target'], ['y'], exporter,
                              axes if exporter == 'dynamo' else None)
    sizes = [((2, 5, 7), (9, 15))] + ([((1, 8, 6), (15, 13))] if exporter == 'dynamo' else [])
    for (batch, height, width), target_size in sizes:
        x, target = torch.randn(batch, 64, height, width), torch.randn(1, 1, *target_size)
        with torch.no_grad():
            expected = module(x, target)
        (got, ) = run_onnx(model_bytes, dict(x=x, target=target))
        assert got.shape == (batch, 64) + target_size
        torch.testing.assert_close(got, expected, atol=ATOL, rtol=0)


# --------------------------------------------- A2U: the formulation its ONNX graphs compute

@pytest.mark.parametrize('dtype', [torch.float32, torch.float64])
@pytest.mark.parametrize('height, width', [(12, 12), (10, 14), (4, 3), (1, 1), (97, 130)])
def test_a2u_pooling_by_matmul_is_adaptive_average_pooling(height, width, dtype):
    """Uneven and overlapping cells (10 -> 6), sizes below 6 (cells repeat pixels), a
    realistic guide (97 x 130)."""
    x = torch.randn(2, 3, height, width, dtype=dtype)
    tolerance = dict(atol=1e-6, rtol=1e-6) if dtype == torch.float32 else dict(atol=1e-14,
                                                                                rtol=1e-14)
    torch.testing.assert_close(adaptive_avg_pool2d_by_matmul(x, 6),
                               F.adaptive_avg_pool2d(x, 6), **tolerance)


@pytest.mark.parametrize('dtype, height, width', [(torch.float32, 32, 45),
                                                   (torch.float64, 7, 11)])
def test_a2u_export_formulation_matches_eager(monkeypatch, dtype, height, width):
    """What A2U computes while exported (pooling by matrix products; every sample's encoder
    kernel on every sample, the other samples masked out) equals its eager kernels and
    output, batch 3: float32 at a realistic guide size (64 x 90, uneven pooling cells),
    float64 (exact formula, up to rounding) at 14 x 22."""
    torch.manual_seed(0)
    layer = randomise_at_scale(A2U(64)).to(dtype)
    x = torch.randn(3, 64, height, width, dtype=dtype)
    guide = torch.randn(3, 64, 2 * height, 2 * width, dtype=dtype)
    with torch.no_grad():
        kernels, out = layer.kernels(guide), layer(x, guide)
        monkeypatch.setattr(torch.onnx, 'is_in_onnx_export', lambda: True)
        tolerance = dict(atol=2e-6, rtol=0) if dtype == torch.float32 else dict(atol=1e-12,
                                                                                 rtol=0)
        torch.testing.assert_close(layer.kernels(guide), kernels, **tolerance)
        torch.testing.assert_close(layer(x, guide), out, **tolerance)
