# DepthFormer-SwinT on NYU Depth V2 whose four fusion-stage upsamplings are
# DySample-S (PL style, 8 groups, static scope). Paper Table 9: +5.8K parameters, Abs Rel 0.118, RMS 0.402.
_base_ = './depthformer_swin-t-w7_bilinear_nyu-416x544.py'

model = dict(decode_head=dict(upsample_cfg=dict(type='DySample-S')))
