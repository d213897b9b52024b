"""build_upsampler, the registry names, the paper's variant aliases and OpenMMLab lookups."""
import copy
import re

import pytest
import torch
import torch.nn.functional as F
from mmengine.registry import MODELS, DefaultScope

from mmdysample.upsamplers import (CARAFE, Deconv, DySample, Interpolate, PixelShuffle,
                                   build_upsampler, registered_upsamplers)

PLUGIN_NAMES = ['Interpolate', 'Deconv', 'PixelShuffle', 'CARAFE', 'DySample', 'DySample+',
                'DySample-S', 'DySample-S+']

# the paper's Sec. 3.2 variants, as README documents them
PAPER_VARIANTS = {
    'DySample': dict(style='lp', groups=4, dyscope=False),
    'DySample+': dict(style='lp', groups=4, dyscope=True),
    'DySample-S': dict(style='pl', groups=8, dyscope=False),
    'DySample-S+': dict(style='pl', groups=8, dyscope=True),
}


def test_every_plugin_name_is_registered_in_the_root_registry():
    names = registered_upsamplers()
    for name in PLUGIN_NAMES:
        assert name in names
        assert MODELS.get(name) is not None
    assert len(set(names)) == len(names)
    # a copy: callers cannot corrupt the list
    names.append('Bogus')
    assert 'Bogus' not in registered_upsamplers()


@pytest.mark.parametrize('cfg, reference', [
    (dict(mode='nearest'), lambda x, s: F.interpolate(x, scale_factor=s, mode='nearest')),
    (None, lambda x, s: F.interpolate(x, scale_factor=s, mode='nearest')),
    (dict(mode='bilinear', align_corners=False),
     lambda x, s: F.interpolate(x, scale_factor=s, mode='bilinear', align_corners=False)),
    (dict(mode='bilinear', align_corners=True),
     lambda x, s: F.interpolate(x, scale_factor=s, mode='bilinear', align_corners=True)),
    (dict(mode='nearest', scale_factor=3),  # mmdet's FPN cfg style, agreeing with the caller
     lambda x, s: F.interpolate(x, scale_factor=s, mode='nearest')),
])
def test_interpolation_cfg_without_type_is_parameter_free(cfg, reference):
    layer = build_upsampler(cfg, 8, 3)
    assert type(layer) is Interpolate
    assert not list(layer.parameters()) and not layer.state_dict()
    x = torch.randn(2, 8, 5, 7)
    assert torch.equal(layer(x), reference(x, 3))


@pytest.mark.parametrize('name', PLUGIN_NAMES)
@pytest.mark.parametrize('scale', [2, 3, 4])
def test_every_registered_name_builds_and_upsamples(name, scale):
    layer = build_upsampler(dict(type=name), 144, scale)
    assert layer.scale_factor == scale
    assert layer.requires_guide is False
    if any(True for _ in layer.parameters()):  # learned layers re-initialise themselves
        assert callable(getattr(layer, 'init_weights', None))
    out = layer(torch.randn(1, 144, 3, 5))
    assert out.shape == (1, 144, 3 * scale, 5 * scale)


@pytest.mark.parametrize('name, expected', list(PAPER_VARIANTS.items()))
def test_aliases_have_the_papers_kwargs(name, expected):
    layer = build_upsampler(dict(type=name), 64, 2)
    assert isinstance(layer, DySample)
    for key, value in expected.items():
        assert getattr(layer, key) == value, key
    assert (layer.init, layer.scope_factor) == ('bilinear', 0.25)
    # ... and are the same layer as the explicit kwargs: same keys, shapes, outputs
    explicit = DySample(64, 2, **expected)
    assert {k: v.shape for k, v in layer.state_dict().items()} == \
        {k: v.shape for k, v in explicit.state_dict().items()}
    explicit.load_state_dict(layer.state_dict(), strict=True)
    x = torch.randn(1, 64, 4, 4)
    torch.testing.assert_close(layer(x), explicit(x), atol=0, rtol=0)


def test_explicit_kwargs_override_alias_defaults():
    layer = build_upsampler(dict(type='DySample-S+', groups=4, scope_factor=0.5), 64, 2)
    assert (layer.style, layer.groups, layer.dyscope, layer.scope_factor) == \
        ('pl', 4, True, 0.5)
    layer = build_upsampler(dict(type='DySample+', style='pl'), 64, 2)
    assert (layer.style, layer.groups, layer.dyscope) == ('pl', 8, True)
    layer = build_upsampler(dict(type='DySample-S', dyscope=True, init='nearest'), 64, 4)
    assert (layer.style, layer.dyscope, layer.init, layer.scale_factor) == \
        ('pl', True, 'nearest', 4)


