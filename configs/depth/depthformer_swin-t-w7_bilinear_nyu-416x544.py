# DepthFormer-SwinT on NYU Depth V2 with the fusion head's bilinear upsampling (the
# baseline of the DySample paper, Table 9: 47.6M parameters, Abs Rel 0.120, RMS 0.402).
# The Monocular Depth Estimation Toolbox's depthformer_swint_w7_nyu.py recipe in mmengine's
# format: Swin-T w7 (ImageNet-1K, the checkpoint that config loads), 416x544 crops,
# 2 GPUs x 8 images, 38,400 iterations, AdamW 6e-5, linear warm-up then cosine decay,
# evaluation on the Eigen/NYU crop with horizontal-flip averaging, depths in (1e-3, 10] m.
# Every other Table 9 row inherits this file and sets decode_head.upsample_cfg only.
_base_ = ['mmseg::_base_/datasets/nyu.py', 'mmseg::_base_/default_runtime.py']

custom_imports = dict(imports=['mmdysample'], allow_failed_imports=False)

checkpoint = 'https://download.openmmlab.com/mmsegmentation/v0.5/pretrain/swin/swin_tiny_patch4_window7_224_20220317-1cdeb081.pth'  # noqa
crop_size = (416, 544)
test_size = (480, 640)
min_depth, max_depth = 1e-3, 10.0

data_preprocessor = dict(
    type='SegDataPreProcessor',
    mean=[123.675, 116.28, 103.53],
    std=[58.395, 57.12, 57.375],
    bgr_to_rgb=True,
    pad_val=0,
    seg_pad_val=0,
    size=crop_size)
model = dict(
    type='DepthEstimator',
    data_preprocessor=data_preprocessor,
    backbone=dict(
        type='DepthFormerSwin',
        pretrain_img_size=224,
        embed_dims=96,
        patch_size=4,
        window_size=7,
        mlp_ratio=4,
        depths=[2, 2, 6, 2],
        num_heads=[3, 6, 12, 24],
        strides=(4, 2, 2, 2),
        out_indices=(0, 1, 2, 3),
        qkv_bias=True,
        qk_scale=None,
        patch_norm=True,
        drop_rate=0.,
        attn_drop_rate=0.,
        drop_path_rate=0.3,
        use_abs_pos_embed=False,
        act_cfg=dict(type='GELU'),
        norm_cfg=dict(type='LN', requires_grad=True),
        stem_channels=64,
        conv_norm_cfg=dict(type='BN', requires_grad=True),
        init_cfg=dict(type='Pretrained', checkpoint=checkpoint)),
    neck=dict(
        type='HAHIHeteroNeck',
        in_channels=[64, 96, 192, 384, 768],
        out_channels=[64, 96, 192, 384, 768],
        embedding_dim=256,
        positional_encoding=dict(type='SinePositionalEncoding', num_feats=128),
        num_heads=8,
        num_points=8,
        norm_cfg=dict(type='BN', requires_grad=True)),
    decode_head=dict(
        type='DenseDepthHead',
        in_channels=[64, 96, 192, 384, 768],
        up_sample_channels=[64, 96, 192, 384, 768],
        channels=64,
        act_cfg=dict(type='LeakyReLU', inplace=True),
        min_depth=min_depth,
        max_depth=max_depth,
        align_corners=True,
        loss_decode=dict(type='SiLogLoss', loss_weight=1.0)),
    train_cfg=dict(),
    # one window of the whole image, averaged with its horizontal flip (the toolbox's
    # flip test); crop_size only needs to cover the image
    test_cfg=dict(mode='slide_flip', crop_size=test_size, stride=test_size))

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadDepthAnnotation', depth_rescale_factor=1e-3),
    dict(type='NYUCrop'),
    dict(type='RandomRotate', prob=0.5, degree=2.5, pad_val=0, seg_pad_val=0),
    dict(type='RandomFlip', prob=0.5),
    dict(type='RandomCrop', crop_size=crop_size),
    dict(type='DepthColorAug', prob=0.5, gamma_range=(0.9, 1.1),
         brightness_range=(0.75, 1.25), color_range=(0.9, 1.1)),
    dict(type='PackSegInputs',
         meta_keys=('img_path', 'depth_map_path', 'ori_shape', 'img_shape', 'pad_shape',
                    'scale_factor', 'flip', 'flip_direction', 'category_id')),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadDepthAnnotation', depth_rescale_factor=1e-3),
    dict(type='PackSegInputs',
         meta_keys=('img_path', 'depth_map_path', 'ori_shape', 'img_shape', 'pad_shape',
                    'scale_factor', 'flip', 'flip_direction', 'category_id')),
]
train_dataloader = dict(batch_size=8, num_workers=8, dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(batch_size=1, num_workers=4, dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(type='DepthMetric', min_depth_eval=min_depth, max_depth_eval=max_depth,
                     crop_type='nyu_crop')
test_evaluator = val_evaluator

# schedule: 24 x 1,600 iterations at 16 images (2 GPUs x 8)
max_iters = 38400
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=6e-5, betas=(0.9, 0.999), weight_decay=0.01),
    clip_grad=dict(max_norm=35, norm_type=2),
    paramwise_cfg=dict(
        custom_keys={
            'absolute_pos_embed': dict(decay_mult=0.),
            'relative_position_bias_table': dict(decay_mult=0.),
            'norm': dict(decay_mult=0.),
        }))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-3, by_epoch=False, begin=0, end=12800),
    dict(type='CosineAnnealingLR', T_max=max_iters, eta_min=6e-5 * 1e-8, by_epoch=False,
         begin=0, end=max_iters),
]
train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters, val_interval=1600)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=50, log_metric_by_epoch=False),
    param_scheduler=dict(type='ParamSchedulerHook'),
    checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=1600, max_keep_ckpts=2,
                    save_best='abs_rel', rule='less'),
    sampler_seed=dict(type='DistSamplerSeedHook'),
    visualization=dict(type='SegVisualizationHook'))
# the toolbox's batch: 2 GPUs x 8 images
auto_scale_lr = dict(enable=False, base_batch_size=16)
