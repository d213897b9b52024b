"""Compatibility fixes for the OpenMMLab stack (mmengine 0.10.7, mmdet 3.3, mmseg 1.2)
on current PyTorch (>= 2.6, where ``torch.load`` defaults to ``weights_only=True``) and
NumPy 2.

Each fix is a small, named function below that takes the mmengine module it fixes. None runs
at import: :mod:`mmdysample.integration_hooks` calls it right after its module is imported
(at once when ``import mmdysample`` finds the module already imported), and it first checks
whether its problem is present -- a probe of the problem, not of a version -- and changes
nothing where it is not. Applying a fix again changes nothing. :func:`apply` imports the
modules and applies every fix now.

The fixes, the module whose import runs them, and their probe:

* :func:`fix_checkpoint_loading` -- ``mmengine.runner.checkpoint`` -- where
  :func:`mmengine_checkpoints_fail_to_load`;
* :func:`fix_history_buffer_pickling` -- ``mmengine.runner.checkpoint`` -- where
  :func:`history_buffer_pickles_statistics`;
* :func:`fix_torchvision_model_urls` -- ``mmengine.runner.checkpoint`` -- where
  :func:`torchvision_importable` is false;
* :func:`fix_dist_launchers` -- ``mmengine.dist.utils`` -- where :func:`has_accelerator` is
  false;
* :func:`fix_ddp_for_cpu_modules` -- ``mmengine.model.wrappers.distributed`` -- where
  :func:`has_accelerator` is false.

Checkpoint loading under ``weights_only=True``
-----------------------------------------------
A checkpoint written by mmengine's ``Runner`` is not a bare state dict: besides tensors it
pickles

* NumPy arrays, dtypes and scalars (``HistoryBuffer`` logs in ``message_hub``, ``eta`` and
  other ``numpy.float64`` values in ``message_hub['runtime_info']``), which need the globals
  ``numpy.ndarray``, ``numpy.dtype``, ``numpy.core.multiarray._reconstruct`` /
  ``numpy.core.multiarray.scalar`` (``numpy._core`` under NumPy 2) and the concrete dtype
  classes (``numpy.dtypes.Float64DType``...) whose ``__setstate__`` the unpickler calls;
* ``mmengine.logging.HistoryBuffer`` objects, whose ``__getstate__`` (mmengine 0.10.7) adds
  the class-wide table of statistics methods to the instance state. The default methods
  are functions defined in the class body, which pickle protocol 2 stores as
  ``builtins.getattr(HistoryBuffer, 'min')``.

Allow-listing the builtin ``getattr`` would open the unpickler to arbitrary attribute
reads, and from there to code execution: ``getattr(getattr, '__self__')`` is the
``builtins`` module, ``getattr(<it>, 'eval')`` is ``eval``, ``getattr(<any function>,
'__globals__')`` is a module namespace that the pickle may then write into with
``SETITEM``; replacing a global that an allow-listed callable uses (``np`` in
``mmengine.logging.history_buffer``, called by ``HistoryBuffer.__init__``) turns the next
``REDUCE`` into ``eval`` of an attacker's string. So the builtin is never allow-listed.
Instead:

* new checkpoints do not contain it: :func:`fix_history_buffer_pickling` replaces
  ``HistoryBuffer.__getstate__`` by :func:`_history_buffer_getstate`, which leaves the
  statistics table out of the pickled state (the methods are registered by the code that
  defines them, when it is imported, so nothing is lost), where
  :func:`history_buffer_pickles_statistics` finds upstream's method putting it in;
* old checkpoints still load: the name ``builtins.getattr`` is bound, for the duration of
  an mmengine checkpoint load only, to :func:`history_buffer_statistic_lookup`, which
  answers exactly ``getattr(HistoryBuffer, name)`` for the four statistics mmengine
  defines (``min``, ``max``, ``mean``, ``current``) and raises ``pickle.UnpicklingError``
  for anything else;
* ``HistoryBuffer.__setstate__`` restores only the instance attributes a buffer has
  (``max_length``, ``_log_history``, ``_count_history``): upstream's ``dict.update`` of the
  class-wide statistics table and of the instance ``__dict__`` would let a pickle add or swap
  statistics methods process-wide (``HistoryBuffer.mean`` for another allow-listed
  callable) or shadow the table with an instance attribute ``_statistics_methods``
  (replaced where :func:`history_buffer_setstate_changes_statistics` finds upstream's
  method doing so, since the allow-list below accepts ``HistoryBuffer``).

Both ``HistoryBuffer`` methods are replaced when ``mmengine.runner.checkpoint`` (which
writes and loads runner checkpoints) is imported, not ``mmengine.logging.history_buffer``:
``mmengine.registry`` imports that one, so every ``import mmdysample`` would.

The allow-list is scoped: :func:`mmengine_checkpoint_globals` adds it around
``CheckpointLoader.load_checkpoint`` and the ``load_from_*`` scheme functions (local
files, http(s), pavi, ceph/petrel, open-mmlab, mmcls, torchvision; ``load_checkpoint``,
``Runner.load_checkpoint`` and ``Runner.resume`` all go through them) and removes what it
added afterwards, so a plain ``torch.load`` elsewhere sees torch's default allow-list.
``weights_only`` is never turned off: the http(s) scheme, which mmengine routes through
``torch.hub.load_state_dict_from_url`` (whose default is ``weights_only=False``), is made
weights-only too (where :func:`load_url_unpickles_everything`). Any other global --
``os.system``, ``subprocess.*``, ``builtins.eval``, custom classes -- is refused with
``pickle.UnpicklingError``. To load a trusted checkpoint
that needs more, allow-list the extra globals yourself
(``torch.serialization.safe_globals([...])``).

:func:`fix_checkpoint_loading` does all this where :func:`mmengine_checkpoints_fail_to_load`:
``torch.load``, called as mmengine calls it, refuses what a ``Runner`` writes (a NumPy
scalar and a ``HistoryBuffer``). Where it does not (torch < 2.6, or
``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1``), mmengine's loaders stay as they are.

``torchvision://`` checkpoints without torchvision
--------------------------------------------------
mmengine resolves ``torchvision://resnet50`` (the ``init_cfg`` of every R50/R101 detector
config) with ``get_torchvision_models``, which imports torchvision only to list its model
URLs; it raises where torchvision is not installed or cannot be imported (PyPI's torchvision
fails beside a CPU build of torch). The names the OpenMMLab configs use are the pre-0.13
ones, which mmengine ships itself (``mmengine/hub/torchvision_0.12.json``).
:func:`fix_torchvision_model_urls` makes ``get_torchvision_models`` return that table where
:func:`torchvision_importable` is false (checked once, when ``mmengine.runner.checkpoint``
is imported: ``import torchvision`` is attempted then if torchvision is installed); where
torchvision imports, upstream's function stays (and adds the 0.13+ names such as
``resnet50.imagenet1k_v1``).

Distributed runs without CUDA
-----------------------------
mmengine's ``pytorch``, ``slurm`` and ``mpi`` launchers call ``torch.cuda.set_device``,
which raises on a machine without CUDA (``AttributeError: module 'torch._C' has no
attribute '_cuda_setDevice'`` on CPU builds), and ``Runner.wrap_model`` passes
``device_ids=[LOCAL_RANK]`` to ``DistributedDataParallel``, which torch rejects for a CPU
module. Where :func:`has_accelerator` is false, :func:`fix_dist_launchers` skips the device
selection and falls back from the NCCL backend (GPU only) to gloo with a warning, and
:func:`fix_ddp_for_cpu_modules` drops ``device_ids`` for CPU modules, so
``tools/dist_train.sh CONFIG N`` runs N CPU processes. Nothing changes where CUDA (or
another accelerator mmengine knows) is available.
"""
import contextlib
import functools
import importlib
import importlib.util
import inspect
import io
import pickle
import sys
import warnings
from types import ModuleType
from typing import Any, Callable, Iterator, List, Tuple, Union

