"""mmdysample on a base install (torch + mmengine only): the layers, the fused kernel and the
plugin work, the plugin registers what is installed, and nothing is said of what is not."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

# A fresh interpreter in which mmcv, mmdet, mmseg and mmpretrain are not installed: their
# imports raise ModuleNotFoundError and their distributions have no metadata.
_BASE_INSTALL = r'''
import importlib.abc, importlib.metadata, sys

ABSENT_MODULES = ('mmcv', 'mmdet', 'mmseg', 'mmpretrain')
ABSENT_DISTRIBUTIONS = ('mmcv', 'mmdet', 'mmsegmentation', 'mmpretrain')

class NotInstalled(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path=None, target=None):
        if fullname.partition('.')[0] in ABSENT_MODULES:
            raise ModuleNotFoundError(f'No module named {fullname!r}', name=fullname)
        return None

sys.meta_path.insert(0, NotInstalled())
installed_version = importlib.metadata.version
def version(distribution):
    if distribution in ABSENT_DISTRIBUTIONS:
        raise importlib.metadata.PackageNotFoundError(distribution)
    return installed_version(distribution)
importlib.metadata.version = version

# the README's example
import torch
from mmdysample.upsamplers import DySample, build_upsampler

up = DySample(64)
print(up(torch.randn(1, 64, 8, 8)).shape)
up = build_upsampler(dict(type='DySample-S+'), in_channels=256, scale_factor=4)
print(type(up).__name__, tuple(up(torch.randn(1, 256, 5, 7)).shape))

# the fused kernel, against the reference path
from mmdysample import ops
x, offset = torch.randn(2, 8, 5, 7), 0.3 * torch.randn(2, 2 * 4 * 2 * 2, 5, 7)
assert ops.load_extension() is not None
torch.testing.assert_close(ops.fused_dysample(x, offset, 2, 4),
                           ops.grid_sample_dysample(x, offset, 2, 4))
print('fused kernel ok')

# the plugin: what a config's custom_imports does, then what a Runner imports
import mmdysample
import mmengine.runner
from mmengine.registry import HOOKS
from mmengine.runner import checkpoint
print('hooks', all(name in HOOKS.module_dict for name in
                   ('RandomStateHook', 'PreemptionCheckpointHook')),
      HOOKS.get('CheckpointHook').__module__)
print('checkpoint fix', hasattr(checkpoint.load_from_local, '__mmdysample_original__'))
for library in ('mmdet.models', 'mmseg.models'):
    try:
        __import__(library)
    except ModuleNotFoundError as error:
        print(library, 'not installed')
print([m for m in sys.modules if m.startswith(('mmdysample.mmdet', 'mmdysample.mmseg'))])
'''


@pytest.mark.slow
def test_base_install_runs_the_layers_kernel_and_plugin_silently():
    from mmdysample.ops import extension
    if shutil.which(extension._compiler().split()[0]) is None:
        pytest.skip('no C++ compiler: the fused kernel cannot be built here')
    assert extension.load_extension() is not None  # built here (cached) if not yet
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(REPO)] + [p for p in os.environ.get('PYTHONPATH', '').split(os.pathsep) if p]))
    result = subprocess.run([sys.executable, '-c', _BASE_INSTALL], env=env, cwd=REPO,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        'torch.Size([1, 64, 16, 16])',
        'DySample_SPlus (1, 256, 20, 28)',
        'fused kernel ok',
        'hooks True mmdysample.engine.checkpoint_hook',
        'checkpoint fix True',
        'mmdet.models not installed',
        'mmseg.models not installed',
        '[]',
    ]
    assert result.stderr == ''  # no warning, no log line
