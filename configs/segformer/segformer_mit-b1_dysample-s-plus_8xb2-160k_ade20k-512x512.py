# SegFormer-B1 with 6 chained x2 DySample-S+ upsamplers (PL style, 8 groups, dynamic
# scope). Paper Table 4: 43.58 mIoU / 29.93 bIoU, the best SegFormer-B1 row.
_base_ = 'mmseg::segformer/segformer_mit-b1_8xb2-160k_ade20k-512x512.py'

custom_imports = dict(imports=['mmdysample'], allow_failed_imports=False)

model = dict(decode_head=dict(upsample_cfg=dict(type='DySample-S+')))
