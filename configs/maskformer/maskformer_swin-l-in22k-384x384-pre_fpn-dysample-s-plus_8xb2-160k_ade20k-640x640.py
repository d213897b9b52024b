# MaskFormer Swin-L on ADE20K 640x640 with the pixel decoder's 3 nearest x2 steps replaced by
# DySample-S+ (PL style, 8 groups, dynamic scope, 256 channels). DySample (ICCV 2023) Table 5:
# 54.90 mIoU.
_base_ = './maskformer_swin-l-in22k-384x384-pre_fpn-nearest_8xb2-160k_ade20k-640x640.py'

model = dict(decode_head=dict(pixel_decoder=dict(upsample_cfg=dict(type='DySample-S+'))))
