# UPerNet R50 on ADE20K, mmseg's config unchanged (bilinear resizes in UPerHead): the
# baseline of the DySample row. mmseg reports 42.05 mIoU (42.78 ms+flip) for it.
_base_ = 'mmseg::upernet/upernet_r50_4xb4-160k_ade20k-512x512.py'

custom_imports = dict(imports=['mmdysample'], allow_failed_imports=False)
