"""The lean composed DySample layer (mmdysample.ops.lean_layer): what CUDA and every device
without the fused kernel run (CPU with MMDYSAMPLE_FUSED=0). One autograd node of PyTorch
operators: output bit for bit the composition's, gradients autograd's through the
composition, double backward, what it saves, and where the plain composition runs instead
(autocast, low-precision modules, vmap, torch.compile, tracing, torch.export)."""
import warnings

import pytest
import torch
from fused_helpers import (LEAN_LAYER_NODE, LEAN_SAMPLE_NODE, VARIANTS, bilinear,
                           compile_recording_graphs, composition, grads_of, make_layer,
                           node_name, relative_error, training_step_peak)

from mmdysample.ops import use_fused

pytestmark = pytest.mark.usefixtures('no_fused_env')


def lean_grads(layer, x, grad_out):
    with use_fused(False):
        return grads_of(layer, x, grad_out)


def check_against_the_composition(layer, x, grad_out, rel):
    out, grad_x, grads, node = lean_grads(layer, x, grad_out)
    assert node == LEAN_LAYER_NODE
    ref_out, ref_grad_x, ref_grads, _ = grads_of(layer, x, grad_out, composition)
    assert torch.equal(out, ref_out)
    assert relative_error(grad_x, ref_grad_x) < rel
    assert grads.keys() == ref_grads.keys() and len(grads) >= 2
    for key in grads:
        assert relative_error(grads[key], ref_grads[key]) < rel, key


@pytest.mark.parametrize('name', VARIANTS)
def test_output_is_the_compositions_and_gradients_autograds(name):
    """Offsets of several pixels (many points clamped at the borders), float32 and float64,
    the dynamic-scope variants with a scope bias (the authors' detection checkpoints)."""
    layer = make_layer(name, 64, scope_bias=name.endswith('+'))
    x = torch.randn(2, 64, 19, 13)
    grad_out = torch.randn(2, 64, 38, 26)
    check_against_the_composition(layer, x, grad_out, 1e-5)
    check_against_the_composition(layer.double(), x.double(), grad_out.double(), 1e-12)


def test_realistic_size_and_scale_3():
    """256 channels at an FPN-like size, float32; scale 3 (the offsets' sub-pixel layout)."""
    x = torch.randn(2, 256, 40, 48)
    grad_out = torch.randn(2, 256, 80, 96)
    for name in VARIANTS:
        check_against_the_composition(make_layer(name, 256), x, grad_out, 1e-5)
    layer = make_layer('DySample-S+', 72, scale=3)
    x = torch.randn(1, 72, 7, 9)
    check_against_the_composition(layer, x, torch.randn(1, 72, 21, 27), 1e-5)


@pytest.mark.parametrize('name', VARIANTS)
def test_float64_gradcheck_and_double_backward(name):
    """The hand-written backward of every variant against finite differences; the double
    backward (the composition, shared with the fused layer) for the dynamic-scope PL variant,
    whose graph holds every other variant's operations."""
    layer = make_layer(name, 8, torch.float64, scope_bias=name.endswith('+'))
    x = torch.randn(2, 8, 3, 4, dtype=torch.float64, requires_grad=True)
    names = [n for n, _ in layer.named_parameters()]

    def fn(x, *weights):
        with use_fused(False):
            return torch.func.functional_call(layer, dict(zip(names, weights)), (x, ))

    params = tuple(layer.parameters())
    assert node_name(fn(x, *params)) == LEAN_LAYER_NODE
    assert torch.autograd.gradcheck(fn, (x, ) + params, fast_mode=True)
    if name == 'DySample-S+':
        assert torch.autograd.gradgradcheck(fn, (x, ) + params, fast_mode=True)


def test_frozen_parameters_input_without_grad_and_retained_graph():
    layer = make_layer('DySample+', 16)
    x = torch.randn(2, 16, 6, 7)
    grad_out = torch.randn(2, 16, 12, 14)
    expected = grads_of(layer, x, grad_out, composition)
    layer.zero_grad(set_to_none=True)
    with use_fused(False):
        layer.offset.requires_grad_(False)  # the scope only, and x
        xi = x.clone().requires_grad_()
        layer(xi).backward(grad_out)
        assert layer.offset.weight.grad is None
        assert relative_error(xi.grad, expected[1]) < 1e-5
        assert relative_error(layer.scope.weight.grad, expected[2]['scope.weight']) < 1e-5
        layer.requires_grad_(True)
        layer.zero_grad(set_to_none=True)
        out = layer(x)  # the parameters only
        out.backward(grad_out, retain_graph=True)
        first = [p.grad.clone() for p in layer.parameters()]
        layer.zero_grad(set_to_none=True)
        out.backward(grad_out)  # the saved tensors are not consumed by the first backward
        for got, (key, want) in zip(first, expected[2].items()):
            assert relative_error(got, want) < 1e-5, key
        for got, want in zip(first, layer.parameters()):
            assert torch.equal(got, want.grad)


def saved_by(fn):
    """Shapes of the tensors autograd saves while ``fn()`` runs."""
    shapes = []

    def pack(tensor):
        shapes.append(tuple(tensor.shape))
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        fn()
    return shapes


