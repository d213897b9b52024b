"""Every mmdet config of the plugin loads, builds its full-size model, differs from its
nearest twin only in the FPN's upsample_cfg, and adds exactly the parameters the paper's
formulas give.

Full-size models are built on the ``meta`` device: every module is constructed exactly as
on CPU (same classes, shapes and parameter counts) but no memory is allocated or
initialised, which takes ~0.2 s instead of ~2 s per model. One config
(``configs/faster_rcnn_dysample.py``) is also built for real and run on an image.
"""
import copy
import functools
import re
from pathlib import Path

import mmengine.config.utils as mmengine_config_utils
import pytest
import torch
import yaml
from mmdet.utils import register_all_modules
from mmengine.config import Config

import mmdysample  # noqa: F401
from mmdysample.mmdet import UpsamplerFPN

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / 'configs'
MMDET_CONFIGS = Path(__import__('mmdet').__file__).parent / '.mim' / 'configs'
FOLDERS = ('faster_rcnn', 'mask_rcnn', 'panoptic_fpn')
PREFIX = {'faster_rcnn': 'faster-rcnn', 'mask_rcnn': 'mask-rcnn', 'panoptic_fpn': 'panoptic-fpn'}
TOP_LEVEL = 'faster_rcnn_dysample.py'

C = 256  # FPN out_channels in every config
NUM_TOP_DOWN_STEPS = 3  # 4 ResNet levels -> 3 upsamplings in mmdet's FPN


def conv_params(cin, cout, kernel=1, bias=True):
    return cin * cout * kernel * kernel + (cout if bias else 0)


