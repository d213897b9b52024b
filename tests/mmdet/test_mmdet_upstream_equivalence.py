"""Installed upstream configs build the same modules with and without the plugin.

``upstream_equivalence_probe.py`` builds the patched module of each sampled config (one or a
few configs for every folder that uses FPN, FCNMaskHead, PanopticFPNHead, CSPNeXtPAFPN,
YOLOXPAFPN, MaskFormer's PixelDecoder/head, MSDeformAttnPixelDecoder, in mmdet and mmseg)
in two fresh processes, one that never imports mmdysample and one that does. Both must give
the same upstream class, state-dict keys, shapes, dtypes and parameter names; for the
modules it runs, the same initial weights under the same seed and bit-identical outputs at
an unpadded odd image size (75x101).
"""
import os
import subprocess
import sys

import pytest
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))


@pytest.fixture(scope='module')
def records(tmp_path_factory):
    folder = tmp_path_factory.mktemp('equivalence')
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [REPO] + [p for p in os.environ.get('PYTHONPATH', '').split(os.pathsep) if p]))
    probe = os.path.join(HERE, 'upstream_equivalence_probe.py')
    runs = {flag: subprocess.Popen(
        [sys.executable, probe, str(folder / f'{flag}.pt')] + ([f'--{flag}'] if flag ==
                                                                'plugin' else []),
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for flag in ('upstream', 'plugin')}
    for flag, run in runs.items():
        output, _ = run.communicate(timeout=600)
        assert run.returncode == 0, f'{flag} probe failed:\n{output[-4000:]}'
    return {flag: torch.load(folder / f'{flag}.pt', weights_only=False) for flag in runs}


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
