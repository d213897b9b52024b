# Mask2Former R50 (mmseg), ADE20K 512x512, 8 GPUs x 2 images, 160k iterations. Pixel decoder
# (mmdet's MSDeformAttnPixelDecoder) top-down step 1/8 -> 1/4: bilinear (unchanged).
_base_ = 'mmseg::mask2former/mask2former_r50_8xb2-160k_ade20k-512x512.py'

# mmseg's config imports mmdet.models for its mmdet modules; keep it and add the plugin.
custom_imports = dict(imports=['mmdet.models', 'mmdysample'], allow_failed_imports=False)
