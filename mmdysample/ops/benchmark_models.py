"""Train-step time of whole models with DySample against their nearest/bilinear twins.

    python -m mmdysample.ops.benchmark_models --threads 2 --repeats 15

Builds Faster R-CNN R50-FPN (``configs/faster_rcnn``: DySample vs nearest) and SegFormer-B1
(``configs/segformer``: DySample vs bilinear) at full width, without pretrained weights, and
times one training step (forward with losses, backward, SGD update) on a synthetic batch of
``--batch`` images of ``--size`` pixels. Steps are interleaved (each round runs every model
once) and the DySample/twin ratio is taken within each round; the table shows the median
ratio, its 25-75 % spread, and median seconds, of wall-clock time and of process CPU time.
DySample runs twice per round: with the fused kernel and with the reference path
(``use_fused(False)``). CPU, float32.

On a machine shared with other work, run it with ``OMP_WAIT_POLICY=PASSIVE``: waiting OpenMP
threads then sleep instead of spinning, so the CPU-time ratio counts the models' own work
only, while wall time also counts how long the scheduler kept a thread away.
"""
import argparse
import os
import statistics
import time
from pathlib import Path

import torch

from .extension import extension_available, use_fused

CONFIGS = Path(__file__).resolve().parents[2] / 'configs'
MODELS = {
    'faster_rcnn': ('faster_rcnn/faster-rcnn_r50_fpn-nearest_1x_coco.py',
                    'faster_rcnn/faster-rcnn_r50_fpn-dysample-lpg4_1x_coco.py', 'nearest'),
    'segformer': ('segformer/segformer_mit-b1_bilinear_8xb2-160k_ade20k-512x512.py',
                  'segformer/segformer_mit-b1_dysample_8xb2-160k_ade20k-512x512.py',
                  'bilinear'),
}


def _no_sync_bn(cfg):
    """SyncBN -> BN everywhere in a config dict (single CPU process)."""
    if isinstance(cfg, dict):
        if cfg.get('type') == 'SyncBN':
            cfg['type'] = 'BN'
        for value in cfg.values():
            _no_sync_bn(value)
    elif isinstance(cfg, (list, tuple)):
        for value in cfg:
            _no_sync_bn(value)


def build_detector(config, batch, size):
    from mmdet.testing import demo_mm_inputs
    from mmdet.utils import register_all_modules
    from mmengine.config import Config
    from mmengine.registry import DefaultScope
    register_all_modules(init_default_scope=False)
    cfg = Config.fromfile(str(CONFIGS / config)).model
    cfg.backbone.init_cfg = None
    with DefaultScope.overwrite_default_scope('mmdet'):
        from mmdet.registry import MODELS as DET_MODELS
        torch.manual_seed(0)
        model = DET_MODELS.build(cfg)
    model.init_weights()
    packed = demo_mm_inputs(batch_size=batch, image_shapes=(3, size, size),
                            num_items=[5] * batch, num_classes=80)
    data = model.data_preprocessor(packed, True)
    return model, data


