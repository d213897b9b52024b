# Demo baseline: tiny Panoptic FPN (narrow ResNet-18, 64-channel FPN with mmdet's nearest
# top-down upsampling, Mask R-CNN things + semantic FPN stuff) trained from scratch on the
# synthetic COCO-panoptic shapes, 128x128, CPU; PQ with mmdet's CocoPanopticMetric.
#   python tools/make_synthetic_data.py --out data/synthetic
#   python tools/train.py \
#       configs/demo/panoptic-fpn_r18-w16_fpn-nearest_demo_synthetic-coco-panoptic.py
_base_ = [
    './_base_/models/panoptic-fpn_r18-w16_fpn.py', './_base_/synthetic_coco_panoptic.py',
    './_base_/schedule_demo.py'
]
