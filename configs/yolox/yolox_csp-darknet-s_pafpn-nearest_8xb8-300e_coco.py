# YOLOX-s (CSPDarknet-s backbone, YOLOXPAFPN neck), 8 GPUs x 8 images, 300 epochs, COCO.
# Neck top-down upsampling: nearest x2 (mmdet's YOLOXPAFPN unchanged, the baseline).
_base_ = 'mmdet::yolox/yolox_s_8xb8-300e_coco.py'

custom_imports = dict(imports=['mmdysample'], allow_failed_imports=False)