@pytest.mark.parametrize('cls, kwargs', [
    (DySample, dict(style='pl', dyscope=True)),
    (CARAFE, dict(up_group=2)),
    (Deconv, dict()),
    (PixelShuffle, dict()),
])
def test_type_given_as_a_class(cls, kwargs):
    layer = build_upsampler(dict(type=cls, **kwargs), 16, 2)
    assert type(layer) is cls
    assert layer(torch.randn(1, 16, 3, 3)).shape == (1, 16, 6, 6)


def test_build_does_not_mutate_the_cfg():
    cfg = dict(type='DySample', style='pl', in_channels=16, scale_factor=2)
    frozen = copy.deepcopy(cfg)
    build_upsampler(cfg, 16, 2)
    build_upsampler(cfg, 16, 2)
    assert cfg == frozen


def test_cfg_keys_agreeing_with_the_caller_are_accepted():
    layer = build_upsampler(dict(type='DySample', in_channels=16, scale_factor=2), 16, 2)
    assert (layer.in_channels, layer.scale_factor) == (16, 2)


@pytest.mark.parametrize('cfg, in_channels, scale, exc, pattern', [
    (dict(type='Bilinear'), 8, 2, ValueError,
     r"unknown upsampler type 'Bilinear'; registered upsamplers: .*DySample-S\+"),
    (dict(type=7), 8, 2, ValueError, r"unknown upsampler type 7; registered upsamplers"),
    (dict(type='DySample', in_channels=16), 8, 2, ValueError,
     r'the upsample cfg must not set in_channels: the neck or head sets it '
     r'\(here in_channels=8\)'),
    (dict(type='DySample', scale_factor=4), 8, 2, ValueError,
     r'the upsample cfg must not set scale_factor: .* \(here scale_factor=2\)'),
    (dict(mode='nearest', scale_factor=2.5), 8, 2, ValueError, r'must not set scale_factor'),
    ('DySample', 8, 2, TypeError, r'upsample cfg must be a dict, got str'),
    (dict(type='DySample'), 0, 2, ValueError, r'in_channels must be a positive integer, got 0'),
    (dict(type='DySample'), 8.0, 2, ValueError, r'in_channels must be a positive integer'),
    (dict(type='DySample'), 8, 1.5, ValueError, r'scale_factor must be an integer >= 2'),
    (dict(type='DySample'), 8, True, TypeError, r'scale_factor must be an integer >= 2'),
    (dict(type='DySample', style='xl'), 8, 2, ValueError, r"style must be one of"),
    (dict(mode='trilinear'), 8, 2, ValueError, r"mode must be one of"),
])
def test_builder_rejects_bad_cfgs(cfg, in_channels, scale, exc, pattern):
    with pytest.raises(exc, match=pattern):
        build_upsampler(cfg, in_channels, scale)


def test_unknown_type_lists_every_registered_upsampler():
    with pytest.raises(ValueError) as info:
        build_upsampler(dict(type='Nearest'), 8, 2)
    for name in registered_upsamplers():
        assert name in str(info.value)
    assert "dict(mode='nearest')" in str(info.value)
    assert 'did you mean' not in str(info.value)  # nothing registered is close to it


@pytest.mark.parametrize('typo, meant', [
    ('DySampel', "'DySample'"),
    ('dysample', "'DySample'"),  # case-insensitive: the exact name alone
    ('DYSAMPLE-S+', "'DySample-S+'"),
    ('dysample_s', "'DySample-S', 'DySample' or 'DySample-S+'"),  # closest first
    ('carafe', "'CARAFE'"),
    ('Sapa-b', "'SAPA-B'"),
    ('Indexnet', "'IndexNet'"),
    ('PixelShufle', "'PixelShuffle'"),
])
def test_unknown_type_suggests_the_close_registered_names(typo, meant):
    with pytest.raises(ValueError, match=rf"unknown upsampler type '{re.escape(typo)}' "
                                         rf"\(did you mean {re.escape(meant)}.*\?\); "
                                         r"registered upsamplers: Deconv, "):
        build_upsampler(dict(type=typo), 32, 2)


@pytest.mark.parametrize('name', ['FADE', 'SAPA-B', 'IndexNet', 'A2U'])
def test_guided_type_built_directly_needs_guide_channels(name):
    with pytest.raises(ValueError, match=rf"'{re.escape(name)}' is a guided upsampler: .*"
                                         r"built directly, it needs guide_channels= \(the "
                                         r"channels of that guide\), e\.g\. build_upsampler"
                                         rf"\(dict\(type='{re.escape(name)}'\), "
                                         r"in_channels=64, guide_channels=\.\.\.\)"):
        build_upsampler(dict(type=name), in_channels=64)
    for layer in (build_upsampler(dict(type=name), 64, guide_channels=32),
                  build_upsampler(dict(type=name, guide_channels=32), 64)):
        assert layer.guide_channels == 32
        assert layer(torch.randn(1, 64, 3, 4), torch.randn(1, 32, 6, 8)).shape == (1, 64, 6, 8)


