# DepthFormer-SwinT on NYU Depth V2 whose four fusion-stage upsamplings are
# IndexNet (HIN), guided by the skip feature. Paper Table 9: +6.3M parameters, Abs Rel 0.117, RMS 0.401.
_base_ = './depthformer_swin-t-w7_bilinear_nyu-416x544.py'

model = dict(decode_head=dict(upsample_cfg=dict(type='IndexNet')))
