"""Register the mmdet / mmseg integrations when those libraries are imported, not before.

``import mmdysample`` must register the patched necks and heads (``custom_imports`` relies
on it) without importing mmdet, mmseg or mmpretrain itself: ``mmdysample.upsamplers`` is
used in plain PyTorch models, and importing a submodule runs the package ``__init__`` first.
So each integration is tied to the upstream package whose registry it patches:

=====================  ==========================
upstream module        integration imported after
=====================  ==========================
``mmdet.models``       ``mmdysample.mmdet``
``mmseg.models``       ``mmdysample.mmseg``
=====================  ==========================

:func:`register_integrations` imports an integration at once when its upstream module is
already imported, and otherwise installs an import hook (a finder at the front of
``sys.meta_path``) that imports it right after the upstream module finishes executing. Every
way the upstream registries get filled (``import mmdet.models``, ``from mmdet.models.necks
import FPN``, mmdet's ``register_all_modules``, mmengine importing ``mmdet.models`` through a
registry's ``locations`` when a config's ``default_scope`` is ``'mmdet'``) executes that
module, so the patched modules are registered before anything is built from a config. An
error in an integration propagates from the upstream import that triggered it.
"""
import importlib
import importlib.abc
import sys
import threading
from typing import Dict, Mapping, Optional

__all__ = ['INTEGRATIONS', 'register_integrations']

#: upstream module whose import triggers the integration -> the integration module.
INTEGRATIONS: Dict[str, str] = {
    'mmdet.models': 'mmdysample.mmdet',
    'mmseg.models': 'mmdysample.mmseg',
}


class _LoaderThenIntegration(importlib.abc.Loader):
    """Runs the upstream module's own loader, then imports the integration.

    The module keeps its own loader (``__loader__`` and ``__spec__.loader`` are restored), so
    nothing downstream sees this wrapper.
    """

    def __init__(self, loader: importlib.abc.Loader, integration: str):
        self.loader = loader
        self.integration = integration

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module) -> None:
        module.__loader__ = self.loader
        if module.__spec__ is not None:
            module.__spec__.loader = self.loader
        self.loader.exec_module(module)
        importlib.import_module(self.integration)


class _IntegrationFinder(importlib.abc.MetaPathFinder):
    """Finds the upstream modules of :data:`INTEGRATIONS` with the other finders and wraps
    their loader in :class:`_LoaderThenIntegration`; finds nothing else."""

    def __init__(self):
        self.pending: Dict[str, str] = {}
        self.lock = threading.Lock()

    def find_spec(self, fullname, path=None, target=None):
        with self.lock:
            integration = self.pending.pop(fullname, None)
        if integration is None:
            return None
        spec = self._find_with_other_finders(fullname, path, target)
        if spec is None or spec.loader is None:
            with self.lock:  # not importable (yet): keep waiting for it
                self.pending[fullname] = integration
            return spec
        spec.loader = _LoaderThenIntegration(spec.loader, integration)
        return spec

    def _find_with_other_finders(self, fullname, path, target):
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, 'find_spec'):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                return spec
        return None


_FINDER: Optional[_IntegrationFinder] = None


def register_integrations(integrations: Mapping[str, str] = INTEGRATIONS) -> None:
    """Import each integration now if its upstream module is imported, else on its import.

    Args:
        integrations: upstream module name -> integration module name (default:
            :data:`INTEGRATIONS`). Idempotent: a pair already waiting is not added twice,
            and an integration module is imported once.
    """
    global _FINDER
    for upstream, integration in integrations.items():
        module = sys.modules.get(upstream)
        initializing = getattr(getattr(module, '__spec__', None), '_initializing', False)
        if module is not None and not initializing:
            importlib.import_module(integration)
            continue
        if module is not None:
            # Imported from inside the upstream module's own __init__: nothing here can run
            # after it finishes, so register once it has (its parent package is complete
            # only then, too). A finder cannot see it again; this case does not occur with
            # mmdet 3.3 / mmseg 1.2.2, whose models packages never import mmdysample.
            raise ImportError(f'mmdysample was imported while {upstream} was still being '
                              f'imported; import mmdysample after {upstream} or before it')
        if _FINDER is None:
            _FINDER = _IntegrationFinder()
            sys.meta_path.insert(0, _FINDER)
        with _FINDER.lock:
            _FINDER.pending.setdefault(upstream, integration)
