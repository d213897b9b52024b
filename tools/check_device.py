#!/usr/bin/env python
"""Check that mmdysample works on this machine's CPU or GPU, and say so in one report.

    python tools/check_device.py --device cpu                # the full CPU check
    python tools/check_device.py --device cpu --quick        # a minute; the test suite's
    python tools/check_device.py --device cuda --out work_dirs/check_device   # a GPU node

Sections (each passes, fails with a reason, or is skipped with a reason):

* ``environment``: torch and its build (CUDA, cuDNN), the device (name, memory, what it
  supports: bf16, TF32), mmcv and whether its compiled ops run on the device (a tiny ``nms``
  and ``roi_align``, values checked), mmengine / mmdet / mmseg versions, whether
  mmdysample's fused CPU kernel is built. Fails when mmcv's ops do not run on the device.
* ``upsamplers``: every registered upsampler (guided ones with a guide), built with its
  defaults:

  - parity with a float64 CPU computation on the same weights and input (the pure-PyTorch
    reference path, fused kernel off): the output, the gradient of the input, of the guide
    and of every parameter, in float32 (TF32 off) and under each autocast dtype the device
    has (CPU: bfloat16; CUDA: float16, and bfloat16 where supported), and with TF32 where
    the GPU has it. Errors are relative to the reference's largest element (output,
    input gradient) or to its norm (the parameters' gradients as one vector; the guide's
    gradient in the reduced precisions); :data:`LIMITS` gives the limits and why;
  - an empty batch (B=0): forward and backward, output shape and finite, empty gradients;
  - latency (median over interleaved rounds) and peak memory of forward+backward, next to
    bilinear ``F.interpolate`` on the same input (CUDA: CUDA events; CPU: wall clock and the
    allocator's events, :mod:`tool_helpers`). Reported, not judged.
* ``carafe``: mmcv's CUDA CARAFE kernel (``mmcv.ops.carafe``) against
  :func:`mmdysample.functional.carafe`, forward and both gradients; skipped on CPU, where
  mmcv has no CARAFE kernel.
* ``training``: a few iterations of the DySample twin of each demo model family
  (``configs/demo/``, :data:`demo.DEMO_MODELS`) on the device, on a fixed batch of the
  synthetic data set (:func:`mmdysample.datasets.generate_synthetic_dataset`); every loss
  must be finite; whether the loss went down is reported.
* ``ddp``: two processes (``torch.multiprocessing``, spawn) train a DySample+ layer with
  ``DistributedDataParallel`` (nccl with two or more GPUs, else gloo), each on half of a
  fixed batch; the ranks' gradients and parameters must agree, and the parameters must
  match one process training on the whole batch.

Writes ``check_device.md`` and ``check_device.json`` into ``--out`` (default
``work_dirs/check_device/<device>``) and prints the markdown. Exit status: 0 when every
check that ran passed; 1 when one failed (the reason on one line on stderr, the last
line); 2 when nothing ran: the device is absent (``--device cuda`` without a usable GPU,
said at once) or an argument is wrong.
"""
import argparse
import contextlib
import copy
import datetime
import json
import math
import os
import os.path as osp
import platform
import sys
import tempfile
import time
import traceback
from typing import Any, Callable, Dict, List, Optional, Sequence

import torch

TOOLS_DIR = osp.dirname(osp.abspath(__file__))
if TOOLS_DIR not in sys.path:  # loaded by path rather than run as a script
    sys.path.append(TOOLS_DIR)
import tool_helpers  # noqa: E402

SCHEMA_VERSION = 1
PASSED, FAILED, SKIPPED = 'passed', 'failed', 'skipped'
CHECKS = ('upsamplers', 'carafe', 'training', 'ddp')
EXIT_FAILED, EXIT_NO_DEVICE, EXIT_USAGE = 1, 2, 2  # 2: nothing ran (as argparse's errors)
SCALE = 2  # every upsampler is checked at x2, the ratio of every site in the configs

# Limits of the parity check, per precision and quantity: (metric, limit).
#
# "scaled": max|device - reference| / max|reference|, so that elements near zero, whose
# relative errors mean nothing, do not decide. "normwise": ||device - reference|| /
# ||reference||; for the parameters over all their gradients as one vector (the step the
# optimiser takes), the worst single tensor reported beside it.
#
# float32 (TF32 off: with TF32 a float32 convolution or matrix product rounds its inputs to
# 10 mantissa bits): 1e-4 for everything. The unit roundoff u is 6e-8; the longest sums are
# the gradient reductions over batch x pixels (2x32x32 = 2048 terms for a bias) and the
# guided layers' convolutions (256 x 9 terms), whose rounding errors grow like
# sqrt(n) u ~ 3e-6 (the CPU shows up to 7e-6 scaled, 4e-6 normwise), n u ~ 1e-4 at
# worst; a wrong index, weight or dtype gives 1e-3..1.
# The reduced precisions round what the convolutions and products read and write (TF32
# and autocast float16: 10-bit mantissas, u = 4.9e-4; autocast bfloat16: 7 bits,
# u = 3.9e-3; sums in float32). Output and input gradient: scaled, 1e-2 (~20 u;
# TF32, float16) and 5e-2 (~13 u; bfloat16; the CPU shows up to 1.4e-2, FADE).
# The guide and parameter gradients of the guided layers go back through their kernel
# normalisation (softmax, sigmoid, GroupNorm, BatchNorm), whose backward subtracts nearly
# equal rounded terms: A2U's kernels are nearly uniform softmax(sigmoid(.)) and its
# GroupNorm makes the loss blind to the scale of the guide kernels, so their gradients are
# sums that cancel almost to zero (A2U, bfloat16: the guide gradient is off by 0.24 of its
# largest element at 2x256x32x32, by 0.098 of its norm at 1x64x31x45, where one bias
# gradient is off by 52%). They are
# judged norm-wise: 5e-2 (TF32, float16; ~100 u) and 2.5e-1 (bfloat16; ~64 u; the CPU shows
# up to 0.104: A2U's parameters at 1x64x31x45). A wrong computation is off by ~1 either way.
LIMITS = {
    'float32': dict(output=('scaled', 1e-4), input_grad=('scaled', 1e-4),
                    guide_grad=('scaled', 1e-4), param_grad=('normwise', 1e-4)),
    'tf32': dict(output=('scaled', 1e-2), input_grad=('scaled', 1e-2),
                 guide_grad=('normwise', 5e-2), param_grad=('normwise', 5e-2)),
    'autocast_float16': dict(output=('scaled', 1e-2), input_grad=('scaled', 1e-2),
                             guide_grad=('normwise', 5e-2), param_grad=('normwise', 5e-2)),
    'autocast_bfloat16': dict(output=('scaled', 5e-2), input_grad=('scaled', 5e-2),
                              guide_grad=('normwise', 2.5e-1),
                              param_grad=('normwise', 2.5e-1)),
}
AUTOCAST_DTYPES = {'autocast_float16': torch.float16, 'autocast_bfloat16': torch.bfloat16}

