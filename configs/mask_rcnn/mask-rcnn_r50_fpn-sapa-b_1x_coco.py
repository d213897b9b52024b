# Mask R-CNN R50-FPN, 1x schedule, COCO. FPN top-down upsampling: SAPA-B (kernel 5,
# 32-channel query/key with bias, GroupNorm; 17,472 parameters per step at 256 channels),
# guided by the lateral of the target level. Paper Table 7: 38.7 box AP / 35.1 mask AP.
_base_ = 'mmdet::mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py'

custom_imports = dict(imports=['mmdysample'], allow_failed_imports=False)

model = dict(neck=dict(upsample_cfg=dict(type='SAPA-B')))
