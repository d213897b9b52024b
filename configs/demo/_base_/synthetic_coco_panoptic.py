# Synthetic shapes in the COCO-panoptic layout (written by tools/make_synthetic_data.py):
# the images of synthetic_coco_detection.py with RGB-encoded panoptic PNGs, 4 thing and 3
# stuff categories; evaluated with mmdet's CocoPanopticMetric (PQ via panopticapi).
_base_ = ['./synthetic_coco_detection.py']

dataset_type = 'CocoPanopticDataset'
data_root = 'data/synthetic/coco/'  # as in the base; used by the evaluator below
# mmdysample.datasets.synthetic: THING_CLASSES then STUFF_CLASSES, in category-id order
metainfo = dict(
    classes=('disc', 'square', 'triangle', 'ring', 'sky', 'ground', 'water'),
    thing_classes=('disc', 'square', 'triangle', 'ring'),
    stuff_classes=('sky', 'ground', 'water'),
    palette=[(220, 20, 60), (0, 160, 80), (250, 200, 0), (180, 0, 200), (70, 130, 180),
             (140, 100, 50), (0, 90, 110)])

train_pipeline = [
    dict(type='LoadImageFromFile', backend_args={{_base_.backend_args}}),
    dict(type='LoadPanopticAnnotations', backend_args={{_base_.backend_args}}),
    dict(type='Resize', scale={{_base_.image_size}}, keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs')
]
test_pipeline = [
    dict(type='LoadImageFromFile', backend_args={{_base_.backend_args}}),
    dict(type='Resize', scale={{_base_.image_size}}, keep_ratio=True),
    dict(type='LoadPanopticAnnotations', backend_args={{_base_.backend_args}}),
    dict(type='PackDetInputs',
         meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor'))
]
train_dataloader = dict(
    dataset=dict(
        type=dataset_type,
        metainfo=metainfo,
        ann_file='annotations/panoptic_train2017.json',
        data_prefix=dict(img='train2017/', seg='annotations/panoptic_train2017/'),
        pipeline=train_pipeline))
val_dataloader = dict(
    dataset=dict(
        type=dataset_type,
        metainfo=metainfo,
        ann_file='annotations/panoptic_val2017.json',
        data_prefix=dict(img='val2017/', seg='annotations/panoptic_val2017/'),
        pipeline=test_pipeline))
test_dataloader = val_dataloader

# nproc: the PQ computation's worker processes (mmdet's default 32 is for big machines).
val_evaluator = dict(
    _delete_=True,
    type='CocoPanopticMetric',
    ann_file=data_root + 'annotations/panoptic_val2017.json',
    seg_prefix=data_root + 'annotations/panoptic_val2017/',
    nproc=1,
    backend_args={{_base_.backend_args}})
test_evaluator = val_evaluator
