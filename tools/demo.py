"""End-to-end CPU demo: synthetic data, DySample next to its baseline, real metrics.

    python tools/demo.py                       # what `make demo` runs
    python tools/demo.py --models mask-rcnn panoptic-fpn
    python tools/demo.py --seeds 0 1 2         # repeat every run with other seeds

Steps:

1. writes the synthetic data set (``tools/make_synthetic_data.py``) under ``--data-root``
   unless it is already there with the same parameters;
2. trains every demo config of the chosen models (the DySample version and its baseline
   twin, from ``configs/demo/``) with ``tools/train.py``, streaming mmengine's logs with a
   ``[run name]`` prefix. ``--jobs`` trainings run at once (default 2: the twins side by
   side), each with ``--threads`` CPU threads (default 1 on any machine: a training's
   numbers depend on its thread count, PyTorch's CPU kernels splitting their sums by
   thread, so one fixed count gives every machine with the same CPU and libraries the same
   metrics; tiny models scale badly over threads anyway, far worse when the cores are
   shared);
3. each training validates every ``--val-interval`` iterations and at its end with the
   config's real evaluator (mmdet's CocoMetric: pycocotools COCO mAP; mmdet's
   CocoPanopticMetric: PQ; mmseg's IoUMetric: mIoU);
4. prints a table (model, upsampler, parameters, iterations, wall and CPU time of the
   ``tools/train.py`` process, metric after every ``--val-interval`` iterations) and
   writes it, with every validation result, to
   ``<work-dir>/demo_results.{md,json}``.

Logs, checkpoints and visualisations of run ``NAME`` land in ``<work-dir>/NAME/``: the
log and the config in ``<timestamp>/``, the scalars in ``<timestamp>/vis_data/scalars.json``,
painted validation images (ground truth and prediction side by side) in
``<timestamp>/vis_data/vis_image/``, the checkpoint as ``iter_<N>.pth``. These are the
row directories of the demo table: ``python tools/collect_results.py --table demo
--work-dir <work-dir>`` lists them next to the paper-table layout (``make demo`` does).
"""
import argparse
import glob
import importlib.util
import json
import math
import os
import os.path as osp
import resource
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence

REPO_ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
TOOLS_DIR = osp.join(REPO_ROOT, 'tools')


@dataclass(frozen=True)
class DemoModel:
    """A demo model: its configs by upsampler (baseline first), the data layout it reads
    and the metric the table reports (key in mmengine's scalars, display name, scale)."""
    name: str
    configs: Dict[str, str]
    layout: str  # 'coco', 'panoptic', 'ade20k' or 'nyu'
    metric_key: str
    metric_name: str
    decimals: int = 2
    extra_metric_keys: Sequence[str] = field(default_factory=tuple)


