# MaskFormer with a Swin-L backbone (ImageNet-22K, 384x384, window 12) on ADE20K 640x640:
# the upstream FPN pixel decoder (3 nearest x2 steps). DySample (ICCV 2023) Table 5 baseline,
# 54.10 mIoU in the paper (the MaskFormer paper's Swin-L number).
_base_ = './maskformer_swin-b-in22k-384x384-pre_fpn-nearest_8xb2-160k_ade20k-640x640.py'

pretrained = 'https://download.openmmlab.com/mmsegmentation/v0.5/pretrain/swin/swin_large_patch4_window12_384_22k_20220412-6580f57d.pth'  # noqa
model = dict(
    backbone=dict(
        embed_dims=192,
        num_heads=[6, 12, 24, 48],
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    decode_head=dict(in_channels=[192, 384, 768, 1536]))
