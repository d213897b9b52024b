"""DySample through torch.jit.trace, torch.compile and ONNX export (opset 17) + onnxruntime."""
import io
import os
import warnings

import onnx  # the 'test' extra
import onnxruntime as ort
import pytest
import torch

from mmdysample.upsamplers import DySample

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


def export_onnx(layer, x, dynamic=False):
    buffer = io.BytesIO()
    dynamic_axes = ({'x': {0: 'batch', 2: 'height', 3: 'width'},
                     'y': {0: 'batch', 2: 'out_height', 3: 'out_width'}} if dynamic else None)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        # the TorchScript-based exporter: the default dynamo exporter needs onnxscript
        torch.onnx.export(layer, (x, ), buffer, opset_version=17, dynamo=False,
                          input_names=['x'], output_names=['y'], dynamic_axes=dynamic_axes)
    return buffer.getvalue()


@pytest.mark.parametrize('style, dyscope', VARIANTS)
def test_onnx_export_checks_and_runs_in_onnxruntime(style, dyscope):
    layer = make_layer(style, dyscope)
    x = torch.randn(1, 16, 5, 7)
    model_bytes = export_onnx(layer, x)
    model = onnx.load_from_string(model_bytes)
    onnx.checker.check_model(model, full_check=True)
    assert model.opset_import[0].version == 17
    op_types = {node.op_type for node in model.graph.node}
    assert 'GridSample' in op_types and 'Conv' in op_types
    session = ort.InferenceSession(model_bytes, providers=['CPUExecutionProvider'])
    (out, ) = session.run(None, {'x': x.numpy()})
    torch.testing.assert_close(torch.from_numpy(out), layer(x), atol=1e-4, rtol=0)


@pytest.mark.parametrize('style', ['lp', 'pl'])
def test_onnx_export_with_dynamic_axes_serves_other_sizes(style):
    layer = make_layer(style, dyscope=True)
    session = ort.InferenceSession(export_onnx(layer, torch.randn(1, 16, 5, 7), dynamic=True),
                                   providers=['CPUExecutionProvider'])
    other = torch.randn(2, 16, 6, 9)
    (out, ) = session.run(None, {'x': other.numpy()})
    assert out.shape == (2, 16, 12, 18)
    torch.testing.assert_close(torch.from_numpy(out), layer(other), atol=1e-4, rtol=0)
