"""Issue 19 for the mmseg modules: the patched classes stay upstream's under every way they
can be built (positional arguments, class objects in pure-Python configs) and for every
check upstream code makes against them."""
import copy
import functools
import inspect
import re
from pathlib import Path

import mmdet
import mmseg
import pytest
import torch
from mmengine.config import Config
from mmseg.models.decode_heads.fpn_head import FPNHead as UpstreamFPNHead
from mmseg.models.decode_heads.maskformer_head import MaskFormerHead
from mmseg.models.decode_heads.segformer_head import SegformerHead as UpstreamSegformerHead
from mmseg.models.decode_heads.sep_aspp_head import \
    DepthwiseSeparableASPPHead as UpstreamASPPHead
from mmseg.models.decode_heads.uper_head import UPerHead as UpstreamUPerHead
from mmseg.models.necks.fpn import FPN as UpstreamFPN
from mmseg.registry import MODELS
from mmseg.structures import SegDataSample

import mmdysample  # noqa: F401
from mmdysample.mmseg import (FPN, DepthwiseSeparableASPPHead, FPNHead, SegformerHead,
                              UPerHead)
from mmdysample.upsamplers import DySample

PAIRS = {
    'SegformerHead': (SegformerHead, UpstreamSegformerHead),
    'UPerHead': (UPerHead, UpstreamUPerHead),
    'DepthwiseSeparableASPPHead': (DepthwiseSeparableASPPHead, UpstreamASPPHead),
    'FPN': (FPN, UpstreamFPN),
    'FPNHead': (FPNHead, UpstreamFPNHead),
}
# what each subclass adds; the FPN neck already takes upstream's upsample_cfg
NEW_KEYWORD_ONLY = {'SegformerHead': ['upsample_cfg'], 'UPerHead': ['upsample_cfg'],
                    'DepthwiseSeparableASPPHead': ['upsample_cfg'], 'FPN': [],
                    'FPNHead': ['upsample_cfg']}
SIGNATURE_PAIRS = PAIRS


@pytest.mark.parametrize('name', list(SIGNATURE_PAIRS))
def test_signature_is_upstream_then_new_keyword_only_parameters(name):
    ours, upstream = (list(inspect.signature(cls.__init__).parameters.values())
                      for cls in SIGNATURE_PAIRS[name])
    var_keyword = [p for p in upstream if p.kind is p.VAR_KEYWORD]
    fixed = [p for p in upstream if p.kind is not p.VAR_KEYWORD]
    # upstream's parameters, same names, kinds, defaults and order, first
    assert ours[:len(fixed)] == fixed
    added = ours[len(fixed):len(ours) - len(var_keyword)]
    assert [p.name for p in added] == NEW_KEYWORD_ONLY[name]
    assert all(p.kind is p.KEYWORD_ONLY and p.default is None for p in added)
    assert ours[len(ours) - len(var_keyword):] == var_keyword  # **kwargs last, as upstream


HEAD = dict(channels=16, num_classes=3, norm_cfg=dict(type='BN'))


def positional_builds():
    """(name, positional args, keyword args) as a user could call the upstream class."""
    return {
        'SegformerHead': (('bilinear', ), dict(in_channels=[8, 16], in_index=[0, 1], **HEAD)),
        'UPerHead': (((1, 2), ), dict(in_channels=[8, 16], in_index=[0, 1], **HEAD)),
        'DepthwiseSeparableASPPHead': ((8, 4), dict(in_channels=16, in_index=1,
                                                    dilations=(1, 2), **HEAD)),
        'FPNHead': (([4, 8], ), dict(in_channels=[8, 16], in_index=[0, 1], **HEAD)),
        # every one of upstream's 14 parameters positionally, upsample_cfg 13th
        'FPN': (([8, 16], 16, 3, 0, -1, 'on_output', False, True, False, None,
                 dict(type='BN'), None, dict(mode='bilinear', align_corners=False), None), {}),
    }


