"""Synthetic NYU-layout data, the NYU recipe's transforms, a train and a test step, and the
missing-data check for the Table 9 configs."""
import importlib.util
import json
import os
import os.path as osp

import cv2
import numpy as np
import pytest
import torch
from mmengine.dataset import pseudo_collate
from mmengine.optim import OptimWrapper
from mmseg.evaluation import DepthMetric
from mmseg.registry import DATASETS, MODELS, TRANSFORMS

from mmdysample.datasets.synthetic_nyu import (NYU_FOCAL_RATIO, NYUSceneSpec, depth_to_png16,
                                               generate_synthetic_nyu, render_nyu_scene)
from mmdysample.mmseg.depth import NYU_CROP_BOX

from .conftest import REPO_ROOT, demo_config, depth_config


@pytest.fixture(scope='module')
def nyu_root(tmp_path_factory):
    root = str(tmp_path_factory.mktemp('nyu'))
    generate_synthetic_nyu(root, seed=3, num_train=4, num_test=2)
    return root


def test_layout_is_what_mmseg_nyu_converter_writes(nyu_root):
    train = sorted(os.listdir(osp.join(nyu_root, 'images', 'train')))
    test = sorted(os.listdir(osp.join(nyu_root, 'images', 'test')))
    assert len(train) == 4 and len(test) == 2
    assert all(name.endswith('.jpg') and name.split('_')[-2] == '0001' for name in train)
    for split, names in (('train', train), ('test', test)):
        for name in names:
            depth = cv2.imread(osp.join(nyu_root, 'annotations', split, name[:-4] + '.png'),
                               cv2.IMREAD_UNCHANGED)
            assert depth.dtype == np.uint16 and depth.shape == (72, 96)
            assert 500 < depth.min() and depth.max() <= 10_000  # millimetres, (0.5, 10] m
    meta = json.load(open(osp.join(nyu_root, 'meta.json')))
    assert meta['layout'] == 'nyu' and meta['num_train'] == 4


def test_nyu_dataset_reads_it_in_metres(nyu_root):
    cfg = demo_config().train_dataloader.dataset
    cfg.data_root = nyu_root
    dataset = DATASETS.build(cfg)
    assert len(dataset) == 4
    info = dataset.get_data_info(0)
    assert info['category_id'] >= 0  # the scene name is one of NYUDataset's categories
    sample = dataset[0]
    depth = sample['data_samples'].gt_depth_map.data[0].numpy()
    png = cv2.imread(info['depth_map_path'], cv2.IMREAD_UNCHANGED)
    if sample['data_samples'].flip:
        png = png[:, ::-1]
    np.testing.assert_allclose(depth, png.astype(np.float32) * 1e-3, rtol=1e-6)


def test_rendered_depth_is_the_room_geometry():
    """An empty room: the back wall is one z, the floor one height (z * v_y constant with
    v_y the pixel's ray slope from NYU's focal ratio), and the PNG is the rounded mm."""
    spec = NYUSceneSpec(height=60, width=80, min_boxes=0, max_boxes=0, max_spheres=0)
    rgb, depth = render_nyu_scene(np.random.default_rng(7), spec)
    assert rgb.shape == (60, 80, 3) and rgb.dtype == np.uint8
    centre = depth[27:33, 36:44]
    assert np.ptp(centre) < 1e-4  # the back wall z = const
    focal = NYU_FOCAL_RATIO * 80
    rows = np.arange(54, 60)
    slope = (rows + 0.5 - 30) / focal
    floor_height = depth[54:60, 38:42] * slope[:, None]
    assert np.ptp(floor_height) < 1e-4 and 1.0 <= floor_height.mean() <= 1.6
    np.testing.assert_array_equal(depth_to_png16(np.array([1.2344, 1.2346, 9.9995])),
                                  [1234, 1235, 10000])
    with pytest.raises(ValueError, match='16-bit'):
        depth_to_png16(np.array([70.0]))


def test_generator_arguments_are_checked(tmp_path):
    with pytest.raises(ValueError, match='height'):
        NYUSceneSpec(height=16)
    with pytest.raises(ValueError, match='num_train'):
        generate_synthetic_nyu(str(tmp_path), num_train=0)
    os.makedirs(tmp_path / 'images')
    with pytest.raises(ValueError, match='not written by generate_synthetic_nyu'):
        generate_synthetic_nyu(str(tmp_path), num_train=1, num_test=1)


@pytest.mark.slow
def test_recipe_pipelines_on_a_480x640_frame(tmp_path):
    generate_synthetic_nyu(str(tmp_path), num_train=1, num_test=1,
                           spec=NYUSceneSpec(height=480, width=640))
    cfg = depth_config('bilinear')
    for loader, size in (('train_dataloader', (416, 544)), ('test_dataloader', (480, 640))):
        dataset_cfg = cfg[loader].dataset
        dataset_cfg.data_root = str(tmp_path)
        sample = DATASETS.build(dataset_cfg)[0]
        assert tuple(sample['inputs'].shape) == (3, *size)
        assert tuple(sample['data_samples'].gt_depth_map.data.shape) == (1, *size)


