# Demo baseline: tiny Faster R-CNN (narrow ResNet-18, 64-channel FPN with mmdet's nearest
# top-down upsampling) trained from scratch on the synthetic COCO shapes, 128x128, CPU.
#   python tools/make_synthetic_data.py --out data/synthetic
#   python tools/train.py configs/demo/faster-rcnn_r18-w16_fpn-nearest_demo_synthetic-coco.py
_base_ = [
    './_base_/models/faster-rcnn_r18-w16_fpn.py', './_base_/synthetic_coco_detection.py',
    './_base_/schedule_demo.py'
]
