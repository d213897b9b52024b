# Semantic FPN R50 on ADE20K with DySample (LP style, 4 groups, static scope 0.25) at every
# upsampling step: the FPN neck's 3 top-down steps (256 channels) and the FPNHead scale
# heads' x2 steps (0 + 1 + 2 + 3 = 6, 128 channels), 9 upsamplers. Not in the paper.
_base_ = 'mmseg::sem_fpn/fpn_r50_4xb4-160k_ade20k-512x512.py'

custom_imports = dict(imports=['mmdysample'], allow_failed_imports=False)

model = dict(
    neck=dict(upsample_cfg=dict(type='DySample')),
    decode_head=dict(upsample_cfg=dict(type='DySample')))
