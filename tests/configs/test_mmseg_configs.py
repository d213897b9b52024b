"""Every config under configs/segformer and configs/maskformer loads and builds its full model.

Each config's complete segmentor (backbone, head, upsamplers; no pretrained weights) is built
at full size, and its parameter count is compared exactly with its baseline twin (the
bilinear SegFormer-B1, the nearest MaskFormer of the same backbone): the difference must be
the upsamplers' parameters computed here from the layers' definitions, independently of the
code. The READMEs and metafiles must list every config.
"""
import copy
import gc
import re
from pathlib import Path

import mmengine.config.utils as mmengine_config_utils
import pytest
import torch
import torch.nn as nn
import yaml
from mmdet.models.layers.pixel_decoder import PixelDecoder as MMDetPixelDecoder
from mmengine.config import Config
from mmengine.registry import DefaultScope
from mmseg.models.decode_heads.maskformer_head import MaskFormerHead
from mmseg.registry import MODELS

import mmdysample  # noqa: F401
import mmdysample.mmseg
import mmseg
from mmdysample.mmdet import PixelDecoder
from mmdysample.mmseg import SegformerHead
from mmdysample.upsamplers import CARAFE, Deconv, DySample, PixelShuffle

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / 'configs'
C = 256  # SegFormer-B1 head channels, MaskFormer pixel-decoder channels

# Parameters of one x2 upsampler at C channels, from the layers' definitions.
DECONV = C * C * 3 * 3 + C  # ConvTranspose2d(C, C, 3) + bias = 590,080
PIXEL_SHUFFLE = C * 4 * C * 3 * 3 + 4 * C  # Conv2d(C, 4C, 3) + bias = 2,360,320
CARAFE_PARAMS = (C * 64 + 64) + (64 * 25 * 4 * 3 * 3 + 25 * 4)  # 1x1 compressor, 3x3 encoder


