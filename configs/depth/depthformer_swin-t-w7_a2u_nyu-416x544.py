# DepthFormer-SwinT on NYU Depth V2 whose four fusion-stage upsamplings are
# A2U ('dynamic-cs-d'), guided by the skip feature. Paper Table 9: +30.0K parameters, Abs Rel 0.118, RMS 0.397.
_base_ = './depthformer_swin-t-w7_bilinear_nyu-416x544.py'

model = dict(decode_head=dict(upsample_cfg=dict(type='A2U')))
