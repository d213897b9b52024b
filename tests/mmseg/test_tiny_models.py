"""Tiny SegFormer and MaskFormer with DySample: one train step and one predict step.

The models come from the repository's DySample configs, shrunk (tiny backbone, few channels
and queries, BN instead of SyncBN, no pretrained weights) and fed hand-made SegDataSample
batches of synthetic 64-96 px images.
"""
from pathlib import Path

import pytest
import torch
from mmengine.config import Config
from mmengine.structures import PixelData
from mmseg.registry import MODELS
from mmseg.structures import SegDataSample
from mmseg.utils import register_all_modules

import mmdysample  # noqa: F401

CONFIGS = Path(__file__).resolve().parents[2] / 'configs'
NUM_CLASSES = 4


def synthetic_batch(sizes, seed=0):
    """Images with a few class rectangles, their label maps (with an ignored band)."""
    generator = torch.Generator().manual_seed(seed)
    inputs, samples = [], []
    for height, width in sizes:
        label = torch.zeros(1, height, width, dtype=torch.long)
        for cls in range(1, NUM_CLASSES):
            top = int(torch.randint(0, height // 2, (1, ), generator=generator))
            left = int(torch.randint(0, width // 2, (1, ), generator=generator))
            label[:, top:top + height // 3, left:left + width // 3] = cls
        label[:, :, :2] = 255  # ignore_index
        image = (label.clamp(max=NUM_CLASSES) * 50).repeat(3, 1, 1).to(torch.uint8)
        image += torch.randint(0, 20, image.shape, generator=generator, dtype=torch.uint8)
        sample = SegDataSample(metainfo=dict(img_shape=(height, width),
                                             ori_shape=(height, width)))
        sample.gt_sem_seg = PixelData(data=label)
        inputs.append(image)
        samples.append(sample)
    return dict(inputs=inputs, data_samples=samples)


def tiny_segformer():
    cfg = Config.fromfile(
        CONFIGS / 'segformer' / 'segformer_mit-b1_dysample-s-plus_8xb2-160k_ade20k-512x512.py')
    model = cfg.model
    model.data_preprocessor.size = (64, 64)
    model.backbone.update(embed_dims=16, num_heads=[1, 2, 2, 4], num_layers=[1, 1, 1, 1],
                          init_cfg=None)
    model.decode_head.update(in_channels=[16, 32, 32, 64], channels=32,
                             num_classes=NUM_CLASSES, norm_cfg=dict(type='BN'))
    assert model.decode_head.upsample_cfg == dict(type='DySample-S+')
    return MODELS.build(model)


def tiny_maskformer():
    cfg = Config.fromfile(
        CONFIGS / 'maskformer' /
        'maskformer_swin-b-in22k-384x384-pre_fpn-dysample-s-plus_8xb2-160k_ade20k-640x640.py')
    model = cfg.model
    model.data_preprocessor.size = (64, 64)
    model.backbone.update(pretrain_img_size=64, embed_dims=16, depths=[1, 1, 1, 1],
                          num_heads=[1, 2, 2, 4], window_size=4, drop_path_rate=0.0,
                          init_cfg=None)
    head = model.decode_head
    assert head.pixel_decoder.upsample_cfg == dict(type='DySample-S+')
    head.update(in_channels=[16, 32, 64, 128], feat_channels=32, out_channels=32,
                num_classes=NUM_CLASSES, num_queries=6)
    head.pixel_decoder.norm_cfg = dict(type='GN', num_groups=8)
    head.positional_encoding.num_feats = 16
    head.transformer_decoder.num_layers = 2
    for attn in ('self_attn_cfg', 'cross_attn_cfg'):
        head.transformer_decoder.layer_cfg[attn].update(embed_dims=32, num_heads=2)
    head.transformer_decoder.layer_cfg.ffn_cfg.update(embed_dims=32, feedforward_channels=64)
    head.loss_cls.class_weight = [1.0] * NUM_CLASSES + [0.1]
    return MODELS.build(model)


def upsamplers_of(model):
    head = model.decode_head
    return list(getattr(head, 'pixel_decoder', head).upsamplers)


@pytest.mark.parametrize('build, num_upsamplers', [(tiny_segformer, 6), (tiny_maskformer, 3)],
                         ids=['segformer', 'maskformer'])
def test_train_step_and_predict_step(build, num_upsamplers):
    register_all_modules(init_default_scope=False)
    torch.manual_seed(0)
    model = build()
    model.init_weights()
    upsamplers = upsamplers_of(model)
    assert len(upsamplers) == num_upsamplers
    assert all(type(up).__name__ == 'DySample_SPlus' for up in upsamplers)

    model.train()
    data = model.data_preprocessor(synthetic_batch([(64, 64), (56, 64)]), training=True)
    losses = model(**data, mode='loss')
    loss, _ = model.parse_losses(losses)
    assert torch.isfinite(loss) and loss > 0
    loss.backward()
    for up in upsamplers:
        for param in (up.offset.weight, up.scope.weight):
            assert param.grad is not None and torch.isfinite(param.grad).all()
            assert param.grad.abs().sum() > 0
    before = upsamplers[-1].offset.weight.detach().clone()
    torch.optim.SGD(model.parameters(), lr=0.1).step()
    assert not torch.equal(upsamplers[-1].offset.weight, before)

    model.eval()
    # 72 x 88: not divisible by 32, so the chained outputs are resized to the 1/4 size
    with torch.no_grad():
        results = model.test_step(synthetic_batch([(72, 88)], seed=1))
    assert len(results) == 1
    prediction = results[0].pred_sem_seg.data
    assert prediction.shape == (1, 72, 88)
    assert prediction.min() >= 0 and prediction.max() < NUM_CLASSES
    assert results[0].seg_logits.data.shape == (NUM_CLASSES, 72, 88)