DDP_TOLERANCE = 1e-5  # float32 gradients of half batches averaged vs the whole batch
DDP_RANK_TOLERANCE = 0.0  # allreduce hands every rank the same bits


def settings_for(quick: bool, device_type: str) -> Dict[str, Any]:
    """What each mode runs. ``--quick`` (CPU, for the test suite: about a minute on two
    cores): one odd size, few rounds, the two default demo models for 2 iterations. Full:
    a realistic size (256 channels, the FPN width) and an odd one, the paper's latency size,
    every demo model family for 5 iterations."""
    if quick:
        return dict(quick=True, parity_sizes=[(2, 64, 15, 18)], empty_batch_size=(0, 64, 8, 8),
                    latency_size=(1, 64, 16, 16), latency_warmup=1, latency_repeats=3,
                    train_models=['faster-rcnn', 'segformer'], train_iters=2, train_batch=2,
                    ddp_steps=3, carafe_size=(2, 64, 16, 16))
    latency = (1, 256, 64, 64) if device_type == 'cpu' else (4, 256, 128, 128)
    return dict(quick=False, parity_sizes=[(2, 256, 32, 32), (1, 64, 31, 45)],
                empty_batch_size=(0, 256, 16, 16), latency_size=latency, latency_warmup=2,
                latency_repeats=5, train_models=None, train_iters=5, train_batch=2,
                ddp_steps=5, carafe_size=(2, 256, 32, 32))


# ---------------------------------------------------------------------------------------
# the device and its environment
# ---------------------------------------------------------------------------------------
class DeviceUnavailable(RuntimeError):
    """The requested device cannot be used (the message says why)."""


def resolve_device(name: str) -> torch.device:
    """``torch.device`` for ``'cpu'`` or ``'cuda'`` (the current CUDA device); raises
    :class:`DeviceUnavailable` naming the reason when CUDA cannot be used."""
    if name == 'cpu':
        return torch.device('cpu')
    if name != 'cuda':
        raise ValueError(f"device must be 'cpu' or 'cuda', got {name!r}")
    if torch.version.cuda is None:
        raise DeviceUnavailable(
            f'CUDA is not available: torch {torch.__version__} is a build without CUDA '
            '(torch.version.cuda is None); install a CUDA build of torch (docs/install.md)')
    if not torch.cuda.is_available():
        raise DeviceUnavailable(
            f'CUDA is not available: torch {torch.__version__} (CUDA {torch.version.cuda}) '
            'finds no usable GPU (torch.cuda.is_available() is False: no GPU, no driver, '
            'or CUDA_VISIBLE_DEVICES hides them)')
    return torch.device('cuda', torch.cuda.current_device())


def device_properties(device: torch.device) -> Dict[str, Any]:
    """Name, memory and reduced-precision support of ``device``."""
    if device.type == 'cuda':
        props = torch.cuda.get_device_properties(device)
        capability = (props.major, props.minor)
        return dict(name=props.name, memory_bytes=int(props.total_memory),
                    capability=f'{props.major}.{props.minor}',
                    device_count=torch.cuda.device_count(),
                    bf16=bool(torch.cuda.is_bf16_supported()), tf32=capability >= (8, 0))
    import benchmark
    memory = None
    if hasattr(os, 'sysconf') and 'SC_PHYS_PAGES' in os.sysconf_names:
        memory = os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES')
    return dict(name=benchmark.environment_of(device)['device_name'], memory_bytes=memory,
                capability=torch.backends.cpu.get_cpu_capability(),
                device_count=os.cpu_count(), bf16=True, tf32=False)


def precisions(device_type: str, bf16: bool, tf32: bool) -> List[str]:
    """The parity check's precisions on a device: float32 everywhere; CPU autocast in
    bfloat16; CUDA autocast in float16, and bfloat16 and TF32 where the GPU has them."""
    if device_type == 'cpu':
        return ['float32', 'autocast_bfloat16']
    return (['float32'] + (['tf32'] if tf32 else []) + ['autocast_float16'] +
            (['autocast_bfloat16'] if bf16 else []))


def _check_mmcv_ops(device: torch.device) -> Dict[str, Any]:
    """Load ``mmcv.ops`` and run ``nms`` and ``roi_align`` on ``device`` on inputs whose
    results are known: two overlapping boxes and a far one keep boxes 0 and 2; a 2x2 RoIAlign
    of a constant map is that constant."""
    record: Dict[str, Any] = dict(status=PASSED, reason=None, probes={})
    try:
        import mmcv.ops as mmcv_ops
    except Exception as error:  # noqa: BLE001  (the report names it)
        return dict(status=FAILED, reason=f'mmcv.ops does not load: {_one_line(error)}',
                    probes={})
    record['compiled_with_cuda'] = mmcv_ops.get_compiling_cuda_version()
    boxes = torch.tensor([[0., 0., 10., 10.], [1., 1., 11., 11.], [20., 20., 30., 30.]],
                         device=device)
    scores = torch.tensor([0.9, 0.8, 0.7], device=device)
    features = torch.full((1, 1, 8, 8), 3.0, device=device)
    rois = torch.tensor([[0., 1., 1., 5., 5.]], device=device)
    probes = {
        'nms': (lambda: mmcv_ops.nms(boxes, scores, 0.5)[1].cpu().tolist(), [0, 2]),
        'roi_align': (lambda: mmcv_ops.roi_align(features, rois, (2, 2), 1.0, 2, 'avg',
                                                 True).cpu().flatten().tolist(), [3.0] * 4),
    }
    for name, (call, expected) in probes.items():
        try:
            got = call()
        except Exception as error:  # noqa: BLE001
            record['probes'][name] = f'error: {_one_line(error)}'
            record.update(status=FAILED, reason=f'mmcv.ops.{name} does not run on '
                          f'{device.type}: {_one_line(error)}')
            continue
        ok = got == expected
        record['probes'][name] = 'ok' if ok else f'wrong result {got} (expected {expected})'
        if not ok:
            record.update(status=FAILED, reason=f'mmcv.ops.{name} on {device.type} returned '
                          f'{got}, expected {expected}')
    return record


def _version(module: str) -> Optional[str]:
    try:
        return __import__(module).__version__
    except Exception as error:  # noqa: BLE001
        return f'not importable: {_one_line(error)}'


def environment(device: torch.device) -> Dict[str, Any]:
    """Versions, builds and the device; ``status`` failed when mmcv's ops fail on it."""
    from mmdysample import ops
    cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    env = dict(
        python=platform.python_version(), platform=platform.platform(),
        torch=torch.__version__, torch_cuda=torch.version.cuda, cudnn=cudnn,
        torch_threads=torch.get_num_threads(), device=device_properties(device),
        mmcv=_version('mmcv'), mmengine=_version('mmengine'), mmdet=_version('mmdet'),
        mmseg=_version('mmseg'), mmdysample=_version('mmdysample'),
        fused_cpu_kernel=dict(enabled=bool(ops.fused_enabled()),
                              built=bool(ops.extension_available()),
                              cache=str(ops.extension_cache_dir())),
        load_average_start=tool_helpers.load_average())
    env['mmcv_ops'] = _check_mmcv_ops(device)
    env['status'], env['reason'] = env['mmcv_ops']['status'], env['mmcv_ops']['reason']
    return env


