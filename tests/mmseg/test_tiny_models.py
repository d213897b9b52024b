"""Tiny SegFormer, MaskFormer, UPerNet, DeepLabV3+ and Semantic FPN with DySample: one train
step and one predict step.

The models come from the repository's DySample configs, shrunk (tiny backbone: MiT, Swin or
a ResNet-18 of width 8; few channels
and queries, BN instead of SyncBN, no pretrained weights) and fed hand-made SegDataSample
batches of synthetic 56-88 px images.
"""
from functools import partial
from pathlib import Path

import pytest
import torch
from mmengine.config import Config
from mmengine.optim import OptimWrapper
from mmengine.structures import PixelData
from mmseg.registry import MODELS
from mmseg.structures import SegDataSample
from mmseg.utils import register_all_modules

import mmdysample  # noqa: F401
from mmdysample.upsamplers import DySample

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


def tiny_segformer(name):
    cfg = Config.fromfile(
        CONFIGS / 'segformer' / f'segformer_mit-b1_{name}_8xb2-160k_ade20k-512x512.py')
    model = cfg.model
    model.data_preprocessor.size = (64, 64)
    model.backbone.update(embed_dims=16, num_heads=[1, 2, 2, 4], num_layers=[1, 1, 1, 1],
                          init_cfg=None)
    model.decode_head.update(in_channels=[16, 32, 32, 64], channels=32,
                             num_classes=NUM_CLASSES, norm_cfg=dict(type='BN'))
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


def tiny_resnet_family(folder, name):
    """A UPerNet / DeepLabV3+ / Semantic FPN DySample config with a ResNet-18 of width 8."""
    model = Config.fromfile(CONFIGS / folder / f'{name}.py').model
    bn = dict(type='BN', requires_grad=True)
    model.data_preprocessor.size = (64, 64)
    model.backbone.update(depth=18, stem_channels=8, base_channels=8, norm_cfg=bn,
                          init_cfg=None)
    model.pretrained = None
    widths = [8, 16, 32, 64]  # ResNet-18 of base width 8: stages 8, 16, 32, 64
    head = model.decode_head
    head.update(num_classes=NUM_CLASSES, norm_cfg=bn)
    if folder == 'deeplabv3plus':
        head.update(in_channels=64, channels=16, c1_in_channels=8, c1_channels=4)
    elif folder == 'upernet':
        head.update(in_channels=widths, channels=16)
    else:
        model.neck.update(in_channels=widths, out_channels=16)
        head.update(in_channels=[16] * 4, channels=8)
    if model.get('auxiliary_head'):
        model.auxiliary_head.update(in_channels=32, channels=8, num_classes=NUM_CLASSES,
                                    norm_cfg=bn)
    return MODELS.build(model)


def upsamplers_of(model):
    head = model.decode_head
    found = list(getattr(head, 'pixel_decoder', head).upsamplers)
    if getattr(model, 'neck', None) is not None:
        found = list(model.neck.upsamplers) + found
    return found


@pytest.mark.parametrize('build, upsampler, num_upsamplers', [
    (partial(tiny_segformer, 'dysample'), ('lp', 4, False), 6),
    (partial(tiny_segformer, 'dysample-s-plus'), ('pl', 8, True), 6),
    (tiny_maskformer, ('pl', 8, True), 3),
    (partial(tiny_resnet_family, 'upernet', 'upernet_r50_dysample_4xb4-160k_ade20k-512x512'),
     ('lp', 4, False), 9),
    (partial(tiny_resnet_family, 'deeplabv3plus',
             'deeplabv3plus_r50-d8_dysample_4xb4-160k_ade20k-512x512'), ('lp', 4, False), 1),
    (partial(tiny_resnet_family, 'sem_fpn', 'fpn_r50_fpn-dysample_4xb4-160k_ade20k-512x512'),
     ('lp', 4, False), 9),
], ids=['segformer-dysample', 'segformer-dysample-s-plus', 'maskformer-dysample-s-plus',
        'upernet-dysample', 'deeplabv3plus-dysample', 'sem-fpn-dysample'])
def test_train_step_and_predict_step(build, upsampler, num_upsamplers):
    register_all_modules(init_default_scope=False)
    torch.manual_seed(0)
    model = build()
    model.init_weights()
    upsamplers = upsamplers_of(model)
    assert len(upsamplers) == num_upsamplers
    assert all(isinstance(up, DySample) and (up.style, up.groups, up.dyscope) == upsampler
               for up in upsamplers)

    # mmengine's train step: preprocess, forward, backward, SGD step, zero_grad. The
    # gradients reaching the upsamplers are caught on their way.
    grads = {}

    def catch(key, grad):
        grads[key] = grad.detach().clone()

    for index, up in enumerate(upsamplers):
        for name, param in up.named_parameters():
            param.register_hook(partial(catch, (index, name)))
    before = {key: param.detach().clone()
              for key, param in upsamplers[-1].named_parameters()}
    model.train()
    log_vars = model.train_step(synthetic_batch([(64, 64), (56, 64)]),
                                OptimWrapper(torch.optim.SGD(model.parameters(), lr=0.1)))
    loss = log_vars['loss']
    assert torch.isfinite(loss) and loss > 0
    # every parameter of every upsampler (offset conv, and scope conv when dynamic) got a
    # finite, non-zero gradient, and the step moved the last upsampler's parameters
    expected = {(index, name) for index, up in enumerate(upsamplers)
                for name, _ in up.named_parameters()}
    assert set(grads) == expected
    for key, grad in grads.items():
        assert torch.isfinite(grad).all() and grad.abs().sum() > 0, key
    for name, param in upsamplers[-1].named_parameters():
        assert not torch.equal(param, before[name]), name

    model.eval()
    # 72 x 88: not divisible by 32, so the chained outputs are resized to the 1/4 size
    with torch.no_grad():
        results = model.test_step(synthetic_batch([(72, 88)], seed=1))
    assert len(results) == 1
    prediction = results[0].pred_sem_seg.data
    assert prediction.shape == (1, 72, 88)
    assert prediction.min() >= 0 and prediction.max() < NUM_CLASSES
    assert results[0].seg_logits.data.shape == (NUM_CLASSES, 72, 88)
    assert torch.isfinite(results[0].seg_logits.data).all()
