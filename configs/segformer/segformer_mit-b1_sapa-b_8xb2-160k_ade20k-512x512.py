# SegFormer-B1 with 6 chained x2 SAPA-B (kernel 5, 32-channel query/key with bias,
# GroupNorm; 17,472 parameters per step at 256 channels). Guided: each step gets the
# head's projection at its output resolution as the guide. Paper Table 4: 43.20 mIoU /
# 30.96 bIoU, +1.0 GFLOPs, +0.1M.
_base_ = 'mmseg::segformer/segformer_mit-b1_8xb2-160k_ade20k-512x512.py'

custom_imports = dict(imports=['mmdysample'], allow_failed_imports=False)

model = dict(decode_head=dict(upsample_cfg=dict(type='SAPA-B')))
