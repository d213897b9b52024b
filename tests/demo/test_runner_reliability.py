"""Reliability of the demo runs around mmengine's runner (issue 6, point 4).

Every test runs the real tools (tools/train.py, tools/dist_train.sh) on the tiny synthetic
data set for a few iterations, one CPU thread per process.
"""
import json
import math
import os
import os.path as osp
import shutil

import pytest
import torch

from demo_helpers import (TOOLS_DIR, demo_config, detection_options, free_port, load_state_dict,
                      run_tool, scalars, tool_env, train)

DETECTOR = demo_config('faster-rcnn_r18-w16_fpn-dysample-lpg4_demo_synthetic-coco.py')
LOSS_KEYS = ('loss', 'loss_rpn_cls', 'loss_rpn_bbox', 'loss_cls', 'loss_bbox', 'grad_norm')


def _losses(records):
    return [{key: record[key] for key in LOSS_KEYS} for record in records]


def _check(result):
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]


@pytest.mark.slow
def test_resume_skips_truncated_checkpoint_and_continues_bit_for_bit(tiny_data, tmp_path):
    """The demo detector through tools/train.py with ``randomness.seed`` unset (as stock
    configs), 4 iterations, checkpoints at 2 and 4. Then iter_4.pth is truncated (as a kill
    during mmengine's in-place write left it) and ``--resume`` runs again to 4: it names the
    truncated file in a warning, resumes from iter_2 (its seed and generator states) and
    writes the iter_4 weights of the uninterrupted run, logging its losses."""
    options = detection_options(tiny_data) + [
        'randomness.seed=None', 'default_hooks.checkpoint.interval=2',
        'default_hooks.checkpoint.max_keep_ckpts=2', 'train_cfg.max_iters=4'
    ]
    work = tmp_path / 'work'
    _check(train(DETECTOR, work, options))
    uninterrupted_log, _ = scalars(work)
    final = load_state_dict(work / 'iter_4.pth')
    middle = load_state_dict(work / 'iter_2.pth')
    truncated = work / 'iter_4.pth'
    truncated.write_bytes(truncated.read_bytes()[:truncated.stat().st_size // 3])

    result = train(DETECTOR, work, options, ['--resume'])
    _check(result)
    output = result.stdout + result.stderr
    assert f'Skipping {truncated} for resuming' in output
    assert 'resumed epoch: 0, iter: 2' in output
    resumed_log, _ = scalars(work, -1)
    assert [r['step'] for r in uninterrupted_log] == [1, 2, 3, 4]
    assert [r['step'] for r in resumed_log] == [3, 4]
    assert _losses(resumed_log) == _losses(uninterrupted_log[2:])
    for a, b in zip(resumed_log, uninterrupted_log[2:]):
        assert a['lr'] == b['lr']
    final_resumed = load_state_dict(work / 'iter_4.pth')
    assert final.keys() == final_resumed.keys()
    for key in final:
        assert torch.equal(final[key], final_resumed[key]), key
    # and the comparison is not vacuous: iterations 3-4 did change the weights
    assert any(not torch.equal(final[key], middle[key]) for key in final)


# The detector, made to compute per image exactly what it computes in a batch, so that the
# gradient averaged over 2 processes (1 image each) must equal the single-process gradient
# of the 2-image batch: GroupNorm instead of BatchNorm (no batch statistics); every anchor
# and every proposal is sampled (no random subset, equal loss normalisers per image: no
# ignore band between the IoU thresholds, NMS that keeps the 200 proposals, no gt boxes
# added as proposals); plain SGD at a constant rate, no clipping, so a weight change is
# -lr * gradient; no random flip.
_EXACT_DDP_CONFIG = """
_base_ = {base!r}
model = dict(
    backbone=dict(norm_cfg=dict(type='GN', num_groups=4, requires_grad=True)),
    train_cfg=dict(
        rpn=dict(assigner=dict(neg_iou_thr=0.7),
                 sampler=dict(num=1000000, pos_fraction=0.5)),
        rpn_proposal=dict(nms_pre=500, max_per_img=200, nms=dict(iou_threshold=1.0)),
        rcnn=dict(sampler=dict(num=1000000, add_gt_as_proposals=False))))
optim_wrapper = dict(
    _delete_=True, type='OptimWrapper',
    optimizer=dict(type='SGD', lr=0.01, momentum=0.0, weight_decay=0.0))
param_scheduler = None
"""


@pytest.mark.slow
def test_dist_train_two_gloo_processes(tiny_data, tmp_path):
    """tools/dist_train.sh with 2 CPU processes (gloo, free port) trains and checkpoints;
    its weights after each of 2 steps equal those of one process with the same total
    batch, within float tolerance, and far closer than one SGD step."""
    config = tmp_path / 'exact_ddp.py'
    config.write_text(_EXACT_DDP_CONFIG.format(base=DETECTOR))
    common = detection_options(tiny_data) + [
        'train_cfg.max_iters=2', 'default_hooks.checkpoint.interval=1',
        'default_hooks.checkpoint.max_keep_ckpts=2', 'train_dataloader.dataset.pipeline.3.prob=0.0'
    ]
    assert 'RandomFlip' in open(demo_config('_base_/synthetic_coco_detection.py')).read()
    single, dist = tmp_path / 'single', tmp_path / 'dist'
    _check(train(str(config), single, common + ['train_dataloader.batch_size=2']))

    env = tool_env()
    env['PORT'] = str(free_port())
    result = run_tool(['bash', osp.join(TOOLS_DIR, 'dist_train.sh'), str(config), '2',
                       '--work-dir', str(dist), '--cfg-options', *common,
                       'train_dataloader.batch_size=1'], env=env)
    _check(result)
    output = result.stdout + result.stderr
    with open(dist / 'last_checkpoint') as f:
        assert f.read().strip().endswith('iter_2.pth')
    checkpoint = torch.load(dist / 'iter_2.pth', map_location='cpu', weights_only=False)
    assert checkpoint['meta']['iter'] == 2
    single_1, single_2 = (load_state_dict(single / f'iter_{i}.pth') for i in (1, 2))
    dist_1, dist_2 = (load_state_dict(dist / f'iter_{i}.pth') for i in (1, 2))
    assert single_1.keys() == dist_1.keys()
    step = max((single_2[k].float() - single_1[k].float()).abs().max().item()
               for k in single_1 if single_1[k].is_floating_point())
    assert step > 1e-4  # SGD moved the weights measurably
    for key in single_1:
        if not single_1[key].is_floating_point():
            continue
        for got, expected in ((dist_1, single_1), (dist_2, single_2)):
            torch.testing.assert_close(got[key], expected[key], rtol=1e-4, atol=1e-3 * step,
                                       msg=key)


def _subset_coco(tiny_data, out_root, keep_images, empty_images=()):
    """A COCO-layout copy of the tiny training split with ``keep_images`` (image ids), the
    annotations of ``empty_images`` removed; images are copied."""
    src = osp.join(tiny_data, 'coco')
    with open(osp.join(src, 'annotations', 'instances_train2017.json')) as f:
        data = json.load(f)
    data['images'] = [im for im in data['images'] if im['id'] in keep_images]
    data['annotations'] = [a for a in data['annotations']
                           if a['image_id'] in keep_images and a['image_id'] not in empty_images]
    os.makedirs(osp.join(out_root, 'annotations'))
    os.makedirs(osp.join(out_root, 'train2017'))
    for image in data['images']:
        shutil.copy(osp.join(src, 'train2017', image['file_name']),
                    osp.join(out_root, 'train2017', image['file_name']))
    with open(osp.join(out_root, 'annotations', 'instances_train2017.json'), 'w') as f:
        json.dump(data, f)
    return data


@pytest.mark.slow
def test_image_without_annotations_trains_as_empty(tiny_data, tmp_path):
    """An image with no annotation (kept with filter_empty_gt=False) goes through training
    as background only: its iteration has zero box losses, finite classification losses."""
    root = tmp_path / 'coco'
    data = _subset_coco(tiny_data, str(root), keep_images={1, 2}, empty_images={2})
    assert {a['image_id'] for a in data['annotations']} == {1}
    options = [
        f'train_dataloader.dataset.data_root={root}/', 'train_dataloader.batch_size=1',
        'train_dataloader.dataset.filter_cfg.filter_empty_gt=False', 'train_cfg.max_iters=2',
        'val_cfg=None', 'val_dataloader=None', 'val_evaluator=None',
        'default_hooks.logger.interval=1', 'log_processor.window_size=1'
    ]
    _check(train(DETECTOR, tmp_path / 'work', options))
    records, _ = scalars(tmp_path / 'work')
    assert len(records) == 2  # a permutation of the two images
    for record in records:
        assert all(math.isfinite(record[key]) for key in LOSS_KEYS)
    empty = [r for r in records if r['loss_rpn_bbox'] == 0 and r['loss_bbox'] == 0]
    annotated = [r for r in records if r['loss_rpn_bbox'] > 0]
    assert len(empty) == 1 and len(annotated) == 1
    assert empty[0]['loss_rpn_cls'] > 0 and empty[0]['loss_cls'] > 0


def test_corrupt_image_error_names_the_file(tiny_data, tmp_path):
    """An undecodable image file stops data loading with an error naming that file."""
    from mmengine.config import Config
    from mmengine.registry import DefaultScope

    import mmdysample  # noqa: F401
    from mmdet.registry import DATASETS
    from mmdet.utils import register_all_modules
    register_all_modules(init_default_scope=False)

    root = tmp_path / 'coco'
    data = _subset_coco(tiny_data, str(root), keep_images={1, 2})
    bad = root / 'train2017' / data['images'][1]['file_name']
    bad.write_bytes(b'this is not a JPEG file' * 10)

    cfg = Config.fromfile(DETECTOR)
    dataset_cfg = cfg.train_dataloader.dataset
    dataset_cfg.data_root = f'{root}/'
    dataset_cfg.filter_cfg = None  # keep both images, whatever they contain
    with DefaultScope.overwrite_default_scope('mmdet'):
        dataset = DATASETS.build(dataset_cfg)
        assert len(dataset) == 2
        good = dataset[0]  # the intact image loads
        assert tuple(good['inputs'].shape) == (3, 128, 128)
        with pytest.raises(Exception, match=str(bad).replace('.', r'\.')):
            dataset[1]