import numpy as np
import torch
import torch.serialization
from mmengine.logging import HistoryBuffer, print_log

__all__ = [
    'apply', 'mmengine_checkpoint_globals', 'mmengine_checkpoint_safe_globals',
    'history_buffer_statistic_lookup', 'fix_checkpoint_loading', 'fix_history_buffer_pickling',
    'fix_torchvision_model_urls', 'fix_dist_launchers', 'fix_ddp_for_cpu_modules',
    'mmengine_checkpoints_fail_to_load', 'history_buffer_pickles_statistics',
    'history_buffer_setstate_changes_statistics', 'load_url_unpickles_everything',
    'torchvision_importable', 'has_accelerator', 'torchvision_model_urls'
]

SafeGlobal = Union[Callable, Tuple[Callable, str]]

# Marks the objects this module patched; its value is the original object.
_ORIGINAL_ATTR = '__mmdysample_original__'
# HistoryBuffer keeps its upstream (de)serialisation methods under this prefix, so that
# files in mmengine's own format can still be written (tests) and the patch is reversible.
_UPSTREAM_PREFIX = '_mmengine_upstream'

# The statistics mmengine 0.10.7 defines in HistoryBuffer's class body (see
# ``HistoryBuffer._set_default_statistics``); old checkpoints pickle them via getattr.
HISTORY_BUFFER_DEFAULT_STATISTICS = frozenset({'min', 'max', 'mean', 'current'})

