# SegFormer-B1 with 6 chained x2 IndexNet 'HIN' (holistic index, nonlinear, with context;
# 2,100,224 parameters per step at 256 channels). Guided: each step gets the head's
# projection at its output resolution as the guide. Paper Table 4: 41.50 mIoU / 28.27
# bIoU, +30.7 GFLOPs, +12.6M.
_base_ = 'mmseg::segformer/segformer_mit-b1_8xb2-160k_ade20k-512x512.py'

custom_imports = dict(imports=['mmdysample'], allow_failed_imports=False)

model = dict(decode_head=dict(upsample_cfg=dict(type='IndexNet')))
