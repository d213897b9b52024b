# Mask2Former R50 (mmseg), ADE20K 512x512, with DySample (LP style, 4 groups, static scope
# 0.25) at the pixel decoder's FPN-style step outside the deformable encoder (1/8 -> 1/4).
_base_ = './mask2former_r50_msdeformattn-bilinear_8xb2-160k_ade20k-512x512.py'

model = dict(decode_head=dict(pixel_decoder=dict(upsample_cfg=dict(type='DySample'))))
