# Demo baseline: tiny UPerNet (ResNet-18 at a quarter width, 64-channel UPerHead with mmseg's
# bilinear resizes) trained from scratch on the synthetic ADE20K-layout shapes, 128x128.
#   python tools/make_synthetic_data.py --out data/synthetic
#   python tools/train.py configs/demo/upernet_r18-w16_bilinear_demo_synthetic-ade20k.py
_base_ = [
    './_base_/models/upernet_r18-w16.py', './_base_/synthetic_ade20k.py',
    './_base_/schedule_demo.py'
]