DEMO_MODELS: Dict[str, DemoModel] = {
    'faster-rcnn': DemoModel(
        'Faster R-CNN R18-w16 FPN', {
            'nearest': 'configs/demo/faster-rcnn_r18-w16_fpn-nearest_demo_synthetic-coco.py',
            'DySample-LP-g4':
            'configs/demo/faster-rcnn_r18-w16_fpn-dysample-lpg4_demo_synthetic-coco.py',
        }, 'coco', 'coco/bbox_mAP', 'bbox mAP', 3, ('coco/bbox_mAP_50', )),
    'segformer': DemoModel(
        'SegFormer MiT-w16', {
            'bilinear': 'configs/demo/segformer_mit-w16_bilinear_demo_synthetic-ade20k.py',
            'DySample-LP-g4': 'configs/demo/segformer_mit-w16_dysample-lpg4_demo_synthetic-'
                              'ade20k.py',
        }, 'ade20k', 'mIoU', 'mIoU', 2, ('aAcc', )),
    'upernet': DemoModel(
        'UPerNet R18-w16', {
            'bilinear': 'configs/demo/upernet_r18-w16_bilinear_demo_synthetic-ade20k.py',
            'DySample-LP-g4': 'configs/demo/upernet_r18-w16_dysample-lpg4_demo_synthetic-'
                              'ade20k.py',
        }, 'ade20k', 'mIoU', 'mIoU', 2, ('aAcc', )),
    'mask-rcnn': DemoModel(
        'Mask R-CNN R18-w16 FPN', {
            'nearest': 'configs/demo/mask-rcnn_r18-w16_fpn-nearest_demo_synthetic-coco.py',
            'DySample-LP-g4':
            'configs/demo/mask-rcnn_r18-w16_fpn-dysample-lpg4_demo_synthetic-coco.py',
        }, 'coco', 'coco/segm_mAP', 'mask mAP', 3, ('coco/bbox_mAP', )),
    'panoptic-fpn': DemoModel(
        'Panoptic FPN R18-w16', {
            'nearest': 'configs/demo/panoptic-fpn_r18-w16_fpn-nearest_demo_synthetic-coco-'
                       'panoptic.py',
            'DySample-LP-g4': 'configs/demo/panoptic-fpn_r18-w16_fpn-dysample-lpg4_demo_'
                              'synthetic-coco-panoptic.py',
        }, 'panoptic', 'coco_panoptic/PQ', 'PQ', 2, ('coco_panoptic/PQ_th',
                                                      'coco_panoptic/PQ_st')),
    'depthformer': DemoModel(
        'DepthFormer Swin-w16', {
            'bilinear': 'configs/demo/depthformer_swin-w16_bilinear_demo_synthetic-nyu.py',
            'DySample-LP-g4': 'configs/demo/depthformer_swin-w16_dysample-lpg4_demo_'
                              'synthetic-nyu.py',
        }, 'nyu', 'abs_rel', 'AbsRel (lower is better)', 3, ('rmse', 'd1')),
}
DEFAULT_MODELS = ('faster-rcnn', 'segformer')


