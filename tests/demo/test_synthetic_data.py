"""The synthetic demo data: determinism, cross-format consistency, loading with the
upstream mmdet / mmseg datasets, argument checking and the CLI."""
import filecmp
import json
import os
import os.path as osp

import cv2
import numpy as np
import pytest
from pycocotools import mask as mask_utils

import demo_helpers  # noqa: F401  (checkout on sys.path)
from mmdysample.datasets import (CATEGORIES, SEMANTIC_CLASSES, STUFF_CLASSES, THING_CLASSES,
                                 SceneSpec, generate_synthetic_dataset, render_scene)


def _load_json(path):
    with open(path) as f:
        return json.load(f)


def _files(root):
    out = []
    for folder, _, names in os.walk(root):
        out += [osp.relpath(osp.join(folder, n), root) for n in names]
    return sorted(out)


def _tight_box(mask):
    ys, xs = np.nonzero(mask)
    return [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]


def test_generation_is_deterministic_and_seeded(tmp_path):
    a, b, c = (str(tmp_path / name) for name in 'abc')
    generate_synthetic_dataset(a, seed=3, num_train=3, num_val=2)
    generate_synthetic_dataset(b, seed=3, num_train=3, num_val=2)
    generate_synthetic_dataset(c, seed=4, num_train=3, num_val=2)
    files = _files(a)
    assert files == _files(b) == _files(c)
    expected = {
        'coco/train2017/000000000003.jpg', 'coco/val2017/000000000002.jpg',
        'coco/annotations/instances_train2017.json', 'coco/annotations/panoptic_val2017.json',
        'coco/annotations/panoptic_train2017/000000000001.png',
        'ade20k/images/training/synthetic_train_00000003.jpg',
        'ade20k/annotations/validation/synthetic_val_00000002.png', 'meta.json'
    }
    assert expected <= set(files)
    same = [f for f in files if f != 'meta.json']  # meta.json holds the time taken
    match, mismatch, errors = filecmp.cmpfiles(a, b, same, shallow=False)
    assert not mismatch and not errors
    _, differ, _ = filecmp.cmpfiles(a, c, [f for f in same if f.endswith('.jpg')],
                                    shallow=False)
    assert len(differ) == 10  # another seed, other scenes (COCO and ADE20K copies)
    # validation scenes do not depend on the number of training scenes
    d = str(tmp_path / 'd')
    generate_synthetic_dataset(d, seed=3, num_train=5, num_val=2, formats=['ade20k'])
    assert filecmp.cmp(osp.join(a, 'ade20k/annotations/validation/synthetic_val_00000002.png'),
                       osp.join(d, 'ade20k/annotations/validation/synthetic_val_00000002.png'),
                       shallow=False)


def test_formats_agree_with_each_other(tiny_data):
    """Boxes/areas recomputed from the RLE masks; panoptic segments recomputed from the
    PNG; instance masks == thing segments; ADE20K labels == panoptic categories."""
    coco = osp.join(tiny_data, 'coco')
    for split in ('train', 'val'):
        instances = _load_json(osp.join(coco, f'annotations/instances_{split}2017.json'))
        panoptic = _load_json(osp.join(coco, f'annotations/panoptic_{split}2017.json'))
        assert [c['name'] for c in instances['categories']] == list(THING_CLASSES)
        assert [c['name'] for c in panoptic['categories']] == list(THING_CLASSES + STUFF_CLASSES)
        assert [c['isthing'] for c in panoptic['categories']] == [1] * 4 + [0] * 3
        ade_split = 'training' if split == 'train' else 'validation'
        for image, pan_ann in zip(instances['images'], panoptic['annotations']):
            assert pan_ann['image_id'] == image['id']
            jpg = cv2.imread(osp.join(coco, f'{split}2017', image['file_name']))
            assert jpg.shape == (image['height'], image['width'], 3)
            anns = [a for a in instances['annotations'] if a['image_id'] == image['id']]
            masks = []
            for ann in anns:
                mask = mask_utils.decode(ann['segmentation']).astype(bool)
                assert mask.shape == jpg.shape[:2]
                assert ann['area'] == mask.sum() > 0
                assert ann['bbox'] == pytest.approx(_tight_box(mask))
                assert 1 <= ann['category_id'] <= 4 and ann['iscrowd'] == 0
                masks.append(mask)
            if masks:  # visible parts of instances do not overlap
                assert np.sum(masks, axis=0).max() == 1

            png = cv2.imread(osp.join(coco, f'annotations/panoptic_{split}2017',
                                      pan_ann['file_name']))[..., ::-1].astype(np.int64)
            ids = png[..., 0] + 256 * png[..., 1] + 65536 * png[..., 2]
            segments = {s['id']: s for s in pan_ann['segments_info']}
            assert len(segments) == len(pan_ann['segments_info'])
            assert set(np.unique(ids)) - {0} == set(segments)
            for segment_id, segment in segments.items():
                assert segment['area'] == (ids == segment_id).sum()
                assert segment['bbox'] == pytest.approx(_tight_box(ids == segment_id))
            things = [s for s in pan_ann['segments_info'] if s['category_id'] <= 4]
            assert len(things) == len(anns)
            for segment, ann, mask in zip(things, anns, masks):
                assert segment['category_id'] == ann['category_id']
                assert np.array_equal(ids == segment['id'], mask)

            stem = f'synthetic_{split}_{image["id"]:08d}'
            label = cv2.imread(osp.join(tiny_data, 'ade20k/annotations', ade_split,
                                        stem + '.png'), cv2.IMREAD_UNCHANGED)
            assert label.dtype == np.uint8 and label.shape == ids.shape
            category_of_pixel = np.zeros_like(label)
            for segment_id, segment in segments.items():
                category_of_pixel[ids == segment_id] = segment['category_id']
            assert np.array_equal(label, category_of_pixel)  # 0 = void = clutter
            ade_jpg = cv2.imread(osp.join(tiny_data, 'ade20k/images', ade_split,
                                          stem + '.jpg'))
            assert np.array_equal(ade_jpg, jpg)


