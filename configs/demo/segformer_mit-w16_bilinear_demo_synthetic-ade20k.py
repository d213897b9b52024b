# Demo baseline: tiny SegFormer (1-block MiT, 16-128 channels, 64-channel head with mmseg's
# bilinear upsampling) trained from scratch on the synthetic ADE20K-layout shapes, 128x128.
#   python tools/make_synthetic_data.py --out data/synthetic
#   python tools/train.py configs/demo/segformer_mit-w16_bilinear_demo_synthetic-ade20k.py
_base_ = [
    './_base_/models/segformer_mit-w16.py', './_base_/synthetic_ade20k.py',
    './_base_/schedule_demo.py'
]
