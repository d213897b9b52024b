"""Whole detectors from our configs, shrunk to CPU size: one train step and one predict step.

The configs are the real ones under configs/ (Faster R-CNN, Mask R-CNN, Panoptic FPN with
DySample in the FPN; Mask R-CNN with DySample in the mask head too; RTMDet-s, YOLOX-s and
Mask2Former with DySample in their necks/pixel decoders); only widths/depths are reduced
(e.g. ResNet-18 with 8 base channels, 32-channel necks and heads) and ImageNet checkpoints
are dropped.
"""
import functools
from pathlib import Path

import mmengine.config.utils as mmengine_config_utils
import pytest
import torch
from mmdet.testing import demo_mm_inputs
from mmdet.utils import register_all_modules
from mmengine.config import Config

import mmdysample  # noqa: F401
from mmdysample.mmdet import UpsamplerFPN
from mmdysample.upsamplers import DySample

CONFIGS = Path(__file__).resolve().parents[2] / 'configs'
FPN_CHANNELS = 32
BACKBONE_CHANNELS = [8, 16, 32, 64]  # ResNet-18 (expansion 1) with base_channels=8


@pytest.fixture(scope='module', autouse=True)
def mmdet_scope():
    register_all_modules(init_default_scope=True)


@pytest.fixture(scope='module', autouse=True)
def cached_mim_metainfo():
    """``mmdet::`` bases make mmengine parse all of mmdet's metafiles for every config
    (about 1 s); they do not change during a test run."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(mmengine_config_utils, '_get_cfg_metainfo',
                      functools.lru_cache(maxsize=None)(
                          mmengine_config_utils._get_cfg_metainfo))
        yield


def tiny_detector(config_name, pad_size_divisor=None, semantic_head_upsample_cfg=None):
    """Build the config's detector at CPU size (real structure, small widths)."""
    from mmdet.registry import MODELS
    cfg = Config.fromfile(str(CONFIGS / config_name)).model
    if semantic_head_upsample_cfg is not None:
        cfg.semantic_head.upsample_cfg = semantic_head_upsample_cfg
    cfg.backbone.update(depth=18, base_channels=8, init_cfg=None)
    cfg.neck.update(in_channels=BACKBONE_CHANNELS, out_channels=FPN_CHANNELS)
    cfg.rpn_head.update(in_channels=FPN_CHANNELS, feat_channels=FPN_CHANNELS)
    cfg.roi_head.bbox_roi_extractor.out_channels = FPN_CHANNELS
    cfg.roi_head.bbox_head.update(in_channels=FPN_CHANNELS, fc_out_channels=64)
    if 'mask_head' in cfg.roi_head:
        cfg.roi_head.mask_roi_extractor.out_channels = FPN_CHANNELS
        cfg.roi_head.mask_head.update(in_channels=FPN_CHANNELS, conv_out_channels=FPN_CHANNELS)
    if 'semantic_head' in cfg:
        cfg.semantic_head.update(in_channels=FPN_CHANNELS, inner_channels=FPN_CHANNELS)
    cfg.train_cfg.rpn_proposal.update(nms_pre=200, max_per_img=100)
    cfg.train_cfg.rcnn.sampler.num = 64
    cfg.test_cfg.rpn.update(nms_pre=200, max_per_img=100)
    cfg.test_cfg.rcnn.score_thr = 0.0  # an untrained model must still output boxes
    if pad_size_divisor is not None:
        cfg.data_preprocessor.pad_size_divisor = pad_size_divisor
    torch.manual_seed(0)
    model = MODELS.build(cfg)
    model.init_weights()
    return model


def offset_weights(model):
    return [u.offset.weight for u in model.neck.upsamplers]


def train_and_predict(model, image_shape, with_mask=False, with_semantic=False):
    packed = demo_mm_inputs(batch_size=2, image_shapes=image_shape, num_items=[3, 2],
                            num_classes=10, with_mask=with_mask, with_semantic=with_semantic)
    model.train()
    data = model.data_preprocessor(packed, True)
    losses = model(**data, mode='loss')
    total, log_vars = model.parse_losses(losses)
    assert torch.isfinite(total), log_vars
    total.backward()
    model.eval()
    with torch.no_grad():
        data = model.data_preprocessor(packed, False)
        results = model(**data, mode='predict')
    return losses, results