def data_root_options(layout: str, data_root: str) -> List[str]:
    """``--cfg-options`` pointing a demo config of ``layout`` at ``data_root`` (the folder
    that ``tools/make_synthetic_data.py --out`` wrote)."""
    if layout not in ('coco', 'panoptic', 'ade20k', 'nyu'):
        raise ValueError(f"layout must be 'coco', 'panoptic', 'ade20k' or 'nyu', got "
                         f"{layout!r}")
    sub = osp.join(data_root, layout if layout in ('ade20k', 'nyu') else 'coco') + '/'
    options = [f'{loader}.dataset.data_root={sub}'
               for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader')]
    if layout == 'coco':
        for evaluator in ('val_evaluator', 'test_evaluator'):
            options.append(f'{evaluator}.ann_file={sub}annotations/instances_val2017.json')
    elif layout == 'panoptic':
        for evaluator in ('val_evaluator', 'test_evaluator'):
            options += [f'{evaluator}.ann_file={sub}annotations/panoptic_val2017.json',
                        f'{evaluator}.seg_prefix={sub}annotations/panoptic_val2017/']
    return options


@dataclass
class Run:
    key: str
    upsampler: str
    config: str
    seed: int
    name: str
    work_dir: str
    command: List[str]
    returncode: Optional[int] = None
    wall_s: float = math.nan
    cpu_s: float = math.nan
    params: Optional[int] = None
    iters: Optional[int] = None
    metrics: List[dict] = field(default_factory=list)  # every validation, in order


def _load_tool(name: str):
    path = osp.join(TOOLS_DIR, f'{name}.py')
    spec = importlib.util.spec_from_file_location(f'_mmdysample_tools_{name}', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def ensure_data(data_root: str, num_train: int, num_val: int, seed: int) -> None:
    """Write the synthetic data set unless ``<data_root>/meta.json`` says it is there."""
    make_data = _load_tool('make_synthetic_data')
    code = make_data.main(['--out', data_root, '--num-train', str(num_train), '--num-val',
                           str(num_val), '--seed', str(seed), '--skip-existing'])
    if code != 0:
        raise SystemExit(f'tools/make_synthetic_data.py failed (exit code {code})')


def ensure_nyu_data(data_root: str, num_train: int, num_val: int, seed: int) -> None:
    """Write the synthetic NYU-layout rooms to ``<data_root>/nyu`` unless its ``meta.json``
    records the same parameters (mmdysample.datasets.synthetic_nyu)."""
    _load_tool('tool_helpers').import_mmdysample()
    from mmdysample.datasets.synthetic_nyu import generate_synthetic_nyu
    meta = generate_synthetic_nyu(osp.join(data_root, 'nyu'), seed=seed, num_train=num_train,
                                  num_test=num_val, skip_existing=True)
    print(f'{data_root}/nyu: {num_train} + {num_val} synthetic NYU-layout rooms '
          f'(generated in {meta["seconds"]} s)')


def _stream(prefix: str, pipe, log_file) -> None:
    for line in iter(pipe.readline, ''):
        log_file.write(line)
        sys.stdout.write(f'[{prefix}] {line}')
        sys.stdout.flush()
    pipe.close()


def _run_one(run: Run, env: dict) -> None:
    os.makedirs(run.work_dir, exist_ok=True)
    start = time.perf_counter()
    with open(osp.join(run.work_dir, 'demo_stdout.log'), 'w') as log_file:
        proc = subprocess.Popen(run.command, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, bufsize=1)
        reader = threading.Thread(target=_stream, args=(run.name, proc.stdout, log_file))
        reader.start()
        # wait4 gives this child's own CPU time, also while other runs go on in parallel
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        reader.join()
    run.wall_s = time.perf_counter() - start
    run.cpu_s = usage.ru_utime + usage.ru_stime
    run.returncode = proc.returncode
    # the run directory is the demo table's row directory: say how it ended, as a
    # tools/run_table.py job does, for tools/collect_results.py --table demo
    with open(osp.join(run.work_dir, _load_tool('paper_tables').EXIT_CODE), 'w') as f:
        f.write(f'{proc.returncode}\n')


def read_validations(work_dir: str) -> List[dict]:
    """Every validation result the latest training in ``work_dir`` logged, with its
    iteration (from mmengine's ``<timestamp>/vis_data/scalars.json``)."""
    candidates = sorted(glob.glob(osp.join(work_dir, '*', 'vis_data', 'scalars.json')))
    if not candidates:
        return []
    results = []
    with open(candidates[-1]) as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            record = json.loads(line)
            if 'loss' not in record and 'lr' not in record:  # a validation record
                results.append(record)
    return results


def count_parameters(config: str, cfg_options: Sequence[str] = ()) -> int:
    """Number of parameters (not buffers) of the model a config builds."""
    helpers = _load_tool('tool_helpers')
    helpers.import_mmdysample()
    from mmengine.config import Config
    from mmengine.registry import MODELS, DefaultScope

    cfg = Config.fromfile(osp.join(REPO_ROOT, config))
    helpers.merge_cfg_options(cfg, cfg_options)
    scope = helpers.register_scope_modules(cfg)
    with DefaultScope.overwrite_default_scope(scope):
        model = MODELS.build(cfg.model)
    return sum(p.numel() for p in model.parameters())


def _format_metric(model: DemoModel, value: Optional[float]) -> str:
    return '-' if value is None else f'{value:.{model.decimals}f}'


def _final_metric(run: Run, model: DemoModel, key: Optional[str] = None) -> Optional[float]:
    key = key or model.metric_key
    for record in reversed(run.metrics):
        if key in record:
            return float(record[key])
    return None


def format_table(runs: Sequence[Run]) -> str:
    header = ('| model | upsampler | seed | params | iters | train wall (s) | train CPU (s) '
              '| metric | value | at iterations | also |')
    lines = [header, '|' + '---|' * 11]
    for run in runs:
        model = DEMO_MODELS[run.key]
        value = _final_metric(run, model)
        curve = ', '.join(f'{r.get("step", "?")}: {_format_metric(model, r.get(model.metric_key))}'
                          for r in run.metrics if model.metric_key in r)
        also = ', '.join(f'{key.split("/")[-1]}: {_format_metric(model, value)}'
                         for key in model.extra_metric_keys
                         for value in [_final_metric(run, model, key)] if value is not None)
        status = '' if run.returncode == 0 else f' (FAILED, exit {run.returncode})'
        lines.append(f'| {model.name}{status} | {run.upsampler} | {run.seed} | '
                     f'{f"{run.params:,}" if run.params is not None else "-"} | '
                     f'{run.iters if run.iters is not None else "-"} | {run.wall_s:.0f} | '
                     f'{run.cpu_s:.0f} | {model.metric_name} | {_format_metric(model, value)} '
                     f'| {curve or "-"} | {also or "-"} |')
    # mean over seeds when there are several
    by_pair: Dict[tuple, List[float]] = {}
    for run in runs:
        value = _final_metric(run, DEMO_MODELS[run.key])
        if value is not None:
            by_pair.setdefault((run.key, run.upsampler), []).append(value)
    if any(len(values) > 1 for values in by_pair.values()):
        lines += ['', '| model | upsampler | seeds | mean | std | min | max |',
                  '|' + '---|' * 7]
        for (key, upsampler), values in by_pair.items():
            model = DEMO_MODELS[key]
            mean = sum(values) / len(values)
            std = math.sqrt(sum((v - mean)**2 for v in values) / max(1, len(values) - 1))
            lines.append(f'| {model.name} | {upsampler} | {len(values)} | '
                         f'{_format_metric(model, mean)} | {_format_metric(model, std)} | '
                         f'{_format_metric(model, min(values))} | '
                         f'{_format_metric(model, max(values))} |')
    return '\n'.join(lines)


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--models', nargs='+', default=list(DEFAULT_MODELS),
                        choices=sorted(DEMO_MODELS), help='demo models to train')
    parser.add_argument('--upsamplers', nargs='+', default=None,
                        help='only these upsamplers (default: all of each model)')
    parser.add_argument('--seeds', nargs='+', type=int, default=[0],
                        help='training seeds (randomness.seed); one run per seed')
    parser.add_argument('--data-root', default='data/synthetic',
                        help='synthetic data folder (written if missing)')
    parser.add_argument('--num-train', type=int, default=800)
    parser.add_argument('--num-val', type=int, default=200)
    parser.add_argument('--data-seed', type=int, default=0)
    parser.add_argument('--work-dir', default='work_dirs/demo',
                        help='runs go to <work-dir>/<config name>[_seed<S>]')
    parser.add_argument('--jobs', type=int, default=2, help='trainings run at once')
    parser.add_argument('--threads', type=int, default=1,
                        help='CPU threads per training; the metrics depend on it (docs/demo.md, '
                        '"Run-to-run variation")')
    parser.add_argument('--iters', type=int, default=None,
                        help='override the configs\' training iterations (the learning-rate '
                        'schedule is stretched to match)')
    parser.add_argument('--val-interval', type=int, default=100,
                        help='validate every N iterations (and at the end): the table shows '
                        'the metric at each')
    parser.add_argument('--cfg-options', nargs='+', default=[],
                        help='more key=value overrides passed to every tools/train.py run')
    args = parser.parse_args(argv)
    for name in ('jobs', 'threads', 'iters', 'val_interval', 'num_train', 'num_val'):
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f'--{name.replace("_", "-")} must be >= 1, got {value}')
    if args.upsamplers:
        known = sorted({u for key in args.models for u in DEMO_MODELS[key].configs})
        unknown = [u for u in args.upsamplers if u not in known]
        if unknown:
            parser.error(f'--upsamplers: unknown {unknown}; the chosen models have {known}')
    return args


