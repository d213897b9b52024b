"""Every config under configs/segformer and configs/maskformer loads and builds.

What is built: every config's decode head at full size (that is where the configs differ;
parameter deltas against the baseline twin asserted exactly), and one full-size model per
distinct backbone (SegFormer MiT-B1, MaskFormer Swin-B, MaskFormer Swin-L), with every
other config checked to resolve to the same backbone cfg as its family's baseline.
"""
import copy
from pathlib import Path

import pytest
import mmengine.config.utils as mmengine_config_utils
import torch
from mmengine.config import Config
from mmengine.registry import DefaultScope
from mmseg.registry import MODELS

import mmdysample  # noqa: F401
from mmdysample.mmseg import PixelDecoder, SegformerHead

CONFIGS = Path(__file__).resolve().parents[2] / 'configs'
C = 256  # SegFormer-B1 head channels, MaskFormer pixel-decoder channels

# Parameters of one x2 upsampler at C channels, from the layers' definitions.
DECONV = C * C * 3 * 3 + C  # ConvTranspose2d(C, C, 3)
PIXEL_SHUFFLE = C * 4 * C * 3 * 3 + 4 * C  # Conv2d(C, 4C, 3)
CARAFE = (C * 64 + 64) + (64 * 25 * 4 * 3 * 3 + 25 * 4)  # compressor 1x1, encoder 3x3


def dysample(groups, style='lp', dyscope=False):
    """1x1 offset conv (+ bias), plus a bias-free scope conv of the same shape."""
    conv_in, conv_out = (C, 2 * groups * 4) if style == 'lp' else (C // 4, 2 * groups)
    return conv_in * conv_out + conv_out + (conv_in * conv_out if dyscope else 0)


SEGFORMER_SUFFIX = '_8xb2-160k_ade20k-512x512.py'
# name -> (decode_head.upsample_cfg, parameters added to the bilinear head)
SEGFORMER = {
    'bilinear': (None, 0),
    'deconv': (dict(type='Deconv'), 6 * DECONV),
    'pixelshuffle': (dict(type='PixelShuffle'), 6 * PIXEL_SHUFFLE),
    'carafe': (dict(type='CARAFE'), 6 * CARAFE),
    'dysample': (dict(type='DySample'), 49_344),
    'dysample-plus': (dict(type='DySample+'), 98_496),
    'dysample-s': (dict(type='DySample-S'), 6_240),
    'dysample-s-plus': (dict(type='DySample-S+'), 12_384),
    'dysample-g1-sf1-init-nearest': (
        dict(type='DySample', style='lp', groups=1, scope_factor=1.0, init='nearest'),
        6 * dysample(1)),
    'dysample-g1-sf1': (
        dict(type='DySample', style='lp', groups=1, scope_factor=1.0, init='bilinear'),
        6 * dysample(1)),
    'dysample-g1-sf0.1': (
        dict(type='DySample', style='lp', groups=1, scope_factor=0.1, init='bilinear'),
        6 * dysample(1)),
    'dysample-g1-sf0.25': (
        dict(type='DySample', style='lp', groups=1, scope_factor=0.25, init='bilinear'),
        6 * dysample(1)),
    'dysample-g1-sf0.5': (
        dict(type='DySample', style='lp', groups=1, scope_factor=0.5, init='bilinear'),
        6 * dysample(1)),
    'dysample-g1-sf0.25-dyscope': (
        dict(type='DySample', style='lp', groups=1, scope_factor=0.25, dyscope=True,
             init='bilinear'), 6 * dysample(1, dyscope=True)),
}

MASKFORMER_NAME = 'maskformer_swin-{}-in22k-384x384-pre_fpn-{}_8xb2-160k_ade20k-640x640.py'
MASKFORMER_UPSAMPLERS = {
    'nearest': (None, 0),
    'carafe': (dict(type='CARAFE'), 3 * CARAFE),
    'dysample-s-plus': (dict(type='DySample-S+'), 3 * dysample(8, 'pl', dyscope=True)),
}
SWIN = {  # the MaskFormer paper's Swin-B / Swin-L (ImageNet-22K, 384, window 12)
    'b': dict(embed_dims=128, depths=[2, 2, 18, 2], num_heads=[4, 8, 16, 32], window_size=12,
              pretrain_img_size=384, in_channels=[128, 256, 512, 1024]),
    'l': dict(embed_dims=192, depths=[2, 2, 18, 2], num_heads=[6, 12, 24, 48], window_size=12,
              pretrain_img_size=384, in_channels=[192, 384, 768, 1536]),
}
MASKFORMER = {(swin, up): MASKFORMER_NAME.format(swin, up)
              for swin in SWIN for up in MASKFORMER_UPSAMPLERS}


@pytest.fixture(scope='module', autouse=True)
def cached_mim_metafiles():
    """Resolving an ``mmseg::`` base makes mmengine parse all 53 metafiles of mmseg (2-3 s
    per config here), only to raise ValueError and fall back to the plain path. The outcome
    depends only on the arguments: memoise it (value or error) while this module runs."""
    original = mmengine_config_utils._get_cfg_metainfo
    outcomes = {}

    def memoised(*args):
        if args not in outcomes:
            try:
                outcomes[args] = (original(*args), None)
            except ValueError as error:
                outcomes[args] = (None, error)
        value, error = outcomes[args]
        if error is not None:
            raise error
        return value

    mmengine_config_utils._get_cfg_metainfo = memoised
    yield
    mmengine_config_utils._get_cfg_metainfo = original


@pytest.fixture(autouse=True)
def mmseg_scope_one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)  # see tests/mmseg/conftest.py
    with DefaultScope.overwrite_default_scope('mmseg'):
        yield
    torch.set_num_threads(previous)


