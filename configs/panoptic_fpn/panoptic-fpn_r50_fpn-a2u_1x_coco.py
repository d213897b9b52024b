# Panoptic FPN R50-FPN, 1x schedule, COCO. FPN top-down upsampling: A2U 'dynamic-cs-d'
# (reassembly kernel 3, encoding kernel 6, channel-shared U/V, 1 group; 10,790 parameters
# per step at 256 channels), guided by the lateral of the target level. Paper Table 8:
# 40.1 PQ (+29.2K).
_base_ = 'mmdet::panoptic_fpn/panoptic-fpn_r50_fpn_1x_coco.py'

custom_imports = dict(imports=['mmdysample'], allow_failed_imports=False)

model = dict(neck=dict(upsample_cfg=dict(type='A2U')))
