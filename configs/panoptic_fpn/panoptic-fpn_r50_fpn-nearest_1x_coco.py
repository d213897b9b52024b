# Panoptic FPN R50-FPN, 1x schedule, COCO. FPN top-down upsampling:
# nearest interpolation: mmdet's FPN unchanged (the paper's baseline).
_base_ = 'mmdet::panoptic_fpn/panoptic-fpn_r50_fpn_1x_coco.py'

custom_imports = dict(imports=['mmdysample'], allow_failed_imports=False)