def dysample_step_params(style, groups, dyscope, s=2):
    """Paper Sec. 3.2: LP projects C -> 2*g*s^2 channels at low resolution, PL projects
    C/s^2 -> 2*g after pixel shuffle; the dynamic scope adds a bias-free twin projection."""
    cin, cout = (C, 2 * groups * s * s) if style == 'lp' else (C // (s * s), 2 * groups)
    return conv_params(cin, cout) + (conv_params(cin, cout, bias=False) if dyscope else 0)


# upsampler token in the file name -> (upsample_cfg written in the config, params per step)
UPSAMPLERS = {
    'nearest': (None, 0),
    'bilinear': (dict(mode='bilinear', align_corners=False), 0),
    'deconv': (dict(type='Deconv'), conv_params(C, C, 3)),
    'pixelshuffle': (dict(type='PixelShuffle'), conv_params(C, 4 * C, 3)),
    # mmcv CARAFE defaults: compressor 1x1 C -> 64, encoder 3x3 64 -> k_up^2 * s^2 = 100
    'carafe': (dict(type='CARAFE'), conv_params(C, 64) + conv_params(64, 5 * 5 * 2 * 2, 3)),
    'dysample-lpg4': (dict(type='DySample'), dysample_step_params('lp', 4, False)),
    'dysample-plus-lpg4': (dict(type='DySample+'), dysample_step_params('lp', 4, True)),
    'dysample-s-plg8': (dict(type='DySample-S'), dysample_step_params('pl', 8, False)),
    'dysample-s-plus-plg8': (dict(type='DySample-S+'), dysample_step_params('pl', 8, True)),
    'dysample-lpg1-scope1-initnearest': (
        dict(type='DySample', style='lp', groups=1, scope_factor=1.0, init='nearest'),
        dysample_step_params('lp', 1, False)),
    'dysample-lpg1-scope1': (dict(type='DySample', style='lp', groups=1, scope_factor=1.0),
                             dysample_step_params('lp', 1, False)),
    'dysample-lpg1-scope0.1': (dict(type='DySample', style='lp', groups=1, scope_factor=0.1),
                               dysample_step_params('lp', 1, False)),
    'dysample-lpg1': (dict(type='DySample', style='lp', groups=1, scope_factor=0.25),
                      dysample_step_params('lp', 1, False)),
    'dysample-lpg1-scope0.5': (dict(type='DySample', style='lp', groups=1, scope_factor=0.5),
                               dysample_step_params('lp', 1, False)),
    'dysample-plus-lpg1': (dict(type='DySample', style='lp', groups=1, dyscope=True),
                           dysample_step_params('lp', 1, True)),
    'dysample-plg4': (dict(type='DySample', style='pl', groups=4),
                      dysample_step_params('pl', 4, False)),
}
# The guided rows (their exact parameters are asserted in tests/configs/test_guided_configs.py)
GUIDED = {'indexnet': 'IndexNet', 'a2u': 'A2U', 'fade': 'FADE', 'sapa-b': 'SAPA-B'}
UPSAMPLERS.update({token: (dict(type=name), None) for token, name in GUIDED.items()})
PAPER_TABLE_ROWS = [('r50', u) for u in [
    'nearest', 'bilinear', 'deconv', 'pixelshuffle', 'carafe', 'dysample-lpg4',
    'dysample-plus-lpg4', 'dysample-s-plg8', 'dysample-s-plus-plg8', *GUIDED
]] + [('r101', 'nearest'), ('r101', 'dysample-plus-lpg4')]
ABLATIONS = ['dysample-lpg1-scope1-initnearest', 'dysample-lpg1-scope1',
             'dysample-lpg1-scope0.1', 'dysample-lpg1', 'dysample-lpg1-scope0.5',
             'dysample-plus-lpg1', 'dysample-plg4']


def expected_configs():
    """relative path -> (nearest twin relative path, upsampler token)."""
    table = {}
    for folder in FOLDERS:
        rows = PAPER_TABLE_ROWS + ([('r50', u) for u in ABLATIONS]
                                   if folder == 'faster_rcnn' else [])
        for backbone, upsampler in rows:
            name = f'{folder}/{PREFIX[folder]}_{backbone}_fpn-{{}}_1x_coco.py'
            table[name.format(upsampler)] = (name.format('nearest'), upsampler)
    table[TOP_LEVEL] = ('faster_rcnn/faster-rcnn_r50_fpn-nearest_1x_coco.py', 'dysample-lpg4')
    return table


EXPECTED = expected_configs()


@pytest.fixture(scope='module', autouse=True)
def mmdet_scope():
    register_all_modules(init_default_scope=True)


@pytest.fixture(scope='module', autouse=True)
def cached_mim_metainfo():
    """``mmdet::`` bases make mmengine parse all ~100 of mmdet's metafiles for every
    config (~1 s each); they do not change during a test run."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(mmengine_config_utils, '_get_cfg_metainfo',
                      functools.lru_cache(maxsize=None)(
                          mmengine_config_utils._get_cfg_metainfo))
        yield


@functools.lru_cache(maxsize=None)
def load(relative_path):
    return Config.fromfile(str(CONFIGS / relative_path))


# An unpadded 800x1199 COCO-sized image: ResNet levels 200x300, 100x150, 50x75, 25x38, so
# the coarsest top-down step upsamples 25x38 to 50x76 and must crop it to 50x75.
META_IMAGE_SIZE = (800, 1199)
META_PYRAMID = [(200, 300), (100, 150), (50, 75), (25, 38), (13, 19)]


@functools.lru_cache(maxsize=None)
def meta_model_params(relative_path):
    """(total parameters, the neck's upsampler types) of the full-size model.

    The model is also run through its backbone and FPN on a meta image of
    ``META_IMAGE_SIZE`` (shapes only), which checks the full-size channel wiring of every
    upsampler and the odd-size cropping at 256 channels."""
    from mmdet.registry import MODELS
    with torch.device('meta'):
        model = MODELS.build(copy.deepcopy(load(relative_path).model))
        features = model.extract_feat(torch.empty(1, 3, *META_IMAGE_SIZE))
    assert [tuple(f.shape) for f in features] == [(1, C, h, w) for h, w in META_PYRAMID]
    assert type(model.neck) is UpsamplerFPN
    upsampler_types = (None if model.neck.upsamplers is None else
                       [type(u).__name__ for u in model.neck.upsamplers])
    return sum(p.numel() for p in model.parameters()), upsampler_types


def test_every_mmdet_config_is_expected():
    found = {str(p.relative_to(CONFIGS)) for folder in FOLDERS
             for p in (CONFIGS / folder).glob('*.py')}
    found |= {TOP_LEVEL} if (CONFIGS / TOP_LEVEL).exists() else set()
    # the one config outside the paper's tables (tested with the new families below)
    found.remove('mask_rcnn/mask-rcnn_r50_fpn-dysample-lpg4-mask-head-dysample-lpg4_1x_coco.py')
    assert sorted(found) == sorted(EXPECTED)
    assert len(EXPECTED) == 41 + 3 * len(GUIDED)


@pytest.mark.parametrize('relative_path', sorted(EXPECTED))
def test_config_is_its_nearest_twin_plus_the_upsample_cfg(relative_path):
    twin_path, upsampler = EXPECTED[relative_path]
    cfg = load(relative_path)
    assert cfg.custom_imports == dict(imports=['mmdysample'], allow_failed_imports=False)
    assert cfg.model.neck.type == 'FPN'
    expected_cfg = UPSAMPLERS[upsampler][0]
    if expected_cfg is None:
        assert 'upsample_cfg' not in cfg.model.neck  # FPN default: dict(mode='nearest')
    else:
        assert cfg.model.neck.upsample_cfg.to_dict() == expected_cfg
    this = cfg.to_dict()
    twin = load(twin_path).to_dict()
    this['model']['neck'].pop('upsample_cfg', None)
    assert this == twin


def without_scope_keys(cfg):
    """Drop the ``_scope_='mmdet'`` that mmengine adds to every typed dict inherited
    through an ``mmdet::`` base."""
    if isinstance(cfg, dict):
        return {k: without_scope_keys(v) for k, v in cfg.items() if k != '_scope_'}
    if isinstance(cfg, (list, tuple)):
        return type(cfg)(without_scope_keys(v) for v in cfg)
    return cfg


@pytest.mark.parametrize('folder,backbone', [(f, b) for f in FOLDERS for b in ('r50', 'r101')])
def test_nearest_configs_are_upstream_plus_custom_imports(folder, backbone):
    ours = load(f'{folder}/{PREFIX[folder]}_{backbone}_fpn-nearest_1x_coco.py').to_dict()
    upstream = Config.fromfile(
        str(MMDET_CONFIGS / folder / f'{PREFIX[folder]}_{backbone}_fpn_1x_coco.py')).to_dict()
    assert ours.pop('custom_imports') == dict(imports=['mmdysample'],
                                              allow_failed_imports=False)
    assert without_scope_keys(ours) == without_scope_keys(upstream)
    assert ours['model']['_scope_'] == 'mmdet'  # built in mmdet's registry scope


@pytest.mark.parametrize('relative_path', sorted(EXPECTED))
def test_full_size_model_adds_exactly_the_upsampler_parameters(relative_path):
    twin_path, upsampler = EXPECTED[relative_path]
    params, upsampler_types = meta_model_params(relative_path)
    twin_params, twin_upsamplers = meta_model_params(twin_path)
    assert twin_upsamplers is None
    per_step = UPSAMPLERS[upsampler][1]
    if per_step is not None:  # guided rows: tests/configs/test_guided_configs.py
        assert params - twin_params == NUM_TOP_DOWN_STEPS * per_step
    if UPSAMPLERS[upsampler][0] is None or 'type' not in UPSAMPLERS[upsampler][0]:
        assert upsampler_types is None  # interpolation: mmdet's FPN, no upsampler modules
    else:
        assert len(upsampler_types) == NUM_TOP_DOWN_STEPS


def test_parameter_deltas_match_the_papers_arithmetic():
    """Spelled-out numbers behind the README's explanation of the paper's Params column."""
    assert dysample_step_params('lp', 4, False) == 256 * 32 + 32 == 8224
    assert NUM_TOP_DOWN_STEPS * 8224 == 24_672  # DySample in our 3-step FPN, with biases
    # the paper counts weights only: 8192 per step; 3 steps = 24.6K (Table 8), 4 = 32.7K
    # (Table 6: its Faster R-CNN FPN had four upsampling stages)
    assert 3 * 256 * 32 == 24_576 and 4 * 256 * 32 == 32_768


def markdown_cells(line):
    return [cell.strip() for cell in line.strip().strip('|').split('|')]


def test_readme_parameter_columns_match_the_formulas():
    """The 'Params added here (exact)' column of each README table equals the formula
    (which test_full_size_model_adds_exactly_the_upsampler_parameters checks on the
    built models)."""
    for folder in FOLDERS:
        column, checked = None, 0
        for line in (CONFIGS / folder / 'README.md').read_text().splitlines():
            if not line.startswith('|'):
                column = None
                continue
            cells = markdown_cells(line)
            if 'Params added here (exact)' in cells:
                column = cells.index('Params added here (exact)')
                continue
            link = re.search(r'\]\(([^)]+\.py)\)', line)
            if column is None or link is None:
                continue
            _, upsampler = EXPECTED[f'{folder}/{link.group(1)}']
            checked += 1
            if UPSAMPLERS[upsampler][1] is None:  # guided: test_guided_configs.py
                continue
            documented = int(cells[column].lstrip('+').replace(',', ''))
            assert documented == NUM_TOP_DOWN_STEPS * UPSAMPLERS[upsampler][1], line
        # every non-guided config (the guided rows are in tables of their own, checked in
        # test_guided_configs.py); 3 ablation rows repeat Table 6
        assert checked == sum(1 for p, (_, token) in EXPECTED.items()
                              if p.startswith(folder + '/') and token not in GUIDED) + (
            3 if folder == 'faster_rcnn' else 0), folder


def test_metafiles_list_every_config_with_paper_results():
    for folder in FOLDERS:
        meta = yaml.safe_load((CONFIGS / folder / 'metafile.yml').read_text())
        collections = {c['Name'] for c in meta['Collections']}
        configs = [m['Config'] for m in meta['Models']]
        assert sorted(configs) == sorted(f'configs/{p}' for p in EXPECTED
                                         if p.startswith(folder + '/'))
        for model in meta['Models']:
            assert model['In Collection'] in collections
            assert model['Name'] == Path(model['Config']).stem
            assert (REPO / model['Config']).is_file()
            source = model['Metadata']['Results Source']
            if 'Results' in model:
                assert source.startswith('paper-reported')
                for result in model['Results']:
                    assert result['Dataset'] == 'COCO'
                    assert all(0 < v < 100 for v in result['Metrics'].values())
            else:
                assert source.startswith('none')


def test_top_level_config_builds_for_real_like_on_meta():
    """The meta-device builds above count what a real build allocates. (The top-level
    config also trains and evaluates for real in tests/mmdet/test_mmdet_tools.py, shrunk.)"""
    from mmdet.registry import MODELS
    model = MODELS.build(copy.deepcopy(load(TOP_LEVEL).model))  # ImageNet weights not loaded
    assert sum(p.numel() for p in model.parameters()) == meta_model_params(TOP_LEVEL)[0]
    assert [type(u).__name__ for u in model.neck.upsamplers] == ['DySample'] * 3
    assert all(p.device.type == 'cpu' for p in model.parameters())


# README column header -> metafile metric name
README_METRIC_COLUMNS = {
    'AP': 'box AP', 'AP (paper)': 'box AP', 'box AP': 'box AP', 'mask AP': 'mask AP',
    'PQ': 'PQ', 'PQ<sup>th</sup>': 'PQ_th', 'PQ<sup>st</sup>': 'PQ_st', 'SQ': 'SQ', 'RQ': 'RQ',
}


def readme_rows(folder):
    """(header cells, row cells, config file name) for every README table row with a link."""
    header = None
    for line in (CONFIGS / folder / 'README.md').read_text().splitlines():
        if not line.startswith('|'):
            header = None
            continue
        cells = markdown_cells(line)
        if header is None:
            header = cells
            continue
        link = re.search(r'\]\(([^)]+\.py)\)', line)
        if link:
            assert len(cells) == len(header), line
            yield header, cells, link.group(1)


@pytest.mark.parametrize('folder', FOLDERS)
def test_readme_and_metafile_give_the_same_paper_numbers(folder):
    meta = yaml.safe_load((CONFIGS / folder / 'metafile.yml').read_text())
    metrics = {}
    for model in meta['Models']:
        metrics[Path(model['Config']).name] = {
            name: value for result in model.get('Results', [])
            for name, value in result['Metrics'].items()}
    rows = 0
    for header, cells, config in readme_rows(folder):
        row = dict(zip(header, cells))
        documented = {}
        for column, metric in README_METRIC_COLUMNS.items():
            if column in row and re.fullmatch(r'\d+\.\d', row[column]):
                documented[metric] = float(row[column])
        # the first value columns of each table (AP50... are not in the metafiles)
        assert documented == {k: v for k, v in metrics[config].items() if k in documented}
        assert set(documented) == set(metrics[config]), (config, documented)
        ours = [c for h, c in row.items() if h.startswith('Ours')]
        assert ours == [''], f'{config}: the "Ours" column stays empty until a COCO run'
        rows += 1
    assert rows >= len([p for p in EXPECTED if p.startswith(folder + '/')])


@pytest.mark.parametrize('relative_path', [
    'faster_rcnn/faster-rcnn_r50_fpn-nearest_1x_coco.py',
    'faster_rcnn/faster-rcnn_r50_fpn-bilinear_1x_coco.py',
])
def test_interpolation_configs_neck_is_mmdet_fpn_bit_for_bit(relative_path):
    """The full-size neck these configs build loads mmdet's own FPN's state dict strictly
    and gives bit-identical outputs (odd-sized pyramid of an unpadded 50x75 image)."""
    from mmdet.models.necks.fpn import FPN as MMDetFPN
    from mmdet.registry import MODELS
    neck_cfg = copy.deepcopy(load(relative_path).model.neck)
    ours = MODELS.build(neck_cfg).eval()
    assert type(ours) is UpsamplerFPN and ours.upsamplers is None
    neck_cfg.pop('type')
    neck_cfg.pop('_scope_', None)
    upstream = MMDetFPN(**neck_cfg).eval()
    ours.load_state_dict(upstream.state_dict(), strict=True)
    assert list(ours.state_dict()) == list(upstream.state_dict())
    generator = torch.Generator().manual_seed(0)
    inputs = tuple(torch.randn(1, c, h, w, generator=generator) for c, (h, w) in
                   zip([256, 512, 1024, 2048], [(25, 38), (13, 19), (7, 10), (4, 5)]))
    with torch.no_grad(), torch.backends.mkldnn.flags(enabled=False):
        for expected, got in zip(upstream(inputs), ours(inputs)):
            assert torch.equal(expected, got)


# ---------------------------------------------------------------------------------------
# The families beyond the paper's tables (issue 14): RTMDet-s, YOLOX-s, Mask R-CNN with
# DySample in the FPN and the mask head, Mask2Former R50 (COCO panoptic, ADE20K).
# ---------------------------------------------------------------------------------------
def lp_dysample_params(channels, groups=4, s=2):
    """Default DySample (LP, 4 groups, static scope): a 1x1 conv C -> 2*g*s^2, with bias."""
    return conv_params(channels, 2 * groups * s * s)


NEW_FOLDERS = ('rtmdet', 'yolox', 'mask2former')
MASK_HEAD_CONFIG = 'mask_rcnn/mask-rcnn_r50_fpn-dysample-lpg4-mask-head-dysample-lpg4_1x_coco.py'
# DySample config -> (baseline config, {module path: channels of each upsampler}, delta)
NEW_FAMILIES = {
    'rtmdet/rtmdet_cspnext-s_pafpn-dysample-lpg4_8xb32-300e_coco.py': (
        'rtmdet/rtmdet_cspnext-s_pafpn-nearest_8xb32-300e_coco.py',
        {'neck.upsamplers': [128, 256]}, lp_dysample_params(128) + lp_dysample_params(256)),
    'yolox/yolox_csp-darknet-s_pafpn-dysample-lpg4_8xb8-300e_coco.py': (
        'yolox/yolox_csp-darknet-s_pafpn-nearest_8xb8-300e_coco.py',
        {'neck.upsamplers': [128, 256]}, lp_dysample_params(128) + lp_dysample_params(256)),
    MASK_HEAD_CONFIG: (
        'mask_rcnn/mask-rcnn_r50_fpn-nearest_1x_coco.py',
        {'neck.upsamplers': [256] * 3, 'roi_head.mask_head.upsamplers': [256]},
        # 4 DySamples; the mask head loses its 2x2 deconvolution 256 -> 256
        4 * lp_dysample_params(256) - conv_params(256, 256, 2)),
    'mask2former/mask2former_r50_msdeformattn-dysample-lpg4_8xb2-lsj-50e_coco-panoptic.py': (
        'mask2former/mask2former_r50_msdeformattn-bilinear_8xb2-lsj-50e_coco-panoptic.py',
        {'panoptic_head.pixel_decoder.upsamplers': [256]}, lp_dysample_params(256)),
    'mask2former/mask2former_r50_msdeformattn-dysample-lpg4_8xb2-160k_ade20k-512x512.py': (
        'mask2former/mask2former_r50_msdeformattn-bilinear_8xb2-160k_ade20k-512x512.py',
        {'decode_head.pixel_decoder.upsamplers': [256]}, lp_dysample_params(256)),
}
# baseline config -> the upstream config it restates (plus custom_imports)
NEW_BASELINES = {
    'rtmdet/rtmdet_cspnext-s_pafpn-nearest_8xb32-300e_coco.py':
    'mmdet::rtmdet/rtmdet_s_8xb32-300e_coco.py',
    'yolox/yolox_csp-darknet-s_pafpn-nearest_8xb8-300e_coco.py':
    'mmdet::yolox/yolox_s_8xb8-300e_coco.py',
    'mask2former/mask2former_r50_msdeformattn-bilinear_8xb2-lsj-50e_coco-panoptic.py':
    'mmdet::mask2former/mask2former_r50_8xb2-lsj-50e_coco-panoptic.py',
    'mask2former/mask2former_r50_msdeformattn-bilinear_8xb2-160k_ade20k-512x512.py':
    'mmseg::mask2former/mask2former_r50_8xb2-160k_ade20k-512x512.py',
}


def is_mmseg(relative_path):
    return 'ade20k' in relative_path


def installed_config(name):
    package, relative = name.split('::')
    root = Path(__import__(package).__file__).parent / '.mim' / 'configs'
    return Config.fromfile(str(root / relative))


def test_new_family_configs_are_expected():
    found = {str(p.relative_to(CONFIGS)) for folder in NEW_FOLDERS
             for p in (CONFIGS / folder).glob('*.py')}
    assert sorted(found) == sorted(set(NEW_FAMILIES) - {MASK_HEAD_CONFIG} | set(NEW_BASELINES))


@pytest.mark.parametrize('relative_path', sorted(NEW_BASELINES))
def test_new_baselines_are_upstream_plus_custom_imports(relative_path):
    ours = load(relative_path).to_dict()
    upstream = installed_config(NEW_BASELINES[relative_path]).to_dict()
    upstream_imports = upstream.pop('custom_imports', dict(imports=[]))['imports']
    upstream_imports = [upstream_imports] if isinstance(upstream_imports, str) else \
        upstream_imports
    assert ours.pop('custom_imports') == dict(imports=upstream_imports + ['mmdysample'],
                                              allow_failed_imports=False)
    assert without_scope_keys(ours) == without_scope_keys(upstream)


def site_cfg(cfg, module_path):
    node = cfg.model
    for key in module_path.split('.')[:-1]:
        node = node[key]
    return node


@pytest.mark.parametrize('relative_path', sorted(NEW_FAMILIES))
def test_new_dysample_configs_are_their_baseline_plus_upsample_cfg(relative_path):
    baseline, sites, _ = NEW_FAMILIES[relative_path]
    this = load(relative_path)
    twin = load(baseline).to_dict()
    edited = this.to_dict()
    for module_path in sites:
        site = site_cfg(this, module_path)
        assert site.upsample_cfg.to_dict() == dict(type='DySample'), module_path
        node = edited['model']
        for key in module_path.split('.')[:-1]:
            node = node[key]
        node.pop('upsample_cfg')
        if relative_path.startswith('yolox') or relative_path == MASK_HEAD_CONFIG and \
                'mask_head' in module_path:
            # mmdet's own upsample_cfg of the base, replaced (YOLOX writes it explicitly)
            original = installed_config('mmdet::yolox/yolox_s_8xb8-300e_coco.py').model.neck \
                if relative_path.startswith('yolox') else None
            if original is not None:
                node['upsample_cfg'] = original.upsample_cfg.to_dict()
    if relative_path == MASK_HEAD_CONFIG:
        edited['model']['neck']['upsample_cfg'] = dict(type='DySample')
        twin['model']['neck']['upsample_cfg'] = dict(type='DySample')
    assert without_scope_keys(edited) == without_scope_keys(twin)


@functools.lru_cache(maxsize=None)
def meta_build(relative_path):
    """(parameter count, {module path: [(upsampler class, in_channels)]}) of the full-size
    model, built on the meta device in its package's scope."""
    from mmengine.registry import DefaultScope
    if is_mmseg(relative_path):
        from mmseg.registry import MODELS
        from mmseg.utils import register_all_modules as register_mmseg
        register_mmseg(init_default_scope=False)
    else:
        from mmdet.registry import MODELS
    with torch.device('meta'), DefaultScope.overwrite_default_scope(
            'mmseg' if is_mmseg(relative_path) else 'mmdet'):
        model = MODELS.build(copy.deepcopy(load(relative_path).model))
    sites = {name: [(type(u).__name__, u.in_channels) for u in module]
             for name, module in model.named_modules() if name.endswith('upsamplers')
             and module is not None}
    return sum(p.numel() for p in model.parameters()), sites


@pytest.mark.parametrize('relative_path', sorted(NEW_FAMILIES))
def test_new_dysample_configs_build_at_full_size_with_exact_deltas(relative_path):
    baseline, sites, delta = NEW_FAMILIES[relative_path]
    params, built_sites = meta_build(relative_path)
    baseline_params, baseline_sites = meta_build(baseline)
    assert baseline_sites == {}
    assert built_sites == {path: [('DySample', c) for c in channels]
                           for path, channels in sites.items()}
    assert params - baseline_params == delta


def test_new_family_deltas_spelled_out():
    assert lp_dysample_params(128) + lp_dysample_params(256) == 4_128 + 8_224 == 12_352
    assert 4 * 8_224 - (256 * 256 * 4 + 256) == -229_504