def test_nyu_crop_and_colour_augmentation():
    image = np.random.default_rng(0).integers(0, 256, (480, 640, 3)).astype(np.uint8)
    depth = np.random.default_rng(1).random((480, 640)).astype(np.float32)
    crop = TRANSFORMS.build(dict(type='NYUCrop'))
    out = crop(dict(img=image.copy(), gt_depth_map=depth.copy(), seg_fields=['gt_depth_map']))
    x1, y1, x2, y2 = NYU_CROP_BOX
    np.testing.assert_array_equal(out['img'], image[45:472, 43:608])
    np.testing.assert_array_equal(out['gt_depth_map'], depth[y1:y2, x1:x2])
    with pytest.raises(ValueError, match='does not fit'):
        crop(dict(img=image[:100], seg_fields=[]))
    with pytest.raises(ValueError, match='box'):
        TRANSFORMS.build(dict(type='NYUCrop', box=(10, 10, 5, 20)))

    aug = TRANSFORMS.build(dict(type='DepthColorAug', prob=1.0))
    np.random.seed(5)
    out = aug(dict(img=image.copy()))
    np.random.seed(5)
    np.random.rand()  # the probability draw
    gamma, brightness = np.random.uniform(0.9, 1.1), np.random.uniform(0.75, 1.25)
    colour = np.random.uniform(0.9, 1.1, size=3)
    expected = np.clip((image / 255.0)**gamma * brightness * colour, 0, 1) * 255
    np.testing.assert_allclose(out['img'], expected, rtol=1e-4, atol=1e-3)
    untouched = TRANSFORMS.build(dict(type='DepthColorAug', prob=0.0))(dict(img=image))
    assert untouched['img'] is image
    with pytest.raises(ValueError, match='gamma_range'):
        TRANSFORMS.build(dict(type='DepthColorAug', gamma_range=(1.2, 0.8)))


@pytest.mark.slow
@pytest.mark.parametrize('upsampler', ['bilinear', 'dysample-lpg4'])
def test_train_step_and_test_step_with_depth_metric(nyu_root, upsampler):
    torch.manual_seed(0)
    cfg = demo_config(upsampler)
    model = MODELS.build(cfg.model)
    model.init_weights()
    train_cfg = cfg.train_dataloader.dataset
    train_cfg.data_root = nyu_root
    batch = pseudo_collate([DATASETS.build(train_cfg)[i] for i in range(2)])
    before = [p.detach().clone() for p in model.decode_head.parameters()]
    optim = OptimWrapper(torch.optim.AdamW(model.parameters(), lr=1e-3))
    log_vars = model.train_step(batch, optim)
    assert set(log_vars) == {'loss', 'decode.loss_silog'}
    assert torch.isfinite(log_vars['loss']) and log_vars['loss'] > 0
    assert any(not torch.equal(b, p) for b, p in zip(before, model.decode_head.parameters()))

    test_cfg = cfg.test_dataloader.dataset
    test_cfg.data_root = nyu_root
    test_batch = pseudo_collate([DATASETS.build(test_cfg)[i] for i in range(2)])
    model.eval()
    with torch.no_grad():
        outputs = model.test_step(test_batch)
    metric = DepthMetric(min_depth_eval=1e-3, max_depth_eval=10.0)
    metric.process(test_batch, [out.to_dict() for out in outputs])
    results = metric.compute_metrics(metric.results)
    # per image, then averaged (mmseg's convention), from the predictions and the PNGs
    abs_rel, rmse, d1 = [], [], []
    for out in outputs:
        pred = out.pred_depth_map.data[0].numpy()
        gt = cv2.imread(out.depth_map_path, cv2.IMREAD_UNCHANGED).astype(np.float64) / 1000
        assert pred.shape == gt.shape == (72, 96)
        assert 1e-3 <= pred.min() and pred.max() <= 10.0  # clamped to [min, max] depth
        valid = (gt > 1e-3) & (gt < 10.0)
        p, g = pred[valid], gt[valid]
        abs_rel.append(np.mean(np.abs(p - g) / g))
        rmse.append(np.sqrt(np.mean((p - g)**2)))
        d1.append(np.mean(np.maximum(p / g, g / p) < 1.25))
    assert results['abs_rel'] == pytest.approx(np.mean(abs_rel), rel=1e-4)
    assert results['rmse'] == pytest.approx(np.mean(rmse), rel=1e-4)
    assert results['d1'] == pytest.approx(np.mean(d1), rel=1e-4)


def _train_tool():
    # tools/train.py's missing-data check lives in tools/tool_helpers.py
    spec = importlib.util.spec_from_file_location('_depth_tool_helpers',
                                                  osp.join(REPO_ROOT, 'tools', 'tool_helpers.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_missing_nyu_folder_stops_with_the_paths_it_needs(tmp_path):
    train_tool = _train_tool()
    cfg = depth_config('bilinear')
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        cfg[loader].dataset.data_root = str(tmp_path / 'nyu')
    with pytest.raises(SystemExit) as error:
        train_tool.check_datasets(cfg, ['train', 'val'])
    assert str(tmp_path / 'nyu') in str(error.value)
    os.makedirs(tmp_path / 'nyu' / 'images' / 'train')
    with pytest.raises(SystemExit) as error:
        train_tool.check_datasets(cfg, ['train', 'val'])
    message = str(error.value)
    for needed in ('annotations/train', 'images/test', 'annotations/test'):
        assert osp.join(str(tmp_path / 'nyu'), needed) in message
    assert osp.join(str(tmp_path / 'nyu'), 'images/train') + ' ' not in message
