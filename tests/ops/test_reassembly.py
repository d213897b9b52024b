"""The reassembly operations (mmdysample.ops.reassembly): the C++ CPU kernels and the
device-agnostic path against the naive loops (tests/upsamplers/reference_carafe.py,
reference_guided.py) and the unfold formulation, at small odd sizes and at a realistic size
in float32 and float64; the autograd family (gradients, double backward); the dispatch rules;
torch.compile; mmcv's CUDA branch through a CPU stand-in."""
import pytest
import torch
from fused_helpers import compile_recording_graphs
from upsamplers.reference_carafe import carafe_naive
from upsamplers.reference_guided import similarity_loops

from mmdysample.functional import carafe
from mmdysample.ops import reassembly, use_fused
from mmdysample.ops.reassembly import reassemble, similarity

pytestmark = pytest.mark.usefixtures('fused_extension', 'no_fused_env')

#: (B, C, H, W, kernel_size, groups, scale): odd sizes, 1-pixel maps, k = 1, groups, s 2-4,
#: partial channel blocks (C / groups not a multiple of 4)
SHAPES = [
    (2, 4, 3, 4, 3, 1, 2),
    (2, 6, 3, 5, 5, 2, 3),
    (1, 9, 3, 5, 5, 3, 2),
    (1, 5, 1, 1, 3, 1, 2),
    (1, 4, 3, 2, 7, 2, 4),
    (1, 3, 4, 9, 1, 1, 3),
    (1, 7, 1, 6, 5, 1, 2),
    (1, 12, 6, 1, 3, 4, 2),
    (1, 5, 2, 19, 3, 1, 2),  # a row of whole 16-lane chunks and a tail
]
#: the kernel family, and the device-agnostic one (forced with use_fused(False))
PATHS = {'kernel': True, 'device-agnostic': False}


_naive_results = {}


def naive(fn, key, *tensors):
    """``run`` of a loop oracle, computed once per ``key`` (both paths compare with it)."""
    if key not in _naive_results:
        _naive_results[key] = run(True, fn, *tensors)
    return _naive_results[key]


def run(fused, fn, *tensors):
    """``fn(*tensors)`` on fresh leaves, its output's gradient-function name and the
    gradients of ``sum(out * weight)`` (a fixed random weight)."""
    leaves = [t.detach().clone().requires_grad_() for t in tensors]
    with use_fused(fused):
        out = fn(*leaves)
    weight = torch.randn(out.shape, dtype=torch.float64,
                         generator=torch.Generator().manual_seed(1)).to(out.dtype)
    grads = torch.autograd.grad((out * weight).sum(), leaves)
    return out.detach(), type(out.grad_fn).__name__, grads


def assert_relative_close(actual, expected, rel):
    """Within ``rel`` of the expected tensor's largest magnitude, elementwise."""
    scale = max(expected.abs().max().item(), 1e-30)
    torch.testing.assert_close(actual.double(), expected.double(), rtol=rel, atol=rel * scale)


# --------------------------------------------------------------- against the loops

@pytest.mark.parametrize('path, dtype', [('kernel', torch.float64),
                                         ('device-agnostic', torch.float64),
                                         ('kernel', torch.float32)])
@pytest.mark.parametrize('shape', SHAPES, ids=lambda s: 'x'.join(map(str, s)))
def test_reassembly_and_its_gradients_match_the_naive_loops(path, dtype, shape):
    """float64 to 1e-12; float32 (the AVX2 single-precision code: 8-lane registers, row
    tails, the lane sums of the feature gradient) to 1e-5 of the largest magnitude."""
    B, C, H, W, k, g, s = shape
    generator = torch.Generator().manual_seed(sum(shape))
    features = torch.randn(B, C, H, W, dtype=torch.float64, generator=generator)
    masks = torch.randn(B, g * k * k, s * H, s * W, dtype=torch.float64, generator=generator)
    out, node, grads = run(PATHS[path], lambda f, m: reassemble(f, m, k, g, s),
                           features.to(dtype), masks.to(dtype))
    assert node == ('KernelReassembleBackward' if PATHS[path] else 'GenericReassembleBackward')
    expected, _, expected_grads = naive(lambda f, m: carafe_naive(f, m, k, g, s),
                                        ('carafe', ) + shape, features, masks)
    rel = 1e-12 if dtype == torch.float64 else 1e-5
    assert_relative_close(out, expected, rel)
    for got, want in zip(grads, expected_grads):
        assert got.dtype == dtype
        assert_relative_close(got, want, rel)


