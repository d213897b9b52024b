"""The pretrained checkpoints of the shipped configs: every one resolves, as mmengine
resolves it, to a URL and to the file in torch hub's cache that a run reads, and every
paper model family initialises from that file, without network, with or without
torchvision.

The checkpoint files are generated, with random values: torchvision's ResNets from
torchvision's own layout (written out below from the architecture, with the classifier the
detectors drop), the others from the keys and shapes of the backbone the config builds,
wrapped as the real files are (mmseg's converted MiT/Swin weights and mmseg's ResNet-V1c: a
bare state dict; mmpretrain's CSPNeXt: ``state_dict`` with the ``backbone.`` prefix that
the config's ``init_cfg`` strips, beside a classifier head). ``TORCH_HOME`` points at a
temporary folder and downloading raises, so a name resolving to another file fails here.
"""
import json
import os
import os.path as osp
import sys
import types
from pathlib import Path

import mmengine
import pytest
import torch
from mmengine.config import Config

REPO = Path(__file__).resolve().parents[2]
if str(REPO / 'tools') not in sys.path:  # the tools import their helpers by name
    sys.path.append(str(REPO / 'tools'))
import tool_helpers  # noqa: E402

OPENMMLAB = 'https://download.openmmlab.com'
# Every checkpoint the shipped configs name, and where mmengine downloads it from.
SHIPPED_CHECKPOINTS = {
    'torchvision://resnet50': 'https://download.pytorch.org/models/resnet50-0676ba61.pth',
    'torchvision://resnet101': 'https://download.pytorch.org/models/resnet101-63fe2227.pth',
    'open-mmlab://resnet50_v1c': f'{OPENMMLAB}/pretrain/third_party/resnet50_v1c-2cccc1ad.pth',
}
SHIPPED_CHECKPOINTS.update({url: url for url in (
    f'{OPENMMLAB}/mmsegmentation/v0.5/pretrain/segformer/mit_b1_20220624-02e5a6a1.pth',
    f'{OPENMMLAB}/mmsegmentation/v0.5/pretrain/swin/'
    'swin_tiny_patch4_window7_224_20220317-1cdeb081.pth',
    f'{OPENMMLAB}/mmsegmentation/v0.5/pretrain/swin/'
    'swin_base_patch4_window12_384_22k_20220317-e5c09f74.pth',
    f'{OPENMMLAB}/mmsegmentation/v0.5/pretrain/swin/'
    'swin_large_patch4_window12_384_22k_20220412-6580f57d.pth',
    f'{OPENMMLAB}/mmdetection/v3.0/rtmdet/cspnext_rsb_pretrain/cspnext-s_imagenet_600e.pth')})
# Trained from scratch by their recipes: the demo models and YOLOX.
WITHOUT_CHECKPOINT = ('configs/demo/', 'configs/yolox/')


def shipped_configs():
    return sorted(str(p.relative_to(REPO)) for p in (REPO / 'configs').rglob('*.py')
                  if '_base_' not in p.parts)


@pytest.fixture(scope='module')
def torch_home(tmp_path_factory):
    """TORCH_HOME in a temporary folder for the module; any download fails the test."""
    home = tmp_path_factory.mktemp('torch_home')

    def no_download(url, dst, *args, **kwargs):
        raise AssertionError(f'tried to download {url} to {dst}: the file was expected in '
                             'the torch hub cache')

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv('TORCH_HOME', str(home))
        patch.setattr(torch.hub, 'download_url_to_file', no_download)
        yield home


@pytest.fixture(scope='module')
def shipped_checkpoints():
    """{config: [(config key, checkpoint name)]} of every shipped config, read once."""
    tool_helpers.memoize_external_config_lookup()
    return {config: tool_helpers.config_checkpoints(
        Config.fromfile(str(REPO / config), import_custom_modules=False))
        for config in shipped_configs()}


def mmengine_table(name):
    with open(osp.join(mmengine.__path__[0], 'hub', name)) as f:
        return json.load(f)


