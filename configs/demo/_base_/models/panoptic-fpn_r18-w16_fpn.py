# Tiny Panoptic FPN for 128x128 CPU demos: the tiny Mask R-CNN of mask-rcnn_r18-w16_fpn.py
# plus mmdet's semantic FPN head (32 inner channels, GroupNorm) over 4 things + 3 stuff
# classes, and the heuristic fusion of things and stuff. mmdet's stuff_area_limit (4096 px,
# set for 800-1333 px COCO images) is scaled down to the 128x128 images.
_base_ = './mask-rcnn_r18-w16_fpn.py'

model = dict(
    type='PanopticFPN',
    data_preprocessor=dict(pad_mask=True, mask_pad_value=0, pad_seg=True, seg_pad_value=255),
    semantic_head=dict(
        type='PanopticFPNHead',
        num_things_classes=4,
        num_stuff_classes=3,
        in_channels=64,
        inner_channels=32,
        start_level=0,
        end_level=4,
        norm_cfg=dict(type='GN', num_groups=8, requires_grad=True),
        conv_cfg=None,
        loss_seg=dict(type='CrossEntropyLoss', ignore_index=255, loss_weight=0.5)),
    panoptic_fusion_head=dict(
        type='HeuristicFusionHead', num_things_classes=4, num_stuff_classes=3),
    test_cfg=dict(
        rcnn=dict(
            score_thr=0.6,
            nms=dict(type='nms', iou_threshold=0.5, class_agnostic=True),
            max_per_img=20,
            mask_thr_binary=0.5),
        panoptic=dict(mask_overlap=0.5, stuff_area_limit=64)))
