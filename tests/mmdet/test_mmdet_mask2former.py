"""Mask2Former (mmdet COCO panoptic, mmseg ADE20K) from our DySample configs, shrunk to CPU
size: one train step reaching the pixel decoder's DySample, and one predict step."""
import functools
from pathlib import Path

import mmengine.config.utils as mmengine_config_utils
import pytest
import torch
from mmdet.registry import MODELS as MMDET_MODELS
from mmdet.testing import demo_mm_inputs
from mmdet.utils import register_all_modules as register_mmdet
from mmengine.config import Config
from mmengine.registry import DefaultScope
from mmengine.structures import PixelData
from mmseg.registry import MODELS as MMSEG_MODELS
from mmseg.structures import SegDataSample
from mmseg.utils import register_all_modules as register_mmseg

import mmdysample  # noqa: F401
from mmdysample.mmdet import MSDeformAttnPixelDecoder
from mmdysample.upsamplers import DySample

CONFIGS = Path(__file__).resolve().parents[2] / 'configs' / 'mask2former'
WIDTH = 32


@pytest.fixture(scope='module', autouse=True)
def cached_mim_metainfo():
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(mmengine_config_utils, '_get_cfg_metainfo',
                      functools.lru_cache(maxsize=None)(
                          mmengine_config_utils._get_cfg_metainfo))
        yield


def shrink_head(head, num_classes_weight):
    """32-channel Mask2Former head: 1-layer encoder/decoder stacks, 8 queries."""
    head.update(in_channels=[8, 16, 32, 64], feat_channels=WIDTH, out_channels=WIDTH,
                num_queries=8)
    decoder = head.pixel_decoder
    decoder.encoder.num_layers = 1
    decoder.encoder.layer_cfg.self_attn_cfg.update(embed_dims=WIDTH, num_heads=2)
    decoder.encoder.layer_cfg.ffn_cfg.update(embed_dims=WIDTH, feedforward_channels=64)
    decoder.positional_encoding.num_feats = WIDTH // 2
    head.positional_encoding.num_feats = WIDTH // 2
    head.transformer_decoder.num_layers = 3
    for attn in ('self_attn_cfg', 'cross_attn_cfg'):
        head.transformer_decoder.layer_cfg[attn].update(embed_dims=WIDTH, num_heads=2)
    head.transformer_decoder.layer_cfg.ffn_cfg.update(embed_dims=WIDTH,
                                                      feedforward_channels=64)
    head.loss_cls.class_weight = [1.0] * num_classes_weight + [0.1]
    if 'train_cfg' in head:  # mmseg keeps it in the head, mmdet in the model
        head.train_cfg.num_points = 64


def tiny_model_cfg(config_name):
    """The config's model with a ResNet-18 backbone of 8 base channels (8/16/32/64)."""
    model_cfg = Config.fromfile(str(CONFIGS / config_name)).model
    model_cfg.backbone.update(depth=18, base_channels=8, init_cfg=None)
    return model_cfg


def check_decoder_and_grads(decoder, loss):
    assert type(decoder) is MSDeformAttnPixelDecoder
    assert [(type(u), u.in_channels) for u in decoder.upsamplers] == [(DySample, WIDTH)]
    assert 0 < decoder.upsamplers[0].offset.weight.std() < 0.01  # DySample's own init
    loss.backward()
    assert torch.count_nonzero(decoder.upsamplers[0].offset.weight.grad) > 0


@pytest.mark.slow
def test_mmdet_coco_panoptic_mask2former_train_and_predict():
    register_mmdet(init_default_scope=False)
    model_cfg = tiny_model_cfg(
        'mask2former_r50_msdeformattn-dysample-lpg4_8xb2-lsj-50e_coco-panoptic.py')
    model_cfg.panoptic_head.update(num_things_classes=3, num_stuff_classes=2)
    model_cfg.panoptic_fusion_head.update(num_things_classes=3, num_stuff_classes=2)
    shrink_head(model_cfg.panoptic_head, 5)
    model_cfg.data_preprocessor.batch_augments = None
    model_cfg.train_cfg.num_points = 64
    model_cfg.test_cfg.max_per_image = 20  # at most num_queries * num_classes = 40
    with DefaultScope.overwrite_default_scope('mmdet'):
        torch.manual_seed(0)
        model = MMDET_MODELS.build(model_cfg)
        model.init_weights()
        packed = demo_mm_inputs(batch_size=2, image_shapes=(3, 64, 96), num_items=[2, 3],
                                num_classes=3, with_mask=True, with_semantic=True)
        for sample in packed['data_samples']:  # panoptic labels: things 0..2, stuff 3..4
            sample.gt_sem_seg.sem_seg = sample.gt_sem_seg.sem_seg.clamp(max=4)
        model.train()
        data = model.data_preprocessor(packed, True)
        total, log_vars = model.parse_losses(model(**data, mode='loss'))
        assert torch.isfinite(total), log_vars
        check_decoder_and_grads(model.panoptic_head.pixel_decoder, total)
        model.eval()
        with torch.no_grad():
            results = model(**model.data_preprocessor(packed, False), mode='predict')
    assert len(results) == 2
    assert results[0].pred_panoptic_seg.sem_seg.shape[-2:] == (64, 96)


@pytest.mark.slow
def test_mmseg_ade20k_mask2former_train_and_predict():
    register_mmseg(init_default_scope=False)
    model_cfg = tiny_model_cfg(
        'mask2former_r50_msdeformattn-dysample-lpg4_8xb2-160k_ade20k-512x512.py')
    model_cfg.data_preprocessor.size = (64, 64)
    model_cfg.decode_head.num_classes = 4
    shrink_head(model_cfg.decode_head, 4)
    generator = torch.Generator().manual_seed(0)
    inputs, samples = [], []
    for _ in range(2):
        sample = SegDataSample(metainfo=dict(img_shape=(64, 64), ori_shape=(64, 64),
                                             pad_shape=(64, 64)))
        sample.gt_sem_seg = PixelData(
            data=torch.randint(0, 4, (1, 64, 64), generator=generator))
        inputs.append(torch.randint(0, 256, (3, 64, 64), generator=generator,
                                    dtype=torch.uint8))
        samples.append(sample)
    with DefaultScope.overwrite_default_scope('mmseg'):
        torch.manual_seed(0)
        model = MMSEG_MODELS.build(model_cfg)
        model.init_weights()
        model.train()
        data = model.data_preprocessor(dict(inputs=inputs, data_samples=samples), True)
        total, log_vars = model.parse_losses(model(**data, mode='loss'))
        assert torch.isfinite(total), log_vars
        check_decoder_and_grads(model.decode_head.pixel_decoder, total)
        model.eval()
        with torch.no_grad():
            data = model.data_preprocessor(dict(inputs=inputs, data_samples=samples), False)
            results = model(**data, mode='predict')
    assert results[0].pred_sem_seg.data.shape == (1, 64, 64)
