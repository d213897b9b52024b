# MaskFormer with a Swin-B backbone (ImageNet-22K, 384x384, window 12) on ADE20K 640x640:
# the upstream FPN pixel decoder (3 nearest x2 steps). DySample (ICCV 2023) Table 5 baseline,
# 52.70 mIoU in the paper (the MaskFormer paper's Swin-B number).
# mmseg ships MaskFormer with R-50/R-101/Swin-T/Swin-S at 512x512 only: this config takes its
# Swin-S MaskFormer (AdamW 6e-5, weight decay 0.01, 160k iterations, batch 16) and sets the
# Swin-B backbone of mmseg's Swin-B configs and the 640x640 ADE20K pipeline of mmseg's
# Mask2Former Swin-B config.
_base_ = 'mmseg::maskformer/maskformer_swin-s_upernet_8xb2-160k_ade20k-512x512.py'

custom_imports = dict(imports=['mmdysample'], allow_failed_imports=False)

pretrained = 'https://download.openmmlab.com/mmsegmentation/v0.5/pretrain/swin/swin_base_patch4_window12_384_22k_20220317-e5c09f74.pth'  # noqa
crop_size = (640, 640)
model = dict(
    data_preprocessor=dict(size=crop_size),
    backbone=dict(
        pretrain_img_size=384,
        embed_dims=128,
        depths=[2, 2, 18, 2],
        num_heads=[4, 8, 16, 32],
        window_size=12,
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    decode_head=dict(in_channels=[128, 256, 512, 1024]))

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(
        type='RandomChoiceResize',
        scales=[int(x * 0.1 * 640) for x in range(5, 21)],
        resize_type='ResizeShortestEdge',
        max_size=2560),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PhotoMetricDistortion'),
    dict(type='PackSegInputs')
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(2560, 640), keep_ratio=True),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='PackSegInputs')
]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader
