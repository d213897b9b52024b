# Demo baseline: tiny Mask R-CNN (narrow ResNet-18, 64-channel FPN with mmdet's nearest
# top-down upsampling, 14x14 masks) trained from scratch on the synthetic COCO shapes with
# their instance masks, 128x128, CPU; COCO bbox and segm mAP.
#   python tools/make_synthetic_data.py --out data/synthetic
#   python tools/train.py configs/demo/mask-rcnn_r18-w16_fpn-nearest_demo_synthetic-coco.py
_base_ = [
    './_base_/models/mask-rcnn_r18-w16_fpn.py', './_base_/synthetic_coco_instance.py',
    './_base_/schedule_demo.py'
]