# ---------------------------------------------------------------------------------------
# numerics
# ---------------------------------------------------------------------------------------
def _relative_error(actual: torch.Tensor, reference: torch.Tensor,
                    size: Callable[[torch.Tensor], torch.Tensor]) -> float:
    """``size(actual - reference) / size(reference)`` in float64 on the CPU (the absolute
    error when the reference is all zeros; ``inf`` for a non-finite ``actual`` or another
    shape; 0 for empty tensors)."""
    actual, reference = actual.detach().double().cpu(), reference.detach().double().cpu()
    if actual.shape != reference.shape or not bool(torch.isfinite(actual).all()):
        return math.inf
    if actual.numel() == 0:
        return 0.0
    scale = size(reference).item()
    return size(actual - reference).item() / (scale if scale > 0 else 1.0)


def scaled_error(actual: torch.Tensor, reference: torch.Tensor) -> float:
    """``max|actual - reference| / max|reference|`` (:func:`_relative_error`)."""
    return _relative_error(actual, reference, lambda t: t.abs().max())


def normwise_error(actual: torch.Tensor, reference: torch.Tensor) -> float:
    """``||actual - reference|| / ||reference||`` (Frobenius; :func:`_relative_error`)."""
    return _relative_error(actual, reference, lambda t: t.norm())


@contextlib.contextmanager
def precision_mode(name: str, device: torch.device):
    """The context of one parity precision on ``device``: TF32 on only for ``'tf32'``
    (restored after), autocast for ``'autocast_*'``."""
    if name not in LIMITS:
        raise ValueError(f'precision must be one of {sorted(LIMITS)}, got {name!r}')
    matmul, cudnn = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    tf32 = name == 'tf32'
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = tf32
    try:
        if name in AUTOCAST_DTYPES:
            with torch.autocast(device.type, dtype=AUTOCAST_DTYPES[name]):
                yield
        else:
            yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = matmul, cudnn


# ---------------------------------------------------------------------------------------
# upsamplers
# ---------------------------------------------------------------------------------------
def is_guided(name: str) -> bool:
    from mmengine.registry import MODELS

    from mmdysample.upsamplers import requires_guide
    return requires_guide(MODELS.get(name))


def build_layer(name: str, channels: int, seed: int = 0) -> torch.nn.Module:
    """``name`` with its defaults at x2, on the CPU in float32, in training mode; seeded."""
    from mmdysample.upsamplers import build_upsampler
    torch.manual_seed(seed)
    kwargs = dict(guide_channels=channels) if is_guided(name) else {}
    return build_upsampler(dict(type=name), channels, SCALE, **kwargs).train()


def _inputs(size: Sequence[int], guided: bool, seed: int = 0) -> Dict[str, torch.Tensor]:
    """float64 input, guide and output gradient, each exactly representable in float32."""
    B, C, H, W = size
    generator = torch.Generator().manual_seed(seed)
    out = (B, C, SCALE * H, SCALE * W)
    tensors = dict(x=torch.randn(size, generator=generator, dtype=torch.float64))
    if guided:
        tensors['guide'] = torch.randn(out, generator=generator, dtype=torch.float64)
    tensors['output_grad'] = torch.randn(out, generator=generator, dtype=torch.float64)
    return {key: value.float().double() for key, value in tensors.items()}


def forward_backward(layer: torch.nn.Module, inputs: Dict[str, torch.Tensor],
                     device: torch.device, dtype: torch.dtype,
                     context: Callable[[], Any] = contextlib.nullcontext
                     ) -> Dict[str, Any]:
    """One forward and backward of ``layer`` (already on ``device`` in ``dtype``) inside
    ``context()``; the loss is ``sum(output * output_grad)`` in float32/float64 whatever
    the output's dtype, so that the output gradient is exact. Returns the output, the
    input (and guide) gradient and the parameter gradients."""
    layer.zero_grad(set_to_none=True)
    x = inputs['x'].to(device, dtype, copy=True).requires_grad_(True)
    args = [x]
    if 'guide' in inputs:
        args.append(inputs['guide'].to(device, dtype, copy=True).requires_grad_(True))
    output_grad = inputs['output_grad'].to(device, dtype)
    with context():
        output = layer(*args)
    (output.to(dtype) * output_grad).sum().backward()
    result = dict(output=output.detach(), input_grad=x.grad)
    if len(args) > 1:
        result['guide_grad'] = args[1].grad
    result['param_grads'] = {name: p.grad for name, p in layer.named_parameters()}
    return result


def reference_computation(layer: torch.nn.Module,
                          inputs: Dict[str, torch.Tensor]) -> Dict[str, Any]:
    """``layer`` in float64 on the CPU, on the pure-PyTorch path (fused kernel off)."""
    from mmdysample.ops import use_fused
    reference = copy.deepcopy(layer).to('cpu', torch.float64)
    with use_fused(False):
        return forward_backward(reference, inputs, torch.device('cpu'), torch.float64)


def compare(result: Dict[str, Any], reference: Dict[str, Any], precision: str
            ) -> Dict[str, Any]:
    """Errors of ``result`` against ``reference`` per quantity and the verdict for
    ``precision`` (:data:`LIMITS`). The parameters' error is that of all their gradients as
    one vector; ``param_grad_worst`` names the tensor with the largest norm-wise error
    (``param_grad_worst_error``)."""
    metrics = dict(scaled=scaled_error, normwise=normwise_error)
    limits = LIMITS[precision]
    errors: Dict[str, Any] = {}
    for key in ('output', 'input_grad', 'guide_grad'):
        if key in reference:
            got = result.get(key)
            errors[key] = math.inf if got is None else \
                metrics[limits[key][0]](got, reference[key])
    names = [name for name, grad in reference['param_grads'].items() if grad is not None]
    if names:
        got = {name: result['param_grads'].get(name) for name in names}
        per_tensor = {name: math.inf if got[name] is None else
                      normwise_error(got[name], reference['param_grads'][name])
                      for name in names}
        worst = max(names, key=lambda name: per_tensor[name])
        errors['param_grad'] = per_tensor[worst] if per_tensor[worst] == math.inf else \
            metrics[limits['param_grad'][0]](
                torch.cat([got[name].detach().double().cpu().flatten() for name in names]),
                torch.cat([reference['param_grads'][name].double().flatten()
                           for name in names]))
        errors['param_grad_worst'], errors['param_grad_worst_error'] = worst, per_tensor[worst]
    bad = [key for key in limits if key in errors and not errors[key] <= limits[key][1]]
    record = dict(precision=precision, limits={key: dict(metric=metric, limit=limit)
                                               for key, (metric, limit) in limits.items()},
                  errors=errors, status=FAILED if bad else PASSED, reason=None)
    if bad:
        key = bad[0]
        metric, limit = limits[key]
        record['reason'] = f'{precision} {key} {metric} error {errors[key]:.2g} > {limit:g}'
        if key == 'param_grad':
            record['reason'] += (f" (worst tensor {errors['param_grad_worst']}: "
                                 f"{errors['param_grad_worst_error']:.2g})")
    return record