def test_faster_rcnn_dysample_plus_init_train_and_predict():
    model = tiny_detector('faster_rcnn/faster-rcnn_r50_fpn-dysample-plus-lpg4_1x_coco.py')
    assert type(model.neck) is UpsamplerFPN and len(model.neck.upsamplers) == 3
    assert all(isinstance(u, DySample) and u.dyscope for u in model.neck.upsamplers)
    # tiny_detector ran model.init_weights(): the FPN's Xavier init came first and DySample
    # re-initialised its own layers (normal std 0.001 offsets, zero bias and scope weights)
    for upsampler in model.neck.upsamplers:
        assert 0.0007 < upsampler.offset.weight.std().item() < 0.0013
        assert torch.count_nonzero(upsampler.offset.bias) == 0
        assert torch.count_nonzero(upsampler.scope.weight) == 0
    losses, results = train_and_predict(model, (3, 96, 128))
    assert {'loss_rpn_cls', 'loss_rpn_bbox', 'loss_cls', 'loss_bbox'} <= set(losses)
    for upsampler in model.neck.upsamplers:
        assert torch.count_nonzero(upsampler.offset.weight.grad) > 0
        assert torch.count_nonzero(upsampler.scope.weight.grad) > 0
    assert len(results) == 2
    for result in results:
        boxes = result.pred_instances.bboxes
        assert boxes.dim() == 2 and boxes.shape[1] == 4 and len(boxes) > 0
        assert len(result.pred_instances.scores) == len(boxes)


def test_faster_rcnn_on_odd_image_size_through_the_whole_detector():
    """75x100 images, no padding: ResNet gives levels 19x25, 10x13, 5x7, 3x4, so no
    top-down step is an exact x2; each goes straight to the finer level's size."""
    model = tiny_detector('faster_rcnn_dysample.py', pad_size_divisor=1)
    assert [type(u) for u in model.neck.upsamplers] == [DySample] * 3
    assert not model.neck.upsamplers[0].dyscope and model.neck.upsamplers[0].groups == 4
    shapes = []
    model.neck.register_forward_hook(
        lambda module, args, out: shapes.append([tuple(o.shape[-2:]) for o in out]))
    losses, results = train_and_predict(model, (3, 75, 100))
    assert {'loss_rpn_cls', 'loss_rpn_bbox', 'loss_cls', 'loss_bbox'} <= set(losses)
    assert shapes[0] == [(19, 25), (10, 13), (5, 7), (3, 4), (2, 2)]
    for weight in offset_weights(model):
        assert torch.count_nonzero(weight.grad) > 0
    for result in results:
        boxes = result.pred_instances.bboxes
        assert len(boxes) > 0
        # rescaled back by demo_mm_inputs' scale_factor (1.1, 1.2) to the original image
        assert (boxes[:, 0::2] <= 100 / 1.1 + 1e-3).all()
        assert (boxes[:, 1::2] <= 75 / 1.2 + 1e-3).all()


def test_mask_rcnn_train_and_predict():
    model = tiny_detector('mask_rcnn/mask-rcnn_r50_fpn-dysample-lpg4_1x_coco.py')
    losses, results = train_and_predict(model, (3, 96, 128), with_mask=True)
    assert 'loss_mask' in losses
    for weight in offset_weights(model):
        assert torch.count_nonzero(weight.grad) > 0
    for result in results:
        masks = result.pred_instances.masks
        assert masks.shape[1:] == (96, 128)  # ori_shape
        assert len(masks) == len(result.pred_instances.bboxes) > 0


