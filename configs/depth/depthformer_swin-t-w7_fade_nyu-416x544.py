# DepthFormer-SwinT on NYU Depth V2 whose four fusion-stage upsamplings are
# FADE without gating, guided by the skip feature. Paper Table 9: +0.2M parameters, Abs Rel 0.118, RMS 0.399.
_base_ = './depthformer_swin-t-w7_bilinear_nyu-416x544.py'

model = dict(decode_head=dict(upsample_cfg=dict(type='FADE')))