def dysample_params(groups, style='lp', dyscope=False):
    """1x1 offset conv with bias, plus a bias-free scope conv of the same shape (x2, C)."""
    conv_in, conv_out = (C, 2 * groups * 4) if style == 'lp' else (C // 4, 2 * groups)
    return conv_in * conv_out + conv_out + (conv_in * conv_out if dyscope else 0)


def dysample_attrs(style, groups, dyscope, init='bilinear', scope_factor=0.25):
    return dict(style=style, groups=groups, dyscope=dyscope, init=init,
                scope_factor=scope_factor)


SEGFORMER_SUFFIX = '_8xb2-160k_ade20k-512x512.py'
# name -> (decode_head.upsample_cfg, upsampler class, DySample attributes or None,
#          parameters added to the bilinear model, paper mIoU)
SEGFORMER = {
    'bilinear': (None, None, None, 0, 41.68),
    'deconv': (dict(type='Deconv'), Deconv, None, 6 * DECONV, 40.71),
    'pixelshuffle': (dict(type='PixelShuffle'), PixelShuffle, None, 6 * PIXEL_SHUFFLE, 41.50),
    'carafe': (dict(type='CARAFE'), CARAFE, None, 6 * CARAFE_PARAMS, 42.82),
    'dysample': (dict(type='DySample'), DySample, dysample_attrs('lp', 4, False), 49_344,
                 43.21),
    'dysample-plus': (dict(type='DySample+'), DySample, dysample_attrs('lp', 4, True), 98_496,
                      43.28),
    'dysample-s': (dict(type='DySample-S'), DySample, dysample_attrs('pl', 8, False), 6_240,
                   43.23),
    'dysample-s-plus': (dict(type='DySample-S+'), DySample, dysample_attrs('pl', 8, True),
                        12_384, 43.58),
    # Tables 1-3 (LP, 1 group)
    'dysample-lpg1-scope1-initnearest': (
        dict(type='DySample', style='lp', groups=1, scope_factor=1.0, init='nearest'),
        DySample, dysample_attrs('lp', 1, False, 'nearest', 1.0), 6 * dysample_params(1), 41.9),
    'dysample-lpg1-scope1': (
        dict(type='DySample', style='lp', groups=1, scope_factor=1.0, init='bilinear'),
        DySample, dysample_attrs('lp', 1, False, 'bilinear', 1.0), 6 * dysample_params(1),
        42.1),
    'dysample-lpg1-scope0.1': (
        dict(type='DySample', style='lp', groups=1, scope_factor=0.1, init='bilinear'),
        DySample, dysample_attrs('lp', 1, False, 'bilinear', 0.1), 6 * dysample_params(1),
        42.2),
    'dysample-lpg1': (
        dict(type='DySample', style='lp', groups=1, scope_factor=0.25, init='bilinear'),
        DySample, dysample_attrs('lp', 1, False), 6 * dysample_params(1), 42.4),
    'dysample-lpg1-scope0.5': (
        dict(type='DySample', style='lp', groups=1, scope_factor=0.5, init='bilinear'),
        DySample, dysample_attrs('lp', 1, False, 'bilinear', 0.5), 6 * dysample_params(1),
        42.2),
    'dysample-plus-lpg1': (
        dict(type='DySample', style='lp', groups=1, scope_factor=0.25, dyscope=True,
             init='bilinear'), DySample, dysample_attrs('lp', 1, True),
        6 * dysample_params(1, dyscope=True), 42.6),
}

MASKFORMER_NAME = 'maskformer_swin-{}-in22k-384x384-pre_fpn-{}_8xb2-160k_ade20k-640x640.py'
# upsampler -> (pixel_decoder.upsample_cfg, upsampler class, parameters added to nearest)
MASKFORMER_UPSAMPLERS = {
    'nearest': (None, None, 0),
    'carafe': (dict(type='CARAFE'), CARAFE, 3 * CARAFE_PARAMS),
    'dysample-s-plus': (dict(type='DySample-S+'), DySample,
                        3 * dysample_params(8, 'pl', dyscope=True)),
}
MASKFORMER_PAPER_MIOU = {('b', 'nearest'): 52.70, ('b', 'carafe'): 53.53,
                         ('b', 'dysample-s-plus'): 53.91, ('l', 'nearest'): 54.10,
                         ('l', 'carafe'): 54.61, ('l', 'dysample-s-plus'): 54.90}
SWIN = {  # the MaskFormer paper's Swin-B / Swin-L (ImageNet-22K, 384, window 12)
    'b': dict(embed_dims=128, depths=[2, 2, 18, 2], num_heads=[4, 8, 16, 32], window_size=12,
              pretrain_img_size=384, drop_path_rate=0.3),
    'l': dict(embed_dims=192, depths=[2, 2, 18, 2], num_heads=[6, 12, 24, 48], window_size=12,
              pretrain_img_size=384, drop_path_rate=0.3),
}
SWIN_CHECKPOINT = {  # the ones mmseg's Swin-B/L window-12 ImageNet-22K configs use
    'b': 'https://download.openmmlab.com/mmsegmentation/v0.5/pretrain/swin/'
         'swin_base_patch4_window12_384_22k_20220317-e5c09f74.pth',
    'l': 'https://download.openmmlab.com/mmsegmentation/v0.5/pretrain/swin/'
         'swin_large_patch4_window12_384_22k_20220412-6580f57d.pth',
}
# the MaskFormer paper's ADE20K parameter counts (Swin-B 102M, Swin-L 212M)
SWIN_PAPER_PARAMS_M = {'b': 102, 'l': 212}
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
_TOTALS = {}


def load(path):
    """Each config is parsed once per session."""
    if path not in _LOADED:
        _LOADED[path] = Config.fromfile(path)
    return _LOADED[path]


def segformer_path(name):
    return CONFIGS / 'segformer' / f'segformer_mit-b1_{name}{SEGFORMER_SUFFIX}'


def maskformer_path(swin, upsampler):
    return CONFIGS / 'maskformer' / MASKFORMER[swin, upsampler]


def num_params(module):
    return sum(p.numel() for p in module.parameters())


def build_model(path):
    """The config's full segmentor (pretrained weights are not loaded: no init_weights)."""
    model = MODELS.build(copy.deepcopy(load(path).model))
    _TOTALS[path] = num_params(model)
    return model


def total_params(path):
    """Parameters of the config's full model, building it once if no test has yet."""
    if path not in _TOTALS:
        build_model(path)
        gc.collect()
    return _TOTALS[path]


# Table 4's guided rows: their configs are the guided upsamplers' (tested with them); the
# README and metafile list them with the paper's mIoU
GUIDED_PAPER_MIOU = {'indexnet': 41.50, 'a2u': 41.45, 'fade': 43.06, 'sapa-b': 43.20}


def test_folders_hold_exactly_these_configs_and_document_them():
    expected = {
        'segformer': sorted(segformer_path(name).name
                            for name in [*SEGFORMER, *GUIDED_PAPER_MIOU]),
        'maskformer': sorted(MASKFORMER.values()),
    }
    guided = {segformer_path(name).name for name in GUIDED_PAPER_MIOU}
    for folder, names in expected.items():
        on_disk = {p.name for p in (CONFIGS / folder).glob('*.py')}
        assert set(names) - guided <= on_disk <= set(names)
        readme = (CONFIGS / folder / 'README.md').read_text()
        linked = set(re.findall(r'\]\(([^)]+\.py)\)', readme))
        assert linked == set(names), folder  # every config linked, no dead config link
        assert 'empty' in readme.lower()  # the "ours" column says it is empty, and why

        meta = yaml.safe_load((CONFIGS / folder / 'metafile.yml').read_text())
        collections = {c['Name']: c for c in meta['Collections']}
        for collection in collections.values():
            assert collection['README'] == f'configs/{folder}/README.md'
            assert collection['Paper']['URL'] == 'https://arxiv.org/abs/2308.15085'
        assert sorted(m['Config'] for m in meta['Models']) == sorted(
            f'configs/{folder}/{name}' for name in names)
        for model in meta['Models']:
            assert model['In Collection'] in collections
            assert model['Name'] == Path(model['Config']).stem
            assert model['Metadata']['Results Source'].startswith('paper-reported')
            (result, ) = model['Results']
            assert result['Task'] == 'Semantic Segmentation' and result['Dataset'] == 'ADE20K'
            if folder == 'segformer':
                name = re.fullmatch(r'segformer_mit-b1_(.+)_8xb2-160k_ade20k-512x512',
                                    model['Name']).group(1)
                paper = (SEGFORMER[name][-1] if name in SEGFORMER else
                         GUIDED_PAPER_MIOU[name])
            else:
                paper = MASKFORMER_PAPER_MIOU[re.fullmatch(
                    r'maskformer_swin-(\w)-in22k-384x384-pre_fpn-(.+)_8xb2-160k_ade20k-640x640',
                    model['Name']).groups()]
            assert result['Metrics']['mIoU'] == paper, model['Name']


@pytest.mark.parametrize('name', list(SEGFORMER))
def test_segformer_config_resolves_to_the_expected_head(name):
    cfg = load(segformer_path(name))
    baseline = load(segformer_path('bilinear'))
    assert 'mmdysample' in cfg.custom_imports.imports
    assert cfg.model.backbone == baseline.model.backbone
    assert cfg.model.backbone.embed_dims == 64  # MiT-B1
    assert cfg.train_cfg == baseline.train_cfg and cfg.optim_wrapper == baseline.optim_wrapper
    assert cfg.train_dataloader == baseline.train_dataloader
    head = cfg.model.decode_head
    assert head.type == 'SegformerHead' and head.channels == C
    assert head.in_channels == [64, 128, 320, 512]  # MiT-B1
    assert head.get('upsample_cfg') == SEGFORMER[name][0]


@pytest.mark.parametrize('name', list(SEGFORMER))
def test_segformer_full_model_builds_with_the_exact_parameter_delta(name):
    _, upsampler_cls, attrs, delta, _ = SEGFORMER[name]
    path = segformer_path(name)
    model = build_model(path)
    head = model.decode_head
    assert type(head) is SegformerHead
    if upsampler_cls is None:
        assert head.upsamplers is None
    else:
        assert len(head.upsamplers) == 6
        for upsampler in head.upsamplers:
            assert isinstance(upsampler, upsampler_cls)
            assert (upsampler.in_channels, upsampler.scale_factor) == (C, 2)
            if attrs is not None:
                assert {k: getattr(upsampler, k) for k in attrs} == attrs
    total = num_params(model)
    assert total - total_params(segformer_path('bilinear')) == delta
    # paper Table 4: 13.7M parameters for the bilinear SegFormer-B1
    assert round((total - delta) / 1e6, 1) == 13.7


def test_paper_table4_deltas_in_words():
    # Table 4 rounds weights-only counts (biases excluded): +49.2K, +6.1K, +12.3K, +0.1M,
    # +3.5M, +14.2M, +0.4M; ours include biases.
    def without_bias(name):
        head = MODELS.build(copy.deepcopy(load(segformer_path(name)).model.decode_head))
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
def test_maskformer_config_resolves(swin, upsampler):
    cfg = load(maskformer_path(swin, upsampler))
    assert 'mmdysample' in cfg.custom_imports.imports
    backbone = cfg.model.backbone
    assert backbone.type == 'SwinTransformer'
    assert {k: backbone[k] for k in SWIN[swin]} == SWIN[swin]
    assert backbone.init_cfg == dict(type='Pretrained', checkpoint=SWIN_CHECKPOINT[swin])
    assert backbone == load(maskformer_path(swin, 'nearest')).model.backbone
    embed = SWIN[swin]['embed_dims']
    head = cfg.model.decode_head
    assert head.type == 'MaskFormerHead'
    assert head.in_channels == [embed, 2 * embed, 4 * embed, 8 * embed]
    assert head.pixel_decoder.type == 'mmdet.PixelDecoder'
    assert head.pixel_decoder.get('upsample_cfg') == MASKFORMER_UPSAMPLERS[upsampler][0]
    # the MaskFormer paper's ADE20K recipe: 640 crops, AdamW 6e-5, wd 0.01, 160k, batch 16
    assert cfg.model.data_preprocessor.size == (640, 640)
    assert cfg.train_dataloader.dataset.pipeline[3].crop_size == (640, 640)
    assert cfg.test_dataloader.dataset.pipeline[1].scale == (2560, 640)
    assert cfg.optim_wrapper.optimizer.lr == 6e-5
    assert cfg.optim_wrapper.optimizer.weight_decay == 0.01
    assert cfg.train_cfg.max_iters == 160_000 and cfg.train_dataloader.batch_size == 2


@pytest.mark.parametrize('swin, upsampler', list(MASKFORMER))
def test_maskformer_full_model_builds_with_the_exact_parameter_delta(swin, upsampler):
    _, upsampler_cls, delta = MASKFORMER_UPSAMPLERS[upsampler]
    path = maskformer_path(swin, upsampler)
    model = build_model(path)
    head = model.decode_head
    assert type(head) is MaskFormerHead  # mmseg's own head: the plugin does not patch it
    # the plugin's decoder passes mmdet's exact-type test, with or without learned steps
    assert type(head.pixel_decoder) == MMDetPixelDecoder
    assert type(head.pixel_decoder) is PixelDecoder
    # either way mmdet's head has its input projection (Swin's last width -> 256)
    last_channels = 8 * SWIN[swin]['embed_dims']
    assert isinstance(head.decoder_input_proj, nn.Conv2d)
    assert head.decoder_input_proj.weight.shape == (C, last_channels, 1, 1)
    if upsampler_cls is not None:
        assert len(head.pixel_decoder.upsamplers) == 3
        assert all(isinstance(u, upsampler_cls) and u.in_channels == C
                   for u in head.pixel_decoder.upsamplers)
    total = num_params(model)
    del model, head
    gc.collect()
    assert total - total_params(maskformer_path(swin, 'nearest')) == delta
    assert round((total - delta) / 1e6) == SWIN_PAPER_PARAMS_M[swin]


# ---------------------------------------------------------------------------------------
# UPerNet, DeepLabV3+, Semantic FPN (R50, ADE20K): not in the paper, one DySample row and
# one baseline each, inheriting mmseg's configs.

def dysample_lpg4(channels):
    """DySample (LP, 4 groups, static): a 1x1 offset conv, C -> 2 * 4 * 2**2, with bias."""
    return channels * 32 + 32


# folder -> (upstream config, baseline name, DySample name,
#            {module path in the model: (patched class, learned steps, channels)},
#            mmseg's published mIoU of the baseline)
MMSEG_FAMILIES = {
    'upernet': ('upernet/upernet_r50_4xb4-160k_ade20k-512x512.py',
                'upernet_r50_bilinear_4xb4-160k_ade20k-512x512',
                'upernet_r50_dysample_4xb4-160k_ade20k-512x512',
                {'decode_head': ('UPerHead', 9, 512)}, 42.05),
    'deeplabv3plus': ('deeplabv3plus/deeplabv3plus_r50-d8_4xb4-160k_ade20k-512x512.py',
                      'deeplabv3plus_r50-d8_bilinear_4xb4-160k_ade20k-512x512',
                      'deeplabv3plus_r50-d8_dysample_4xb4-160k_ade20k-512x512',
                      {'decode_head': ('DepthwiseSeparableASPPHead', 1, 512)}, 43.95),
    'sem_fpn': ('sem_fpn/fpn_r50_4xb4-160k_ade20k-512x512.py',
                'fpn_r50_fpn-nearest_4xb4-160k_ade20k-512x512',
                'fpn_r50_fpn-dysample_4xb4-160k_ade20k-512x512',
                {'neck': ('FPN', 3, 256), 'decode_head': ('FPNHead', 6, 128)}, 37.49),
}


MMSEG_CONFIGS = Path(mmseg.__file__).parent / '.mim' / 'configs'


def family_path(folder, name):
    return CONFIGS / folder / f'{name}.py'


def without_scope(node):
    """A config node without the ``_scope_`` keys that an ``mmseg::`` base adds."""
    if isinstance(node, dict):
        return {k: without_scope(v) for k, v in node.items() if k != '_scope_'}
    if isinstance(node, (list, tuple)):
        return type(node)(without_scope(v) for v in node)
    return node


@pytest.mark.parametrize('folder', list(MMSEG_FAMILIES))
def test_family_folder_documents_its_two_configs(folder):
    _, baseline, dysample, _, published = MMSEG_FAMILIES[folder]
    names = sorted([f'{baseline}.py', f'{dysample}.py'])
    assert sorted(p.name for p in (CONFIGS / folder).glob('*.py')) == names
    readme = (CONFIGS / folder / 'README.md').read_text()
    assert set(re.findall(r'\]\(([^)]+\.py)\)', readme)) == set(names)
    assert '**Ours: empty.**' in readme and str(published) in readme
    meta = yaml.safe_load((CONFIGS / folder / 'metafile.yml').read_text())
    (collection, ) = meta['Collections']
    assert collection['README'] == f'configs/{folder}/README.md'
    models = {m['Name']: m for m in meta['Models']}
    assert sorted(models) == sorted([baseline, dysample])
    for name, model in models.items():
        assert model['Config'] == f'configs/{folder}/{name}.py'
        assert model['In Collection'] == collection['Name']
    (result, ) = models[baseline]['Results']
    assert result['Metrics']['mIoU'] == published and result['Dataset'] == 'ADE20K'
    assert models[baseline]['Metadata']['Results Source'].startswith('mmseg-reported')
    assert 'Results' not in models[dysample]  # nothing to report yet


@pytest.mark.parametrize('folder', list(MMSEG_FAMILIES))
def test_family_configs_are_upstream_plus_the_upsample_cfg(folder):
    upstream_cfg, baseline, dysample, sites, _ = MMSEG_FAMILIES[folder]
    upstream = load(MMSEG_CONFIGS / upstream_cfg)
    for name, with_dysample in ((baseline, False), (dysample, True)):
        cfg = load(family_path(folder, name))
        assert 'mmdysample' in cfg.custom_imports.imports
        for key in ('train_cfg', 'optim_wrapper', 'train_dataloader', 'val_evaluator'):
            assert without_scope(cfg[key]) == without_scope(upstream[key]), key
        model = without_scope(cfg.model.to_dict())
        for site in sites:
            got = model[site].pop('upsample_cfg', None)
            assert got == (dict(type='DySample') if with_dysample else None)
        assert model == without_scope(upstream.model.to_dict())


@pytest.mark.slow
@pytest.mark.parametrize('folder', list(MMSEG_FAMILIES))
def test_family_dysample_full_model_builds_with_the_exact_delta(folder):
    # The configs differ from the baseline only in upsample_cfg (test above), and a patched
    # module without type has exactly upstream's parameters plus nothing
    # (tests/mmseg/test_mmseg_sites.py): the delta is the upsamplers' parameters.
    _, _, dysample, sites, _ = MMSEG_FAMILIES[folder]
    model = build_model(family_path(folder, dysample))
    delta = 0
    for site, (class_name, steps, channels) in sites.items():
        module = getattr(model, site)
        assert type(module) is getattr(mmdysample.mmseg, class_name)
        assert len(module.upsamplers) == steps
        for up in module.upsamplers:
            assert isinstance(up, DySample)
            assert (up.in_channels, up.style, up.groups, up.dyscope) == (channels, 'lp', 4,
                                                                         False)
        delta += num_params(module.upsamplers)
        assert num_params(module.upsamplers) == steps * dysample_lpg4(channels)
    assert delta == {'upernet': 147_744, 'deeplabv3plus': 16_416, 'sem_fpn': 49_440}[folder]
    assert num_params(model) - delta == BASELINE_PARAMS[folder]
    del model
    gc.collect()


# full baseline models, counted with `MODELS.build(cfg.model)` (upstream's own classes,
# without mmdysample imported, give the same counts: tests/mmseg/test_upstream_equivalence.py
# compares the patched and the upstream models over mmseg's configs)
BASELINE_PARAMS = {'upernet': 66_516_108, 'deeplabv3plus': 43_690_748, 'sem_fpn': 28_514_806}
