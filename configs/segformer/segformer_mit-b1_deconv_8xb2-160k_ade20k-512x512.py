# SegFormer-B1 with the head's resizes replaced by 6 chained x2 transposed convs
# (k3 s2 p1 op1, 256 channels). Paper Table 4: 40.71 mIoU / 25.94 bIoU.
_base_ = 'mmseg::segformer/segformer_mit-b1_8xb2-160k_ade20k-512x512.py'

custom_imports = dict(imports=['mmdysample'], allow_failed_imports=False)

model = dict(decode_head=dict(upsample_cfg=dict(type='Deconv')))