# NumPy dtypes whose arrays/scalars mmengine writes into checkpoints: log histories
# (float64 values, int64 counts) and numeric scalars (eta, best scores, seeds) that hooks
# and metrics put into ``message_hub`` / ``meta``. Object, string and structured dtypes are
# deliberately absent: none is needed, and object arrays would unpickle arbitrary items.
_NUMPY_CHECKPOINT_DTYPES = ('bool', 'int8', 'int16', 'int32', 'int64', 'uint8', 'uint16',
                            'uint32', 'uint64', 'float16', 'float32', 'float64')


def history_buffer_statistic_lookup(owner: Any, name: Any) -> Callable:
    """Stand-in for the ``builtins.getattr`` global while an mmengine checkpoint loads.

    mmengine 0.10.7 pickles ``HistoryBuffer``'s default statistics methods as
    ``getattr(HistoryBuffer, 'min' | 'max' | 'mean' | 'current')``. This function answers
    exactly those four look-ups and nothing else, so the unpickler can read old checkpoints
    without being handed a general attribute getter.

    Args:
        owner: the object the pickle asks an attribute of; must be ``HistoryBuffer``
            itself (not a subclass, not an instance).
        name: the attribute name; one of ``HISTORY_BUFFER_DEFAULT_STATISTICS``.

    Returns:
        The plain function ``HistoryBuffer.<name>``.

    Raises:
        pickle.UnpicklingError: for any other ``(owner, name)``.
    """
    if owner is HistoryBuffer and isinstance(name, str) \
            and name in HISTORY_BUFFER_DEFAULT_STATISTICS:
        return getattr(HistoryBuffer, name)
    allowed = ', '.join(sorted(HISTORY_BUFFER_DEFAULT_STATISTICS))
    raise pickle.UnpicklingError(
        f'refusing getattr({owner!r}, {name!r}) in checkpoint: only '
        f'getattr(HistoryBuffer, name) with name in {{{allowed}}} is allowed')


def _numpy_multiarray_names(function_name: str) -> List[str]:
    # NumPy >= 2 pickles as numpy._core.multiarray.*, NumPy 1.x as numpy.core.multiarray.*.
    return [f'numpy._core.multiarray.{function_name}', f'numpy.core.multiarray.{function_name}']


