"""The integrations are registered when their upstream package is imported, never before.

In-process tests use throw-away packages (``<name>_up.models`` patched by ``<name>_int``) so
that every import order can be exercised without mmdet; the subprocess tests then check the
real paths with mmengine, mmdet and mmseg.
"""
import importlib
import importlib.util
import os
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import pytest

from mmdysample.integration_hooks import (INTEGRATIONS, _IntegrationFinder,
                                          _LoaderThenIntegration, register_integrations)

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def fake_packages(tmp_path, monkeypatch):
    """Writes ``<up>/models/{__init__,necks}.py`` (NECKS registry holding 'upstream') and an
    integration module ``<int>`` that appends 'patched' to it; returns (up, int) names."""
    name = 'fake' + uuid.uuid4().hex[:8]
    up, integration = f'{name}_up', f'{name}_int'
    (tmp_path / up / 'models').mkdir(parents=True)
    (tmp_path / up / '__init__.py').write_text('')
    (tmp_path / up / 'models' / '__init__.py').write_text('from .necks import NECKS\n')
    (tmp_path / up / 'models' / 'necks.py').write_text("NECKS = ['upstream']\n")
    (tmp_path / f'{integration}.py').write_text(
        f'from {up}.models import necks\nnecks.NECKS.append("patched")\n')
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.invalidate_caches()
    yield up, integration, tmp_path
    for module in [m for m in sys.modules if m.startswith(name)]:
        del sys.modules[module]


def test_integration_runs_right_after_the_upstream_module(fake_packages):
    up, integration, _ = fake_packages
    register_integrations({f'{up}.models': integration})
    assert integration not in sys.modules
    necks = importlib.import_module(f'{up}.models.necks')  # `from up.models.necks import ...`
    assert necks.NECKS == ['upstream', 'patched']
    assert integration in sys.modules
    models = sys.modules[f'{up}.models']
    # the module keeps its own loader: the wrapper leaves no trace
    for loader in (models.__loader__, models.__spec__.loader):
        assert not isinstance(loader, _LoaderThenIntegration)
        assert type(loader).__name__ == 'SourceFileLoader'
    assert not any(isinstance(f, _IntegrationFinder) and f'{up}.models' in f.pending
                   for f in sys.meta_path)


def test_already_imported_upstream_is_patched_at_once(fake_packages):
    up, integration, _ = fake_packages
    necks = importlib.import_module(f'{up}.models.necks')
    assert necks.NECKS == ['upstream']
    register_integrations({f'{up}.models': integration})
    assert necks.NECKS == ['upstream', 'patched']


def test_registering_twice_patches_once(fake_packages):
    up, integration, _ = fake_packages
    register_integrations({f'{up}.models': integration})
    register_integrations({f'{up}.models': integration})
    assert importlib.import_module(f'{up}.models').NECKS == ['upstream', 'patched']
    register_integrations({f'{up}.models': integration})  # now eager: already imported
    assert sys.modules[f'{up}.models'].NECKS == ['upstream', 'patched']


def test_missing_upstream_keeps_waiting_until_it_exists(fake_packages):
    up, integration, tmp_path = fake_packages
    later = f'{up}_later'
    register_integrations({f'{later}.models': integration})
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module(f'{later}.models')
    assert integration not in sys.modules
    # installed afterwards (the integration itself imports `up`, which exists)
    (tmp_path / later / 'models').mkdir(parents=True)
    (tmp_path / later / '__init__.py').write_text('')
    (tmp_path / later / 'models' / '__init__.py').write_text('VALUE = 1\n')
    importlib.invalidate_caches()
    assert importlib.import_module(f'{later}.models').VALUE == 1
    assert sys.modules[f'{up}.models.necks'].NECKS == ['upstream', 'patched']


def test_error_in_the_integration_propagates(fake_packages):
    up, integration, tmp_path = fake_packages
    (tmp_path / f'{integration}.py').write_text('raise RuntimeError("integration broke")\n')
    register_integrations({f'{up}.models': integration})
    with pytest.raises(RuntimeError, match='integration broke'):
        importlib.import_module(f'{up}.models')


def _pending(upstream):
    return [f.pending[upstream] for f in sys.meta_path
            if isinstance(f, _IntegrationFinder) and upstream in f.pending]


def test_failed_upstream_import_keeps_the_integration_pending(fake_packages):
    """``import mmdet.models`` raising because of a missing dependency, then succeeding once
    it is installed: the integration still runs."""
    up, integration, tmp_path = fake_packages
    dependency = f'{up}_dependency'
    models_init = tmp_path / up / 'models' / '__init__.py'
    models_init.write_text(f'import {dependency}\nfrom .necks import NECKS\n')
    register_integrations({f'{up}.models': integration})
    for _ in range(2):  # and a second failing attempt
        with pytest.raises(ModuleNotFoundError, match=dependency):
            importlib.import_module(f'{up}.models')
        assert integration not in sys.modules
        assert _pending(f'{up}.models') == [(integration, )]
    (tmp_path / f'{dependency}.py').write_text('')
    importlib.invalidate_caches()
    assert importlib.import_module(f'{up}.models').NECKS == ['upstream', 'patched']
    assert _pending(f'{up}.models') == []


def test_failed_integration_runs_again_on_the_next_import(fake_packages):
    up, integration, tmp_path = fake_packages
    ready = tmp_path / 'ready'
    (tmp_path / f'{integration}.py').write_text(
        f'import os\nif not os.path.exists({str(ready)!r}):\n'
        f'    raise RuntimeError("integration not ready")\n'
        f'from {up}.models import necks\nnecks.NECKS.append("patched")\n')
    register_integrations({f'{up}.models': integration})
    with pytest.raises(RuntimeError, match='integration not ready'):
        importlib.import_module(f'{up}.models')
    assert f'{up}.models' not in sys.modules  # the upstream import failed with it
    ready.write_text('')
    assert importlib.import_module(f'{up}.models').NECKS == ['upstream', 'patched']
    assert _pending(f'{up}.models') == []


