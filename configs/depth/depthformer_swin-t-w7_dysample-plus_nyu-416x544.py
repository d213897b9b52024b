# DepthFormer-SwinT on NYU Depth V2 whose four fusion-stage upsamplings are
# DySample+ (LP style, 4 groups, dynamic scope). Paper Table 9: +92.2K parameters, Abs Rel 0.116, RMS 0.393.
_base_ = './depthformer_swin-t-w7_bilinear_nyu-416x544.py'

model = dict(decode_head=dict(upsample_cfg=dict(type='DySample+')))