def test_panoptic_fpn_train_and_predict():
    """The Table 8 config, plus the optional DySample in the semantic head's branches
    (off in the shipped configs; the head without it is mmdet's, see
    test_mmdet_panoptic_fpn_head.py), so that one run covers both."""
    config_name = 'panoptic_fpn/panoptic-fpn_r50_fpn-dysample-lpg4_1x_coco.py'
    assert 'upsample_cfg' not in Config.fromfile(str(CONFIGS / config_name)).model.semantic_head
    model = tiny_detector(config_name, semantic_head_upsample_cfg=dict(type='DySample'))
    assert len(model.neck.upsamplers) == 3
    head_upsamplers = [u for branch in model.semantic_head.conv_upsample_layers
                       for u in branch.upsamplers]
    assert len(head_upsamplers) == 1 + 2 + 3
    assert all(type(u) is DySample and u.in_channels == FPN_CHANNELS for u in head_upsamplers)
    losses, results = train_and_predict(model, (3, 96, 128), with_mask=True,
                                        with_semantic=True)
    assert 'loss_seg' in losses and 'loss_mask' in losses
    for weight in offset_weights(model):
        assert torch.count_nonzero(weight.grad) > 0
    for upsampler in head_upsamplers:  # reached through loss_seg only
        assert torch.count_nonzero(upsampler.offset.weight.grad) > 0
    for result in results:
        assert result.pred_panoptic_seg.sem_seg.shape == (1, 96, 128)  # ori_shape


@pytest.mark.slow
def test_mask_rcnn_with_dysample_in_the_mask_head_train_and_predict():
    model = tiny_detector(
        'mask_rcnn/mask-rcnn_r50_fpn-dysample-lpg4-mask-head-dysample-lpg4_1x_coco.py')
    head = model.roi_head.mask_head
    assert head.upsample is None and [type(u) for u in head.upsamplers] == [DySample]
    assert head.upsamplers[0].in_channels == FPN_CHANNELS
    assert 0 < head.upsamplers[0].offset.weight.std() < 0.01  # DySample's own init
    losses, results = train_and_predict(model, (3, 96, 128), with_mask=True)
    assert 'loss_mask' in losses
    assert torch.count_nonzero(head.upsamplers[0].offset.weight.grad) > 0
    for weight in offset_weights(model):
        assert torch.count_nonzero(weight.grad) > 0
    for result in results:
        assert result.pred_instances.masks.shape[1:] == (96, 128)


def tiny_single_stage(config_name):
    """RTMDet-s / YOLOX-s at CPU size: the CSP backbone at 1/8 width and 1/3 depth
    (channels 32, 64, 128 at strides 8, 16, 32), 32-channel neck and head."""
    from mmdet.registry import MODELS
    cfg = Config.fromfile(str(CONFIGS / config_name)).model
    cfg.backbone.update(deepen_factor=0.33, widen_factor=0.125, init_cfg=None)
    cfg.neck.update(in_channels=[32, 64, 128], out_channels=32, num_csp_blocks=1)
    cfg.bbox_head.update(in_channels=32, feat_channels=32)
    cfg.data_preprocessor.batch_augments = None
    cfg.test_cfg.score_thr = 0.0
    torch.manual_seed(0)
    model = MODELS.build(cfg)
    model.init_weights()
    return model


@pytest.mark.slow
@pytest.mark.parametrize('config_name', [
    'rtmdet/rtmdet_cspnext-s_pafpn-dysample-lpg4_8xb32-300e_coco.py',
    'yolox/yolox_csp-darknet-s_pafpn-dysample-lpg4_8xb8-300e_coco.py'])
def test_rtmdet_and_yolox_train_and_predict(config_name):
    model = tiny_single_stage(config_name)
    upsamplers = model.neck.upsamplers
    assert [(type(u), u.in_channels) for u in upsamplers] == [(DySample, 32), (DySample, 64)]
    for upsampler in upsamplers:  # the neck's Kaiming init did not overwrite DySample's
        assert 0 < upsampler.offset.weight.std() < 0.01
    losses, results = train_and_predict(model, (3, 96, 128))
    assert any(k.startswith('loss_cls') for k in losses)
    for upsampler in upsamplers:
        assert torch.count_nonzero(upsampler.offset.weight.grad) > 0
    assert len(results) == 2 and all(r.pred_instances.bboxes.shape[1] == 4 for r in results)
