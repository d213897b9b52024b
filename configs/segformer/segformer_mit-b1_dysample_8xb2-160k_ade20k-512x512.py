# SegFormer-B1 with 6 chained x2 DySample upsamplers (LP style, 4 groups, static
# scope 0.25). Paper Table 4: 43.21 mIoU / 29.12 bIoU; Table 3 (groups 4, static): 43.2.
_base_ = 'mmseg::segformer/segformer_mit-b1_8xb2-160k_ade20k-512x512.py'

custom_imports = dict(imports=['mmdysample'], allow_failed_imports=False)

model = dict(decode_head=dict(upsample_cfg=dict(type='DySample')))