def test_upstream_datasets_load_it(tiny_data):
    from mmengine.registry import DefaultScope

    import mmdysample  # noqa: F401
    from mmdet.datasets import CocoDataset, CocoPanopticDataset
    from mmdet.utils import register_all_modules as register_mmdet
    from mmseg.utils import register_all_modules as register_mmseg
    register_mmdet(init_default_scope=False)
    register_mmseg(init_default_scope=False)
    from mmdysample.datasets import SyntheticADE20KDataset

    coco = osp.join(tiny_data, 'coco') + '/'
    instances = _load_json(osp.join(coco, 'annotations/instances_val2017.json'))
    with DefaultScope.overwrite_default_scope('mmdet'):
        dataset = CocoDataset(
            data_root=coco, ann_file='annotations/instances_val2017.json',
            data_prefix=dict(img='val2017/'), metainfo=dict(classes=THING_CLASSES),
            test_mode=True, pipeline=[
                dict(type='LoadImageFromFile'),
                dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
                dict(type='PackDetInputs')
            ])
        assert len(dataset) == 4
        for index in range(4):
            sample = dataset[index]['data_samples']
            anns = [a for a in instances['annotations'] if a['image_id'] == sample.img_id]
            gt = sample.gt_instances
            assert gt.labels.tolist() == [a['category_id'] - 1 for a in anns]
            expected = np.array([[x, y, x + w, y + h] for x, y, w, h in
                                 (a['bbox'] for a in anns)]).reshape(-1, 4)
            np.testing.assert_allclose(gt.bboxes.tensor.numpy(), expected)
            assert gt.masks.masks.sum() == sum(a['area'] for a in anns)

        panoptic = CocoPanopticDataset(
            data_root=coco, ann_file='annotations/panoptic_val2017.json',
            data_prefix=dict(img='val2017/', seg='annotations/panoptic_val2017/'),
            metainfo=dict(classes=THING_CLASSES + STUFF_CLASSES, thing_classes=THING_CLASSES,
                          stuff_classes=STUFF_CLASSES),
            test_mode=True, pipeline=[
                dict(type='LoadImageFromFile'),
                dict(type='LoadPanopticAnnotations'),
                dict(type='PackDetInputs')
            ])
        assert len(panoptic) == 4
        sample = panoptic[0]['data_samples']
        sem = sample.gt_seg_map if hasattr(sample, 'gt_seg_map') else \
            sample.gt_sem_seg.sem_seg[0].numpy()
        # mmdet's semantic labels: things 0-3, stuff 4-6, void 255
        assert set(np.unique(sem)) <= set(range(7)) | {255}
        assert len(sample.gt_instances) == len(
            [a for a in instances['annotations'] if a['image_id'] == sample.img_id])

    with DefaultScope.overwrite_default_scope('mmseg'):
        ade = SyntheticADE20KDataset(
            data_root=osp.join(tiny_data, 'ade20k'),
            data_prefix=dict(img_path='images/validation',
                             seg_map_path='annotations/validation'),
            pipeline=[dict(type='LoadImageFromFile'), dict(type='LoadAnnotations'),
                      dict(type='PackSegInputs')])
        assert len(ade) == 4
        assert ade.metainfo['classes'] == SEMANTIC_CLASSES
        seg = ade[0]['data_samples'].gt_sem_seg.data[0].numpy()
        raw = cv2.imread(osp.join(tiny_data, 'ade20k/annotations/validation',
                                  'synthetic_val_00000001.png'), cv2.IMREAD_UNCHANGED)
        # reduce_zero_label (ADE20K's default): k -> k - 1, 0 -> 255 (ignored)
        np.testing.assert_array_equal(seg, np.where(raw == 0, 255, raw.astype(int) - 1))