def parity(name: str, device: torch.device, size: Sequence[int],
           precision_names: Sequence[str]) -> List[Dict[str, Any]]:
    """The parity records of one upsampler at one size, one per precision."""
    layer = build_layer(name, size[1])
    inputs = _inputs(size, is_guided(name))
    reference = reference_computation(layer, inputs)
    on_device = copy.deepcopy(layer).to(device)
    records = []
    for precision in precision_names:
        try:
            result = forward_backward(on_device, inputs, device, torch.float32,
                                      lambda: precision_mode(precision, device))
            record = compare(result, reference, precision)
        except Exception as error:  # noqa: BLE001
            record = dict(precision=precision, errors={}, status=FAILED,
                          reason=f'{precision}: {_one_line(error)}')
        record['size'] = list(size)
        records.append(record)
    return records


def empty_batch(name: str, device: torch.device, size: Sequence[int]) -> Dict[str, Any]:
    """Forward and backward of a B=0 batch on ``device``: output ``(0, C, 2H, 2W)``, input
    gradient of the input's shape, parameter gradients finite (all zero: no sample)."""
    record: Dict[str, Any] = dict(size=list(size), status=PASSED, reason=None)
    try:
        layer = build_layer(name, size[1]).to(device)
        result = forward_backward(layer, _inputs(size, is_guided(name)), device, torch.float32)
        B, C, H, W = size
        expected = (B, C, SCALE * H, SCALE * W)
        problems = []
        if tuple(result['output'].shape) != expected:
            problems.append(f'output shape {tuple(result["output"].shape)} != {expected}')
        if result['input_grad'] is None or tuple(result['input_grad'].shape) != tuple(size):
            problems.append('no input gradient of the input\'s shape')
        for param, grad in result['param_grads'].items():
            if grad is not None and not (bool(torch.isfinite(grad).all())
                                         and grad.abs().max().item() == 0):
                problems.append(f'gradient of {param} not zero')
                break
        if problems:
            record.update(status=FAILED, reason='B=0: ' + '; '.join(problems))
    except Exception as error:  # noqa: BLE001
        record.update(status=FAILED, reason=f'B=0: {_one_line(error)}')
    return record


def latency(names: Sequence[str], device: torch.device, settings: Dict[str, Any]
            ) -> Dict[str, Dict[str, Any]]:
    """Forward+backward time and peak memory of each upsampler and of bilinear
    ``F.interpolate`` (``Interpolate(mode='bilinear')``) on one input: warm-up calls, then
    interleaved rounds (every layer in turn, so that load from elsewhere hits all alike);
    per layer the median time over rounds and the median of its per-round ratio to
    bilinear. Uses :mod:`benchmark`'s cases (the same closures as ``tools/benchmark.py``)."""
    import benchmark
    size = settings['latency_size']
    timer = tool_helpers.device_time_per_call
    labels = ['bilinear'] + list(names)
    cfgs = [dict(type='Interpolate', mode='bilinear', align_corners=False)] + \
        [dict(type=name) for name in names]
    cases, records = {}, {}
    for label, cfg in zip(labels, cfgs):
        case = benchmark.Case(label, size, SCALE, torch.float32, device, cfg=cfg)
        if case.error is not None:
            records[label] = dict(error=case.error)
            continue
        try:
            for _ in range(settings['latency_warmup']):
                case.train_step()
            call_ms = timer(case.train_step, 1, device)
            case.iters['train'] = benchmark.iters_for(call_ms) if not settings['quick'] else 1
            cases[label] = case
        except Exception as error:  # noqa: BLE001
            records[label] = dict(error=_one_line(error))
    samples: Dict[str, List[float]] = {label: [] for label in cases}
    for _ in range(settings['latency_repeats']):
        for label, case in cases.items():
            samples[label].append(timer(case.train_step, case.iters['train'], device))
    for label, case in cases.items():
        case.model.zero_grad(set_to_none=True)
        case.train_input.grad = None
        if case.train_guide is not None:
            case.train_guide.grad = None
        stats = tool_helpers.summarize_times(samples[label], case.iters['train'])
        records[label] = dict(error=None, train_ms=stats.to_dict(),
                              peak_memory_train_bytes=tool_helpers.peak_memory_bytes(
                                  case.train_step, device))
    base = records.get('bilinear', {})
    for label, record in records.items():
        ok = record.get('error') is None and base.get('error', 'missing') is None
        record['train_ratio_to_bilinear'] = benchmark.median_ratio(
            samples[label], samples['bilinear']) if ok else None
        peak, base_peak = record.get('peak_memory_train_bytes'), \
            base.get('peak_memory_train_bytes')
        record['peak_memory_ratio_to_bilinear'] = peak / base_peak \
            if ok and base_peak else None
    return records


