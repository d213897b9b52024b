"""Installed upstream configs build the same modules with and without the plugin.

tests/upstream_equivalence_probe.py builds the patched module of each sampled config (one
or a few configs for every folder that uses FPN, FCNMaskHead, PanopticFPNHead,
CSPNeXtPAFPN, YOLOXPAFPN, MaskFormer's PixelDecoder/head, MSDeformAttnPixelDecoder, in mmdet
and mmseg) in two processes, a fresh interpreter that never imports mmdysample and one that
has imported it (the ``upstream_equivalence`` fixture of tests/conftest.py, shared with
tests/mmseg/test_upstream_equivalence.py). Both must give the same upstream class,
state-dict keys, shapes, dtypes and parameter names; for the modules it runs, the same
initial weights under the same seed and bit-identical outputs at an unpadded odd image size
(75x101).
"""
import pytest
import torch

# one worker builds the records the mmseg equivalence tests share
pytestmark = pytest.mark.xdist_group('upstream-equivalence')


@pytest.fixture(scope='module')
def records(upstream_equivalence):
    upstream, plugin = upstream_equivalence
    return dict(upstream=upstream['mmdet'], plugin=plugin['mmdet'])


@pytest.mark.slow
def test_plugin_process_really_builds_the_plugin_classes(records):
    """Guard against a probe that never patched anything (the comparison would be empty)."""
    import mmdysample  # noqa: F401
    from mmdet.registry import MODELS
    assert MODELS.get('FPN').__module__.startswith('mmdysample')
    assert set(records['upstream']) == set(records['plugin'])
    assert len(records['upstream']) >= 20


@pytest.mark.slow
def test_sampled_upstream_configs_build_identical_modules(records):
    upstream, plugin = records['upstream'], records['plugin']
    run = 0
    for key in upstream:
        expected, got = upstream[key], plugin[key]
        assert got['upstream_class'] == expected['upstream_class'], key
        assert got['state'] == expected['state'], key
        assert got['parameters'] == expected['parameters'], key
        if expected['outputs'] is None:
            continue
        run += 1
        for name, value in expected['values'].items():
            assert torch.equal(got['values'][name], value), (key, name)
        assert len(got['outputs']) == len(expected['outputs'])
        for e, g in zip(expected['outputs'], got['outputs']):
            assert torch.equal(e, g), key
    assert run >= 10
