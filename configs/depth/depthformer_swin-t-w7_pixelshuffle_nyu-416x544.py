# DepthFormer-SwinT on NYU Depth V2 whose four fusion-stage upsamplings are
# a 3x3 convolution to 4C channels and pixel shuffle. Paper Table 9: +28.2M parameters, Abs Rel 0.117, RMS 0.395.
_base_ = './depthformer_swin-t-w7_bilinear_nyu-416x544.py'

model = dict(decode_head=dict(upsample_cfg=dict(type='PixelShuffle')))