_LOADED = {}


def load(path):
    """Each config is parsed once per session."""
    if path not in _LOADED:
        _LOADED[path] = Config.fromfile(path)
    return _LOADED[path]


def segformer(name):
    return load(CONFIGS / 'segformer' / f'segformer_mit-b1_{name}{SEGFORMER_SUFFIX}')


def maskformer(swin, upsampler):
    return load(CONFIGS / 'maskformer' / MASKFORMER[swin, upsampler])


def num_params(module):
    return sum(p.numel() for p in module.parameters())


def build_head(cfg):
    head_cfg = copy.deepcopy(cfg.model.decode_head)
    return MODELS.build(head_cfg)


def test_folders_hold_exactly_these_configs():
    assert sorted(p.name for p in (CONFIGS / 'segformer').glob('*.py')) == sorted(
        f'segformer_mit-b1_{name}{SEGFORMER_SUFFIX}' for name in SEGFORMER)
    assert sorted(p.name for p in (CONFIGS / 'maskformer').glob('*.py')) == sorted(
        MASKFORMER.values())
    for folder in ('segformer', 'maskformer'):
        assert (CONFIGS / folder / 'README.md').is_file()
        metafile = (CONFIGS / folder / 'metafile.yml').read_text()
        for config in (CONFIGS / folder).glob('*.py'):
            assert f'configs/{folder}/{config.name}' in metafile


@pytest.mark.parametrize('name', list(SEGFORMER))
def test_segformer_config_resolves_to_the_expected_head(name):
    cfg = segformer(name)
    baseline = segformer('bilinear')
    assert 'mmdysample' in cfg.custom_imports.imports
    assert cfg.model.backbone == baseline.model.backbone
    assert cfg.train_cfg == baseline.train_cfg and cfg.optim_wrapper == baseline.optim_wrapper
    head = cfg.model.decode_head
    assert head.type == 'SegformerHead' and head.channels == C
    assert head.in_channels == [64, 128, 320, 512]  # MiT-B1
    expected_cfg, _ = SEGFORMER[name]
    assert head.get('upsample_cfg') == expected_cfg


@pytest.mark.parametrize('name', [name for name in SEGFORMER if name != 'bilinear'])
def test_segformer_head_parameter_delta_is_exact(name):
    baseline = num_params(build_head(segformer('bilinear')))
    head = build_head(segformer(name))
    assert isinstance(head, SegformerHead) and len(head.upsamplers) == 6
    assert num_params(head) - baseline == SEGFORMER[name][1]


