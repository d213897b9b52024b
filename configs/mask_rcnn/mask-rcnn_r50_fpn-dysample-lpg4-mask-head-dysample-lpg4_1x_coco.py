# Mask R-CNN R50-FPN, 1x schedule, COCO, with DySample (LP style, 4 groups, static scope 0.25)
# in the FPN (3 top-down steps) and in the FCN mask head, where it replaces the 14 -> 28
# deconvolution (+ReLU). Baseline: mask-rcnn_r50_fpn-nearest_1x_coco.py.
_base_ = './mask-rcnn_r50_fpn-dysample-lpg4_1x_coco.py'

model = dict(
    roi_head=dict(mask_head=dict(upsample_cfg=dict(type='DySample'))))
