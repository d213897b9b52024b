"""Measuring upsamplers and models: parameters, FLOPs, latency and peak memory.

Used by ``tools/benchmark.py`` (one upsampler at a time) and ``tools/analyze_model.py``
(whole detectors/segmentors). Nothing here is a FLOP counter of its own: FLOPs come from
mmengine's tracing :class:`~mmengine.analysis.FlopAnalyzer`, to which
:func:`flop_handlers` adds or replaces the handlers of the few operators the upsamplers use
that it does not count exactly.

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

Peak memory (:func:`peak_memory_bytes`): on CUDA, ``torch.cuda.max_memory_allocated`` over
the call minus what was allocated before it. On CPU there is no allocator high-water mark,
so the CPU allocator's own accounting is read through ``torch.profiler`` with
``profile_memory=True``: it reports every allocation and free made while profiling, with
its size; the peak is the highest running sum of those sizes, i.e. the largest number of
bytes of tensor memory that the call itself held at any one time (inputs and parameters
that existed before the call are not included; memory that libraries allocate outside
PyTorch's allocator, e.g. oneDNN scratch space or thread stacks, is not seen).
"""
import contextlib
import copy
import json
import math
import os
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn

__all__ = [
    'PAPER_SEGFORMER_B1', 'count_parameters', 'flop_handlers', 'FlopCount', 'count_flops',
    'peak_memory_bytes', 'TimingStats', 'summarize_times', 'time_per_call', 'synchronize',
    'load_config', 'build_model', 'model_input', 'random_training_batch',
    'dysample_sampling_points', 'output_pixel_centres', 'DySampleRecorder'
]

#: Table 4 of the paper (SegFormer-B1 on ADE20K, 512x512): FLOPs and parameters of the
#: bilinear baseline, deltas of the other upsamplers, mIoU and bIoU. Only the upsamplers
#: this plugin implements are listed.
PAPER_SEGFORMER_B1: Dict[str, Dict[str, Any]] = {
    'Bilinear': dict(flops='15.9G', params='13.7M', miou=41.68, biou=27.80),
    'Deconv': dict(flops='+34.4G', params='+3.5M', miou=40.71, biou=25.94),
    'PixelShuffle': dict(flops='+34.4G', params='+14.2M', miou=41.50, biou=26.58),
    'CARAFE': dict(flops='+1.5G', params='+0.4M', miou=42.82, biou=29.84),
    'DySample-S': dict(flops='+0.2G', params='+6.1K', miou=43.23, biou=29.53),
    'DySample-S+': dict(flops='+0.3G', params='+12.3K', miou=43.58, biou=29.93),
    'DySample': dict(flops='+0.3G', params='+49.2K', miou=43.21, biou=29.12),
    'DySample+': dict(flops='+0.4G', params='+0.1M', miou=43.28, biou=29.23),
}


