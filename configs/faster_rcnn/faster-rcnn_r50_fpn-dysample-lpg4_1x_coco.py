# Faster R-CNN R50-FPN, 1x schedule, COCO. FPN top-down upsampling:
# DySample: LP style, 4 groups, static scope factor 0.25.
_base_ = 'mmdet::faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py'

custom_imports = dict(imports=['mmdysample'], allow_failed_imports=False)

model = dict(neck=dict(upsample_cfg=dict(type='DySample')))