def check_upsamplers(device: torch.device, settings: Dict[str, Any], precision_names,
                     names: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    """The upsamplers section: parity at each size and precision, the empty batch and the
    cost of every registered upsampler (or of ``names``); failed when any parity or empty
    batch fails or a layer cannot run forward+backward for the timing."""
    from mmdysample.upsamplers import registered_upsamplers
    names = list(names or registered_upsamplers())
    results = []
    for name in names:
        record: Dict[str, Any] = dict(name=name, guided=is_guided(name), parity=[])
        try:
            for size in settings['parity_sizes']:
                record['parity'] += parity(name, device, size, precision_names)
        except Exception as error:  # noqa: BLE001  (building or the reference failed)
            record['parity'].append(dict(precision=None, size=None, errors={}, status=FAILED,
                                         reason=f'parity: {_one_line(error)}'))
        record['empty_batch'] = empty_batch(name, device, settings['empty_batch_size'])
        results.append(record)
    timings = latency(names, device, settings)
    for record in results:
        record['latency'] = timings.get(record['name'])
    failures = []
    for record in results:
        for item in record['parity'] + [record['empty_batch']]:
            if item['status'] == FAILED:
                failures.append(f"{record['name']}: {item['reason']}")
        error = (record['latency'] or {}).get('error')
        if error:
            failures.append(f"{record['name']}: forward+backward for timing: {error}")
    return dict(status=FAILED if failures else PASSED, reason=failures[0] if failures else None,
                failures=failures, precisions=list(precision_names),
                limits={p: {key: dict(metric=metric, limit=limit)
                            for key, (metric, limit) in LIMITS[p].items()}
                        for p in precision_names},
                parity_sizes=[list(s) for s in settings['parity_sizes']],
                bilinear=timings.get('bilinear'), latency_size=list(settings['latency_size']),
                results=results)


# ---------------------------------------------------------------------------------------
# CARAFE: mmcv's CUDA kernel against ours
# ---------------------------------------------------------------------------------------
def check_carafe(device: torch.device, size: Sequence[int],
                 mmcv_carafe: Optional[Callable] = None, kernel_size: int = 5,
                 group_size: int = 1) -> Dict[str, Any]:
    """``mmcv_carafe`` (default ``mmcv.ops.carafe`` on CUDA) against
    :func:`mmdysample.functional.carafe` on ``device`` in float32: the output and the
    gradients of the features and the (softmax-normalised) kernels, scaled error within the
    float32 tolerance. On CPU without a stand-in: skipped, mmcv has no CPU kernel."""
    from mmdysample.functional import carafe
    if mmcv_carafe is None:
        if device.type != 'cuda':
            return dict(status=SKIPPED, reason='mmcv has no CPU CARAFE kernel '
                        '(mmcv.ops.carafe is CUDA-only); on CPU the CARAFE layer uses '
                        'mmdysample.functional.carafe, checked in the upsamplers section')
        try:
            from mmcv.ops import carafe as mmcv_carafe
        except Exception as error:  # noqa: BLE001
            return dict(status=FAILED, reason=f'mmcv.ops.carafe does not load: '
                        f'{_one_line(error)}')
    B, C, H, W = size
    generator = torch.Generator().manual_seed(0)
    features = torch.randn(size, generator=generator)
    masks = torch.randn(B, group_size, kernel_size**2, SCALE * H, SCALE * W,
                        generator=generator).softmax(2).flatten(1, 2)
    output_grad = torch.randn(B, C, SCALE * H, SCALE * W, generator=generator)
    results = {}
    for label, function in (('mmcv', mmcv_carafe), ('mmdysample', carafe)):
        f = features.to(device).requires_grad_(True)
        m = masks.to(device).requires_grad_(True)
        out = function(f, m, kernel_size, group_size, SCALE)
        (out * output_grad.to(device)).sum().backward()
        results[label] = dict(output=out.detach(), features_grad=f.grad, masks_grad=m.grad)
    errors = {key: scaled_error(results['mmcv'][key], results['mmdysample'][key])
              for key in ('output', 'features_grad', 'masks_grad')}
    tolerance = LIMITS['float32']['output'][1]
    bad = [key for key, error in errors.items() if not error <= tolerance]
    return dict(status=FAILED if bad else PASSED, size=list(size), kernel_size=kernel_size,
                group_size=group_size, tolerance=tolerance, errors=errors,
                reason=(f'mmcv.ops.carafe vs mmdysample.functional.carafe: {bad[0]} error '
                        f'{errors[bad[0]]:.2g} > {tolerance:g}') if bad else None)


# ---------------------------------------------------------------------------------------
# training the demo models
# ---------------------------------------------------------------------------------------
def _demo_config(key: str, data_root: str, batch_size: int):
    """The DySample twin of demo model ``key`` read to train on ``data_root``'s synthetic
    data (the demo driver's own ``--cfg-options``), ``batch_size`` images a batch."""
    import demo
    from mmengine.config import Config
    model = demo.DEMO_MODELS[key]
    (config, ) = [c for name, c in model.configs.items() if name.startswith('DySample')]
    cfg = Config.fromfile(osp.join(demo.REPO_ROOT, config))
    tool_helpers.merge_cfg_options(cfg, demo.data_root_options(model.layout, data_root))
    cfg.train_dataloader.batch_size = batch_size
    return config, cfg


def train_iterations(cfg, device: torch.device, iters: int) -> List[float]:
    """``iters`` optimiser steps (``model.train_step``, the config's optimiser at its base
    learning rate) of ``cfg.model`` on ``device``, all on the first training batch; returns
    the losses."""
    from mmengine.model import revert_sync_batchnorm
    from mmengine.optim import build_optim_wrapper
    from mmengine.registry import DefaultScope
    from mmengine.runner import Runner

    scope = tool_helpers.register_scope_modules(cfg)
    with DefaultScope.overwrite_default_scope(scope):
        model = revert_sync_batchnorm(tool_helpers.build_model(cfg, device=device)).train()
        loader = Runner.build_dataloader(cfg.train_dataloader, seed=0)
        batch = next(iter(loader))
        optim_wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
        losses = []
        for _ in range(iters):
            log_vars = model.train_step(batch, optim_wrapper)
            losses.append(float(log_vars['loss']))
    return losses


def check_training(device: torch.device, settings: Dict[str, Any]) -> Dict[str, Any]:
    """The training section: a few steps of each demo family's DySample twin on a fixed
    synthetic batch (written to a temporary folder); failed when a loss is not finite or a
    model does not build or step."""
    import demo

    from mmdysample.datasets import generate_synthetic_dataset
    keys = settings['train_models'] or list(demo.DEMO_MODELS)
    results, failures = [], []
    with tempfile.TemporaryDirectory(prefix='check_device_data_') as data_root:
        generate_synthetic_dataset(data_root, seed=0, num_train=settings['train_batch'],
                                   num_val=1)
        if any(demo.DEMO_MODELS[key].layout == 'nyu' for key in keys):
            from mmdysample.datasets.synthetic_nyu import generate_synthetic_nyu
            generate_synthetic_nyu(osp.join(data_root, 'nyu'), seed=0,
                                   num_train=settings['train_batch'], num_test=1)
        for key in keys:
            start = time.perf_counter()
            record: Dict[str, Any] = dict(model=key, name=demo.DEMO_MODELS[key].name,
                                          iters=settings['train_iters'])
            try:
                record['config'], cfg = _demo_config(key, data_root, settings['train_batch'])
                losses = train_iterations(cfg, device, settings['train_iters'])
                finite = all(math.isfinite(loss) for loss in losses)
                record.update(losses=losses, finite=finite, decreased=losses[-1] < losses[0],
                              status=PASSED if finite else FAILED,
                              reason=None if finite else f'{key}: non-finite loss {losses}')
            except Exception as error:  # noqa: BLE001
                record.update(status=FAILED, reason=f'{key}: {_one_line(error)}')
            record['seconds'] = round(time.perf_counter() - start, 2)
            if record['status'] == FAILED:
                failures.append(record['reason'])
            results.append(record)
    return dict(status=FAILED if failures else PASSED, reason=failures[0] if failures else None,
                failures=failures, iters=settings['train_iters'],
                batch_size=settings['train_batch'], results=results)


# ---------------------------------------------------------------------------------------
# two-process DDP
# ---------------------------------------------------------------------------------------
DDP_CHANNELS, DDP_BATCH, DDP_SIZE, DDP_LR = 32, 4, 12, 20.0


def ddp_plan(device_type: str, cuda_devices: int) -> Dict[str, Any]:
    """Backend and device of each of the two ranks: gloo on CPU; nccl with a GPU per rank
    when there are two; with one GPU both ranks on it over gloo (nccl refuses two ranks on
    one GPU)."""
    if device_type == 'cpu':
        return dict(backend='gloo', devices=['cpu', 'cpu'], note=None)
    if cuda_devices >= 2:
        return dict(backend='nccl', devices=['cuda:0', 'cuda:1'], note=None)
    return dict(backend='gloo', devices=['cuda:0', 'cuda:0'],
                note='one GPU: nccl cannot put two ranks on it, so gloo ran both')


def _ddp_data(steps: int):
    """The fixed global batch (input, target) of every step, and the layer's initial state."""
    from mmdysample.upsamplers import DySamplePlus
    generator = torch.Generator().manual_seed(1)
    shape = (DDP_BATCH, DDP_CHANNELS, DDP_SIZE, DDP_SIZE)
    target_shape = (DDP_BATCH, DDP_CHANNELS, SCALE * DDP_SIZE, SCALE * DDP_SIZE)
    batches = [(torch.randn(shape, generator=generator),
                torch.randn(target_shape, generator=generator)) for _ in range(steps)]
    torch.manual_seed(0)
    layer = DySamplePlus(DDP_CHANNELS, SCALE)
    with torch.no_grad():  # offsets large enough that sampling moves them (std 1e-3 init)
        for param in layer.parameters():
            param.normal_(0, 0.05)
    return batches, layer.state_dict()


def _train_ddp_layer(layer, batches, device, rank: int = 0, world: int = 1,
                     on_step: Optional[Callable] = None):
    """SGD steps of the mean squared error; rank ``rank`` of ``world`` takes its slice of
    each batch. ``on_step(layer)`` runs after each backward."""
    optimizer = torch.optim.SGD(layer.parameters(), lr=DDP_LR)
    share = DDP_BATCH // world
    for x, target in batches:
        optimizer.zero_grad()
        rows = slice(rank * share, (rank + 1) * share)
        output = layer(x[rows].to(device))
        torch.nn.functional.mse_loss(output, target[rows].to(device)).backward()
        if on_step is not None:
            on_step()
        optimizer.step()


def _ddp_worker(rank: int, plan: Dict[str, Any], port: int, steps: int, out_dir: str) -> None:
    """One rank (``torch.multiprocessing`` entry point): DDP training, then its gradients of
    every step and its final parameters saved to ``out_dir/rank<r>.pt``."""
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    from mmdysample.upsamplers import DySamplePlus
    torch.set_num_threads(1)
    device = torch.device(plan['devices'][rank])
    if device.type == 'cuda':
        torch.cuda.set_device(device)
    dist.init_process_group(plan['backend'], init_method=f'tcp://127.0.0.1:{port}',
                            rank=rank, world_size=2, timeout=datetime.timedelta(seconds=120))
    try:
        batches, state = _ddp_data(steps)
        layer = DySamplePlus(DDP_CHANNELS, SCALE)
        layer.load_state_dict(state)
        layer.to(device)
        model = DistributedDataParallel(
            layer, device_ids=[device.index] if device.type == 'cuda' else None)
        grads = []

        def record():
            grads.append(torch.cat([p.grad.flatten() for p in layer.parameters()]).cpu())

        _train_ddp_layer(model, batches, device, rank, 2, record)
        torch.save(dict(grads=grads, state={k: v.cpu() for k, v in layer.state_dict().items()}),
                   osp.join(out_dir, f'rank{rank}.pt'))
        dist.barrier()
    finally:
        dist.destroy_process_group()


def check_ddp(device: torch.device, settings: Dict[str, Any], timeout_s: float = 300.0
              ) -> Dict[str, Any]:
    """Spawn the two ranks, compare their gradients and parameters with each other and
    with one process training the same layer on the whole batches on ``device``."""
    import socket

    import torch.multiprocessing as mp
    plan = ddp_plan(device.type, torch.cuda.device_count() if device.type == 'cuda' else 0)
    steps = settings['ddp_steps']
    record: Dict[str, Any] = dict(plan=plan, steps=steps, tolerance=DDP_TOLERANCE,
                                  rank_tolerance=DDP_RANK_TOLERANCE)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(('127.0.0.1', 0))
        port = sock.getsockname()[1]
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix='check_device_ddp_') as out_dir:
        try:
            context = mp.start_processes(_ddp_worker, args=(plan, port, steps, out_dir),
                                         nprocs=2, join=False, start_method='spawn')
            while not context.join(timeout=1):
                if time.perf_counter() - start > timeout_s:
                    for process in context.processes:
                        process.kill()
                    raise TimeoutError(f'the two ranks did not finish in {timeout_s:.0f} s')
            ranks = [torch.load(osp.join(out_dir, f'rank{r}.pt')) for r in range(2)]
        except Exception as error:  # noqa: BLE001  (a rank's traceback ends in its error)
            record.update(status=FAILED, reason=f'ddp ({plan["backend"]}): '
                          f'{_one_line(error)}', seconds=round(time.perf_counter() - start, 2))
            return record
    record['seconds'] = round(time.perf_counter() - start, 2)
    batches, state = _ddp_data(steps)
    from mmdysample.upsamplers import DySamplePlus
    single = DySamplePlus(DDP_CHANNELS, SCALE)
    single.load_state_dict(state)
    single.to(device)
    _train_ddp_layer(single, batches, device)
    single_state = {k: v.cpu() for k, v in single.state_dict().items()}
    rank_grads = max(scaled_error(a, b) for a, b in zip(ranks[0]['grads'], ranks[1]['grads']))
    rank_params = max(scaled_error(ranks[0]['state'][k], ranks[1]['state'][k])
                      for k in ranks[0]['state'])
    vs_single = max(scaled_error(ranks[0]['state'][k], single_state[k]) for k in single_state)
    moved = max(scaled_error(single_state[k], state[k]) for k in state)
    record.update(rank_grad_disagreement=rank_grads, rank_param_disagreement=rank_params,
                  error_vs_single_process=vs_single, param_change=moved)
    problems = []
    if len(ranks[0]['grads']) != steps or len(ranks[1]['grads']) != steps:
        problems.append(f'expected {steps} gradients per rank')
    if not rank_grads <= DDP_RANK_TOLERANCE:
        problems.append(f'ranks disagree on the gradients by {rank_grads:.2g}')
    if not rank_params <= DDP_RANK_TOLERANCE:
        problems.append(f'ranks disagree on the parameters by {rank_params:.2g}')
    if not vs_single <= DDP_TOLERANCE:
        problems.append(f'parameters differ from one process on the whole batch by '
                        f'{vs_single:.2g} > {DDP_TOLERANCE:g}')
    if not moved > 100 * DDP_TOLERANCE:
        problems.append(f'the parameters barely moved ({moved:.2g}): nothing was checked')
    record.update(status=FAILED if problems else PASSED,
                  reason=f'ddp ({plan["backend"]}): {problems[0]}' if problems else None)
    return record


