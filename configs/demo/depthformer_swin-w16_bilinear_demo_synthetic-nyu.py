# Demo baseline: a tiny DepthFormer (1-block Swin with 16-128 channels, 16-channel stem,
# HAHI neck with 32-dim deformable attention (2 heads, 4 points), fusion head with bilinear stages, 0.85M
# parameters) trained from scratch on the synthetic NYU-layout rooms (72x96 RGB, 16-bit
# PNG depth in mm), evaluated by mmseg's DepthMetric (abs_rel, rmse, d1...).
#   python tools/demo.py --models depthformer
#   (or: python -c "from mmdysample.datasets import generate_synthetic_nyu as g; g('data/synthetic/nyu')"
#    then python tools/train.py configs/demo/depthformer_swin-w16_bilinear_demo_synthetic-nyu.py)
_base_ = ['./_base_/default_runtime.py', './_base_/schedule_demo.py']

default_scope = 'mmseg'
dataset_type = 'NYUDataset'
data_root = 'data/synthetic/nyu/'
image_size = (72, 96)  # NYU's 3:4; the 1/32 level is 3x3, so the stages see odd sizes
min_depth, max_depth = 1e-3, 10.0

model = dict(
    type='DepthEstimator',
    data_preprocessor=dict(
        type='SegDataPreProcessor',
        mean=[123.675, 116.28, 103.53],
        std=[58.395, 57.12, 57.375],
        bgr_to_rgb=True,
        pad_val=0,
        seg_pad_val=0,
        size=image_size),
    backbone=dict(
        type='DepthFormerSwin',
        embed_dims=16,
        depths=[1, 1, 1, 1],
        num_heads=[1, 2, 2, 4],
        window_size=4,
        drop_path_rate=0.1,
        stem_channels=16),
    neck=dict(
        type='HAHIHeteroNeck',
        in_channels=[16, 16, 32, 64, 128],
        out_channels=[16, 16, 32, 64, 128],
        embedding_dim=32,
        positional_encoding=dict(type='SinePositionalEncoding', num_feats=16),
        num_heads=2,
        num_points=4),
    decode_head=dict(
        type='DenseDepthHead',
        in_channels=[16, 16, 32, 64, 128],
        up_sample_channels=[16, 16, 32, 64, 128],
        channels=16,
        min_depth=min_depth,
        max_depth=max_depth,
        loss_decode=dict(type='SiLogLoss')),
    train_cfg=dict(),
    test_cfg=dict(mode='slide_flip', crop_size=image_size, stride=image_size))

meta_keys = ('img_path', 'depth_map_path', 'ori_shape', 'img_shape', 'pad_shape',
             'scale_factor', 'flip', 'flip_direction', 'category_id')
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadDepthAnnotation', depth_rescale_factor=1e-3),
    dict(type='RandomFlip', prob=0.5),
    dict(type='DepthColorAug', prob=0.5),
    dict(type='PackSegInputs', meta_keys=meta_keys),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadDepthAnnotation', depth_rescale_factor=1e-3),
    dict(type='PackSegInputs', meta_keys=meta_keys),
]
train_dataloader = dict(
    batch_size=8,
    num_workers=0,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        data_prefix=dict(img_path='images/train', depth_map_path='annotations/train'),
        pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=8,
    num_workers=0,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        test_mode=True,
        data_prefix=dict(img_path='images/test', depth_map_path='annotations/test'),
        pipeline=test_pipeline))
test_dataloader = val_dataloader
# crop_type=None: nyu_crop is a fixed 480x640-frame box, not meant for 96x128 images
val_evaluator = dict(type='DepthMetric', min_depth_eval=min_depth, max_depth_eval=max_depth,
                     crop_type=None)
test_evaluator = val_evaluator

visualizer = dict(type='SegLocalVisualizer', vis_backends=[dict(type='LocalVisBackend')],
                  name='visualizer')
