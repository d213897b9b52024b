# SegFormer-B1 with 6 chained x2 DySample+ upsamplers (LP style, 4 groups, dynamic
# scope). Paper Table 4: 43.28 mIoU / 29.23 bIoU; Table 3 (groups 4, dynamic): 43.3.
_base_ = 'mmseg::segformer/segformer_mit-b1_8xb2-160k_ade20k-512x512.py'

custom_imports = dict(imports=['mmdysample'], allow_failed_imports=False)

model = dict(decode_head=dict(upsample_cfg=dict(type='DySample+')))