# ---------------------------------------------------------------------------------------
# the report
# ---------------------------------------------------------------------------------------
def _one_line(error: BaseException) -> str:
    lines = [line.strip() for line in str(error).strip().splitlines() if line.strip()]
    return f'{type(error).__name__}: {lines[-1] if lines else ""}'.rstrip(': ')


def _run_section(function: Callable, *args, **kwargs) -> Dict[str, Any]:
    """Run one section; a crash becomes a failed section with its one-line reason."""
    start = time.perf_counter()
    try:
        section = function(*args, **kwargs)
    except Exception as error:  # noqa: BLE001
        traceback.print_exc()
        section = dict(status=FAILED, reason=_one_line(error))
    section['seconds'] = round(time.perf_counter() - start, 2)
    return section


def failure_reasons(report: Dict[str, Any]) -> List[str]:
    """Every failure, ``'section: reason'``, in report order."""
    reasons = []
    for name in ('environment', ) + CHECKS:
        section = report['sections'].get(name) if name != 'environment' else \
            report['environment']
        if section is None or section.get('status') != FAILED:
            continue
        for reason in section.get('failures') or [section.get('reason')]:
            reasons.append(f'{name}: {reason}')
    return reasons


def one_line_reason(reasons: Sequence[str]) -> str:
    """The first failure and how many more, on one line."""
    more = f' (and {len(reasons) - 1} more, see the report)' if len(reasons) > 1 else ''
    return ' '.join(f'{reasons[0]}{more}'.split())