def mmengine_checkpoint_safe_globals() -> List[SafeGlobal]:
    """The globals, beyond torch's defaults, that an mmengine ``Runner`` checkpoint needs.

    Returns a list in the format of ``torch.serialization.add_safe_globals``: objects, or
    ``(object, 'qualified.name.in.the.pickle')`` pairs where the name differs from the
    object's own (NumPy 1 vs 2 module names, and the restricted ``builtins.getattr``).
    """
    multiarray = getattr(np, '_core', None) or np.core
    safe: List[SafeGlobal] = [np.ndarray, np.dtype, HistoryBuffer]
    for function_name in ('_reconstruct', 'scalar'):
        function = getattr(multiarray.multiarray, function_name)
        safe += [(function, name) for name in _numpy_multiarray_names(function_name)]
    # The dtype classes are never named in a pickle, but the unpickler's BUILD opcode only
    # calls ``__setstate__`` on instances of allow-listed types.
    safe += [type(np.dtype(name)) for name in _NUMPY_CHECKPOINT_DTYPES]
    safe.append((history_buffer_statistic_lookup, 'builtins.getattr'))
    return safe


@contextlib.contextmanager
def mmengine_checkpoint_globals() -> Iterator[None]:
    """Allow-list :func:`mmengine_checkpoint_safe_globals` for the ``with`` block.

    Unlike ``torch.serialization.safe_globals``, only the entries that were not
    allow-listed before are removed on exit, so globals a user added with
    ``add_safe_globals`` stay, and nesting is harmless.
    """
    already_safe = set(torch.serialization.get_safe_globals())
    added = [entry for entry in mmengine_checkpoint_safe_globals() if entry not in already_safe]
    torch.serialization.add_safe_globals(added)
    try:
        yield
    finally:
        remaining = [entry for entry in torch.serialization.get_safe_globals()
                     if entry not in added]
        torch.serialization.clear_safe_globals()
        torch.serialization.add_safe_globals(remaining)


def _is_patched(obj: Any) -> bool:
    return hasattr(obj, _ORIGINAL_ATTR)


def _with_checkpoint_globals(loader: Callable) -> Callable:
    """Wrap a checkpoint loader function so it runs inside :func:`mmengine_checkpoint_globals`."""
    if _is_patched(loader):
        return loader

    @functools.wraps(loader)
    def load_with_mmengine_globals(*args, **kwargs):
        with mmengine_checkpoint_globals():
            return loader(*args, **kwargs)

    setattr(load_with_mmengine_globals, _ORIGINAL_ATTR, loader)
    return load_with_mmengine_globals


def _weights_only_load_url(load_url: Callable) -> Callable:
    """Wrap mmengine's ``load_url`` (``torch.hub.load_state_dict_from_url``, whose
    ``weights_only`` defaults to ``False``) so downloaded checkpoints load weights-only."""
    if _is_patched(load_url):
        return load_url

    @functools.wraps(load_url)
    def load_url_weights_only(*args, **kwargs):
        kwargs['weights_only'] = True
        return load_url(*args, **kwargs)

    setattr(load_url_weights_only, _ORIGINAL_ATTR, load_url)
    return load_url_weights_only


def _history_buffer_getstate(self: HistoryBuffer) -> dict:
    """Pickled state of a ``HistoryBuffer``: its instance attributes only.

    mmengine 0.10.7 also stored the class-wide statistics table (and, as a side effect,
    left it in the instance ``__dict__``); its default entries pickle through
    ``builtins.getattr``, which weights-only loading cannot allow safely.
    """
    state = dict(self.__dict__)
    state.pop('statistics_methods', None)
    return state


# What HistoryBuffer.__init__ (mmengine 0.10.7) sets on an instance: all a pickled buffer
# may restore.
HISTORY_BUFFER_STATE_KEYS = frozenset({'max_length', '_log_history', '_count_history'})