@pytest.mark.parametrize('name', ['DySample+', 'DySample-S'])
def test_saves_the_input_the_parameters_and_the_learned_offsets(name):
    layer = make_layer(name, 32)
    x = torch.randn(2, 32, 5, 7, requires_grad=True)
    offsets = (2, 2 * layer.groups * 4, 5, 7)
    grid = (2 * layer.groups, 10, 14, 2)
    with use_fused(False):
        lean = saved_by(lambda: layer(x))
    weight, bias = layer.projection_parameters()
    assert sorted(lean) == sorted([tuple(x.shape), tuple(weight.shape), tuple(bias.shape),
                                   tuple(layer.init_pos.shape), offsets])
    assert grid in saved_by(lambda: composition(layer, x))  # what autograd keeps instead


@pytest.mark.parametrize('case', ['autocast', 'bfloat16_module', 'vmap', 'jit_trace'])
def test_plain_composition_where_the_lean_layer_does_not_apply(case):
    layer = make_layer('DySample-S+', 32)
    x = torch.randn(2, 32, 5, 7)
    with use_fused(False):
        expected = layer(x.requires_grad_())
        assert node_name(expected) == LEAN_LAYER_NODE
        if case == 'autocast':  # the projection in bfloat16, positions and sampling float32
            with torch.autocast('cpu', dtype=torch.bfloat16):
                out = layer(x)
            assert node_name(out) == LEAN_SAMPLE_NODE and out.dtype == torch.float32
            torch.testing.assert_close(out, expected, atol=0.1, rtol=0)
        elif case == 'bfloat16_module':  # float32 positions, the sampling lean
            out = layer.to(torch.bfloat16)(x.to(torch.bfloat16))
            assert node_name(out) == LEAN_SAMPLE_NODE and out.dtype == torch.bfloat16
            torch.testing.assert_close(out.float(), expected, atol=0.1, rtol=0)
        elif case == 'vmap':
            with torch.no_grad():
                out = torch.vmap(layer)(x.detach().unsqueeze(1)).squeeze(1)
            torch.testing.assert_close(out, expected.detach(), atol=1e-5, rtol=0)
        else:
            with warnings.catch_warnings():
                warnings.simplefilter('ignore')
                traced = torch.jit.trace(layer, x.detach())
            kinds = {node.kind() for node in traced.inlined_graph.nodes()}
            assert 'aten::grid_sampler' in kinds and 'prim::PythonOp' not in kinds
            torch.testing.assert_close(traced(x.detach()), expected.detach(), atol=1e-5, rtol=0)


@pytest.mark.parametrize('name', ['DySample', 'DySample-S+'])
def test_torch_compile_traces_the_composition(name):
    """Compiled graphs (CUDA's torch.compile) hold aten's grid_sampler_2d and its backward,
    no Python function; the results are the eager lean layer's."""
    layer = make_layer(name, 16)
    x = torch.randn(2, 16, 5, 6, requires_grad=True)
    grad_out = torch.randn(2, 16, 10, 12)
    with use_fused(False):
        compiled, graphs = compile_recording_graphs(layer)
        out = compiled(x)
        out.backward(grad_out)
        got = [x.grad] + [p.grad for p in layer.parameters()]
        _, grad_x, grads, node = grads_of(layer, x, grad_out)
    assert node == LEAN_LAYER_NODE
    assert 'aten.grid_sampler_2d.default' in graphs['forward']
    assert 'aten.grid_sampler_2d_backward.default' in graphs['backward']
    for a, b in zip(got, [grad_x] + list(grads.values())):
        assert relative_error(a, b) < 1e-5


def test_torch_export_graph_is_standard_operators():
    """torch.export (what ONNX's dynamo exporter runs): aten operators only, fused kernel on or
    off."""
    layer = make_layer('DySample+', 16).eval()
    x = torch.randn(1, 16, 5, 7)
    for fused in (True, False):
        with use_fused(fused):
            program = torch.export.export(layer, (x, ))
        targets = {str(node.target) for node in program.graph.nodes
                   if node.op == 'call_function'}
        assert 'aten.grid_sampler.default' in targets
        assert all(t.startswith('aten.') or t.startswith('<built-in') for t in targets), targets
        with torch.no_grad():
            torch.testing.assert_close(program.module()(x), layer(x), atol=1e-5, rtol=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA device')
@pytest.mark.parametrize('name', VARIANTS)
def test_cuda_layer_is_the_lean_one_with_the_compositions_results_and_bilinears_memory(name):
    """On CUDA the lean layer is the default path: the composition's output, autograd's
    gradients (up to the order of grid_sample's atomic adds) and a training step's peak within
    1.15x bilinear interpolation's (the caching allocator's high-water mark)."""
    layer = make_layer(name, 256).cuda()
    x = torch.randn(2, 256, 64, 80, device='cuda')
    grad_out = torch.randn(2, 256, 128, 160, device='cuda')
    out, grad_x, grads, node = grads_of(layer, x, grad_out)
    assert node == LEAN_LAYER_NODE
    ref_out, ref_grad_x, ref_grads, _ = grads_of(layer, x, grad_out, composition)
    assert torch.equal(out, ref_out)
    assert relative_error(grad_x, ref_grad_x) < 1e-5
    for key in grads:
        assert relative_error(grads[key], ref_grads[key]) < 1e-5, key
    x.requires_grad_()
    base = training_step_peak(bilinear, x, grad_out, device='cuda')
    peak = training_step_peak(layer, x, grad_out, layer, 'cuda')
    parameter_bytes = sum(p.numel() * p.element_size() for p in layer.parameters())
    assert peak <= 1.15 * base + 4 * parameter_bytes, peak / base
