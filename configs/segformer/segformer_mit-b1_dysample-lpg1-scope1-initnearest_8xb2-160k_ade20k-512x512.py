# SegFormer-B1, ADE20K. DySample ablation, paper Table 1 'nearest initialization' (the
# naive version): LP style, 1 group, no scope constraint (static factor 1), initial
# positions at the input pixel centres. Paper: 41.9 mIoU.
_base_ = 'mmseg::segformer/segformer_mit-b1_8xb2-160k_ade20k-512x512.py'

custom_imports = dict(imports=['mmdysample'], allow_failed_imports=False)

model = dict(
    decode_head=dict(
        upsample_cfg=dict(
            type='DySample', style='lp', groups=1, scope_factor=1.0, init='nearest')))