@pytest.mark.slow
def test_every_shipped_config_names_checkpoints_that_resolve(shipped_checkpoints, torch_home):
    names = {}
    for config, found in shipped_checkpoints.items():
        assert bool(found) != config.startswith(WITHOUT_CHECKPOINT), (config, found)
        for key, name in found:
            names.setdefault(name, []).append((config, key))
    assert set(names) == set(SHIPPED_CHECKPOINTS)
    # the URLs as mmengine's shipped tables give them (torchvision://: torchvision 0.12's)
    torchvision_urls, openmmlab_urls = (mmengine_table('torchvision_0.12.json'),
                                        mmengine_table('openmmlab.json'))
    assert SHIPPED_CHECKPOINTS['torchvision://resnet50'] == torchvision_urls['resnet50']
    assert SHIPPED_CHECKPOINTS['torchvision://resnet101'] == torchvision_urls['resnet101']
    assert SHIPPED_CHECKPOINTS['open-mmlab://resnet50_v1c'] == openmmlab_urls['resnet50_v1c']
    for name, users in names.items():
        for config, key in users:
            resolved = tool_helpers.resolve_checkpoint(name, key)
            url = SHIPPED_CHECKPOINTS[name]
            assert (resolved.url, resolved.error) == (url, None), (config, key)
            # where torch.hub.load_state_dict_from_url keeps it: the URL's file name
            assert resolved.path == str(torch_home / 'hub' / 'checkpoints' / url.split('/')[-1])
            assert resolved.status == 'missing'


def test_config_checkpoints_finds_every_way_a_config_names_one():
    cfg = Config(dict(
        model=dict(
            type='EncoderDecoder', pretrained='open-mmlab://resnet50_v1c',
            backbone=dict(type='ResNetV1c', pretrained='open-mmlab://resnet50_v1c'),
            neck=dict(init_cfg=[dict(type='Xavier'), dict(type='Pretrained',
                                                          checkpoint='mmcls://resnet50')]),
            head=dict(init_cfg=dict(type='Pretrained', prefix='backbone.',
                                    checkpoint='https://host/a/head-0123abcd.pth'))),
        load_from='work_dirs/x/epoch_12.pth'))
    assert tool_helpers.config_checkpoints(cfg) == [
        ('model.pretrained', 'open-mmlab://resnet50_v1c'),
        ('model.neck.init_cfg[1].checkpoint', 'mmcls://resnet50'),
        ('model.head.init_cfg.checkpoint', 'https://host/a/head-0123abcd.pth'),
        ('load_from', 'work_dirs/x/epoch_12.pth')]
    assert tool_helpers.config_checkpoints(Config(dict(model=dict(type='X'),
                                                       load_from=None))) == []


def test_resolve_checkpoint_follows_each_scheme(torch_home, tmp_path):
    cache = torch_home / 'hub' / 'checkpoints'
    mmcls_url = mmengine_table('mmcls.json')['resnet50']
    resolved = tool_helpers.resolve_checkpoint('mmcls://resnet50', 'k')
    assert (resolved.url, resolved.path) == (mmcls_url, str(cache / mmcls_url.split('/')[-1]))
    # open-mmlab:// names mmengine deprecated resolve to their successor, as mmengine loads
    old, new = next(iter(mmengine_table('deprecated.json').items()))
    assert tool_helpers.resolve_checkpoint(f'open-mmlab://{old}').url == \
        mmengine_table('openmmlab.json')[new]
    assert tool_helpers.resolve_checkpoint('https://h/p/x.pth?raw=1').path == str(cache / 'x.pth')
    # a local file (load_from) relative to where the run starts
    local = tool_helpers.resolve_checkpoint('ckpt/epoch_1.pth', 'load_from', root=str(tmp_path))
    assert (local.url, local.path, local.status) == (None, str(tmp_path / 'ckpt/epoch_1.pth'),
                                                     'missing')
    (tmp_path / 'ckpt').mkdir()
    (tmp_path / 'ckpt/epoch_1.pth').write_bytes(b'')
    assert local.status == 'present'
    # read by the run's file backend: not checked here
    assert tool_helpers.resolve_checkpoint('s3://bucket/x.pth').status == 'unchecked'
    unknown = tool_helpers.resolve_checkpoint('torchvision://resnet5', 'k')
    assert unknown.status == 'unresolved' and "'resnet5'" in unknown.error
    with pytest.raises(ValueError, match='has no URL'):
        tool_helpers.fetch_checkpoint(unknown)


def test_mirrored_url_replaces_scheme_and_host():
    url = 'https://download.pytorch.org/models/resnet50-0676ba61.pth'
    assert tool_helpers.mirrored_url(url, None) == url
    assert tool_helpers.mirrored_url(url, 'http://127.0.0.1:8000') == \
        'http://127.0.0.1:8000/models/resnet50-0676ba61.pth'
    assert tool_helpers.mirrored_url(url, 'file:///shared/weights/') == \
        'file:///shared/weights/models/resnet50-0676ba61.pth'
    for bad in ('ftp://host/x', '127.0.0.1:8000', 'http://'):
        with pytest.raises(ValueError, match="one of the schemes \\['http', 'https', 'file'\\]"):
            tool_helpers.mirrored_url(url, bad)


