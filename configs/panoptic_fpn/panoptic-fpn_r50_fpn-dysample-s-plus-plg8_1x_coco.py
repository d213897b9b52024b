# Panoptic FPN R50-FPN, 1x schedule, COCO. FPN top-down upsampling:
# DySample-S+: PL style, 8 groups, dynamic scope.
_base_ = 'mmdet::panoptic_fpn/panoptic-fpn_r50_fpn_1x_coco.py'

custom_imports = dict(imports=['mmdysample'], allow_failed_imports=False)

model = dict(neck=dict(upsample_cfg=dict(type='DySample-S+')))
