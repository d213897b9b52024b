# Demo: the bilinear baseline with DySample (LP style, 4 groups, static scope 0.25) at every
# resize of UPerHead: 3 top-down steps and the 1 + 2 + 3 chained x2 steps of the fused 1/8,
# 1/16, 1/32 levels to 1/4, 9 upsamplers at 64 channels.
_base_ = './upernet_r18-w16_bilinear_demo_synthetic-ade20k.py'

model = dict(decode_head=dict(upsample_cfg=dict(type='DySample', style='lp', groups=4)))
