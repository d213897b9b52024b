# Synthetic shapes in the ADE20K layout (written by tools/make_synthetic_data.py): 128x128
# images, 7 classes (4 things + 3 stuff), label 0 = "other" ignored via reduce_zero_label;
# evaluated with mmseg's IoUMetric (mIoU).
_base_ = ['./default_runtime.py']

default_scope = 'mmseg'
dataset_type = 'SyntheticADE20KDataset'  # mmdysample.datasets: ADE20KDataset, own classes
data_root = 'data/synthetic/ade20k/'
crop_size = (128, 128)

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='RandomResize', scale=(128, 128), ratio_range=(0.75, 1.5), keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackSegInputs')
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(128, 128), keep_ratio=True),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='PackSegInputs')
]
train_dataloader = dict(
    batch_size=8,
    num_workers=0,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        data_prefix=dict(img_path='images/training', seg_map_path='annotations/training'),
        pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=8,
    num_workers=0,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        data_prefix=dict(img_path='images/validation', seg_map_path='annotations/validation'),
        pipeline=test_pipeline))
test_dataloader = val_dataloader

val_evaluator = dict(type='IoUMetric', iou_metrics=['mIoU'])
test_evaluator = val_evaluator

visualizer = dict(type='SegLocalVisualizer', vis_backends=[dict(type='LocalVisBackend')],
                  name='visualizer')
# draws the validation images of every 25th batch (ground truth and prediction side by
# side) into
# <work_dir>/<timestamp>/vis_data/vis_image/
default_hooks = dict(visualization=dict(type='SegVisualizationHook', draw=True, interval=25))