def schedule_options(config: str, iters: Optional[int], val_interval: Optional[int]) -> tuple:
    """``--cfg-options`` for ``--iters``/``--val-interval`` and the resulting iterations."""
    from mmengine.config import Config

    # only the schedule is read: the config's custom_imports (mmdysample, and through it
    # torch and mmdet/mmseg, seconds) are for the training process, not for this one
    cfg = Config.fromfile(osp.join(REPO_ROOT, config), import_custom_modules=False)
    max_iters = iters or cfg.train_cfg.max_iters
    options = []
    if iters is not None:
        options.append(f'train_cfg.max_iters={iters}')
        # stretch the iteration-based schedulers: warm-up keeps its share, the decay ends
        # at the last iteration
        old = cfg.train_cfg.max_iters
        for index, scheduler in enumerate(cfg.param_scheduler):
            begin = round(scheduler.get('begin', 0) * iters / old)
            end = round(min(scheduler.get('end', old), old) * iters / old)
            options += [f'param_scheduler.{index}.begin={begin}',
                        f'param_scheduler.{index}.end={max(end, begin + 1)}']
            if 'T_max' in scheduler:
                options.append(f'param_scheduler.{index}.T_max={max(end - begin, 1)}')
    options.append(f'train_cfg.val_interval={val_interval or max_iters}')
    return options, max_iters


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    start = time.perf_counter()
    usage_start = resource.getrusage(resource.RUSAGE_CHILDREN)
    data_root = osp.abspath(args.data_root)
    work_root = osp.abspath(args.work_dir)
    ensure_data(data_root, args.num_train, args.num_val, args.data_seed)
    if any(DEMO_MODELS[key].layout == 'nyu' for key in args.models):
        ensure_nyu_data(data_root, args.num_train, args.num_val, args.data_seed)

    threads = args.threads
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads),
               PYTHONUNBUFFERED='1')
    env['PYTHONPATH'] = REPO_ROOT + (os.pathsep + env['PYTHONPATH']
                                     if env.get('PYTHONPATH') else '')

    runs: List[Run] = []
    for key in args.models:
        model = DEMO_MODELS[key]
        for seed in args.seeds:
            for upsampler, config in model.configs.items():
                if args.upsamplers and upsampler not in args.upsamplers:
                    continue
                stem = osp.splitext(osp.basename(config))[0]
                name = stem if len(args.seeds) == 1 else f'{stem}_seed{seed}'
                work_dir = osp.join(work_root, name)
                schedule, max_iters = schedule_options(config, args.iters, args.val_interval)
                options = (data_root_options(model.layout, data_root) + schedule +
                           [f'randomness.seed={seed}'] + list(args.cfg_options))
                command = [sys.executable, osp.join(TOOLS_DIR, 'train.py'),
                           osp.join(REPO_ROOT, config), '--work-dir', work_dir,
                           '--cfg-options', *options]
                run = Run(key, upsampler, config, seed, name, work_dir, command,
                          iters=max_iters)
                runs.append(run)

    print(f'demo: {len(runs)} trainings, {args.jobs} at a time, {threads} thread(s) each; '
          f'logs and checkpoints under {work_root}/', flush=True)
    pending = list(runs)
    active: List[threading.Thread] = []
    while pending or active:
        while pending and len(active) < args.jobs:
            run = pending.pop(0)
            print(f'demo: start {run.name}: {" ".join(run.command)}', flush=True)
            thread = threading.Thread(target=_run_one, args=(run, env))
            thread.start()
            active.append(thread)
        time.sleep(0.2)
        active = [t for t in active if t.is_alive()]

    for run in runs:
        run.metrics = read_validations(run.work_dir)
        if run.returncode == 0:
            run.params = count_parameters(run.config)

    table = format_table(runs)
    usage_end = resource.getrusage(resource.RUSAGE_CHILDREN)
    total_cpu = (usage_end.ru_utime - usage_start.ru_utime + usage_end.ru_stime -
                 usage_start.ru_stime)
    own = resource.getrusage(resource.RUSAGE_SELF)
    summary = (f'total: {time.perf_counter() - start:.0f} s wall, '
               f'{total_cpu + own.ru_utime + own.ru_stime:.0f} s CPU (all processes), '
               f'{os.cpu_count()} cores, {args.jobs} job(s) x {threads} thread(s)')
    os.makedirs(work_root, exist_ok=True)
    with open(osp.join(work_root, 'demo_results.md'), 'w') as f:
        f.write(table + '\n\n' + summary + '\n')
    with open(osp.join(work_root, 'demo_results.json'), 'w') as f:
        json.dump([dict(model=run.key, upsampler=run.upsampler, seed=run.seed,
                        config=run.config, work_dir=run.work_dir, returncode=run.returncode,
                        params=run.params, iters=run.iters, wall_s=run.wall_s,
                        cpu_s=run.cpu_s, validations=run.metrics) for run in runs],
                  f, indent=2)
    print('\n' + table + '\n\n' + summary)
    print(f'results: {work_root}/demo_results.md; per run: <run>/<timestamp>/ (log, '
          'vis_data/vis_image/ painted validation images), <run>/iter_<N>.pth')
    failed = [run.name for run in runs if run.returncode != 0]
    if failed:
        print(f'demo: FAILED runs: {", ".join(failed)} (see their demo_stdout.log)',
              file=sys.stderr)
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