def build_segmentor(config, batch, size):
    from mmengine.config import Config
    from mmengine.registry import DefaultScope
    from mmengine.structures import PixelData
    from mmseg.structures import SegDataSample
    from mmseg.utils import register_all_modules
    register_all_modules(init_default_scope=False)
    cfg = Config.fromfile(str(CONFIGS / config)).model
    cfg.backbone.init_cfg = None
    cfg.pretrained = None
    cfg.data_preprocessor.size = (size, size)
    _no_sync_bn(cfg)
    with DefaultScope.overwrite_default_scope('mmseg'):
        from mmseg.registry import MODELS as SEG_MODELS
        torch.manual_seed(0)
        model = SEG_MODELS.build(cfg)
    model.init_weights()
    generator = torch.Generator().manual_seed(0)
    inputs, samples = [], []
    for _ in range(batch):
        label = torch.randint(0, 150, (1, size // 16, size // 16), generator=generator)
        label = label.repeat_interleave(16, 1).repeat_interleave(16, 2)
        sample = SegDataSample(metainfo=dict(img_shape=(size, size), ori_shape=(size, size)))
        sample.gt_sem_seg = PixelData(data=label)
        inputs.append(torch.randint(0, 256, (3, size, size), generator=generator,
                                    dtype=torch.uint8))
        samples.append(sample)
    data = model.data_preprocessor(dict(inputs=inputs, data_samples=samples), True)
    return model, data


def make_step(model, data):
    model.train()
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-5,
                                momentum=0.9)

    def step():
        optimizer.zero_grad()
        losses = model(**data, mode='loss')
        total, _ = model.parse_losses(losses)
        total.backward()
        optimizer.step()

    return step


def run(names, batch, size, repeats, warmup):
    rows = []
    for name in names:
        twin_cfg, dysample_cfg, twin_label = MODELS[name]
        build = build_detector if name == 'faster_rcnn' else build_segmentor
        twin_model, twin_data = build(twin_cfg, batch, size)
        dysample_model, dysample_data = build(dysample_cfg, batch, size)
        # same weights wherever the two models have the same parameters, so that the
        # data-dependent parts (proposals, NMS, sampled RoIs) do about the same work
        missing, unexpected = dysample_model.load_state_dict(twin_model.state_dict(),
                                                             strict=False)
        print(f'{name}: DySample model took the twin\'s weights; its own (not in the twin): '
              f'{len(missing)} tensors, twin-only tensors: {len(unexpected)}')
        twin = make_step(twin_model, twin_data)
        dysample = make_step(dysample_model, dysample_data)
        cases = {twin_label: twin, 'DySample fused': dysample}

        def reference(dysample=dysample):
            with use_fused(False):
                dysample()

        cases['DySample reference'] = reference
        times = {case: [] for case in cases}
        cpu_times = {case: [] for case in cases}
        for round_index in range(warmup + repeats):
            for case, fn in cases.items():
                start, cpu_start = time.perf_counter(), time.process_time()
                fn()
                if round_index >= warmup:
                    times[case].append(time.perf_counter() - start)
                    cpu_times[case].append(time.process_time() - cpu_start)
        for case in cases:
            row = [name, case]
            for measured in (times, cpu_times):
                ratios = [t / b for t, b in zip(measured[case], measured[twin_label])]
                q = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else ratios * 3
                row += [statistics.median(measured[case]), statistics.median(ratios), q[0], q[-1]]
            rows.append(row)
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--models', nargs='+', default=list(MODELS), choices=list(MODELS))
    parser.add_argument('--batch', type=int, default=2)
    parser.add_argument('--size', type=int, default=256)
    parser.add_argument('--threads', type=int, default=2)
    parser.add_argument('--repeats', type=int, default=15)
    parser.add_argument('--warmup', type=int, default=2)
    args = parser.parse_args(argv)
    import logging

    from mmengine.logging import MMLogger

    import mmdysample  # noqa: F401  (registers the patched FPN / heads and the upsamplers)
    MMLogger.get_current_instance().setLevel(logging.WARNING)  # no init_weights report
    torch.set_num_threads(args.threads)
    print(f'torch {torch.__version__}, {torch.get_num_threads()} threads, batch {args.batch}, '
          f'{args.size}x{args.size}, fused kernel available: {extension_available()}')
    load_before = os.getloadavg()
    rows = run(args.models, args.batch, args.size, args.repeats, args.warmup)
    print(f'load average (1, 5, 15 min) before: {load_before[0]:.2f} {load_before[1]:.2f} '
          f'{load_before[2]:.2f}, after: {os.getloadavg()[0]:.2f}; '
          f'OMP_WAIT_POLICY={os.environ.get("OMP_WAIT_POLICY", "(unset)")}')
    print(f'{"model":<12} {"case":<19} {"wall s":>7} {"x twin":>7} {"(25-75%)":>12} '
          f'{"cpu s":>7} {"x twin":>7} {"(25-75%)":>12}')
    for name, case, wall, ratio, low, high, cpu, cpu_ratio, cpu_low, cpu_high in rows:
        print(f'{name:<12} {case:<19} {wall:>7.3f} {ratio:>7.3f} '
              f'{f"{low:.3f}-{high:.3f}":>12} {cpu:>7.3f} {cpu_ratio:>7.3f} '
              f'{f"{cpu_low:.3f}-{cpu_high:.3f}":>12}')


if __name__ == '__main__':
    main()
