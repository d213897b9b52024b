# SegFormer-B1 with 6 chained x2 DySample-S upsamplers (PL style, 8 groups, static
# scope). Paper Table 4: 43.23 mIoU / 29.53 bIoU.
_base_ = 'mmseg::segformer/segformer_mit-b1_8xb2-160k_ade20k-512x512.py'

custom_imports = dict(imports=['mmdysample'], allow_failed_imports=False)

model = dict(decode_head=dict(upsample_cfg=dict(type='DySample-S')))
