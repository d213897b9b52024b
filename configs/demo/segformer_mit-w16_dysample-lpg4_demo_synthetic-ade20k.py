# Demo: the bilinear baseline with DySample (LP style, 4 groups, static scope 0.25) as the
# head's x2 upsampling steps (1 + 2 + 3 chained for the 1/8, 1/16, 1/32 inputs).
_base_ = './segformer_mit-w16_bilinear_demo_synthetic-ade20k.py'

model = dict(decode_head=dict(upsample_cfg=dict(type='DySample', style='lp', groups=4)))
