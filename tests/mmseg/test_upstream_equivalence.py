"""Issue 19: with ``import mmdysample`` installed mmseg configs build the same models.

For a sample of mmseg's own configs that use a module the plugin patches (SegformerHead,
UPerHead, DepthwiseSeparableASPPHead, FPN neck + FPNHead; the smallest ResNet or MiT config
of each family, as the builds and the two interpreters dominate the time), the model
is built in two fresh processes, without and with the plugin. The patched modules must be
the plugin's classes, and everything else a user can observe must be the same: module names,
parameter and buffer names/shapes/dtypes, state-dict keys and shapes, and (for the configs
marked ``:odd``) the output bits on an unpadded 97x75 image.

The upstream side depends only on the installed packages: it is cached in pytest's cache
(keyed by the mmseg/mmcv/torch versions and the sample), so a rerun builds the plugin side
only.
"""
import hashlib
import os
import subprocess
import sys
from pathlib import Path

import mmcv
import mmseg
import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
WORKER = Path(__file__).with_name('upstream_equivalence_worker.py')

# config (under mmseg's configs) -> the patched classes it must contain
SAMPLE = {
    'segformer/segformer_mit-b0_8xb2-160k_ade20k-512x512.py:odd': {'SegformerHead'},
    'upernet/upernet_r18_4xb4-80k_ade20k-512x512.py:odd': {'UPerHead'},
    'deeplabv3plus/deeplabv3plus_r18-d8_4xb4-80k_loveda-512x512.py:odd':
        {'DepthwiseSeparableASPPHead'},
    'sem_fpn/fpn_r50_4xb4-160k_ade20k-512x512.py:odd': {'FPN', 'FPNHead'},
}
PATCHED_MODULES = {
    'SegformerHead': 'mmdysample.mmseg.segformer_head.SegformerHead',
    'UPerHead': 'mmdysample.mmseg.uper_head.UPerHead',
    'DepthwiseSeparableASPPHead':
        'mmdysample.mmseg.sep_aspp_head.DepthwiseSeparableASPPHead',
    'FPN': 'mmdysample.mmseg.fpn.FPN',
    'FPNHead': 'mmdysample.mmseg.fpn_head.FPNHead',
}


def run_worker(mode, out_path):
    env = {**os.environ, 'PYTHONPATH': str(REPO)}
    return subprocess.Popen([sys.executable, str(WORKER), str(out_path), mode, *SAMPLE],
                            cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def finish(process):
    output, _ = process.communicate(timeout=900)
    assert process.returncode == 0, output[-3000:]


@pytest.fixture(scope='module')
def both_sides(request, tmp_path_factory):
    key = '-'.join([mmseg.__version__, mmcv.__version__, torch.__version__,
                    hashlib.sha1('\n'.join(SAMPLE).encode()).hexdigest()[:10]])
    if getattr(request.config, 'cache', None) is not None:
        cache = request.config.cache.mkdir('mmdysample-upstream-equivalence')
    else:  # pytest -p no:cacheprovider: no cache across runs
        cache = tmp_path_factory.mktemp('upstream-equivalence')
    upstream_path = cache / f'upstream-{key}.pt'
    plugin_path = tmp_path_factory.mktemp('equivalence') / 'plugin.pt'
    processes = [run_worker('plugin', plugin_path)]
    if not upstream_path.exists():  # both in parallel on a cold cache
        partial = upstream_path.with_suffix('.partial')
        processes.append(run_worker('upstream', partial))
    for process in processes:
        finish(process)
    if not upstream_path.exists():
        partial.rename(upstream_path)
    return (torch.load(upstream_path, weights_only=False),
            torch.load(plugin_path, weights_only=False))


@pytest.mark.slow
@pytest.mark.parametrize('spec', list(SAMPLE))
def test_installed_config_builds_the_same_model_with_the_plugin(both_sides, spec):
    upstream, plugin = (side[spec.partition(':')[0]] for side in both_sides)
    # the plugin's classes were built where upstream's were, and nowhere else
    replaced = {name: (a, b) for (name, a), (_, b) in zip(upstream['modules'],
                                                          plugin['modules'], strict=True)
                if a != b}
    assert {b for _, b in replaced.values()} == {PATCHED_MODULES[c] for c in SAMPLE[spec]}
    for upstream_class, plugin_class in replaced.values():
        assert upstream_class.rsplit('.', 1)[1] == plugin_class.rsplit('.', 1)[1]
        assert upstream_class.startswith('mmseg.')
    assert [n for n, _ in upstream['modules']] == [n for n, _ in plugin['modules']]
    for key in ('parameters', 'buffers', 'state_dict'):
        assert plugin[key] == upstream[key], key
    if spec.endswith(':odd'):
        assert torch.equal(plugin['output'], upstream['output'])