def test_function_entries_get_the_upstream_module(fake_packages):
    up, integration, tmp_path = fake_packages
    (tmp_path / f'{integration}.py').write_text(
        'def first(module):\n    module.CALLS = [module.__name__]\n'
        'def second(module):\n    module.CALLS.append("second")\n')
    register_integrations({f'{up}.models': [f'{integration}:first']})
    register_integrations({f'{up}.models': (f'{integration}:first', f'{integration}:second')})
    assert importlib.import_module(f'{up}.models').CALLS == [f'{up}.models', 'second']
    # already imported: at once
    register_integrations({f'{up}.models.necks': f'{integration}:first'})
    assert sys.modules[f'{up}.models.necks'].CALLS == [f'{up}.models.necks']


def test_the_real_table():
    fixes = 'mmdysample.compat:fix_'
    assert INTEGRATIONS == {
        'mmengine.runner.checkpoint': (fixes + 'checkpoint_loading',
                                       fixes + 'history_buffer_pickling',
                                       fixes + 'torchvision_model_urls'),
        'mmengine.dist.utils': (fixes + 'dist_launchers', ),
        'mmengine.model.wrappers.distributed': (fixes + 'ddp_for_cpu_modules', ),
        'torch._dynamo': ('mmdysample.ops.sampling:mark_compile_constants', ),
        'mmengine.runner': ('mmdysample.engine', ),
        'mmdet.models': ('mmdysample.mmdet', ),
        'mmseg.models': ('mmdysample.mmseg', ),
    }
    for entries in INTEGRATIONS.values():  # every entry names something that exists
        for entry in entries:
            module_name, _, function_name = entry.partition(':')
            if function_name:
                assert callable(getattr(importlib.import_module(module_name), function_name))
            else:  # not imported here: mmdysample.mmdet would import mmdet
                assert importlib.util.find_spec(module_name) is not None, module_name


def _run(*code: str) -> subprocess.Popen:
    """Starts a Python process running the dedented ``code`` parts one after the other."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(REPO)] + [p for p in os.environ.get('PYTHONPATH', '').split(os.pathsep) if p]))
    return subprocess.Popen([sys.executable, '-c', '\n'.join(map(textwrap.dedent, code))],
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def _wait(proc: subprocess.Popen) -> str:
    """The process's standard output, once it has exited with status 0."""
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, out + err
    return out


TASK_LIBRARIES = "[m for m in ('mmdet', 'mmseg', 'mmpretrain') if m in sys.modules]"


# Builds an FPN with a DySample upsample_cfg and a SegformerHead with one, through the
# registry named in `how`, and prints the classes it got.
_BUILD = '''
from mmengine.registry import DefaultScope, MODELS as ROOT
fpn = dict(type='FPN', in_channels=[8, 16], out_channels=8, num_outs=2,
           upsample_cfg=dict(type='DySample'))
head = dict(type='SegformerHead', in_channels=[8, 8, 8, 8], in_index=[0, 1, 2, 3],
            channels=8, num_classes=3, upsample_cfg=dict(type='DySample'))
def build(scope, cfg, how):
    if how == 'default_scope':  # mmengine imports <scope>.models through the registry
        with DefaultScope.overwrite_default_scope(scope):
            return ROOT.build(cfg)
    registry = __import__(scope + '.registry', fromlist=['MODELS']).MODELS
    return registry.build(cfg)
def show(scope, cfg, how):
    m = build(scope, cfg, how)
    print(scope, type(m).__module__, type(m).__name__, len(m.upsamplers))
'''


@pytest.mark.slow
def test_real_import_orders_register_the_patched_modules(tmp_path):
    """Two processes, run side by side: mmdysample imported before mmengine's runner and
    mmdet/mmseg (the issue's one-liner, then a config's custom_imports finding mmdysample
    already imported, mmengine.runner registering the hooks, mmengine importing mmdet.models
    through default_scope as the Runner does, a plain script importing an mmseg class by
    name), and mmdet/mmseg imported before mmdysample."""
    config = tmp_path / 'cfg.py'
    config.write_text("custom_imports = dict(imports=['mmdysample'], "
                      "allow_failed_imports=False)\n"
                      "custom_hooks = [dict(type='RandomStateHook')]\n")
    expected = ['mmdet mmdysample.mmdet.fpn UpsamplerFPN 1',
                'mmseg mmdysample.mmseg.segformer_head SegformerHead 6']
    before = _run(f'''
        import sys
        import mmdysample.upsamplers
        print({TASK_LIBRARIES})
        from mmengine.config import Config
        from mmengine.registry import HOOKS
        cfg = Config.fromfile({str(config)!r})
        print({TASK_LIBRARIES}, 'RandomStateHook' in HOOKS.module_dict)
        import mmengine.runner  # what building a Runner from the config imports
        print(type(HOOKS.build(cfg.custom_hooks[0])).__name__)
    ''', _BUILD, '''
        show('mmdet', fpn, 'default_scope')
        from mmseg.models.decode_heads import SegformerHead
        show('mmseg', head, 'library registry')
    ''')
    after = _run('''
        import mmdet.models, mmseg.models
        import mmdysample
    ''', _BUILD, '''
        show('mmdet', fpn, 'library registry')
        show('mmseg', head, 'library registry')
    ''')
    assert _wait(before).strip().split('\n') == ['[]', '[] False', 'RandomStateHook'] + expected
    assert _wait(after).strip().split('\n') == expected