def _history_buffer_setstate(self: HistoryBuffer, state: dict) -> None:
    """Restore a ``HistoryBuffer`` from the instance attributes in ``state`` only.

    Upstream's ``__setstate__`` merged the checkpoint's statistics table into the class-wide
    one (``HistoryBuffer._statistics_methods``, shared by every buffer of the process) and
    copied every key into the instance ``__dict__``, so a checkpoint could add or replace
    statistics methods process-wide, or shadow the table with an instance attribute
    ``_statistics_methods``. Here the statistics table of old checkpoints is ignored (the
    methods are registered by the code that defines them), other unknown keys are dropped
    with a warning, and no class state is touched.
    """
    unknown = sorted(str(key) for key in state
                     if key not in HISTORY_BUFFER_STATE_KEYS and key != 'statistics_methods')
    if unknown:
        warnings.warn(f'HistoryBuffer in checkpoint: ignoring unknown state keys {unknown} '
                      f'(a HistoryBuffer restores only '
                      f'{sorted(HISTORY_BUFFER_STATE_KEYS)})', stacklevel=2)
    self._set_default_statistics()  # the four defaults, registered by mmengine's own code
    self.__dict__.update({key: value for key, value in state.items()
                          if key in HISTORY_BUFFER_STATE_KEYS})


def _replace_history_buffer_method(name: str, replacement: Callable) -> None:
    upstream_name = _UPSTREAM_PREFIX + name
    if upstream_name not in HistoryBuffer.__dict__:  # first application
        setattr(HistoryBuffer, upstream_name, HistoryBuffer.__dict__[name])
    setattr(HistoryBuffer, name, replacement)


# ------------------------------------------------------------------------------ probes
def mmengine_checkpoints_fail_to_load() -> bool:
    """Whether ``torch.load``, called with its defaults as mmengine's loaders call it,
    refuses what a ``Runner`` checkpoint holds besides tensors (a NumPy scalar, a NumPy array
    and a ``HistoryBuffer``). True under torch >= 2.6's ``weights_only=True`` default."""
    buffer = io.BytesIO()
    torch.save(dict(meta=dict(eta=np.float64(1.0)),
                    message_hub=dict(log_scalars=dict(loss=HistoryBuffer([1.0], [1])))), buffer)
    buffer.seek(0)
    with warnings.catch_warnings():  # e.g. TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD's notice
        warnings.simplefilter('ignore')
        try:
            torch.load(buffer, map_location='cpu')
        except Exception:  # pickle.UnpicklingError: refused by the weights-only unpickler
            return True
    return False


def history_buffer_pickles_statistics() -> bool:
    """Whether ``HistoryBuffer.__getstate__`` puts the class-wide statistics table (whose
    functions pickle as ``builtins.getattr``) into a buffer's state (mmengine 0.10.7)."""
    return 'statistics_methods' in HistoryBuffer([1.0], [1]).__getstate__()


def history_buffer_setstate_changes_statistics() -> bool:
    """Whether ``HistoryBuffer.__setstate__`` lets a pickled state add statistics methods
    to the class-wide table (mmengine 0.10.7). Probed on a throw-away subclass with a table
    of its own, so ``HistoryBuffer``'s table is not touched."""
    probe_class = type('HistoryBufferProbe', (HistoryBuffer, ), dict(_statistics_methods={}))
    probe = probe_class.__new__(probe_class)
    state = dict(HistoryBuffer([1.0], [1]).__dict__)
    state.pop('statistics_methods', None)
    probe.__setstate__(dict(state, statistics_methods=dict(probe_statistic=len)))
    return 'probe_statistic' in probe_class._statistics_methods