@pytest.mark.parametrize('path, dtype', [('kernel', torch.float64),
                                         ('device-agnostic', torch.float64),
                                         ('kernel', torch.float32)])
@pytest.mark.parametrize('shape', [(2, 8, 3, 4, 5, 2), (1, 5, 2, 5, 3, 3), (1, 3, 1, 1, 5, 2)],
                         ids=lambda s: 'x'.join(map(str, s)))
def test_similarity_and_its_gradients_match_the_naive_loops(path, dtype, shape):
    B, E, H, W, k, s = shape
    generator = torch.Generator().manual_seed(sum(shape))
    query = torch.randn(B, E, s * H, s * W, dtype=torch.float64, generator=generator)
    key = torch.randn(B, E, H, W, dtype=torch.float64, generator=generator)
    out, node, grads = run(PATHS[path], lambda q, kk: similarity(q, kk, k, s), query.to(dtype),
                           key.to(dtype))
    assert node == ('KernelMaskGradBackward' if PATHS[path] else 'GenericMaskGradBackward')
    expected, _, expected_grads = naive(lambda q, kk: similarity_loops(q, kk, k, s),
                                        ('similarity', ) + shape, query, key)
    rel = 1e-12 if dtype == torch.float64 else 1e-5
    assert_relative_close(out, expected, rel)
    for got, want in zip(grads, expected_grads):
        assert_relative_close(got, want, rel)


# --------------------------------------------------------------- realistic size

@pytest.mark.parametrize('path', PATHS)
@pytest.mark.parametrize('dtype, rel', [(torch.float32, 1e-5), (torch.float64, 1e-10)])
def test_realistic_size_matches_the_unfold_formulation(path, dtype, rel):
    """1 x 256 x 32 x 32, k = 5, x2 (SegFormer-B1's 1/16 -> 1/8 step at 512 x 512) with
    softmax kernels: output and both gradients within 1e-5 (float32) / 1e-10 (float64) of
    the unfold formulation in float64, relative to the largest magnitude. The mask gradient
    sums 256 channels."""
    features = torch.randn(1, 256, 32, 32, dtype=dtype)
    masks = torch.randn(1, 25, 64, 64, dtype=dtype).mul(3).softmax(1)
    out, _, grads = run(PATHS[path], lambda f, m: reassemble(f, m, 5, 1, 2), features, masks)
    assert out.dtype == dtype
    expected, _, expected_grads = run(
        True, lambda f, m: reassembly.reassemble_unfold(f, m, 5, 1, 2), features.double(),
        masks.double())
    assert_relative_close(out, expected, rel)
    for got, want in zip(grads, expected_grads):
        assert got.dtype == dtype
        assert_relative_close(got, want, rel)


@pytest.mark.parametrize('dtype, rel', [(torch.float32, 1e-5), (torch.float64, 1e-10)])
def test_realistic_size_similarity_matches_the_unfold_formulation(dtype, rel):
    """SAPA-B's setting at 1/8 of a 512 x 512 input: 32 embedding channels, k = 5."""
    query = torch.randn(1, 32, 128, 128, dtype=dtype)
    key = torch.randn(1, 32, 64, 64, dtype=dtype)
    out, _, grads = run(True, lambda q, k: similarity(q, k, 5, 2), query, key)
    expected, _, expected_grads = run(
        True, lambda q, k: reassembly.similarity_unfold(q, k, 5, 2), query.double(),
        key.double())
    assert_relative_close(out, expected, rel)
    for got, want in zip(grads, expected_grads):
        assert_relative_close(got, want, rel)


def test_results_do_not_depend_on_the_thread_count():
    """Tasks are bands of rows (the feature gradient: bands of target rows, each summed by
    one task in the same order): 1, 2 and 5 threads give the same bits."""
    features = torch.randn(2, 12, 11, 9)
    masks = torch.randn(2, 2 * 25, 22, 18)
    results = []
    for threads in (1, 2, 5):
        torch.set_num_threads(threads)  # restored by the single_thread fixture
        _, _, grads = run(True, lambda f, m: reassemble(f, m, 5, 2, 2), features, masks)
        results.append((reassemble(features, masks, 5, 2, 2), ) + grads)
    for other in results[1:]:
        for a, b in zip(results[0], other):
            assert torch.equal(a, b)


