# Mask R-CNN R50-FPN, 1x schedule, COCO. FPN top-down upsampling:
# DySample+: LP style, 4 groups, dynamic scope.
_base_ = 'mmdet::mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py'

custom_imports = dict(imports=['mmdysample'], allow_failed_imports=False)

model = dict(neck=dict(upsample_cfg=dict(type='DySample+')))