# ------------------------------------------------------- initialising from the cache
def torchvision_resnet_state(depth):
    """Keys and shapes of torchvision's ResNet-50/101 ImageNet weights (bottleneck blocks,
    stride in the 3x3 convolution, classifier ``fc``); old files carry no
    ``num_batches_tracked``. Random values."""
    blocks = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3)}[depth]
    shapes = {'conv1.weight': (64, 3, 7, 7)}

    def bn(name, channels):
        shapes.update({f'{name}.{p}': (channels, ) for p in
                       ('weight', 'bias', 'running_mean', 'running_var')})

    bn('bn1', 64)
    in_channels = 64
    for stage, count in enumerate(blocks, 1):
        width = 64 * 2**(stage - 1)
        for index in range(count):
            name = f'layer{stage}.{index}'
            shapes[f'{name}.conv1.weight'] = (width, in_channels, 1, 1)
            shapes[f'{name}.conv2.weight'] = (width, width, 3, 3)
            shapes[f'{name}.conv3.weight'] = (4 * width, width, 1, 1)
            for norm, channels in (('bn1', width), ('bn2', width), ('bn3', 4 * width)):
                bn(f'{name}.{norm}', channels)
            if index == 0:
                shapes[f'{name}.downsample.0.weight'] = (4 * width, in_channels, 1, 1)
                bn(f'{name}.downsample.1', 4 * width)
            in_channels = 4 * width
    shapes.update({'fc.weight': (1000, 2048), 'fc.bias': (1000, )})
    return random_state(shapes)


def random_state(shapes):
    generator = torch.Generator().manual_seed(len(shapes))
    return {key: torch.randn(shape, generator=generator) for key, shape in shapes.items()}


def backbone_state(backbone, skip=()):
    """The backbone's own keys and shapes (float tensors), random values."""
    return random_state({key: tuple(value.shape) for key, value in
                         backbone.state_dict().items()
                         if value.is_floating_point() and not key.startswith(skip)})


def as_written(state, wrap):
    """The file's contents: a bare state dict, or mmpretrain's classifier checkpoint."""
    if wrap == 'mmpretrain':
        return {'meta': {}, 'state_dict': {**{f'backbone.{k}': v for k, v in state.items()},
                                           'head.fc.weight': torch.randn(1000, 512)}}
    return state


# (config, how the expected weights are made, how the file wraps them)
FAMILIES = {
    'faster-rcnn-r50': ('configs/faster_rcnn_dysample.py', 'torchvision', 'bare'),
    'faster-rcnn-r101': ('configs/faster_rcnn/faster-rcnn_r101_fpn-dysample-plus-lpg4_1x_coco.py',
                         'torchvision', 'bare'),
    'mask-rcnn-r50': ('configs/mask_rcnn/mask-rcnn_r50_fpn-dysample-lpg4_1x_coco.py',
                      'torchvision', 'bare'),
    'panoptic-fpn-r50': ('configs/panoptic_fpn/panoptic-fpn_r50_fpn-dysample-lpg4_1x_coco.py',
                         'torchvision', 'bare'),
    'mask2former-r50-ade20k': ('configs/mask2former/mask2former_r50_msdeformattn-dysample-lpg4_'
                               '8xb2-160k_ade20k-512x512.py', 'torchvision', 'bare'),
    'upernet-r50-v1c': ('configs/upernet/upernet_r50_dysample_4xb4-160k_ade20k-512x512.py',
                        'backbone', 'bare'),
    'segformer-mit-b1': ('configs/segformer/segformer_mit-b1_dysample_8xb2-160k_ade20k-'
                         '512x512.py', 'backbone', 'bare'),
    'maskformer-swin-b': ('configs/maskformer/maskformer_swin-b-in22k-384x384-pre_fpn-'
                          'dysample-s-plus_8xb2-160k_ade20k-640x640.py', 'backbone', 'bare'),
    # DepthFormer's convolutional stem is not part of the Swin weights
    'depthformer-swin-t': ('configs/depth/depthformer_swin-t-w7_dysample_nyu-416x544.py',
                           'backbone-without-stem', 'bare'),
    'rtmdet-cspnext-s': ('configs/rtmdet/rtmdet_cspnext-s_pafpn-dysample-lpg4_8xb32-300e_'
                         'coco.py', 'backbone', 'mmpretrain'),
}
# Not built here (their names resolve in the test above): MaskFormer Swin-L loads through
# the code of Swin-B (its 195M-parameter backbone would add ~20 s), Mask2Former on COCO
# panoptic through mmdet's ResNet-50 from the file of Faster R-CNN R50.


