"""Run mmdysample's additions to other packages when those packages are imported, not before.

``import mmdysample`` must register the patched necks and heads (``custom_imports`` relies on
it), the runner hooks and the compatibility fixes, without importing mmdet, mmseg, mmpretrain
or the heavy parts of mmengine itself: ``mmdysample.upsamplers`` is used in plain PyTorch
models, and importing a submodule runs the package ``__init__`` first. So each addition (an
*integration*) is tied to the upstream module it extends, and runs right after that module
has executed:

* ``mmengine.runner.checkpoint``: :func:`mmdysample.compat.fix_checkpoint_loading`,
  :func:`~mmdysample.compat.fix_history_buffer_pickling` and
  :func:`~mmdysample.compat.fix_torchvision_model_urls`;
* ``mmengine.dist.utils``: :func:`mmdysample.compat.fix_dist_launchers`;
* ``mmengine.model.wrappers.distributed``: :func:`mmdysample.compat.fix_ddp_for_cpu_modules`;
* ``torch._dynamo``: :func:`mmdysample.ops.sampling.mark_compile_constants` (what the
  ``torch.compiler.assume_constant_result`` decorator would do, without importing
  ``torch._dynamo`` at ``import mmdysample``);
* ``mmengine.runner``: ``mmdysample.engine`` (the runner hooks, in mmengine's ``HOOKS``);
* ``mmdet.models``: ``mmdysample.mmdet`` (the patched modules, in mmdet's ``MODELS``);
* ``mmseg.models``: ``mmdysample.mmseg`` (the patched modules, in mmseg's ``MODELS``).

Each compatibility fix checks, when it runs, whether its problem is present, and changes
nothing where it is not (:mod:`mmdysample.compat`).

:func:`register_integrations` runs an integration at once when its upstream module is already
imported, and otherwise keeps it pending in one finder at the front of ``sys.meta_path`` (the
one thing ``import mmdysample`` adds to the interpreter). The finder wraps the loader of the
upstream module only: every way the upstream module gets executed (``import mmdet.models``,
``from mmdet.models.necks import FPN``, mmdet's ``register_all_modules``, mmengine importing
``mmdet.models`` through a registry's ``locations`` when a config's ``default_scope`` is
``'mmdet'``, ``Runner`` importing ``mmengine.runner``) runs the integration before anything is
built from a config. An integration stays pending until it has run: if the upstream module
fails to import (a missing dependency), or an integration raises (the error propagates from
the upstream import, which then fails too), the next import of that module tries again.
"""
import importlib
import importlib.abc
import sys
import threading
from types import ModuleType
from typing import Dict, Mapping, Optional, Sequence, Tuple, Union

__all__ = ['INTEGRATIONS', 'register_integrations', 'run_integration']

#: upstream module -> what runs right after it is imported. An entry ``'package.module'``
#: imports that module; ``'package.module:function'`` imports it and calls
#: ``function(upstream_module)``.
INTEGRATIONS: Dict[str, Tuple[str, ...]] = {
    'mmengine.runner.checkpoint': ('mmdysample.compat:fix_checkpoint_loading',
                                   'mmdysample.compat:fix_history_buffer_pickling',
                                   'mmdysample.compat:fix_torchvision_model_urls'),
    'mmengine.dist.utils': ('mmdysample.compat:fix_dist_launchers', ),
    'mmengine.model.wrappers.distributed': ('mmdysample.compat:fix_ddp_for_cpu_modules', ),
    'torch._dynamo': ('mmdysample.ops.sampling:mark_compile_constants', ),
    'mmengine.runner': ('mmdysample.engine', ),
    'mmdet.models': ('mmdysample.mmdet', ),
    'mmseg.models': ('mmdysample.mmseg', ),
}


def run_integration(integration: str, upstream_module: ModuleType) -> None:
    """Run one entry of :data:`INTEGRATIONS` for the imported ``upstream_module``."""
    module_name, _, function_name = integration.partition(':')
    module = importlib.import_module(module_name)
    if function_name:
        getattr(module, function_name)(upstream_module)


class _LoaderThenIntegration(importlib.abc.Loader):
    """Runs the upstream module's own loader, then its pending integrations.

    The module keeps its own loader (``__loader__`` and ``__spec__.loader`` are restored), so
    nothing downstream sees this wrapper.
    """

    def __init__(self, loader: importlib.abc.Loader, finder: '_IntegrationFinder'):
        self.loader = loader
        self.finder = finder

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module) -> None:
        module.__loader__ = self.loader
        if module.__spec__ is not None:
            module.__spec__.loader = self.loader
        self.loader.exec_module(module)  # raises: the integrations stay pending
        self.finder.run_pending(module)


class _IntegrationFinder(importlib.abc.MetaPathFinder):
    """Finds the upstream modules that have pending integrations with the other finders and
    wraps their loader in :class:`_LoaderThenIntegration`; finds nothing else."""

    def __init__(self):
        self.pending: Dict[str, Tuple[str, ...]] = {}
        self.lock = threading.Lock()

    def add(self, upstream: str, integrations: Sequence[str]) -> None:
        with self.lock:
            waiting = self.pending.get(upstream, ())
            self.pending[upstream] = waiting + tuple(i for i in integrations if i not in waiting)

    def find_spec(self, fullname, path=None, target=None):
        with self.lock:
            if fullname not in self.pending:
                return None
        spec = self._find_with_other_finders(fullname, path, target)
        if spec is None or spec.loader is None:  # not importable (yet): keep waiting for it
            return spec
        spec.loader = _LoaderThenIntegration(spec.loader, self)
        return spec

    def run_pending(self, module: ModuleType) -> None:
        """Run the integrations of ``module``; they are dropped once all have run."""
        with self.lock:
            integrations = self.pending.get(module.__name__, ())
        for integration in integrations:
            run_integration(integration, module)
        with self.lock:
            self.pending.pop(module.__name__, None)

    def _find_with_other_finders(self, fullname, path, target):
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, 'find_spec'):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                return spec
        return None


_FINDER: Optional[_IntegrationFinder] = None


def register_integrations(
        integrations: Mapping[str, Union[str, Sequence[str]]] = INTEGRATIONS) -> None:
    """Run each integration now if its upstream module is imported, else right after its
    import.

    Args:
        integrations: upstream module name -> one entry or a sequence of entries in the
            format of :data:`INTEGRATIONS` (default: :data:`INTEGRATIONS`). Idempotent: an
            entry already waiting is not added twice; imported modules are imported once,
            and the compatibility fixes change nothing when applied again.

    Raises:
        ImportError: an upstream module is still executing (mmdysample imported from inside
            it): nothing could run after it finishes.
    """
    global _FINDER
    for upstream, entries in integrations.items():
        entries = (entries, ) if isinstance(entries, str) else tuple(entries)
        module = sys.modules.get(upstream)
        initializing = getattr(getattr(module, '__spec__', None), '_initializing', False)
        if module is not None and not initializing:
            for integration in entries:
                run_integration(integration, module)
            continue
        if module is not None:
            # Imported from inside the upstream module's own __init__: nothing here can run
            # after it finishes (its parent package is complete only then, too). A finder
            # cannot see it again; this does not occur with mmengine 0.10.7, mmdet 3.3 or
            # mmseg 1.2.2, none of which imports mmdysample.
            raise ImportError(f'mmdysample was imported while {upstream} was still being '
                              f'imported; import mmdysample after {upstream} or before it')
        if _FINDER is None:
            _FINDER = _IntegrationFinder()
            sys.meta_path.insert(0, _FINDER)
        _FINDER.add(upstream, entries)
