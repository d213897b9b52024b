"""Issue 19: with ``import mmdysample`` installed mmseg configs build the same models.

For a sample of mmseg's own configs that use a module the plugin patches (SegformerHead,
UPerHead, DepthwiseSeparableASPPHead, FPN neck + FPNHead; the smallest ResNet or MiT config
of each family, as the builds and the interpreters dominate the time), the model is built
without and with the plugin (tests/upstream_equivalence_probe.py: a fresh interpreter that
never imports mmdysample, and a process that has imported it; the ``upstream_equivalence``
fixture of tests/conftest.py, shared with the mmdet equivalence tests). The patched modules
must be the plugin's classes, and everything else a user can observe must be the same:
module names, parameter and buffer names/shapes/dtypes, state-dict keys and shapes, and (for
the configs marked ``:odd``) the output bits on an unpadded 97x75 image.

The upstream side depends only on the installed packages: it is cached in pytest's cache
(keyed by the versions and the probe), so a rerun builds the plugin side only.
"""
import pytest
import torch

from upstream_equivalence_probe import MMSEG_SAMPLE as SAMPLE

# one worker builds the records the mmdet equivalence tests share
pytestmark = pytest.mark.xdist_group('upstream-equivalence')

PATCHED_MODULES = {
    'SegformerHead': 'mmdysample.mmseg.segformer_head.SegformerHead',
    'UPerHead': 'mmdysample.mmseg.uper_head.UPerHead',
    'DepthwiseSeparableASPPHead':
        'mmdysample.mmseg.sep_aspp_head.DepthwiseSeparableASPPHead',
    'FPN': 'mmdysample.mmseg.fpn.FPN',
    'FPNHead': 'mmdysample.mmseg.fpn_head.FPNHead',
}


@pytest.fixture(scope='module')
def both_sides(upstream_equivalence):
    upstream, plugin = upstream_equivalence
    return upstream['mmseg'], plugin['mmseg']


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
