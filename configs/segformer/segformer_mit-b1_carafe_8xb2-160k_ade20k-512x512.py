# SegFormer-B1 with 6 chained x2 CARAFE upsamplers (mmcv defaults: 64 compressed
# channels, 3x3 encoder, 5x5 reassembly). Paper Table 4: 42.82 mIoU / 29.84 bIoU.
_base_ = 'mmseg::segformer/segformer_mit-b1_8xb2-160k_ade20k-512x512.py'

custom_imports = dict(imports=['mmdysample'], allow_failed_imports=False)

model = dict(decode_head=dict(upsample_cfg=dict(type='CARAFE')))
