"""``import mmdysample.upsamplers`` (which runs ``mmdysample/__init__.py``, i.e. what
``import mmdysample`` does) is cheap and inert: it costs at most 1.3x the CPU time of
``import torch, mmengine.registry``, loads none of mmengine's runner/model/optimizer packages
and no task library, and changes nothing outside mmdysample (docs/design.md, "What importing
mmdysample changes")."""
import json
import os
import resource
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

# Modules `import mmdysample.upsamplers` must not load: the task libraries, the heavy parts
# of mmengine (the compatibility fixes and runner hooks wait for them), and torch's compiler
# front end (~2 s CPU; importing it also replaces torch.manual_seed).
NOT_LOADED = ('mmcv', 'mmdet', 'mmseg', 'mmpretrain', 'mmengine.runner', 'mmengine.model',
              'mmengine.optim', 'mmengine.hooks', 'torch._dynamo')


def _env():
    return dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(REPO)] + [p for p in os.environ.get('PYTHONPATH', '').split(os.pathsep) if p]))


# Snapshots, in a fresh interpreter that has imported torch, NumPy and mmengine.registry
# (what mmdysample.upsamplers needs), everything of theirs that mmdysample could change,
# imports the whole core and layer API, and prints what changed as JSON.
_INERT = r'''
import json, sys, types, warnings
import numpy, torch, mmengine.registry, torch.serialization
from mmengine.registry import Registry, root

def attributes():
    """(module, attribute[, class attribute]) -> object, for every module of torch, NumPy
    and mmengine and every class defined in one."""
    values = {}
    with warnings.catch_warnings():  # deprecated module attributes warn when read
        warnings.simplefilter('ignore')
        for name, module in list(sys.modules.items()):
            if name.partition('.')[0] not in ('torch', 'numpy', 'mmengine') \
                    or not isinstance(module, types.ModuleType):
                continue
            for attr, value in list(vars(module).items()):
                values[(name, attr)] = value
                if isinstance(value, type) and getattr(value, '__module__', None) == name:
                    for class_attr, class_value in list(vars(value).items()):
                        values[(name, attr, class_attr)] = class_value
    return values

def registries():
    return {name: dict(registry._module_dict) for name, registry in vars(root).items()
            if isinstance(registry, Registry)}

before, registries_before = attributes(), registries()
meta_path, path_hooks, path = list(sys.meta_path), list(sys.path_hooks), list(sys.path)
filters, safe_globals = list(warnings.filters), list(torch.serialization.get_safe_globals())
modules = set(sys.modules)

import mmdysample.upsamplers, mmdysample.functional, mmdysample.ops

after, registries_after = attributes(), registries()
print(json.dumps(dict(
    replaced=sorted(repr(key) for key, value in before.items()
                    if key not in after or after[key] is not value),
    registries_replaced=sorted(f'{name}.{key}' for name, entries in registries_before.items()
                               for key, value in entries.items()
                               if registries_after[name].get(key) is not value),
    registries_added={name: sorted(set(entries) - set(registries_before[name]))
                      for name, entries in registries_after.items()
                      if set(entries) - set(registries_before[name])},
    upsamplers=sorted(mmdysample.upsamplers.registered_upsamplers()),
    meta_path_added=[f'{type(f).__module__}.{type(f).__qualname__}'
                     for f in sys.meta_path if f not in meta_path],
    meta_path_kept=[f for f in sys.meta_path if f in meta_path] == meta_path,
    path_hooks_kept=sys.path_hooks == path_hooks, path_kept=sys.path == path,
    warning_filters_kept=warnings.filters == filters,
    safe_globals_kept=torch.serialization.get_safe_globals() == safe_globals,
    new_modules=sorted(set(sys.modules) - modules))))
'''


@pytest.mark.slow
def test_import_changes_nothing_outside_mmdysample():
    result = subprocess.run([sys.executable, '-c', _INERT], env=_env(), cwd=REPO,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report['replaced'] == []
    assert report['registries_replaced'] == []
    assert report['registries_added'] == {'MODELS': report['upsamplers']}
    assert report['meta_path_added'] == ['mmdysample.integration_hooks._IntegrationFinder']
    assert report['meta_path_kept'] and report['path_hooks_kept'] and report['path_kept']
    assert report['warning_filters_kept'] and report['safe_globals_kept']
    loaded = [m for m in report['new_modules']
              if any(m == name or m.startswith(name + '.') for name in NOT_LOADED)]
    assert loaded == []
    assert result.stderr == ''


def _cpu_seconds(code: str) -> float:
    """User + system CPU time of a fresh interpreter running ``code``."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run([sys.executable, '-c', code], env=_env(), cwd=REPO, check=True,
                   timeout=600)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


BASELINE = 'import torch, mmengine.registry'
MAX_RATIO = 1.3


@pytest.mark.slow
def test_import_costs_little_more_than_torch_and_mmengine_registry():
    """Median CPU time of three fresh interpreters each, interleaved so that both see the
    same machine load (measured 1.05x: docs/design.md)."""
    times = {BASELINE: [], 'import mmdysample.upsamplers': []}
    for _ in range(3):
        for code in times:
            times[code].append(_cpu_seconds(code))
    medians = {code: statistics.median(values) for code, values in times.items()}
    ratio = medians['import mmdysample.upsamplers'] / medians[BASELINE]
    with open('/proc/loadavg') as f:
        load = f.read().split()[:3]
    assert ratio <= MAX_RATIO, f'CPU seconds {times}, ratio {ratio:.2f}, load average {load}'
