# RTMDet-s (CSPNeXt-s backbone, CSPNeXtPAFPN neck), 8 GPUs x 32 images, 300 epochs, COCO.
# Neck top-down upsampling: nearest x2 (mmdet's CSPNeXtPAFPN unchanged, the baseline).
_base_ = 'mmdet::rtmdet/rtmdet_s_8xb32-300e_coco.py'

custom_imports = dict(imports=['mmdysample'], allow_failed_imports=False)