def _fmt(value: Optional[float], spec: str = '.1e') -> str:
    if value is None:
        return '-'
    return 'inf' if value == math.inf else format(value, spec)


def _mb(value: Optional[int]) -> str:
    return '-' if value is None else f'{value / 2**20:.1f}'


def markdown(report: Dict[str, Any]) -> str:
    env, sections = report['environment'], report['sections']
    dev = env.get('device', {})
    verdict = 'PASSED' if report['passed'] else 'FAILED: ' + one_line_reason(report['failures'])
    lines = [f"# mmdysample device check: {report['device']}"
             f"{' (quick)' if report['quick'] else ''}", '',
             f"**{verdict}**", '',
             f"{report['started']}, {report['wall_s']:.0f} s, load average (1/5/15 min) "
             f"{env.get('load_average_start')} at the start, {report['load_average_end']} at "
             f"the end.", '', '## Environment', '', '| | |', '|---|---|']
    rows = [('device', f"{dev.get('name')} ({report['device']}, "
             f"{_mb(dev.get('memory_bytes'))} MB, capability {dev.get('capability')}, "
             f"count {dev.get('device_count')}, bf16 {dev.get('bf16')}, "
             f"TF32 {dev.get('tf32')})"),
            ('torch', f"{env.get('torch')} (CUDA {env.get('torch_cuda')}, cuDNN "
             f"{env.get('cudnn')}), {env.get('torch_threads')} threads"),
            ('python', f"{env.get('python')} on {env.get('platform')}")]
    rows += [(name, env.get(name)) for name in ('mmcv', 'mmengine', 'mmdet', 'mmseg',
                                                 'mmdysample')]
    ops = env.get('mmcv_ops', {})
    rows.append(('mmcv ops on the device', f"{ops.get('status')}: "
                 f"{ops.get('probes')} (mmcv compiled with CUDA: "
                 f"{ops.get('compiled_with_cuda')})" + (f"; {ops.get('reason')}"
                                                        if ops.get('reason') else '')))
    fused = env.get('fused_cpu_kernel', {})
    rows.append(('fused DySample CPU kernel', f"built {fused.get('built')}, enabled "
                 f"{fused.get('enabled')}"))
    lines += [f'| {key} | {value} |' for key, value in rows]
    for name in CHECKS:
        section = sections.get(name)
        if section is None:
            continue
        lines += ['', f'## {SECTION_TITLES[name]}', '']
        if 'results' in section or name in ('carafe', 'ddp'):
            lines += SECTION_RENDERERS[name](section)
        else:  # the section crashed before it had results
            lines.append(_status(section))
    not_run = [name for name in CHECKS if name not in sections]
    if not_run:
        lines += ['', f"Not run (--checks): {', '.join(not_run)}."]
    return '\n'.join(lines) + '\n'


def _status(record: Dict[str, Any]) -> str:
    return record['status'] + (f": {record['reason']}" if record.get('reason') else '')


def _carafe_lines(carafe: Dict[str, Any]) -> List[str]:
    line = _status(carafe)
    if carafe.get('errors'):
        line += (f"; input {'x'.join(map(str, carafe['size']))}, float32, scaled errors: " +
                 ', '.join(f'{key} {_fmt(value)}' for key, value in carafe['errors'].items())
                 + f" (limit {carafe['tolerance']:g})")
    return [line]


def _training_lines(training: Dict[str, Any]) -> List[str]:
    lines = [f"{training['iters']} iterations, batch {training['batch_size']}, the config's "
             "optimiser at its base learning rate.", '',
             '| model | config | losses | finite | went down | s | status |',
             '|---|---|---|---|---|---:|---|']
    for r in training['results']:
        losses = ' → '.join(f'{v:.3g}' for v in r.get('losses', [])) or '-'
        lines.append(f"| {r['name']} | {osp.basename(r.get('config', '-'))} | {losses} | "
                     f"{r.get('finite', '-')} | {r.get('decreased', '-')} | "
                     f"{r['seconds']:.1f} | {_status(r)} |")
    return lines


def _ddp_lines(ddp: Dict[str, Any]) -> List[str]:
    plan = ddp.get('plan', {})
    lines = [f"{_status(ddp)}; backend {plan.get('backend')}, devices {plan.get('devices')}, "
             f"{ddp.get('steps')} SGD steps of a DySample+ layer"
             + (f" ({plan['note']})" if plan.get('note') else '') + '.']
    if 'rank_grad_disagreement' in ddp:
        lines.append(
            f"The ranks disagree by {_fmt(ddp['rank_grad_disagreement'])} (gradients) and "
            f"{_fmt(ddp['rank_param_disagreement'])} (parameters), limit "
            f"{ddp['rank_tolerance']}; the parameters differ from one process trained on the "
            f"whole batches by {_fmt(ddp['error_vs_single_process'])} (limit "
            f"{ddp['tolerance']:g}), and moved by {_fmt(ddp['param_change'])} of their "
            "scale.")
    return lines


