# SegFormer-B1 with 6 chained x2 pixel-shuffle upsamplers (3x3 conv 256 -> 1024,
# then pixel shuffle). Paper Table 4: 41.50 mIoU / 26.58 bIoU.
_base_ = 'mmseg::segformer/segformer_mit-b1_8xb2-160k_ade20k-512x512.py'

custom_imports = dict(imports=['mmdysample'], allow_failed_imports=False)

model = dict(decode_head=dict(upsample_cfg=dict(type='PixelShuffle')))
