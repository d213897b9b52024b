# SegFormer-B1 with 6 chained x2 FADE without gating (kernel 5, 64 compressed channels;
# 47,257 parameters per step at 256 channels). Guided: each step gets the head's
# projection at its output resolution as the guide. Paper Table 4: 43.06 mIoU / 31.68
# bIoU, +2.7 GFLOPs, +0.3M.
_base_ = 'mmseg::segformer/segformer_mit-b1_8xb2-160k_ade20k-512x512.py'

custom_imports = dict(imports=['mmdysample'], allow_failed_imports=False)

model = dict(decode_head=dict(upsample_cfg=dict(type='FADE')))