@pytest.mark.parametrize('name', list(PAIRS))
def test_positional_arguments_mean_what_they_mean_upstream(name):
    args, kwargs = positional_builds()[name]
    ours_cls, upstream_cls = PAIRS[name]
    torch.manual_seed(0)
    upstream = upstream_cls(*args, **kwargs).eval()
    torch.manual_seed(0)
    ours = ours_cls(*args, **kwargs).eval()
    assert ours.upsamplers is None
    assert repr(ours) == repr(upstream)
    feats = [torch.randn(1, 8, 13, 11), torch.randn(1, 16, 7, 6)]
    with torch.no_grad():
        got, expected = ours(feats), upstream(feats)
    for a, b in zip(got if isinstance(got, tuple) else [got],
                    expected if isinstance(expected, tuple) else [expected], strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize('name', list(SIGNATURE_PAIRS))
def test_upstream_isinstance_checks_still_hold(name):
    ours_cls, upstream_cls = SIGNATURE_PAIRS[name]
    assert issubclass(ours_cls, upstream_cls) and ours_cls.__name__ == upstream_cls.__name__
    assert MODELS.get(name) is ours_cls


# type(x) is / == Name, x.__class__ is / == Name, isinstance(x, Name), issubclass(x, Name),
# also through a module attribute (heads.UPerHead) or a tuple of classes
CHECK = re.compile(r'(?:\btype\([^()]*\)|\.__class__)\s*(?:is|==|!=|is not)\s*[\w.]*\b({names})\b'
                   r'|\b(?:isinstance|issubclass)\([^()]*?\b({names})\b')


@pytest.mark.slow
def test_no_upstream_code_checks_the_exact_type_of_a_patched_class():
    """Grep installed mmseg and mmdet (mmpretrain imports neither) for exact-type or isinstance checks against
    the classes the mmseg integration patches. None exists today (mmdet's MaskFormerHead
    checks PixelDecoder, the mmdet integration's business); a future upstream version that
    adds one fails here, and its behaviour must then be tested with the plugin's class."""
    names = '|'.join(PAIRS)
    pattern = re.compile(CHECK.pattern.format(names=names))
    found = []
    for package in (mmseg, mmdet):
        root = Path(package.__file__).parent
        for path in root.rglob('*.py'):
            if '.mim' in path.parts or 'configs' in path.parts:
                continue
            text = path.read_text(errors='ignore')
            if not pattern.search(text):
                continue
            for number, line in enumerate(text.splitlines(), 1):
                if pattern.search(line):
                    found.append(f'{path.relative_to(root.parent)}:{number}: {line.strip()}')
    assert found == []
    # the pattern does find such checks (mmdet's for its pixel decoder)
    assert re.compile(CHECK.pattern.format(names='PixelDecoder')).search(
        'if type(self.pixel_decoder) == PixelDecoder and (')


def lazy_config(tmp_path, body):
    path = tmp_path / 'pure_python_config.py'
    path.write_text(body)
    cfg = Config.fromfile(path)
    assert Config._is_lazy_import(str(path))  # mmengine's new (pure-Python) config style
    return cfg


HEAD_CFG = ('model = dict(type={cls}, in_channels=[8, 16, 24, 32], in_index=[0, 1, 2, 3], '
            "pool_scales=(1, 2), channels=16, num_classes=3, norm_cfg=dict(type='BN'){extra})\n")


def test_pure_python_config_naming_the_upstream_class_builds_the_upstream_class(tmp_path):
    cfg = lazy_config(tmp_path, 'from mmseg.models.decode_heads import UPerHead\n' + HEAD_CFG.format(cls='UPerHead', extra=''))
    head = MODELS.build(cfg.model)
    assert type(head) is UpstreamUPerHead  # unchanged by the plugin, as without it
    assert sum(p.numel() for p in head.parameters()) == sum(
        p.numel() for p in UpstreamUPerHead(**{k: v for k, v in cfg.model.items()
                                                if k != 'type'}).parameters())


def test_pure_python_config_puts_dysample_in_with_the_plugin_classes(tmp_path):
    # what the docs show for mmengine's pure-Python configs: import the plugin's class (same
    # name as upstream's) and the upsampler class, or give the upsampler by its name
    cfg = lazy_config(tmp_path, 'from mmdysample.mmseg import UPerHead\n'
                      'from mmdysample.upsamplers import DySample\n' + HEAD_CFG.format(cls='UPerHead', extra=', upsample_cfg=dict(type=DySample)'))
    head = MODELS.build(cfg.model)
    assert type(head) is UPerHead and len(head.upsamplers) == 9
    assert all(type(up) is DySample for up in head.upsamplers)
    out = head.eval()([torch.randn(1, c, 32 // 2**i, 24 // 2**i)
                       for i, c in enumerate([8, 16, 24, 32])])
    assert out.shape == (1, 3, 32, 24)


@functools.lru_cache(maxsize=None)
def maskformer_config():
    return Config.fromfile(
        Path(__file__).resolve().parents[2] / 'configs' / 'maskformer' /
        'maskformer_swin-b-in22k-384x384-pre_fpn-nearest_8xb2-160k_ade20k-640x640.py')


def tiny_maskformer_head_cfg():
    """The decode head of the repository's MaskFormer config, shrunk (as test_tiny_models)."""
    head = copy.deepcopy(maskformer_config().model.decode_head)
    head.update(in_channels=[16, 32, 64, 128], feat_channels=32, out_channels=32,
                num_classes=4, num_queries=6)
    head.pixel_decoder.norm_cfg = dict(type='GN', num_groups=8)
    head.positional_encoding.num_feats = 16
    head.transformer_decoder.num_layers = 1
    for attn in ('self_attn_cfg', 'cross_attn_cfg'):
        head.transformer_decoder.layer_cfg[attn].update(embed_dims=32, num_heads=2)
    head.transformer_decoder.layer_cfg.ffn_cfg.update(embed_dims=32, feedforward_channels=64)
    head.loss_cls.class_weight = [1.0] * 5
    return head


@pytest.mark.parametrize('decoder_type, upsample_cfg', [
    ('mmdet.PixelDecoder', None), ('upstream class', None), ('plugin class', None),
    ('mmdet.PixelDecoder', dict(type='DySample')), ('plugin class', dict(type='DySample')),
])  # (mmdet's own class takes no upsample_cfg)
def test_maskformer_input_projection_however_the_pixel_decoder_is_named(decoder_type,
                                                                       upsample_cfg):
    # mmdet's head adds decoder_input_proj only for exactly mmdet's PixelDecoder: with the
    # plugin every way of naming the decoder, learned or not, keeps it (128 -> 32 channels),
    # and mmseg's head itself is not patched (mmdysample.mmdet.PixelDecoder compares equal)
    from mmdet.models.layers.pixel_decoder import PixelDecoder as MMDetPixelDecoder

    from mmdysample.mmdet import PixelDecoder
    cfg = tiny_maskformer_head_cfg()
    cfg.pixel_decoder.type = {'mmdet.PixelDecoder': 'mmdet.PixelDecoder',
                              'upstream class': MMDetPixelDecoder,
                              'plugin class': PixelDecoder}[decoder_type]
    if upsample_cfg is not None:
        cfg.pixel_decoder.upsample_cfg = upsample_cfg
    head = MODELS.build(cfg)
    assert type(head) is MaskFormerHead
    assert type(head.pixel_decoder) == MMDetPixelDecoder  # upstream's own test holds
    if upsample_cfg is not None:
        assert type(head.pixel_decoder) is PixelDecoder
        assert len(head.pixel_decoder.upsamplers) == 3
    assert isinstance(head.decoder_input_proj, torch.nn.Conv2d)
    assert head.decoder_input_proj.weight.shape == (32, 128, 1, 1)
    feats = [torch.randn(1, c, 32 // 2**i, 24 // 2**i) for i, c in enumerate([16, 32, 64, 128])]
    with torch.no_grad():
        cls_scores, mask_preds = head.eval().forward(
            feats, [SegDataSample(metainfo=dict(batch_input_shape=(128, 96),
                                                img_shape=(128, 96)))])
    assert mask_preds[-1].shape == (1, 6, 32, 24)


def test_the_package_docstring_lists_exactly_the_names_it_re_registers():
    """mmdysample.mmseg's docstring is the list of what it registers over mmseg's names; the
    MaskFormer heads stay mmseg's own (their decoders are the mmdet integration's)."""
    import mmdysample.mmseg as integration
    from mmseg.models.decode_heads.mask2former_head import Mask2FormerHead

    patched = {name for name, cls in MODELS.module_dict.items()
               if cls.__module__.startswith('mmdysample.mmseg.')
               and not cls.__module__.startswith('mmdysample.mmseg.depth')}
    listed = set(re.findall(r"^- ``'(\w+)'``", integration.__doc__, flags=re.MULTILINE))
    assert listed == patched == set(PAIRS)
    assert MODELS.get('MaskFormerHead') is MaskFormerHead
    assert MODELS.get('Mask2FormerHead') is Mask2FormerHead
