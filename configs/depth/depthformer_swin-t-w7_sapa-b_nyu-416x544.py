# DepthFormer-SwinT on NYU Depth V2 whose four fusion-stage upsamplings are
# SAPA-B, guided by the skip feature. Paper Table 9: +0.1M parameters, Abs Rel 0.117, RMS 0.406.
_base_ = './depthformer_swin-t-w7_bilinear_nyu-416x544.py'

model = dict(decode_head=dict(upsample_cfg=dict(type='SAPA-B')))
