# SegFormer-B1 on ADE20K, mmseg's head unchanged (one bilinear resize per level):
# the baseline of DySample (ICCV 2023) Table 4, 41.68 mIoU / 27.80 bIoU in the paper.
_base_ = 'mmseg::segformer/segformer_mit-b1_8xb2-160k_ade20k-512x512.py'

custom_imports = dict(imports=['mmdysample'], allow_failed_imports=False)