# --------------------------------------------------------------- autograd family

@pytest.mark.parametrize('path', PATHS)
def test_gradcheck_and_double_backward(path):
    """Each operation's gradients are the other two: first and second derivatives of the
    reassembly and of the similarity, float64."""
    features = torch.randn(1, 4, 2, 3, dtype=torch.float64, requires_grad=True)
    masks = torch.randn(1, 2 * 9, 4, 6, dtype=torch.float64, requires_grad=True)
    query = torch.randn(1, 3, 4, 6, dtype=torch.float64, requires_grad=True)
    key = torch.randn(1, 3, 2, 3, dtype=torch.float64, requires_grad=True)
    with use_fused(PATHS[path]):
        for fn, inputs in (((lambda f, m: reassemble(f, m, 3, 2, 2)), (features, masks)),
                           ((lambda q, k: similarity(q, k, 3, 2)), (query, key))):
            assert torch.autograd.gradcheck(fn, inputs, fast_mode=True)
            assert torch.autograd.gradgradcheck(fn, inputs, fast_mode=True)


def test_backward_computes_only_the_gradients_asked_for(monkeypatch):
    calls = []
    for name in ('kernel_feature_grad', 'kernel_mask_grad'):
        original = getattr(reassembly, name)
        monkeypatch.setattr(reassembly, name,
                            lambda *a, _name=name, _f=original: calls.append(_name) or _f(*a))
    # the Functions bound the implementations at import: rebuild them on the patched ones
    family = reassembly._autograd_family('Kernel', reassembly.kernel_reassemble,
                                         reassembly.kernel_feature_grad,
                                         reassembly.kernel_mask_grad)
    features = torch.randn(1, 4, 3, 4, requires_grad=True)
    masks = torch.randn(1, 9, 6, 8)
    family[0].apply(features, masks, 3, 1, 2).sum().backward()
    assert calls == ['kernel_feature_grad']
    calls.clear()
    family[0].apply(features.detach(), masks.requires_grad_(), 3, 1, 2).sum().backward()
    assert calls == ['kernel_mask_grad']


# --------------------------------------------------------------- dispatch

def test_dispatch_rules():
    features = torch.randn(1, 4, 3, 4, requires_grad=True)
    masks = torch.randn(1, 9, 6, 8).softmax(1)
    name = lambda out: type(out.grad_fn).__name__  # noqa: E731
    assert name(reassemble(features, masks, 3, 1, 2)) == 'KernelReassembleBackward'
    assert name(reassemble(features.double(), masks.double(), 3, 1, 2)) == \
        'KernelReassembleBackward'
    with use_fused(False):
        assert name(reassemble(features, masks, 3, 1, 2)) == 'GenericReassembleBackward'
    # half types (CPU autocast, CUDA without mmcv...): the device-agnostic path, float32 sums
    half = reassemble(features.bfloat16(), masks.bfloat16(), 3, 1, 2)
    assert name(half) == 'GenericReassembleBackward' and half.dtype == torch.bfloat16
    torch.testing.assert_close(half.float(), reassemble(features.bfloat16().float(),
                                                        masks.bfloat16().float(), 3, 1, 2),
                               rtol=8e-3, atol=0)
    # an empty batch: the kernel (fused_supported takes it); no channels: the other path
    assert name(reassemble(features[:0], masks[:0], 3, 1, 2)) == 'KernelReassembleBackward'
    assert name(reassemble(features[:, :0], masks, 3, 1, 2)) == 'GenericReassembleBackward'


