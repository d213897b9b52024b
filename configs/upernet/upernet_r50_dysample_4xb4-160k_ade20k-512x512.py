# UPerNet R50 on ADE20K with DySample (LP style, 4 groups, static scope 0.25) in UPerHead:
# the 3 top-down steps and the resizes of the fused 1/8, 1/16, 1/32 levels to 1/4 as
# chains of x2 steps (1 + 2 + 3), 9 upsamplers at 512 channels. Not in the paper.
_base_ = 'mmseg::upernet/upernet_r50_4xb4-160k_ade20k-512x512.py'

custom_imports = dict(imports=['mmdysample'], allow_failed_imports=False)

model = dict(decode_head=dict(upsample_cfg=dict(type='DySample')))
