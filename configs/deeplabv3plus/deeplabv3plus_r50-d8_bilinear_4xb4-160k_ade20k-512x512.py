# DeepLabV3+ R50-D8 on ADE20K, mmseg's config unchanged (the ASPP output is resized
# bilinearly to the low-level feature): the baseline of the DySample row. mmseg reports
# 43.95 mIoU (44.93 ms+flip) for it.
_base_ = 'mmseg::deeplabv3plus/deeplabv3plus_r50-d8_4xb4-160k_ade20k-512x512.py'

custom_imports = dict(imports=['mmdysample'], allow_failed_imports=False)