def load_url_unpickles_everything(load_url: Callable) -> bool:
    """Whether mmengine's ``load_url`` (``torch.hub.load_state_dict_from_url``) loads
    downloads with ``weights_only=False`` unless told otherwise (torch 2.13 does)."""
    try:
        parameter = inspect.signature(load_url).parameters.get('weights_only')
    except (TypeError, ValueError):  # no signature to read: leave it as it is
        return False
    return parameter is not None and parameter.default is False


def torchvision_importable() -> bool:
    """Whether ``import torchvision`` works; it is attempted only if torchvision is installed
    and not imported yet (PyPI's torchvision raises beside a CPU build of torch)."""
    if 'torchvision' in sys.modules:
        return True
    if importlib.util.find_spec('torchvision') is None:
        return False
    try:
        import torchvision  # noqa: F401
    except Exception:  # ImportError, or RuntimeError from operators missing in this torch
        return False
    return True


def has_accelerator() -> bool:
    """Whether mmengine would put processes on a device of their own (CUDA, NPU, MLU,
    MUSA): then its launchers and DDP wrapper work as they are."""
    from mmengine.device import (is_cuda_available, is_mlu_available, is_musa_available,
                                 is_npu_available)
    return is_cuda_available() or is_npu_available() or is_mlu_available() \
        or is_musa_available()


# ------------------------------------------------------------------------------- fixes
def fix_checkpoint_loading(checkpoint_module: ModuleType) -> None:
    """Make mmengine's checkpoint loaders (``checkpoint_module``: mmengine.runner.checkpoint)
    work under ``weights_only=True``, where :func:`mmengine_checkpoints_fail_to_load` (see
    module doc)."""
    if not mmengine_checkpoints_fail_to_load():
        return
    loader_cls = checkpoint_module.CheckpointLoader
    # Every registered scheme (and the module-level names, which schemes call each other by).
    for prefix, loader in list(loader_cls._schemes.items()):
        loader_cls._schemes[prefix] = _with_checkpoint_globals(loader)
    for name in dir(checkpoint_module):
        if name.startswith('load_from_'):
            setattr(checkpoint_module, name,
                    _with_checkpoint_globals(getattr(checkpoint_module, name)))
    # The classmethod covers schemes registered later by other packages.
    load_checkpoint = loader_cls.__dict__['load_checkpoint'].__func__
    if not _is_patched(load_checkpoint):
        loader_cls.load_checkpoint = classmethod(_with_checkpoint_globals(load_checkpoint))
    if load_url_unpickles_everything(checkpoint_module.load_url):
        checkpoint_module.load_url = _weights_only_load_url(checkpoint_module.load_url)
    if history_buffer_setstate_changes_statistics():
        _replace_history_buffer_method('__setstate__', _history_buffer_setstate)


def fix_history_buffer_pickling(checkpoint_module: ModuleType) -> None:
    """Leave the statistics table out of pickled ``HistoryBuffer`` states, where
    :func:`history_buffer_pickles_statistics` (see module doc). ``checkpoint_module``, the
    module that writes runner checkpoints, is the trigger only."""
    if history_buffer_pickles_statistics():
        _replace_history_buffer_method('__getstate__', _history_buffer_getstate)


def torchvision_model_urls() -> dict:
    """The ``torchvision://`` name -> URL table mmengine ships (torchvision 0.12's names:
    ``resnet50``, ``resnet101``, ``vgg16``...), read without importing torchvision."""
    import os.path as osp

    import mmengine
    return mmengine.load(osp.join(mmengine.__path__[0], 'hub', 'torchvision_0.12.json'))


def _model_urls_without_torchvision(get_models: Callable) -> Callable:
    """Wrap mmengine's ``get_torchvision_models`` to return the shipped table."""
    if _is_patched(get_models):
        return get_models

    @functools.wraps(get_models)
    def get_torchvision_models():
        return torchvision_model_urls()

    setattr(get_torchvision_models, _ORIGINAL_ATTR, get_models)
    return get_torchvision_models