def test_scene_contents():
    spec = SceneSpec(height=64, width=96, min_objects=3, max_objects=3, empty_prob=0.0)
    scene = render_scene(np.random.default_rng(5), spec)
    assert scene.image.shape == (64, 96, 3) and scene.image.dtype == np.uint8
    assert scene.semantic.shape == (64, 96)
    assert 1 <= len(scene.instance_categories) <= 3
    thing_ids = {c['id'] for c in CATEGORIES if c['isthing']}
    for mask, category in zip(scene.instance_masks(), scene.instance_categories):
        assert mask.any() and category in thing_ids
        assert np.all(scene.semantic[mask] == category)
    stuff = (scene.instance_ids == 0) & (scene.semantic != 0)
    assert set(np.unique(scene.semantic[stuff])) <= {c['id'] for c in CATEGORIES
                                                      if not c['isthing']}
    empty = render_scene(np.random.default_rng(0), SceneSpec(empty_prob=1.0))
    assert empty.instance_categories == [] and not empty.instance_ids.any()


@pytest.mark.parametrize('kwargs, name', [
    (dict(height=16), 'height'),
    (dict(width=64.0), 'width'),
    (dict(min_objects=3, max_objects=2), 'min_objects'),
    (dict(min_object_size=0.5, max_object_size=0.2), 'min_object_size'),
    (dict(water_prob=1.5), 'water_prob'),
])
def test_scene_spec_rejects_bad_values(kwargs, name):
    with pytest.raises(ValueError, match=name):
        SceneSpec(**kwargs)


@pytest.mark.parametrize('kwargs, name', [
    (dict(num_train=0), 'num_train'),
    (dict(num_val=True), 'num_val'),
    (dict(seed=-1), 'seed'),
    (dict(formats=['voc']), 'formats'),
    (dict(formats=[]), 'formats'),
])
def test_generator_rejects_bad_arguments(tmp_path, kwargs, name):
    with pytest.raises(ValueError, match=name):
        generate_synthetic_dataset(str(tmp_path), **kwargs)


def test_cli_skips_existing_data(tmp_path, capsys):
    make_data = demo_helpers.load_tool('make_synthetic_data')
    out = str(tmp_path / 'data')
    args = ['--out', out, '--num-train', '2', '--num-val', '1', '--size', '48x64',
            '--formats', 'ade20k', '--skip-existing']
    assert make_data.main(args) == 0
    assert 'wrote' in capsys.readouterr().out
    label = cv2.imread(osp.join(out, 'ade20k/annotations/training/synthetic_train_00000002.png'),
                       cv2.IMREAD_UNCHANGED)
    assert label.shape == (48, 64)
    assert _load_json(osp.join(out, 'meta.json'))['num_train'] == 2
    assert make_data.main(args) == 0
    assert 'skipping' in capsys.readouterr().out
    # other parameters: written again
    assert make_data.main(args[:3] + ['3'] + args[4:]) == 0
    assert 'wrote' in capsys.readouterr().out
    with pytest.raises(SystemExit):
        make_data.parse_args(['--size', '16'])
    assert '--size' in capsys.readouterr().err


def test_regeneration_replaces_the_old_set(tmp_path):
    out = str(tmp_path / 'data')
    generate_synthetic_dataset(out, num_train=3, num_val=1)
    generate_synthetic_dataset(out, num_train=2, num_val=1)
    assert sorted(os.listdir(osp.join(out, 'ade20k/images/training'))) == [
        'synthetic_train_00000001.jpg', 'synthetic_train_00000002.jpg'
    ]
    assert len(os.listdir(osp.join(out, 'coco/train2017'))) == 2
    foreign = tmp_path / 'foreign'
    (foreign / 'coco').mkdir(parents=True)
    (foreign / 'coco' / 'mine.txt').write_text('not synthetic')
    with pytest.raises(ValueError, match='out_dir'):
        generate_synthetic_dataset(str(foreign), num_train=1, num_val=1)
    assert (foreign / 'coco' / 'mine.txt').exists()
