# SegFormer-B1, ADE20K. DySample ablation, paper Table 3 '1 group, dynamic': LP style,
# 1 group, dynamic scope 0.5 * sigmoid(.) (in [0, 0.5], centred on 0.25), bilinear initial
# positions. Paper: 42.6 mIoU.
_base_ = 'mmseg::segformer/segformer_mit-b1_8xb2-160k_ade20k-512x512.py'

custom_imports = dict(imports=['mmdysample'], allow_failed_imports=False)

model = dict(
    decode_head=dict(
        upsample_cfg=dict(
            type='DySample', style='lp', groups=1, scope_factor=0.25, dyscope=True,
            init='bilinear')))
