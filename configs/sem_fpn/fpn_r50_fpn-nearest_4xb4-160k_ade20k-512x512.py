# Semantic FPN R50 on ADE20K, mmseg's config unchanged (nearest top-down steps in the FPN
# neck, bilinear x2 steps in the FPNHead scale heads): the baseline of the DySample row.
# mmseg reports 37.49 mIoU (39.09 ms+flip) for it.
_base_ = 'mmseg::sem_fpn/fpn_r50_4xb4-160k_ade20k-512x512.py'

custom_imports = dict(imports=['mmdysample'], allow_failed_imports=False)
