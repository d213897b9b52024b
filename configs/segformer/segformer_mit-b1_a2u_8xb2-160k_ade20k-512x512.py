# SegFormer-B1 with 6 chained x2 A2U 'dynamic-cs-d' (reassembly kernel 3, encoding kernel
# 6, channel-shared U/V, 1 group; 10,790 parameters per step at 256 channels). Guided:
# each step gets the head's projection at its output resolution as the guide. Paper Table
# 4: 41.45 mIoU / 27.31 bIoU, +0.4 GFLOPs, +0.1M.
_base_ = 'mmseg::segformer/segformer_mit-b1_8xb2-160k_ade20k-512x512.py'

custom_imports = dict(imports=['mmdysample'], allow_failed_imports=False)

model = dict(decode_head=dict(upsample_cfg=dict(type='A2U')))
