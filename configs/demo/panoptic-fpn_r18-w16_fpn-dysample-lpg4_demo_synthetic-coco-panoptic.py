# Demo: the nearest baseline with DySample (LP style, 4 groups, static scope 0.25) in the 3
# top-down upsampling steps of the FPN, as in the paper's Panoptic FPN runs; the semantic
# head's own bilinear upsampling is unchanged.
_base_ = './panoptic-fpn_r18-w16_fpn-nearest_demo_synthetic-coco-panoptic.py'

model = dict(neck=dict(upsample_cfg=dict(type='DySample', style='lp', groups=4)))