def test_paper_table4_deltas_in_words():
    # Table 4 rounds weights-only counts (biases excluded): +49.2K, +6.1K, +12.3K, +0.1M,
    # +3.5M, +14.2M, +0.4M; ours include biases.
    def without_bias(name):
        head = build_head(segformer(name))
        return sum(p.numel() for n, p in head.upsamplers.named_parameters()
                   if not n.endswith('bias'))

    assert round(without_bias('dysample') / 1e3, 1) == 49.2
    assert round(without_bias('dysample-s') / 1e3, 1) == 6.1
    assert round(without_bias('dysample-s-plus') / 1e3, 1) == 12.3
    assert round(without_bias('dysample-plus') / 1e6, 1) == 0.1
    assert round(without_bias('deconv') / 1e6, 1) == 3.5
    assert round(without_bias('pixelshuffle') / 1e6, 1) == 14.2
    assert round(without_bias('carafe') / 1e6, 1) == 0.4


@pytest.mark.parametrize('swin, upsampler', list(MASKFORMER))
def test_maskformer_config_resolves_and_head_delta_is_exact(swin, upsampler):
    cfg = maskformer(swin, upsampler)
    assert 'mmdysample' in cfg.custom_imports.imports
    expected = SWIN[swin]
    backbone = cfg.model.backbone
    assert backbone.type == 'SwinTransformer'
    assert {k: backbone[k] for k in expected if k != 'in_channels'} == {
        k: v for k, v in expected.items() if k != 'in_channels'}
    assert backbone == maskformer(swin, 'nearest').model.backbone
    assert 'swin_{}_patch4_window12_384_22k'.format(
        dict(b='base', l='large')[swin]) in backbone.init_cfg.checkpoint
    head = cfg.model.decode_head
    assert head.type == 'MaskFormerHead' and head.in_channels == expected['in_channels']
    assert head.pixel_decoder.type == 'mmdet.PixelDecoder'
    assert cfg.model.data_preprocessor.size == (640, 640)
    assert cfg.train_dataloader.dataset.pipeline[3].crop_size == (640, 640)
    expected_cfg, delta = MASKFORMER_UPSAMPLERS[upsampler]
    assert head.pixel_decoder.get('upsample_cfg') == expected_cfg

    built = build_head(cfg)
    assert type(built.pixel_decoder) is PixelDecoder
    assert built.decoder_input_proj.weight.shape == (256, expected['in_channels'][-1], 1, 1)
    if upsampler == 'nearest':
        assert built.pixel_decoder.upsamplers is None
    else:
        assert len(built.pixel_decoder.upsamplers) == 3
        baseline = num_params(build_head(maskformer(swin, 'nearest')))
        assert num_params(built) - baseline == delta


@pytest.mark.parametrize('name', ['bilinear', 'dysample-s-plus'])
def test_segformer_b1_full_model_builds(name):
    model = MODELS.build(copy.deepcopy(segformer(name).model))
    assert type(model.decode_head) is SegformerHead
    total = num_params(model)
    # paper Table 4: 13.7M parameters for the bilinear SegFormer-B1
    assert round((total - SEGFORMER[name][1]) / 1e6, 1) == 13.7


@pytest.mark.parametrize('swin, upsampler, paper_params', [
    ('b', 'dysample-s-plus', 102), ('l', 'carafe', 212)])
def test_maskformer_full_model_builds(swin, upsampler, paper_params):
    model = MODELS.build(copy.deepcopy(maskformer(swin, upsampler).model))
    assert type(model.decode_head.pixel_decoder) is PixelDecoder
    assert len(model.decode_head.pixel_decoder.upsamplers) == 3
    # the MaskFormer paper lists 102M (Swin-B) and 212M (Swin-L) parameters on ADE20K
    baseline_total = num_params(model) - MASKFORMER_UPSAMPLERS[upsampler][1]
    assert round(baseline_total / 1e6) == paper_params
