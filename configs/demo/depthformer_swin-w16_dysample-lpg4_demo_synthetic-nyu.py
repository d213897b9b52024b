# Demo: the tiny DepthFormer baseline with DySample (LP style, 4 groups, static scope 0.25)
# as the fusion head's four upsampling stages (16, 32, 64, 128 channels).
_base_ = './depthformer_swin-w16_bilinear_demo_synthetic-nyu.py'

model = dict(decode_head=dict(upsample_cfg=dict(type='DySample', style='lp', groups=4)))
