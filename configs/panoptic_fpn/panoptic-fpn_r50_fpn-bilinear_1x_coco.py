# Panoptic FPN R50-FPN, 1x schedule, COCO. FPN top-down upsampling:
# bilinear interpolation, align_corners=False: still mmdet's FPN, no parameters.
_base_ = 'mmdet::panoptic_fpn/panoptic-fpn_r50_fpn_1x_coco.py'

custom_imports = dict(imports=['mmdysample'], allow_failed_imports=False)

model = dict(neck=dict(upsample_cfg=dict(mode='bilinear', align_corners=False)))