@pytest.mark.slow
@pytest.mark.parametrize('family', list(FAMILIES))
def test_paper_model_family_initialises_from_the_torch_hub_cache(family, torch_home):
    config, weights, wrap = FAMILIES[family]
    tool_helpers.memoize_external_config_lookup()
    ((key, name), ) = tool_helpers.config_checkpoints(
        Config.fromfile(str(REPO / config), import_custom_modules=False))
    checkpoint = tool_helpers.resolve_checkpoint(name, key)
    assert checkpoint.path == str(torch_home / 'hub' / 'checkpoints' /
                                  SHIPPED_CHECKPOINTS[name].split('/')[-1])
    model = tool_helpers.build_model(str(REPO / config))  # the runner's model, not initialised
    backbone = model.backbone
    if osp.isfile(checkpoint.path):  # written by an earlier family with the same weights
        expected = torch.load(checkpoint.path, weights_only=True)
        expected = {k[len('backbone.'):]: v for k, v in expected['state_dict'].items()
                    if k.startswith('backbone.')} if wrap == 'mmpretrain' else expected
    else:
        expected = (torchvision_resnet_state(backbone.depth) if weights == 'torchvision' else
                    backbone_state(backbone, ('conv1.', 'bn1.') if weights.endswith('stem')
                                   else ()))
        os.makedirs(osp.dirname(checkpoint.path), exist_ok=True)
        torch.save(as_written(expected, wrap), checkpoint.path)
    own = backbone.state_dict()
    loaded = {k: v for k, v in expected.items() if k in own}
    # every float tensor of the backbone comes from the checkpoint (but DepthFormer's stem)
    assert set(loaded) == {k for k, v in own.items() if v.is_floating_point()
                           and not (weights.endswith('stem') and k.startswith(('conv1.', 'bn1.')))}
    assert not any(torch.equal(own[k], v) for k, v in loaded.items())

    model.init_weights()  # what the runner calls before training

    own = backbone.state_dict()
    differing = [k for k, v in loaded.items() if not torch.equal(own[k], v)]
    assert not differing, f'{len(differing)}/{len(loaded)} tensors not loaded: {differing[:5]}'


@pytest.mark.slow
def test_torchvision_names_load_the_same_file_when_torchvision_imports(torch_home, monkeypatch):
    """Where torchvision imports, mmengine's own table (torchvision >= 0.14: the 0.12 names
    plus those of the weights enums) answers; the file and the weights are the same."""
    from mmdet.models.backbones import ResNet
    calls = []
    models = types.SimpleNamespace(list_models=lambda module: calls.append(module) or [],
                                   get_model_weights=None)
    fake = types.SimpleNamespace(__version__='0.21.0', models=models)
    monkeypatch.setitem(sys.modules, 'torchvision', fake)
    monkeypatch.setitem(sys.modules, 'torchvision.models', models)
    # where torchvision imports, mmdysample.compat leaves upstream's function in place; in
    # this process (no torchvision) it may have been replaced already: put upstream's back
    from mmengine.runner import checkpoint as mmengine_checkpoint
    upstream = getattr(mmengine_checkpoint.get_torchvision_models, '__mmdysample_original__',
                       mmengine_checkpoint.get_torchvision_models)
    monkeypatch.setattr(mmengine_checkpoint, 'get_torchvision_models', upstream)
    checkpoint = tool_helpers.resolve_checkpoint('torchvision://resnet50', 'k')
    assert calls, 'mmengine did not consult torchvision'
    assert checkpoint.url == SHIPPED_CHECKPOINTS['torchvision://resnet50']
    assert checkpoint.path == str(torch_home / 'hub' / 'checkpoints' / 'resnet50-0676ba61.pth')
    if not osp.isfile(checkpoint.path):
        os.makedirs(osp.dirname(checkpoint.path), exist_ok=True)
        torch.save(torchvision_resnet_state(50), checkpoint.path)
    expected = torch.load(checkpoint.path, weights_only=True)
    backbone = ResNet(50, init_cfg=dict(type='Pretrained', checkpoint='torchvision://resnet50'))
    calls.clear()
    backbone.init_weights()
    assert calls, 'the load did not go through torchvision'
    own = backbone.state_dict()
    assert all(torch.equal(own[k], v) for k, v in expected.items() if k in own)