def _upsampler_tables(up: Dict[str, Any]) -> List[str]:
    precision_names = up['precisions']
    lines = ['Parity with float64 on the CPU (pure-PyTorch path, same weights and input): '
             'the largest error over the output and the gradients of the input, guide and '
             'parameters: the largest scaled error / the largest normwise error. '
             '"scaled": max |error| / max |reference|; "normwise": '
             '||error|| / ||reference|| (the parameters: all their gradients as one vector). '
             'Limits: ' + '; '.join(
                 f"{p}: " + ', '.join(f"{key} {v['metric']} {v['limit']:g}"
                                      for key, v in lim.items())
                 for p, lim in up['limits'].items()) + '.', '',
             '| Upsampler | size | ' + ' | '.join(precision_names) + ' |',
             '|---|---|' + '---:|' * len(precision_names)]
    for r in up['results']:
        by_size: Dict[str, Dict[str, Any]] = {}
        for item in r['parity']:
            by_size.setdefault(str(item.get('size')), {})[item.get('precision')] = item
        for size, items in by_size.items():
            cells = []
            for p in precision_names:
                item = items.get(p) or items.get(None)
                if item is None:
                    cells.append('-')
                    continue
                worst = ' / '.join(
                    _fmt(max(values)) for metric in ('scaled', 'normwise')
                    for values in [[v for k, v in item['errors'].items()
                                    if k in item['limits'] and
                                    item['limits'][k]['metric'] == metric]] if values) \
                    if item.get('limits') else '-'
                cells.append(worst if item['status'] == PASSED else
                             f"**{worst} FAIL** ({item['reason']})")
            name = r['name'] + (' (guided)' if r['guided'] else '')
            size_text = 'x'.join(map(str, json.loads(size))) if size != 'None' else '-'
            lines.append(f'| {name} | {size_text} | ' + ' | '.join(cells) + ' |')
    base = up.get('bilinear') or {}
    lines += ['', f"Empty batch and forward+backward cost, float32, input "
              f"{'x'.join(map(str, up['latency_size']))} (bilinear F.interpolate: "
              f"{_fmt((base.get('train_ms') or {}).get('median'), '.3g')} ms, "
              f"{_mb(base.get('peak_memory_train_bytes'))} MB).", '',
              '| Upsampler | B=0 fwd+bwd | fwd+bwd ms (quartiles) | x bilinear | peak MB '
              '| x bilinear |', '|---|---|---:|---:|---:|---:|']
    for r in up['results']:
        empty = r['empty_batch']
        empty_text = 'ok' if empty['status'] == PASSED else f"**FAIL** ({empty['reason']})"
        lat = r.get('latency') or {}
        if lat.get('error') or not lat:
            lines.append(f"| {r['name']} | {empty_text} | failed: {lat.get('error')} | | | |")
            continue
        t = lat['train_ms']
        lines.append(f"| {r['name']} | {empty_text} | {t['median']:.3g} ({t['q1']:.3g}-"
                     f"{t['q3']:.3g}) | {_fmt(lat['train_ratio_to_bilinear'], '.2f')} | "
                     f"{_mb(lat['peak_memory_train_bytes'])} | "
                     f"{_fmt(lat['peak_memory_ratio_to_bilinear'], '.2f')} |")
    return lines


SECTION_TITLES = {
    'upsamplers': 'Upsamplers',
    'carafe': 'CARAFE: mmcv.ops.carafe vs mmdysample.functional.carafe',
    'training': 'Training the demo models (DySample twins, one fixed batch)',
    'ddp': 'Two-process DistributedDataParallel',
}
SECTION_RENDERERS = {'upsamplers': _upsampler_tables, 'carafe': _carafe_lines,
                     'training': _training_lines, 'ddp': _ddp_lines}


def _json_safe(value):
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--device', choices=['cpu', 'cuda'], required=True)
    parser.add_argument('--quick', action='store_true',
                        help='fewer sizes, rounds and training steps (about a minute on CPU)')
    parser.add_argument('--out', default=None,
                        help='report folder (default work_dirs/check_device/<device>)')
    parser.add_argument('--checks', nargs='+', choices=CHECKS, default=list(CHECKS),
                        help='sections to run (the environment always is)')
    parser.add_argument('--upsamplers', nargs='+', default=None,
                        help='only these registered upsamplers (default: every one)')
    parser.add_argument('--threads', type=int, default=None,
                        help='CPU intra-op threads (torch.set_num_threads; default: as is)')
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    if args.threads is not None and args.threads < 1:
        parser.error(f'--threads must be >= 1, got {args.threads}')
    args.command = ' '.join(['python tools/check_device.py'] + argv)
    return args


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    try:
        device = resolve_device(args.device)
    except DeviceUnavailable as error:
        print(f'check_device: {error}', file=sys.stderr)
        return EXIT_NO_DEVICE
    tool_helpers.import_mmdysample()
    from mmdysample.upsamplers import registered_upsamplers
    if args.upsamplers:
        unknown = [n for n in args.upsamplers if n not in registered_upsamplers()]
        if unknown:
            print(f'check_device: --upsamplers: unknown {unknown}; registered: '
                  f'{", ".join(registered_upsamplers())}', file=sys.stderr)
            return EXIT_USAGE
    threads = torch.get_num_threads()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    try:
        return _run(args, device)
    finally:
        torch.set_num_threads(threads)


def _run(args: argparse.Namespace, device: torch.device) -> int:
    """Every section, the report written and printed; the exit status."""
    out_dir = args.out or osp.join('work_dirs', 'check_device', device.type)
    settings = settings_for(args.quick, device.type)
    start = time.perf_counter()
    report: Dict[str, Any] = dict(
        tool='tools/check_device.py', schema_version=SCHEMA_VERSION, device=str(device),
        quick=args.quick, command=args.command,
        started=time.strftime('%Y-%m-%d %H:%M:%S'),
        settings=dict(settings, checks=list(args.checks)), sections={})
    report['environment'] = _run_section(environment, device)
    dev = report['environment'].get('device', {})
    precision_names = precisions(device.type, dev.get('bf16', False), dev.get('tf32', False))
    runners = {
        'upsamplers': lambda: check_upsamplers(device, settings, precision_names,
                                               args.upsamplers),
        'carafe': lambda: check_carafe(device, settings['carafe_size']),
        'training': lambda: check_training(device, settings),
        'ddp': lambda: check_ddp(device, settings),
    }
    for name in CHECKS:
        if name in args.checks:
            print(f'check_device: {name}...', file=sys.stderr, flush=True)
            report['sections'][name] = _run_section(runners[name])
    report['failures'] = failure_reasons(report)
    report['passed'] = not report['failures']
    report['wall_s'] = round(time.perf_counter() - start, 2)
    report['load_average_end'] = tool_helpers.load_average()
    text = markdown(report)
    os.makedirs(out_dir, exist_ok=True)
    with open(osp.join(out_dir, 'check_device.md'), 'w') as f:
        f.write(text)
    with open(osp.join(out_dir, 'check_device.json'), 'w') as f:
        json.dump(_json_safe(report), f, indent=2)
    print(text)
    print(f'check_device: report in {osp.join(out_dir, "check_device.md")} and '
          f'check_device.json', file=sys.stderr)
    if report['failures']:
        print(f'check_device: FAILED: {one_line_reason(report["failures"])}', file=sys.stderr)
        return EXIT_FAILED
    return 0


if __name__ == '__main__':
    sys.exit(main())