def count_parameters(module: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameter elements of ``module`` (shared parameters counted once)."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


# ---------------------------------------------------------------------------------------
# FLOPs
# ---------------------------------------------------------------------------------------
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


# ---------------------------------------------------------------------------------------
# Memory
# ---------------------------------------------------------------------------------------
def synchronize(device: Union[str, torch.device]) -> None:
    """Wait for the device's queued work (CUDA); nothing to do on CPU."""
    device = torch.device(device)
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


@contextlib.contextmanager
def _native_stderr_silenced() -> Iterator[None]:
    """Send file descriptor 2 to /dev/null: the profiler's native library prints two
    'USDT ... profiler_start/stop' lines on every start/stop, which would bury the output."""
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def _cpu_peak_from_profiler(fn: Callable[[], Any]) -> int:
    from torch.profiler import ProfilerActivity, profile

    prof = profile(activities=[ProfilerActivity.CPU], profile_memory=True)
    with _native_stderr_silenced():
        prof.start()
    try:
        fn()
    finally:
        with _native_stderr_silenced():
            prof.stop()
    handle, trace_path = tempfile.mkstemp(suffix='.json')
    os.close(handle)
    try:
        prof.export_chrome_trace(trace_path)
        with open(trace_path) as trace_file:
            events = json.load(trace_file)['traceEvents']
    finally:
        os.remove(trace_path)
    memory_events = sorted(
        (e for e in events
         if e.get('name') == '[memory]' and e.get('args', {}).get('Device Type', 0) == 0),
        key=lambda e: (e['ts'], e['args'].get('Ev Idx', 0)))
    live_bytes = peak = 0
    for event in memory_events:
        live_bytes += event['args']['Bytes']  # negative for frees
        peak = max(peak, live_bytes)
    return peak


def peak_memory_bytes(fn: Callable[[], Any], device: Union[str, torch.device] = 'cpu') -> int:
    """Peak bytes of tensor memory allocated by one call of ``fn`` beyond what was allocated
    before it (see the module docstring for how, per device).

    Release anything the previous call left (e.g. ``.grad``) before calling, or on CPU its
    freeing is not seen.
    """
    device = torch.device(device)
    if device.type == 'cuda':
        synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        fn()
        synchronize(device)
        return int(torch.cuda.max_memory_allocated(device) - before)
    if device.type == 'cpu':
        return _cpu_peak_from_profiler(fn)
    raise ValueError(f"device must be 'cpu' or 'cuda', got {device.type!r}")


# ---------------------------------------------------------------------------------------
# Time
# ---------------------------------------------------------------------------------------
@dataclass
class TimingStats:
    """Summary of repeated timings, in milliseconds per call.

    ``samples`` holds one value per repeat (the mean over that repeat's iterations).
    """
    median: float
    q1: float
    q3: float
    minimum: float
    maximum: float
    iters: int
    samples: List[float]

    @property
    def iqr(self) -> float:
        return self.q3 - self.q1

    def to_dict(self) -> Dict[str, Any]:
        return {**asdict(self), 'iqr': self.iqr}


def summarize_times(samples_ms: Sequence[float], iters: int) -> TimingStats:
    """Median, quartiles (``statistics.quantiles``, inclusive method), min and max."""
    samples = [float(s) for s in samples_ms]
    if not samples:
        raise ValueError('samples_ms must hold at least one timing')
    if len(samples) == 1:
        q1 = q3 = samples[0]
    else:
        q1, _, q3 = statistics.quantiles(samples, n=4, method='inclusive')
    return TimingStats(statistics.median(samples), q1, q3, min(samples), max(samples), iters,
                       samples)


def time_per_call(fn: Callable[[], Any], iters: int,
                  device: Union[str, torch.device] = 'cpu') -> float:
    """Mean wall time of ``fn()`` over ``iters`` back-to-back calls, in milliseconds
    (device synchronised before and after)."""
    if iters < 1:
        raise ValueError(f'iters must be a positive integer, got {iters!r}')
    synchronize(device)
    start = time.perf_counter()
    for _ in range(iters):
        fn()
    synchronize(device)
    return (time.perf_counter() - start) * 1e3 / iters


# ---------------------------------------------------------------------------------------
# Models from configs
# ---------------------------------------------------------------------------------------
def load_config(config, cfg_options: Optional[Dict[str, Any]] = None):
    """An mmengine ``Config`` from a path (or a ``Config``, copied), with ``cfg_options``
    merged (``{'model.decode_head.upsample_cfg.type': 'DySample'}`` style keys)."""
    from mmengine.config import Config

    import mmdysample  # noqa: F401  (registers the plugin's modules)
    if isinstance(config, Config):
        cfg = copy.deepcopy(config)
    elif isinstance(config, (str, os.PathLike)):
        cfg = Config.fromfile(os.fspath(config))
    else:
        raise TypeError(f'config must be a path or an mmengine Config, got '
                        f'{type(config).__name__}')
    if cfg_options:
        cfg.merge_from_dict(dict(cfg_options))
    return cfg


def build_model(config,
                cfg_options: Optional[Dict[str, Any]] = None,
                checkpoint: Optional[str] = None,
                device: Union[str, torch.device] = 'cpu') -> nn.Module:
    """Build ``cfg.model`` in the config's ``default_scope`` (mmdet, mmseg...), without
    ``init_weights()`` (so no pretrained backbone is fetched; every layer has its
    constructor's initialisation, DySample its paper one), turn SyncBN into BatchNorm on
    CPU, optionally load a checkpoint
    (mmengine's ``load_checkpoint``, non-strict: the missing/unexpected keys are logged),
    and return it in eval mode on ``device``."""
    from mmengine.registry import MODELS, init_default_scope
    from mmengine.runner import load_checkpoint

    cfg = load_config(config, cfg_options)
    if 'model' not in cfg:
        raise ValueError(f'config {config} has no model')
    init_default_scope(cfg.get('default_scope', None) or 'mmengine')
    model = MODELS.build(cfg.model)
    if torch.device(device).type == 'cpu':
        from mmengine.model import revert_sync_batchnorm
        model = revert_sync_batchnorm(model)  # SyncBN needs CUDA and a process group
    if checkpoint is not None:
        load_checkpoint(model, checkpoint, map_location='cpu')
    model.cfg = cfg
    return model.to(device).eval()


def model_input(model: nn.Module, height: int, width: int, batch: int = 1) -> torch.Tensor:
    """A random input batch for ``model``'s tensor-mode forward (channels from its data
    preprocessor's mean, 3 by default), on the model's device."""
    channels = 3
    preprocessor = getattr(model, 'data_preprocessor', None)
    mean = getattr(preprocessor, 'mean', None)
    if isinstance(mean, torch.Tensor) and mean.numel() > 0:
        channels = mean.numel()
    device = next(model.parameters()).device
    generator = torch.Generator().manual_seed(0)
    return torch.randn(batch, channels, height, width, generator=generator).to(device)


def _random_seg_samples(batch: int, height: int, width: int, num_classes: int,
                        generator: torch.Generator):
    from mmengine.structures import PixelData
    from mmseg.structures import SegDataSample

    samples = []
    for _ in range(batch):
        sample = SegDataSample()
        sample.gt_sem_seg = PixelData(data=torch.randint(
            0, num_classes, (1, height, width), generator=generator))
        sample.set_metainfo(dict(img_shape=(height, width), ori_shape=(height, width),
                                 pad_shape=(height, width)))
        samples.append(sample)
    return samples


def _random_det_samples(batch: int, height: int, width: int, num_classes: int,
                        generator: torch.Generator, with_masks: bool):
    from mmdet.structures import DetDataSample
    from mmdet.structures.mask import BitmapMasks
    from mmengine.structures import InstanceData

    samples = []
    for _ in range(batch):
        num = 4
        corner = torch.rand(num, 2, generator=generator) * torch.tensor([width, height]) * 0.6
        size = (torch.rand(num, 2, generator=generator) * 0.3 + 0.1) * torch.tensor(
            [width, height])
        instances = InstanceData()
        instances.bboxes = torch.cat([corner, corner + size], dim=1)
        instances.labels = torch.randint(0, num_classes, (num, ), generator=generator)
        if with_masks:
            masks = torch.zeros(num, height, width, dtype=torch.uint8)
            for i, (x0, y0, x1, y1) in enumerate(instances.bboxes.round().long().tolist()):
                masks[i, y0:y1, x0:x1] = 1
            instances.masks = BitmapMasks(masks.numpy(), height, width)
        sample = DetDataSample()
        sample.gt_instances = instances
        sample.set_metainfo(dict(img_shape=(height, width), ori_shape=(height, width),
                                 pad_shape=(height, width), batch_input_shape=(height, width),
                                 scale_factor=(1.0, 1.0)))
        samples.append(sample)
    return samples


def random_training_batch(model: nn.Module, height: int, width: int, batch: int = 2,
                          seed: int = 0) -> Dict[str, Any]:
    """A ``{'inputs': [...], 'data_samples': [...]}`` batch of random uint8 images and
    random labels for ``model.train_step``: semantic maps for mmseg segmentors, 4 random
    boxes (and box masks if the model has a mask head) per image for mmdet detectors."""
    generator = torch.Generator().manual_seed(seed)
    inputs = [torch.randint(0, 256, (3, height, width), generator=generator, dtype=torch.uint8)
              for _ in range(batch)]
    module_name = type(model).__module__
    if module_name.startswith('mmseg'):
        num_classes = model.decode_head.num_classes
        samples = _random_seg_samples(batch, height, width, num_classes, generator)
    elif module_name.startswith('mmdet'):
        roi_head = getattr(model, 'roi_head', None)
        bbox_head = getattr(roi_head, 'bbox_head', None) or getattr(model, 'bbox_head', None)
        num_classes = getattr(bbox_head, 'num_classes', 1)
        with_masks = bool(getattr(roi_head, 'with_mask', False))
        samples = _random_det_samples(batch, height, width, num_classes, generator, with_masks)
    else:
        raise ValueError(f'random_training_batch supports mmseg segmentors and mmdet '
                         f'detectors, got {type(model).__name__} from {module_name}')
    return dict(inputs=inputs, data_samples=samples)


# ---------------------------------------------------------------------------------------
# DySample sampling points
# ---------------------------------------------------------------------------------------
def dysample_sampling_points(layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Where a DySample layer samples its input ``x``, for every output pixel.

    Returns:
        ``(B, groups, s*H, s*W, 2)`` ``(x, y)`` positions in input pixel units, with input
        pixel ``(i, j)`` covering ``[j, j+1] x [i, i+1]`` (its centre at ``(j+0.5, i+0.5)``),
        the convention of :mod:`mmdysample.functional`. Output pixel ``(Y, X)`` has its
        centre at ``((X + 0.5) / s, (Y + 0.5) / s)`` in the same units; with zero learned
        offsets and the bilinear initialisation the two coincide.
    """
    from .upsamplers import DySample

    if not isinstance(layer, DySample):
        raise TypeError(f'layer must be a DySample module, got {type(layer).__name__}')
    s, groups = layer.scale_factor, layer.groups
    with torch.no_grad():
        offset = layer.sampling_offsets(x)  # (B, 2*g*s*s, H, W), [x|y][group][a][b]
    batch, _, height, width = offset.shape
    offset = offset.view(batch, 2, groups, s, s, height, width)
    centre_x = torch.arange(width, dtype=offset.dtype, device=offset.device) + 0.5
    centre_y = torch.arange(height, dtype=offset.dtype, device=offset.device) + 0.5
    pos_x = offset[:, 0] + centre_x  # (B, g, a, b, H, W)
    pos_y = offset[:, 1] + centre_y[:, None]
    points = torch.stack([pos_x, pos_y], dim=-1)  # (B, g, a, b, H, W, 2)
    # output row Y = s*h + a, column X = s*w + b
    points = points.permute(0, 1, 4, 2, 5, 3, 6).reshape(batch, groups, s * height,
                                                         s * width, 2)
    return points


def output_pixel_centres(height: int, width: int, scale_factor: int,
                         dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``(s*H, s*W, 2)`` centres of the output pixels in input pixel units (see
    :func:`dysample_sampling_points`)."""
    s = scale_factor
    xs = (torch.arange(s * width, dtype=dtype) + 0.5) / s
    ys = (torch.arange(s * height, dtype=dtype) + 0.5) / s
    grid_y, grid_x = torch.meshgrid(ys, xs, indexing='ij')
    return torch.stack([grid_x, grid_y], dim=-1)


class DySampleRecorder:
    """Forward hooks on every DySample layer of a model recording, per call, the layer
    input's size and the sampling points (:func:`dysample_sampling_points`).

    Use as a context manager; ``records`` maps each layer's qualified name to a list of
    ``dict(input_size=(H, W), scale_factor=s, points=(B, g, sH, sW, 2) tensor)``, one per
    call, in call order.
    """

    def __init__(self, model: nn.Module):
        from .upsamplers import DySample

        self.layers = {name: m for name, m in model.named_modules() if isinstance(m, DySample)}
        self.records: Dict[str, List[Dict[str, Any]]] = {name: [] for name in self.layers}
        self._handles = []

    def _hook(self, name: str):

        def record(module, inputs, output):
            x = inputs[0]
            self.records[name].append(
                dict(input_size=tuple(x.shape[-2:]), scale_factor=module.scale_factor,
                     points=dysample_sampling_points(module, x.detach()).cpu()))

        return record

    def __enter__(self):
        if not self.layers:
            raise ValueError('the model has no DySample layer to record')
        self._handles = [m.register_forward_hook(self._hook(n)) for n, m in self.layers.items()]
        return self

    def __exit__(self, *exc_info):
        for handle in self._handles:
            handle.remove()
        self._handles = []
        return False
