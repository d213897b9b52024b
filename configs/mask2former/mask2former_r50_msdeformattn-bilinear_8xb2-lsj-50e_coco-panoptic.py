# Mask2Former R50, COCO panoptic, 8 GPUs x 2 images, LSJ, 50 epochs. Pixel decoder
# (MSDeformAttnPixelDecoder) top-down step 1/8 -> 1/4: bilinear (mmdet's decoder unchanged).
_base_ = 'mmdet::mask2former/mask2former_r50_8xb2-lsj-50e_coco-panoptic.py'

custom_imports = dict(imports=['mmdysample'], allow_failed_imports=False)
