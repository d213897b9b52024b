# Faster R-CNN R101-FPN, 1x schedule, COCO. FPN top-down upsampling:
# nearest interpolation: mmdet's FPN unchanged (the paper's baseline).
_base_ = 'mmdet::faster_rcnn/faster-rcnn_r101_fpn_1x_coco.py'

custom_imports = dict(imports=['mmdysample'], allow_failed_imports=False)
