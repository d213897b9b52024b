"""What upstream code and users may rely on, for every module the mmdet integration patches:
upstream's signatures, upstream's exact-type checks, and pure-Python (lazy-import) configs."""
import os
import re

import pytest
import torch
from mmdet.models.layers import ConvUpsample as UpstreamConvUpsample
from mmdet.models.layers.msdeformattn_pixel_decoder import \
    MSDeformAttnPixelDecoder as UpstreamMSDeformAttnPixelDecoder
from mmdet.models.layers.pixel_decoder import PixelDecoder as UpstreamPixelDecoder
from mmdet.models.necks.cspnext_pafpn import CSPNeXtPAFPN as UpstreamCSPNeXtPAFPN
from mmdet.models.necks.fpn import FPN as UpstreamFPN
from mmdet.models.necks.yolox_pafpn import YOLOXPAFPN as UpstreamYOLOXPAFPN
from mmdet.models.roi_heads.mask_heads.fcn_mask_head import FCNMaskHead as UpstreamFCNMaskHead
from mmdet.models.seg_heads import PanopticFPNHead as UpstreamPanopticFPNHead
from mmdet.registry import MODELS as MMDET_MODELS
from mmengine.config import Config

import mmdysample  # noqa: F401
from mmdet_site_testing import assert_upstream_signature
from mmdysample import mmdet as integration

# (our class, upstream class, new keyword-only parameters, registered name or None)
PATCHED = [
    (integration.UpsamplerFPN, UpstreamFPN, [], 'FPN'),
    (integration.UpsamplerPanopticFPNHead, UpstreamPanopticFPNHead, ['upsample_cfg'],
     'PanopticFPNHead'),
    (integration.UpsamplerConvUpsample, UpstreamConvUpsample, ['upsample_cfg'], None),
    (integration.CSPNeXtPAFPN, UpstreamCSPNeXtPAFPN, [], 'CSPNeXtPAFPN'),
    (integration.YOLOXPAFPN, UpstreamYOLOXPAFPN, [], 'YOLOXPAFPN'),
    (integration.FCNMaskHead, UpstreamFCNMaskHead, [], 'FCNMaskHead'),
    (integration.PixelDecoder, UpstreamPixelDecoder, ['upsample_cfg'], 'PixelDecoder'),
    (integration.MSDeformAttnPixelDecoder, UpstreamMSDeformAttnPixelDecoder, ['upsample_cfg'],
     'MSDeformAttnPixelDecoder'),
]


@pytest.mark.parametrize('ours, upstream, new, name', PATCHED,
                         ids=[p[0].__name__ for p in PATCHED])
def test_signature_and_registration(ours, upstream, new, name):
    assert issubclass(ours, upstream)
    assert_upstream_signature(ours, upstream, new)
    if name is not None:
        assert MMDET_MODELS.get(name) is ours


def upstream_sources():
    import mmdet
    import mmseg
    for package in (mmdet, mmseg):
        root = os.path.dirname(package.__file__)
        for folder, _, files in os.walk(root):
            if '.mim' in folder:
                continue
            for file in files:
                if file.endswith('.py'):
                    path = os.path.join(folder, file)
                    with open(path, encoding='utf-8') as f:
                        yield os.path.relpath(path, os.path.dirname(root)), f.read()


def test_the_only_upstream_type_check_on_a_patched_class_is_maskformers():
    """Every ``type(x) is/== C``, ``isinstance(x, C)`` or ``__name__ == 'C'`` in installed
    mmdet/mmseg against a class we patch. The one found (MaskFormerHead's exact-type check
    on PixelDecoder) is tested in test_pixel_decoder.py for the decoder named as a string,
    the upstream class and ours; a new one in a future upstream release fails here."""
    names = '|'.join(sorted({p[1].__name__ for p in PATCHED}))
    check = re.compile(
        rf'(type\([^()]*\)\s*(?:is not|is|==|!=)\s*(?:{names})\b)|'
        rf'(isinstance\([^,]+,\s*\(?[^)]*\b(?:{names})\b)|'
        rf"(__name__\s*(?:==|!=|in)\s*[\[(]?['\"](?:{names})['\"])")
    found = sorted((path, match.group(0)) for path, text in upstream_sources()
                   for match in check.finditer(text))
    assert found == [('mmdet/models/dense_heads/maskformer_head.py',
                      'type(self.pixel_decoder) == PixelDecoder')]


PURE_PYTHON_UPSTREAM = '''
from mmdet.models.layers.pixel_decoder import PixelDecoder
from mmdet.models.necks.fpn import FPN

neck = dict(type=FPN, in_channels=[8, 16, 24, 32], out_channels=16, num_outs=5)
decoder = dict(type=PixelDecoder, in_channels=[8, 16, 24, 32], feat_channels=16,
               out_channels=16, norm_cfg=dict(type='GN', num_groups=4))
'''

PURE_PYTHON_PLUGIN = '''
from mmdysample.mmdet import PixelDecoder, UpsamplerFPN
from mmdysample.upsamplers import DySample

neck = dict(type=UpsamplerFPN, in_channels=[8, 16, 24, 32], out_channels=16, num_outs=5,
            upsample_cfg=dict(type=DySample, groups=2))
decoder = dict(type=PixelDecoder, in_channels=[8, 16, 24, 32], feat_channels=16,
               out_channels=16, norm_cfg=dict(type='GN', num_groups=4),
               upsample_cfg=dict(type='DySample', groups=2))
'''


def load_pure_python(tmp_path, text):
    path = tmp_path / 'pure_python_cfg.py'
    path.write_text(text)
    return Config.fromfile(str(path))  # lazy-import style: the types stay class objects


def test_pure_python_config_naming_upstream_classes_builds_upstream_modules(tmp_path):
    cfg = load_pure_python(tmp_path, PURE_PYTHON_UPSTREAM)
    neck, decoder = MMDET_MODELS.build(cfg.neck), MMDET_MODELS.build(cfg.decoder)
    assert type(neck) is UpstreamFPN and type(decoder) is UpstreamPixelDecoder


def test_pure_python_config_with_plugin_classes_gets_dysample(tmp_path):
    from mmdysample.upsamplers import DySample
    cfg = load_pure_python(tmp_path, PURE_PYTHON_PLUGIN)
    neck, decoder = MMDET_MODELS.build(cfg.neck), MMDET_MODELS.build(cfg.decoder)
    assert type(neck) is integration.UpsamplerFPN
    assert [type(u) for u in neck.upsamplers] == [DySample] * 3
    assert type(decoder) is integration.PixelDecoder and len(decoder.upsamplers) == 3
    feats = [torch.randn(1, c, 32 // 2**i, 32 // 2**i) for i, c in enumerate([8, 16, 24, 32])]
    assert neck(tuple(feats))[0].shape == (1, 16, 32, 32)
