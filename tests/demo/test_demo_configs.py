"""The demo configs (configs/demo/) and the demo driver (tools/demo.py): the twins differ
only in the upsampler, every model trains and is evaluated by its real metric."""
import glob
import json
import os.path as osp
import sys

import pytest

from demo_helpers import (DEMO_CONFIGS, REPO_ROOT, detection_options, load_demo_tool, run_tool,
                          scalars, train)

demo = load_demo_tool()
PAIRS = [(key, model) for key, model in demo.DEMO_MODELS.items()]


def _load(path):
    from mmengine.config import Config
    return Config.fromfile(osp.join(REPO_ROOT, path))


def test_every_demo_config_is_in_the_driver():
    on_disk = sorted(osp.relpath(p, REPO_ROOT) for p in glob.glob(osp.join(DEMO_CONFIGS, '*.py')))
    listed = sorted(c for _, model in PAIRS for c in model.configs.values())
    assert on_disk == listed


@pytest.mark.parametrize('key, model', PAIRS, ids=[key for key, _ in PAIRS])
def test_twins_differ_only_in_the_upsampler(key, model):
    (base_name, base_path), (dy_name, dy_path) = model.configs.items()
    assert dy_name.startswith('DySample')
    baseline, dysample = _load(base_path), _load(dy_path)
    # the one site the twin changes: the detectors' FPN neck, the segmentors' decode head
    (head, ) = [site for site in ('neck', 'decode_head')
                if 'upsample_cfg' in dysample.model.get(site, {})]
    assert baseline.model[head].get('upsample_cfg') is None
    assert dysample.model[head].upsample_cfg == dict(type='DySample', style='lp', groups=4)
    baseline_dict, dysample_dict = baseline.to_dict(), dysample.to_dict()
    del dysample_dict['model'][head]['upsample_cfg']
    baseline_dict['model'][head].pop('upsample_cfg', None)
    assert baseline_dict == dysample_dict
    # tiny, CPU-friendly settings the demo relies on
    assert baseline.train_dataloader.num_workers == 0
    assert baseline.train_cfg.max_iters <= 500
    assert baseline.env_cfg.dist_cfg.backend == 'gloo'
    assert dict(type='RandomStateHook') in baseline.custom_hooks


def test_demo_models_build_and_dysample_adds_few_parameters():
    counts = {(key, name): demo.count_parameters(path) for key, model in PAIRS
              for name, path in model.configs.items()}
    for key, model in PAIRS:
        (base_name, _), (dy_name, _) = model.configs.items()
        extra = counts[key, dy_name] - counts[key, base_name]
        assert 0 < extra < 0.05 * counts[key, base_name], (key, counts)
    # the same FPN in Faster/Mask R-CNN and Panoptic FPN: same DySample parameters
    assert (counts['faster-rcnn', 'DySample-LP-g4'] - counts['faster-rcnn', 'nearest'] ==
            counts['mask-rcnn', 'DySample-LP-g4'] - counts['mask-rcnn', 'nearest'] ==
            counts['panoptic-fpn', 'DySample-LP-g4'] - counts['panoptic-fpn', 'nearest'])


@pytest.mark.slow
@pytest.mark.parametrize('key, layout, metrics', [
    ('mask-rcnn', 'coco', ('coco/bbox_mAP', 'coco/segm_mAP')),
    ('panoptic-fpn', 'panoptic', ('coco_panoptic/PQ', 'coco_panoptic/PQ_th',
                                  'coco_panoptic/PQ_st')),
])
def test_mask_rcnn_and_panoptic_fpn_train_and_evaluate(tiny_data, tmp_path, key, layout,
                                                       metrics):
    """2 iterations of the DySample twin, then the real evaluator on the 4 val images
    (pycocotools bbox+segm mAP; panopticapi PQ through mmdet's CocoPanopticMetric)."""
    config = osp.join(REPO_ROOT, demo.DEMO_MODELS[key].configs['DySample-LP-g4'])
    options = detection_options(tiny_data, with_val=True, layout=layout) + [
        'train_cfg.max_iters=2', 'train_cfg.val_interval=2',
        'default_hooks.visualization.interval=1'
    ]
    result = train(config, tmp_path, options)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    train_log, val_log = scalars(tmp_path)
    assert [r['step'] for r in train_log] == [1, 2]
    assert len(val_log) == 1
    for name in metrics:
        value = val_log[0][name]
        upper = 100 if name.startswith('coco_panoptic') else 1
        assert 0 <= value <= upper, (name, value)
    if key == 'panoptic-fpn':
        assert 'loss_seg' in train_log[0] and 'loss_mask' in train_log[0]
        assert 'Panoptic Evaluation Results' in result.stdout + result.stderr
    else:
        assert 'loss_mask' in train_log[0]
    assert osp.isfile(tmp_path / 'iter_2.pth')
    assert glob.glob(str(tmp_path / '*' / 'vis_data' / 'vis_image' / '*.png'))


