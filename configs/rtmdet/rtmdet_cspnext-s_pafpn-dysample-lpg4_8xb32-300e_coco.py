# RTMDet-s with DySample (LP style, 4 groups, static scope 0.25) at both top-down steps of the
# CSPNeXtPAFPN neck: 1/32 -> 1/16 at 256 channels, 1/16 -> 1/8 at 128 channels.
_base_ = './rtmdet_cspnext-s_pafpn-nearest_8xb32-300e_coco.py'

model = dict(neck=dict(upsample_cfg=dict(type='DySample')))
