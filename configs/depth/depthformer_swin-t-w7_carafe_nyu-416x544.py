# DepthFormer-SwinT on NYU Depth V2 whose four fusion-stage upsamplings are
# CARAFE (default setting). Paper Table 9: +0.3M parameters, Abs Rel 0.116, RMS 0.397.
_base_ = './depthformer_swin-t-w7_bilinear_nyu-416x544.py'

model = dict(decode_head=dict(upsample_cfg=dict(type='CARAFE')))
