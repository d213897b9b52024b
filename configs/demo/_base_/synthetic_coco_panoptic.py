_base_ = ['./default_runtime.py']

# Synthetic shapes in the COCO-panoptic layout (written by tools/make_synthetic_data.py):
# 128x128 images shared with the COCO instances data, RGB-encoded panoptic PNGs with 4 thing
# and 3 stuff categories; evaluated with mmdet's CocoPanopticMetric (PQ via panopticapi).
default_scope = 'mmdet'
dataset_type = 'CocoPanopticDataset'
data_root = 'data/synthetic/coco/'
# mmdysample.datasets.synthetic: THING_CLASSES then STUFF_CLASSES, in category-id order
metainfo = dict(
    classes=('disc', 'square', 'triangle', 'ring', 'sky', 'ground', 'water'),
    thing_classes=('disc', 'square', 'triangle', 'ring'),
    stuff_classes=('sky', 'ground', 'water'),
    palette=[(220, 20, 60), (0, 160, 80), (250, 200, 0), (180, 0, 200), (70, 130, 180),
             (140, 100, 50), (0, 90, 110)])
image_size = (128, 128)
backend_args = None

train_pipeline = [
    dict(type='LoadImageFromFile', backend_args=backend_args),
    dict(type='LoadPanopticAnnotations', backend_args=backend_args),
    dict(type='Resize', scale=image_size, keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs')
]
test_pipeline = [
    dict(type='LoadImageFromFile', backend_args=backend_args),
    dict(type='Resize', scale=image_size, keep_ratio=True),
    dict(type='LoadPanopticAnnotations', backend_args=backend_args),
    dict(type='PackDetInputs',
         meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor'))
]
train_dataloader = dict(
    batch_size=8,
    num_workers=0,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    batch_sampler=None,
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        metainfo=metainfo,
        ann_file='annotations/panoptic_train2017.json',
        data_prefix=dict(img='train2017/', seg='annotations/panoptic_train2017/'),
        filter_cfg=dict(filter_empty_gt=True, min_size=8),
        pipeline=train_pipeline,
        backend_args=backend_args))
val_dataloader = dict(
    batch_size=8,
    num_workers=0,
    drop_last=False,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        metainfo=metainfo,
        ann_file='annotations/panoptic_val2017.json',
        data_prefix=dict(img='val2017/', seg='annotations/panoptic_val2017/'),
        test_mode=True,
        pipeline=test_pipeline,
        backend_args=backend_args))
test_dataloader = val_dataloader

# nproc: the PQ computation's worker processes (mmdet's default 32 is for big machines).
val_evaluator = dict(
    type='CocoPanopticMetric',
    ann_file=data_root + 'annotations/panoptic_val2017.json',
    seg_prefix=data_root + 'annotations/panoptic_val2017/',
    nproc=1,
    backend_args=backend_args)
test_evaluator = val_evaluator

visualizer = dict(type='DetLocalVisualizer', vis_backends=[dict(type='LocalVisBackend')],
                  name='visualizer')
# draws every 25th validation image (panoptic prediction next to ground truth) into
# <work_dir>/<timestamp>/vis_data/vis_image/
default_hooks = dict(visualization=dict(type='DetVisualizationHook', draw=True, interval=25))