@pytest.mark.slow
def test_demo_driver_trains_both_twins_and_prints_the_table(tiny_data, tmp_path):
    """tools/demo.py end to end on the tiny data (already there: not written again), the
    SegFormer twins side by side for 3 iterations, with a validation after each."""
    work = tmp_path / 'work'
    result = run_tool([
        sys.executable, osp.join(REPO_ROOT, 'tools', 'demo.py'), '--models', 'segformer',
        '--data-root', tiny_data, '--num-train', '8', '--num-val', '4', '--work-dir',
        str(work), '--iters', '3', '--val-interval', '1', '--jobs', '2', '--threads', '1',
        '--cfg-options', 'val_dataloader.batch_size=4', 'default_hooks.logger.interval=1'
    ])
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    assert 'synthetic data already there' in output
    # both trainings streamed their mmengine logs with their run name
    for name in ('segformer_mit-w16_bilinear_demo_synthetic-ade20k',
                 'segformer_mit-w16_dysample-lpg4_demo_synthetic-ade20k'):
        assert f'[{name}]' in output and 'Iter(train) [3/3]' in output
        assert osp.isfile(work / name / 'iter_3.pth')
        # how the run ended, where tools/collect_results.py --table demo reads it
        assert (work / name / 'run_table_exit_code').read_text() == '0\n'
    with open(work / 'demo_results.json') as f:
        results = json.load(f)
    assert [r['upsampler'] for r in results] == ['bilinear', 'DySample-LP-g4']
    for run in results:
        assert run['returncode'] == 0 and run['iters'] == 3 and run['cpu_s'] > 0
        assert [v['step'] for v in run['validations']] == [1, 2, 3]
        assert all(0 <= v['mIoU'] <= 100 for v in run['validations'])
        assert run['params'] == demo.count_parameters(run['config'])
    table = [line for line in result.stdout.splitlines() if line.startswith('| SegFormer')]
    assert len(table) == 2
    for line, run in zip(table, results):
        cells = [c.strip() for c in line.strip('|').split('|')]
        assert cells[1] == run['upsampler'] and cells[4] == '3' and cells[7] == 'mIoU'
        assert float(cells[8]) == pytest.approx(run['validations'][-1]['mIoU'], abs=0.01)
    assert open(work / 'demo_results.md').read().startswith('| model | upsampler |')
    # what `make demo` prints next: the demo table of the two rows trained, from their logs
    collected = run_tool([sys.executable, osp.join(REPO_ROOT, 'tools', 'collect_results.py'),
                          '--table', 'demo', '--work-dir', str(work)])
    assert collected.returncode == 0, collected.stderr[-3000:]
    statuses = [line.rstrip(' |').split('|')[-1].strip()
                for line in collected.stdout.splitlines() if '[config](' in line]
    assert statuses == ['finished', 'finished'] and 'missing' not in collected.stdout
    assert f'table demo, {work}: 2 finished\n' in collected.stdout
    assert 'python tools/demo.py --models faster-rcnn upernet' in collected.stdout


def test_schedule_stretching_and_data_root_options():
    options, iters = demo.schedule_options(demo.DEMO_MODELS['segformer'].configs['bilinear'],
                                            60, None)
    base = _load(demo.DEMO_MODELS['segformer'].configs['bilinear'])
    old = base.train_cfg.max_iters
    warmup_end = round(base.param_scheduler[0].end * 60 / old)
    assert iters == 60
    assert 'train_cfg.max_iters=60' in options and 'train_cfg.val_interval=60' in options
    assert f'param_scheduler.0.end={warmup_end}' in options
    assert 'param_scheduler.1.end=60' in options
    options, iters = demo.schedule_options(demo.DEMO_MODELS['segformer'].configs['bilinear'],
                                            None, 7)
    assert iters == old and options == ['train_cfg.val_interval=7']
    assert demo.data_root_options('panoptic', '/d')[-1] == \
        'test_evaluator.seg_prefix=/d/coco/annotations/panoptic_val2017/'
    with pytest.raises(ValueError, match='layout'):
        demo.data_root_options('voc', '/d')
    with pytest.raises(SystemExit):
        demo.parse_args(['--jobs', '0'])
    with pytest.raises(SystemExit):
        demo.parse_args(['--models', 'segformer', '--upsamplers', 'nearest'])


def test_default_thread_count_is_one_on_every_machine(monkeypatch):
    """The metrics depend on the thread count (docs/demo.md, "Run-to-run variation"): the
    default must not follow the machine's core count."""
    monkeypatch.setattr(demo.os, 'cpu_count', lambda: 64)
    args = demo.parse_args([])
    assert (args.threads, args.jobs) == (1, 2)
