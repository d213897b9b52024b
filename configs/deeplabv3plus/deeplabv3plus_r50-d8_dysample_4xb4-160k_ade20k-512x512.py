# DeepLabV3+ R50-D8 on ADE20K with DySample (LP style, 4 groups, static scope 0.25) for the
# decoder's one upsampling step, the ASPP output (1/8) to the low-level feature (1/4):
# 1 upsampler at 512 channels. Not in the paper.
_base_ = 'mmseg::deeplabv3plus/deeplabv3plus_r50-d8_4xb4-160k_ade20k-512x512.py'

custom_imports = dict(imports=['mmdysample'], allow_failed_imports=False)

model = dict(decode_head=dict(upsample_cfg=dict(type='DySample')))