def test_traced_graphs_hold_the_unfold_formulation():
    """torch.jit.trace (and so the TorchScript ONNX exporter, FLOP counters) sees standard
    operators, not the kernel."""
    features = torch.randn(1, 4, 3, 4)
    masks = torch.randn(1, 9, 6, 8)
    traced = torch.jit.trace(lambda f, m: carafe(f, m, 3, 1, 2), (features, masks))
    kinds = {node.kind() for node in traced.inlined_graph.nodes()}
    assert {'aten::im2col', 'aten::einsum'} <= kinds and 'prim::PythonOp' not in kinds
    torch.testing.assert_close(traced(features, masks), reassemble(features, masks, 3, 1, 2),
                               rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize('strict', [False, True])
def test_torch_export_holds_the_unfold_formulation(strict):
    """torch.export (under ONNX's dynamo exporter too) records standard operators."""
    features, masks = torch.randn(1, 4, 3, 4), torch.randn(1, 9, 6, 8)
    query, key = torch.randn(1, 2, 6, 8), torch.randn(1, 2, 3, 4)

    class Both(torch.nn.Module):
        def forward(self, f, m, q, k):
            return reassemble(f, m, 3, 1, 2), similarity(q, k, 3, 2)

    program = torch.export.export(Both(), (features, masks, query, key), strict=strict)
    targets = {str(node.target) for node in program.graph.nodes if node.op == 'call_function'}
    assert {'aten.im2col.default', 'aten.einsum.default', 'aten.matmul.default'} <= targets
    assert not [t for t in targets if 'mmdysample' in t]
    for got, want in zip(program.module()(features, masks, query, key),
                         Both()(features, masks, query, key)):
        torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)


def test_empty_inputs():
    for B, C, H in ((0, 4, 3), (2, 0, 3)):
        features = torch.randn(B, C, H, 4, requires_grad=True)
        masks = torch.randn(B, 9, 2 * H, 8, requires_grad=True)
        for fused in (True, False):
            with use_fused(fused):
                out = reassemble(features, masks, 3, 1, 2)
                assert out.shape == (B, C, 2 * H, 8)
                out.sum().backward()
            assert features.grad.shape == features.shape and not features.grad.any()
            assert masks.grad.shape == masks.shape and not masks.grad.any()
            features.grad = masks.grad = None


def test_torch_compile_keeps_the_kernel_ops_with_eager_results():
    compiled, graphs = compile_recording_graphs(
        lambda f, m, q, k: reassemble(f, m, 5, 2, 2) + similarity(q, k, 3, 2)[:, :1])
    features = torch.randn(1, 8, 5, 7, requires_grad=True)
    masks = torch.randn(1, 50, 10, 14).softmax(1).requires_grad_()
    query = torch.randn(1, 4, 10, 14, requires_grad=True)
    key = torch.randn(1, 4, 5, 7, requires_grad=True)
    inputs = (features, masks, query, key)
    out = compiled(*inputs)
    grads = torch.autograd.grad(out.sum(), inputs)
    assert {'mmdysample.reassemble.default', 'mmdysample.reassemble_mask_grad.default'} <= \
        graphs['forward']
    assert {'mmdysample.reassemble_feature_grad.default',
            'mmdysample.reassemble_mask_grad.default',
            'mmdysample.reassemble.default'} <= graphs['backward']
    expected = reassemble(features, masks, 5, 2, 2) + similarity(query, key, 3, 2)[:, :1]
    torch.testing.assert_close(out, expected, rtol=0, atol=0)
    for got, want in zip(grads, torch.autograd.grad(expected.sum(), inputs)):
        torch.testing.assert_close(got, want, rtol=0, atol=0)


def test_torch_compile_with_the_kernels_off_traces_the_device_agnostic_path():
    """use_fused(False) holds under torch.compile too (the custom ops would run the CPU
    kernels): the graphs are made of standard operators, with the eager results."""
    compiled, graphs = compile_recording_graphs(lambda f, m: reassemble(f, m, 3, 1, 2))
    features = torch.randn(1, 4, 5, 7, requires_grad=True)
    masks = torch.randn(1, 9, 10, 14).softmax(1).requires_grad_()
    with use_fused(False):
        out = compiled(features, masks)
        grads = torch.autograd.grad(out.sum(), (features, masks))
        expected = reassemble(features, masks, 3, 1, 2)
        expected_grads = torch.autograd.grad(expected.sum(), (features, masks))
    assert not [t for t in graphs['forward'] | graphs['backward'] if 'mmdysample' in t]
    torch.testing.assert_close(out, expected, rtol=0, atol=0)
    torch.testing.assert_close(grads, expected_grads, rtol=0, atol=0)


