# SegFormer-B1, ADE20K. DySample ablation, paper Table 2 factor 0.5: LP style, 1 group,
# static scope factor 0.5, bilinear initial positions. Paper: 42.2 mIoU.
_base_ = 'mmseg::segformer/segformer_mit-b1_8xb2-160k_ade20k-512x512.py'

custom_imports = dict(imports=['mmdysample'], allow_failed_imports=False)

model = dict(
    decode_head=dict(
        upsample_cfg=dict(
            type='DySample', style='lp', groups=1, scope_factor=0.5, init='bilinear')))
