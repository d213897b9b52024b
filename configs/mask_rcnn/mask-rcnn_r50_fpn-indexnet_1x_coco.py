# Mask R-CNN R50-FPN, 1x schedule, COCO. FPN top-down upsampling: IndexNet 'HIN' (holistic
# index, nonlinear, with context; 2,100,224 parameters per step at 256 channels), guided
# by the lateral of the target level. Paper Table 7: 38.4 box AP / 34.7 mask AP.
_base_ = 'mmdet::mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py'

custom_imports = dict(imports=['mmdysample'], allow_failed_imports=False)

model = dict(neck=dict(upsample_cfg=dict(type='IndexNet')))