def test_custom_ops_pass_torch_library_opcheck():
    """Schemas, fake implementations and registered autograd agree with the CPU kernels."""
    features = torch.randn(1, 4, 3, 5, dtype=torch.float64)
    masks = torch.randn(1, 2 * 9, 6, 10, dtype=torch.float64)
    grad_out = torch.randn(1, 4, 6, 10, dtype=torch.float64)
    for op, args in ((reassembly._reassemble_op, (features, masks, 3, 2, 2)),
                     (reassembly._feature_grad_op, (grad_out, masks, 3, 2, 2)),
                     (reassembly._mask_grad_op, (grad_out, features, 3, 2, 2))):
        torch.library.opcheck(op, [a.requires_grad_() if torch.is_tensor(a) else a
                                   for a in args])


# --------------------------------------------------------------- mmcv's CUDA branch

class MmcvStandIn:
    """Stands in for ``mmcv.ops.carafe`` on CPU: checks what mmcv's kernel requires (one
    dtype it dispatches, contiguous NCHW, the mask channels its shared memory holds), records
    the call, computes with the device-agnostic path."""

    def __init__(self):
        self.calls = []

    def __call__(self, features, masks, kernel_size, group_size, scale_factor):
        assert features.dtype == masks.dtype, (features.dtype, masks.dtype)
        assert features.dtype in (torch.float16, torch.float32, torch.float64)
        assert features.is_contiguous() and masks.is_contiguous()
        assert masks.shape[1] == group_size * kernel_size**2 <= 384
        self.calls.append((features.dtype, masks.dtype, kernel_size, group_size, scale_factor))
        return reassembly.GenericReassemble.apply(features, masks, kernel_size, group_size,
                                                  scale_factor)


@pytest.fixture
def mmcv_stand_in(monkeypatch):
    stand_in = MmcvStandIn()
    monkeypatch.setattr(reassembly, 'on_mmcv_device', lambda tensor: True)
    monkeypatch.setattr(reassembly, 'mmcv_carafe', lambda: stand_in)
    return stand_in


def test_mmcv_branch_gets_the_masks_in_the_features_dtype(mmcv_stand_in):
    """Issue 23 item 4: under autocast the features are float16 and the softmax kernels
    float32; mmcv reads the mask buffer as the features' dtype, so they must be cast."""
    from mmdysample.upsamplers import CARAFE
    layer = CARAFE(16, 2, compressed_channels=8)
    x = torch.randn(1, 16, 5, 7)
    expected = layer(x.half().float())  # the CPU kernel on the same (rounded) input
    assert not mmcv_stand_in.calls
    features, masks = x.half().requires_grad_(), torch.randn(1, 25, 10, 14).softmax(1)
    out = carafe(features, masks, 5, 1, 2)
    assert mmcv_stand_in.calls == [(torch.float16, torch.float16, 5, 1, 2)]
    assert out.dtype == torch.float16
    out.float().sum().backward()
    assert features.grad.dtype == torch.float16
    with torch.autocast('cpu', dtype=torch.float16):
        low = layer(x.half())
    assert mmcv_stand_in.calls[-1][:2] == (torch.float16, torch.float16)
    torch.testing.assert_close(low.float(), expected, rtol=0, atol=2e-2)


@pytest.mark.parametrize('case', ['bfloat16', 'mask channels > 384', 'empty batch'])
def test_mmcv_branch_is_skipped_where_its_kernel_does_not_apply(mmcv_stand_in, case):
    """bfloat16 (mmcv dispatches float16/32/64 only), G k^2 > 384 (its shared memory), an
    empty input (a zero-block launch): the device-agnostic path instead."""
    dtype, k, B = {'bfloat16': (torch.bfloat16, 3, 1), 'mask channels > 384': (torch.half, 21, 1),
                   'empty batch': (torch.half, 3, 0)}[case]
    out = reassemble(torch.randn(B, 2, 3, 4, dtype=dtype), torch.randn(B, k * k, 6, 8,
                                                                       dtype=dtype), k, 1, 2)
    assert out.shape == (B, 2, 6, 8) and not mmcv_stand_in.calls
