# Faster R-CNN R50-FPN, 1x schedule, COCO. FPN top-down upsampling:
# Table 1 'nearest initialization': LP, 1 group, no scope (factor 1), nearest init.
_base_ = 'mmdet::faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py'

custom_imports = dict(imports=['mmdysample'], allow_failed_imports=False)

model = dict(neck=dict(upsample_cfg=dict(type='DySample', style='lp', groups=1, scope_factor=1.0, init='nearest')))
