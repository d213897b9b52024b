# YOLOX-s with DySample (LP style, 4 groups, static scope 0.25) at both top-down steps of the
# YOLOXPAFPN neck: 1/32 -> 1/16 at 256 channels, 1/16 -> 1/8 at 128 channels. The base
# config writes upsample_cfg=dict(scale_factor=2, mode='nearest'); _delete_ replaces it.
_base_ = './yolox_csp-darknet-s_pafpn-nearest_8xb8-300e_coco.py'

model = dict(neck=dict(upsample_cfg=dict(_delete_=True, type='DySample')))