def fix_torchvision_model_urls(checkpoint_module: ModuleType) -> None:
    """Resolve ``torchvision://`` checkpoint names (``checkpoint_module``:
    mmengine.runner.checkpoint) without torchvision, where :func:`torchvision_importable`
    is false (see module doc)."""
    if not torchvision_importable():
        checkpoint_module.get_torchvision_models = _model_urls_without_torchvision(
            checkpoint_module.get_torchvision_models)


@contextlib.contextmanager
def _cuda_set_device_skipped() -> Iterator[None]:
    # Only entered without an accelerator, where torch.cuda.set_device can only raise.
    set_device = torch.cuda.set_device
    torch.cuda.set_device = lambda device: None
    try:
        yield
    finally:
        torch.cuda.set_device = set_device


def _launcher_without_cuda(init_dist_launcher: Callable) -> Callable:
    """Wrap mmengine's ``_init_dist_{pytorch,slurm,mpi}(backend, ...)`` for CUDA-less
    machines: no ``torch.cuda.set_device``, and gloo instead of NCCL."""
    if _is_patched(init_dist_launcher):
        return init_dist_launcher

    @functools.wraps(init_dist_launcher)
    def init_dist_launcher_without_cuda(backend, *args, **kwargs):
        if backend == 'nccl':
            print_log('No CUDA device: using the gloo backend instead of nccl for '
                      'distributed CPU processes', logger='current', level=30)
            backend = 'gloo'
        with _cuda_set_device_skipped():
            return init_dist_launcher(backend, *args, **kwargs)

    setattr(init_dist_launcher_without_cuda, _ORIGINAL_ATTR, init_dist_launcher)
    return init_dist_launcher_without_cuda


def _ddp_init_for_cpu_modules(ddp_init: Callable) -> Callable:
    """Wrap ``MMDistributedDataParallel.__init__``: torch's DDP requires
    ``device_ids=None`` for a module whose parameters are on the CPU."""
    if _is_patched(ddp_init):
        return ddp_init

    @functools.wraps(ddp_init)
    def ddp_init_for_cpu_modules(self, module, *args, **kwargs):
        devices = {p.device.type for p in module.parameters()}
        if devices == {'cpu'}:
            kwargs['device_ids'] = None
            kwargs['output_device'] = None
        return ddp_init(self, module, *args, **kwargs)

    setattr(ddp_init_for_cpu_modules, _ORIGINAL_ATTR, ddp_init)
    return ddp_init_for_cpu_modules


def fix_dist_launchers(dist_utils_module: ModuleType) -> None:
    """Let mmengine's launchers (``dist_utils_module``: mmengine.dist.utils) start CPU
    processes, where :func:`has_accelerator` is false (see module doc)."""
    if has_accelerator():
        return
    for name in ('_init_dist_pytorch', '_init_dist_slurm', '_init_dist_mpi'):
        setattr(dist_utils_module, name,
                _launcher_without_cuda(getattr(dist_utils_module, name)))


def fix_ddp_for_cpu_modules(wrappers_module: ModuleType) -> None:
    """Let ``MMDistributedDataParallel`` (``wrappers_module``:
    mmengine.model.wrappers.distributed) wrap CPU modules, where :func:`has_accelerator` is
    false (see module doc)."""
    if has_accelerator():
        return
    ddp_class = wrappers_module.MMDistributedDataParallel
    ddp_class.__init__ = _ddp_init_for_cpu_modules(ddp_class.__init__)


def apply() -> None:
    """Import the modules the fixes of this module are for and apply each fix whose problem
    is present (:mod:`mmdysample.integration_hooks` does this lazily, right after each
    module's import). Idempotent."""
    from .integration_hooks import INTEGRATIONS, run_integration
    for upstream, integrations in INTEGRATIONS.items():
        for integration in integrations:
            if integration.startswith(__name__ + ':'):
                run_integration(integration, importlib.import_module(upstream))