def test_guided_type_at_a_site_takes_the_sites_guide_channels():
    assert build_upsampler(dict(type='FADE', guide_channels=32), 64, guide_channels=32,
                           where='FPN step 0').guide_channels == 32
    with pytest.raises(ValueError, match=r'must not set guide_channels: FPN step 0 sets it '
                                         r'\(here guide_channels=64\)'):
        build_upsampler(dict(type='FADE', guide_channels=32), 64, guide_channels=64,
                        where='FPN step 0')
    # a site without a guide: the cfg cannot give it one
    with pytest.raises(ValueError, match="'FADE' is a guided upsampler .*but FCNMaskHead has "
                                         'no such feature'):
        build_upsampler(dict(type='FADE', guide_channels=32), 64, where='FCNMaskHead')


# ------------------------------------------------------------ OpenMMLab lookups

def test_root_registry_builds_dysample():
    layer = MODELS.build(dict(type='DySample', in_channels=64))
    assert layer(torch.randn(1, 64, 8, 8)).shape == (1, 64, 16, 16)


def test_mmcv_build_upsample_layer_finds_the_plugin():
    from mmcv.cnn import build_upsample_layer
    layer = build_upsample_layer(dict(type='DySample', in_channels=8))
    assert type(layer) is DySample and layer.in_channels == 8
    layer = build_upsample_layer(dict(type='DySample-S+', scale_factor=2), 16)
    assert (layer.style, layer.dyscope, layer.in_channels) == ('pl', True, 16)
    assert type(build_upsample_layer(dict(type='CARAFE', in_channels=8))) is CARAFE


@pytest.mark.parametrize('package', ['mmdet', 'mmseg'])
def test_downstream_registries_find_the_plugin(package):
    registry_module = pytest.importorskip(f'{package}.registry')
    utils = pytest.importorskip(f'{package}.utils')
    utils.register_all_modules(init_default_scope=False)
    downstream = registry_module.MODELS
    for name in PLUGIN_NAMES:
        layer = downstream.build(dict(type=name, in_channels=16))
        assert layer(torch.randn(1, 16, 2, 3)).shape == (1, 16, 4, 6)
    # and from the root registry while the package's scope is the default one
    with DefaultScope.overwrite_default_scope(package):
        layer = MODELS.build(dict(type='DySample-S', in_channels=16))
        assert (layer.style, layer.groups) == ('pl', 8)


@pytest.mark.parametrize('name', ['DySample', 'DySample-S+', 'CARAFE', 'Deconv'])
def test_type_merged_with_an_interpolation_mode_names_the_fix(name):
    """A base config's dict(mode='nearest') merged with the user's dict(type=...) must not
    reach the layer as an unexpected keyword: the error says how to replace the base cfg."""
    with pytest.raises(ValueError, match=rf"both type='{re.escape(name)}' and the "
                                         rf"interpolation key 'mode'.*_delete_=True"):
        build_upsampler(dict(mode='nearest', type=name), 16, 2)
    assert build_upsampler(dict(type='Interpolate', mode='bilinear'), 16, 2).mode == 'bilinear'


@pytest.mark.parametrize('name', registered_upsamplers())
def test_every_upsampler_takes_channels_last_inputs(name):
    """A channels_last feature (what oneDNN convolutions hand on) and guide: the same output
    and gradients (input, guide, parameters) as the NCHW tensors, float64."""
    guided = getattr(MODELS.get(name), 'requires_guide', False)
    layer = build_upsampler(dict(type=name), 64, 2, **(dict(guide_channels=32) if guided else {}))
    layer = layer.double()
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(2, 64, 9, 11, generator=generator, dtype=torch.float64)
    guide = torch.randn(2, 32, 18, 22, generator=generator, dtype=torch.float64)
    results = []
    for layout in (torch.contiguous_format, torch.channels_last):
        inputs = [t.clone(memory_format=layout).requires_grad_() for t in (x, guide)]
        layer.zero_grad(set_to_none=True)
        out = layer(*inputs) if guided else layer(inputs[0])
        out.backward(torch.cos(out.detach()))
        results.append([out.detach(), inputs[0].grad, inputs[1].grad] +
                       [p.grad for p in layer.parameters()])
    for nchw, channels_last in zip(*results):
        if nchw is None:
            assert channels_last is None
        else:
            torch.testing.assert_close(channels_last, nchw, rtol=1e-10, atol=1e-10)
