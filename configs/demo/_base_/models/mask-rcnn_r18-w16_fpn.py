# Tiny Mask R-CNN for 128x128 CPU demos: the tiny Faster R-CNN of faster-rcnn_r18-w16_fpn.py
# plus mmdet's FCN mask head, narrowed to 64 channels and 2 convolutions, predicting 14x14
# masks from 7x7 RoI features (one x2 deconvolution) instead of mmdet's 28x28 from 14x14.
_base_ = './faster-rcnn_r18-w16_fpn.py'

model = dict(
    type='MaskRCNN',
    data_preprocessor=dict(pad_mask=True),
    roi_head=dict(
        mask_roi_extractor=dict(
            type='SingleRoIExtractor',
            roi_layer=dict(type='RoIAlign', output_size=7, sampling_ratio=2),
            out_channels=64,
            featmap_strides=[4, 8, 16, 32]),
        mask_head=dict(
            type='FCNMaskHead',
            num_convs=2,
            in_channels=64,
            conv_out_channels=64,
            num_classes=4,
            loss_mask=dict(type='CrossEntropyLoss', use_mask=True, loss_weight=1.0))),
    train_cfg=dict(rcnn=dict(mask_size=14)),
    test_cfg=dict(rcnn=dict(mask_thr_binary=0.5)))
