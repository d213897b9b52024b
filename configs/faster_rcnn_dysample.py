# Faster R-CNN R50-FPN, 1x schedule, COCO, with DySample (LP style, 4 groups, static scope
# factor 0.25) in the 3 top-down upsampling steps of the FPN: mmdet's stock config plus one
# line. Train: python tools/train.py configs/faster_rcnn_dysample.py
# The same model as faster_rcnn/faster-rcnn_r50_fpn-dysample-lpg4_1x_coco.py (paper Table 6).
_base_ = 'mmdet::faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py'

# Registers DySample and replaces mmdet's FPN with one that accepts learned upsamplers.
custom_imports = dict(imports=['mmdysample'], allow_failed_imports=False)

model = dict(neck=dict(upsample_cfg=dict(type='DySample')))
