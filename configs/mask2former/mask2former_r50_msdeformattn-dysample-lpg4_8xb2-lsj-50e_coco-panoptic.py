# Mask2Former R50, COCO panoptic, with DySample (LP style, 4 groups, static scope 0.25) at the
# pixel decoder's FPN-style step outside the deformable encoder (1/8 -> 1/4, 256 channels).
_base_ = './mask2former_r50_msdeformattn-bilinear_8xb2-lsj-50e_coco-panoptic.py'

model = dict(panoptic_head=dict(pixel_decoder=dict(upsample_cfg=dict(type='DySample'))))
