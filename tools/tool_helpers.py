"""Helpers shared by the scripts in ``tools/``: importing mmdysample, filling the registries
of a config's scope, reading a config as the train/test tools do, checking the datasets a
config reads, building the runner and ending a distributed worker.

A tool imports this module by name (``import tool_helpers``): Python puts the script's own
folder, ``tools/``, on ``sys.path`` when a tool runs as a script, and the tools append it
themselves when they are loaded by path (tests, ``importlib``).
"""
import argparse
import contextlib
import copy
import importlib
import json
import os
import os.path as osp
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple, Union

REPO_ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))

# default_scope -> module whose register_all_modules() fills that scope's registries.
SCOPE_REGISTRATION_MODULES = {
    'mmdet': 'mmdet.utils',
    'mmseg': 'mmseg.utils',
    'mmpretrain': 'mmpretrain.utils',
}

# How to obtain the datasets the paper's configs use, by dataset ``type``.
DATASET_PREPARATION_HINTS = {
    'CocoDataset': "download COCO 2017 (train2017/, val2017/, annotations/) into {data_root} "
                   "in mmdet's layout (mmdet docs: user_guides/dataset_prepare.md)",
    'CocoPanopticDataset': "download COCO 2017 with the panoptic annotations "
                           "(annotations/panoptic_{{train,val}}2017.json and their PNG folders) "
                           "into {data_root} in mmdet's layout "
                           "(mmdet docs: user_guides/dataset_prepare.md)",
    'ADE20KDataset': "download ADEChallengeData2016 (images/, annotations/) into {data_root} "
                     "in mmseg's layout (mmseg docs: user_guides/2_dataset_prepare.md)",
    'NYUDataset': "download NYU Depth V2 (nyu.zip, the link in mmseg docs: "
                  "user_guides/2_dataset_prepare.md, NYU) and convert it into {data_root} in "
                  "mmseg's layout (images/{{train,test}}, annotations/{{train,test}}) with "
                  "mmseg's converter: python <mmseg>/.mim/tools/dataset_converters/nyu.py "
                  "nyu.zip -o {data_root}",
}
SYNTHETIC_PREPARATION_HINT = ('generate the synthetic demo data: python '
                              'tools/make_synthetic_data.py --out data/synthetic (or make demo)')
# synthetic data sets that tools/make_synthetic_data.py does not write
SYNTHETIC_PREPARATION_HINTS = {
    'NYUDataset': 'generate the synthetic NYU-layout rooms: python -c "from '
                  'mmdysample.datasets import generate_synthetic_nyu; '
                  'generate_synthetic_nyu(\'{data_root}\')" (or python tools/demo.py '
                  '--models depthformer, which writes them to data/synthetic/nyu)',
}
GENERIC_PREPARATION_HINT = ('prepare the {dataset_type} dataset under {data_root} in the '
                            'layout the config expects (see the mmdet/mmseg dataset '
                            'preparation docs), or point data_root at it with '
                            '--cfg-options')


def import_mmdysample():
    """Import mmdysample (installed, or from this checkout when it is not installed)."""
    try:
        return importlib.import_module('mmdysample')
    except ImportError:
        sys.path.insert(0, REPO_ROOT)
        return importlib.import_module('mmdysample')


def repo_config_files() -> List[str]:
    """Every config file under this checkout's ``configs/``."""
    configs_dir = osp.join(REPO_ROOT, 'configs')
    return sorted(osp.join(folder, name) for folder, _, names in os.walk(configs_dir)
                  for name in names if name.endswith('.py'))


def exit_if_missing(path: str, what: str, prog: str, candidates: Sequence[str] = ()) -> None:
    """Stop with one line on stderr and exit status 2 (argparse's usage error) when the file
    argument ``path`` is not a file, before anything heavy is imported or built.

    Args:
        path: the argument as given; remote ones (``'://'`` in it) are not checked.
        what: what it is, for the message (``'config'``, ``'checkpoint'``).
        prog: the tool, for the message (``'tools/train.py'``).
        candidates: files whose names may be what was meant: up to three whose file names
            are close to ``path``'s (:func:`difflib.get_close_matches`) are named, as paths
            relative to the working directory.
    """
    import difflib

    if '://' in path or osp.isfile(path):
        return
    problem = 'is a directory, not a file' if osp.isdir(path) else 'not found'
    by_name: Dict[str, List[str]] = {}
    for candidate in candidates:
        by_name.setdefault(osp.basename(candidate), []).append(candidate)
    close = [osp.relpath(candidate) for name in difflib.get_close_matches(
        osp.basename(path), list(by_name), n=3) for candidate in by_name[name]][:3]
    hint = ''
    if close:
        choices = f'{", ".join(close[:-1])} or {close[-1]}' if close[1:] else close[0]
        hint = f'; did you mean {choices}?'
    print(f'{prog}: error: {what} {path} {problem}{hint}', file=sys.stderr)
    raise SystemExit(2)


def checkpoint_files_near(path: str) -> List[str]:
    """The checkpoint files (``.pth``) in the folder ``path`` names (for
    :func:`exit_if_missing`); none when that folder does not exist."""
    folder = osp.dirname(path) or '.'
    if not osp.isdir(folder):
        return []
    return sorted(osp.join(folder, name) for name in os.listdir(folder) if name.endswith('.pth'))


def register_scope_modules(cfg) -> str:
    """Fill the registries of ``cfg.default_scope`` and return the scope name.

    Raises:
        SystemExit: when the config has no ``default_scope`` or an unsupported one.
    """
    scope = cfg.get('default_scope', None)
    if scope not in SCOPE_REGISTRATION_MODULES:
        allowed = ', '.join(repr(name) for name in SCOPE_REGISTRATION_MODULES)
        raise SystemExit(f'config default_scope={scope!r} is not supported: set default_scope '
                         f'to one of {allowed} in the config')
    module = importlib.import_module(SCOPE_REGISTRATION_MODULES[scope])
    # The runner sets the default scope from the config itself.
    module.register_all_modules(init_default_scope=False)
    return scope


def _type_name(type_field: Any) -> str:
    return type_field if isinstance(type_field, str) else getattr(type_field, '__name__',
                                                                 str(type_field))


def _is_remote(path: str, backend_args: Optional[dict]) -> bool:
    backend = (backend_args or {}).get('backend', 'local')
    return backend not in ('local', 'disk') or '://' in str(path)


def _leaf_datasets(dataset_cfg: Any, key: str) -> Iterator[Tuple[str, dict]]:
    """Yield ``(config key, dataset cfg)`` for every dataset that reads files, looking
    through wrappers (``dataset=``: RepeatDataset, ClassBalancedDataset,
    MultiImageMixDataset...; ``datasets=``: ConcatDataset)."""
    if not isinstance(dataset_cfg, dict):
        return
    if isinstance(dataset_cfg.get('dataset'), dict):
        yield from _leaf_datasets(dataset_cfg['dataset'], f'{key}.dataset')
    elif isinstance(dataset_cfg.get('datasets'), (list, tuple)):
        for index, child in enumerate(dataset_cfg['datasets']):
            yield from _leaf_datasets(child, f'{key}.datasets[{index}]')
    else:
        yield key, dataset_cfg


def _dataset_paths(dataset_cfg: dict) -> Iterator[Tuple[str, str]]:
    """``(field, local path)`` pairs a dataset cfg reads, joined as mmengine's BaseDataset
    joins them (relative ``ann_file`` / ``data_prefix`` entries under ``data_root``)."""
    data_root = dataset_cfg.get('data_root') or ''
    if data_root:
        yield 'data_root', str(data_root)
    ann_file = dataset_cfg.get('ann_file') or ''
    if ann_file:
        yield 'ann_file', ann_file if osp.isabs(ann_file) else osp.join(data_root, ann_file)
    data_prefix = dataset_cfg.get('data_prefix') or {}
    if isinstance(data_prefix, dict):
        for prefix_key, prefix in data_prefix.items():
            if isinstance(prefix, str) and prefix:
                path = prefix if osp.isabs(prefix) else osp.join(data_root, prefix)
                yield f'data_prefix.{prefix_key}', path


def _dataset_files(cfg, phases: Sequence[str]) -> Iterator[Tuple[str, str, str, str]]:
    """``(owner key, field, path, preparation hint)`` of every local dataset path that
    ``cfg`` reads in ``phases``, in config order (owner: the dataset's or evaluator's key)."""
    for phase in phases:
        if phase not in ('train', 'val', 'test'):
            raise ValueError(f"phases must contain only 'train', 'val', 'test', got {phase!r}")
        dataloader = cfg.get(f'{phase}_dataloader', None)
        datasets = _leaf_datasets(dataloader.get('dataset'), f'{phase}_dataloader.dataset') \
            if isinstance(dataloader, dict) else []
        phase_hint = GENERIC_PREPARATION_HINT.format(dataset_type='config\'s',
                                                     data_root='its data_root')
        for key, dataset in datasets:
            dataset_type = _type_name(dataset.get('type', ''))
            phase_hint = DATASET_PREPARATION_HINTS.get(dataset_type, GENERIC_PREPARATION_HINT)
            if 'synthetic' in str(dataset.get('data_root') or ''):  # configs/demo/
                phase_hint = SYNTHETIC_PREPARATION_HINTS.get(dataset_type,
                                                             SYNTHETIC_PREPARATION_HINT)
            phase_hint = phase_hint.format(data_root=dataset.get('data_root') or '.',
                                           dataset_type=dataset_type or 'config\'s')
            for field, path in _dataset_paths(dataset):
                if not _is_remote(path, dataset.get('backend_args')):
                    yield key, field, path, phase_hint
        evaluators = cfg.get(f'{phase}_evaluator', None)
        evaluators = evaluators if isinstance(evaluators, (list, tuple)) else [evaluators]
        for index, evaluator in enumerate(evaluators):
            if not isinstance(evaluator, dict):
                continue
            suffix = f'[{index}]' if len(evaluators) > 1 else ''
            # Metrics that read ground truth themselves (CocoMetric, CocoPanopticMetric).
            for field in ('ann_file', 'seg_prefix'):
                path = evaluator.get(field)
                if path and not _is_remote(path, evaluator.get('backend_args')):
                    yield f'{phase}_evaluator{suffix}', field, path, phase_hint


def _unique_paths(entries: Iterator[Tuple[str, str, str]]) -> List[Tuple[str, str, str]]:
    # The same dataset is often shared by val and test: each path once.
    unique, seen = [], set()
    for entry in entries:
        if entry[1] not in seen:
            seen.add(entry[1])
            unique.append(entry)
    return unique


def dataset_paths(cfg, phases: Sequence[str]) -> List[Tuple[str, str, str]]:
    """Every local dataset file/directory ``cfg`` reads in ``phases``, present or not.

    Returns:
        ``(config key, path, preparation hint)`` in config order, each path once; a
        ``data_root`` only where its dataset names nothing below it. Relative paths are
        relative to the directory the run starts in (as mmengine reads them).
    """
    entries = list(_dataset_files(cfg, phases))
    with_children = {owner for owner, field, _, _ in entries if field != 'data_root'}
    return _unique_paths((f'{owner}.{field}', path, hint) for owner, field, path, hint in entries
                         if field != 'data_root' or owner not in with_children)


def missing_dataset_paths(cfg, phases: Sequence[str]) -> List[Tuple[str, str, str]]:
    """Local dataset files/directories that ``cfg`` reads in ``phases`` and that do not exist.

    Args:
        cfg: an mmengine ``Config``.
        phases: any of ``'train'``, ``'val'``, ``'test'``: which ``{phase}_dataloader`` and
            ``{phase}_evaluator`` to check.

    Returns:
        ``(config key, path, preparation hint)`` for each missing path, in config order.
        Datasets on non-local backends (``backend_args`` / URLs) are skipped; below a missing
        ``data_root`` only the root is named.
    """
    missing, missing_roots = [], set()
    for owner, field, path, hint in _dataset_files(cfg, phases):
        if owner in missing_roots or osp.exists(path):
            continue
        missing.append((f'{owner}.{field}', path, hint))
        if field == 'data_root':
            missing_roots.add(owner)  # everything below it is missing too
    return _unique_paths(missing)


def check_datasets(cfg, phases: Sequence[str]) -> None:
    """Stop (``SystemExit``, non-zero) when a local dataset path of ``phases`` is missing;
    the message names every missing path and says how to prepare the dataset."""
    missing = missing_dataset_paths(cfg, phases)
    if missing:
        lines = [f'{path} not found ({key}'
                 + ('' if osp.isabs(path) else f', i.e. {osp.abspath(path)}') + ')'
                 for key, path, _ in missing]
        hints = list(dict.fromkeys(hint for _, _, hint in missing))
        raise SystemExit('Dataset files are missing, nothing was run:\n  ' + '\n  '.join(lines)
                         + '\nTo fix: ' + '\n        '.join(hints))


# ---------------------------------------------------------------------------------------
# Pretrained checkpoints a config loads when its run starts (``Pretrained`` init_cfgs,
# ``pretrained=``, ``load_from``), resolved as mmengine resolves them: ``torchvision://``,
# ``open-mmlab://`` and ``mmcls://`` names through the URL tables mmengine ships (with
# mmdysample imported, so torchvision:// names resolve without torchvision, as in the runs),
# and every URL to the file mmengine's ``load_from_http`` reads:
# ``torch.hub.load_state_dict_from_url`` keeps it as ``<torch.hub.get_dir()>/checkpoints/
# <the URL's file name>`` and downloads it only when that file is missing (no hash check).
# ---------------------------------------------------------------------------------------
_TORCHVISION_SCHEMES = ('torchvision://', 'modelzoo://')
_OPENMMLAB_SCHEMES = ('open-mmlab://', 'openmmlab://')
_MMCLS_SCHEME = 'mmcls://'
_HTTP_SCHEMES = ('http://', 'https://')
WEIGHTS_MIRROR_SCHEMES = ('http', 'https', 'file')


@dataclass(frozen=True)
class PretrainedCheckpoint:
    """A checkpoint a config loads at start, and where the run finds it.

    ``url``: where it is downloaded from (None for local files and for names that do not
    resolve); ``path``: the file the run reads (for a URL, the torch hub cache's copy; None
    where it cannot be checked from here: ``s3://``, ``pavi://``...); ``error``: why the
    name does not resolve (the run would fail on it).
    """
    key: str  # where the config names it, e.g. model.backbone.init_cfg.checkpoint
    name: str  # as the config writes it
    url: Optional[str] = None
    path: Optional[str] = None
    error: Optional[str] = None

    @property
    def status(self) -> str:
        """'present', 'missing', 'unresolved' (``error``) or 'unchecked' (no local path)."""
        if self.error is not None:
            return 'unresolved'
        if self.path is None:
            return 'unchecked'
        return 'present' if osp.isfile(self.path) else 'missing'


def config_checkpoints(cfg) -> List[Tuple[str, str]]:
    """``(config key, checkpoint name)`` of every pretrained checkpoint ``cfg`` loads when
    its run starts, in config order: the ``checkpoint`` of each ``Pretrained`` ``init_cfg``
    in ``model``, every ``pretrained=`` string of the model and its parts (mmseg's
    ``EncoderDecoder`` hands ``model.pretrained`` to the backbone, which loads it), and
    ``load_from``; each name once, with the first key that names it."""
    found: List[Tuple[str, str]] = []

    def walk(node: Any, key: str) -> None:
        if isinstance(node, dict):
            if _type_name(node.get('type', '')) == 'Pretrained' \
                    and isinstance(node.get('checkpoint'), str):
                found.append((f'{key}.checkpoint', node['checkpoint']))
            if isinstance(node.get('pretrained'), str):
                found.append((f'{key}.pretrained', node['pretrained']))
            for child_key, child in node.items():
                walk(child, f'{key}.{child_key}')
        elif isinstance(node, (list, tuple)):
            for index, child in enumerate(node):
                walk(child, f'{key}[{index}]')

    walk(cfg.get('model', None), 'model')
    if isinstance(cfg.get('load_from', None), str):
        found.append(('load_from', cfg.load_from))
    first_keys = {}
    for key, name in found:  # a name handed down (model.pretrained -> backbone) once
        first_keys.setdefault(name, key)
    return [(key, name) for name, key in first_keys.items()]


def checkpoint_cache_dir() -> str:
    """The folder ``torch.hub.load_state_dict_from_url`` (mmengine's http(s) loader) keeps
    downloaded checkpoints in: ``<torch.hub.get_dir()>/checkpoints``, i.e.
    ``$TORCH_HOME/hub/checkpoints``, else ``$XDG_CACHE_HOME/torch/hub/checkpoints``, else
    ``~/.cache/torch/hub/checkpoints``."""
    import torch.hub
    return osp.join(torch.hub.get_dir(), 'checkpoints')


def cached_checkpoint_path(url: str) -> str:
    """The file mmengine's ``load_from_http`` reads for ``url`` (and downloads if absent)."""
    from urllib.parse import urlparse
    return osp.join(checkpoint_cache_dir(), osp.basename(urlparse(url).path))


def _checkpoint_url(name: str) -> str:
    """The URL mmengine downloads the checkpoint ``name`` from (a path under mmengine's
    home for ``open-mmlab://`` entries that are files). Raises ``KeyError`` for a name its
    tables do not have."""
    from mmengine.runner import checkpoint as mmengine_checkpoint

    import_mmdysample()  # torchvision:// without torchvision (mmdysample.compat), as in the runs
    if name.startswith(_TORCHVISION_SCHEMES):
        table, model = mmengine_checkpoint.get_torchvision_models(), name.split('://', 1)[1]
    elif name.startswith(_OPENMMLAB_SCHEMES):
        table, model = mmengine_checkpoint.get_external_models(), name.split('://', 1)[1]
        model = mmengine_checkpoint.get_deprecated_model_names().get(model, model)
    else:  # mmcls://
        table, model = mmengine_checkpoint.get_mmcls_models(), name[len(_MMCLS_SCHEME):]
    if model not in table:
        raise KeyError(f'mmengine has no checkpoint named {model!r} under '
                       f'{name.split("://", 1)[0]}://')
    url = table[model]
    if name.startswith(_OPENMMLAB_SCHEMES) and not url.startswith(_HTTP_SCHEMES):
        return osp.join(mmengine_checkpoint._get_mmengine_home(), url)  # a file, as mmengine
    return url


def resolve_checkpoint(name: str, key: str = '', root: str = '.') -> PretrainedCheckpoint:
    """Where the run that loads ``name`` gets it: its URL and the file it reads.

    Args:
        name: as a config writes it: ``torchvision://resnet50``, ``open-mmlab://...``,
            ``mmcls://...``, an http(s) URL, or a local path.
        key: where the config names it (kept in the result).
        root: the directory the run starts in (relative local paths are read from there).
    """
    if name.startswith(_TORCHVISION_SCHEMES + _OPENMMLAB_SCHEMES + (_MMCLS_SCHEME, )):
        try:
            url = _checkpoint_url(name)
        except KeyError as error:
            return PretrainedCheckpoint(key, name, error=str(error.args[0]))
        if not url.startswith(_HTTP_SCHEMES):  # an open-mmlab:// name that is a file
            return PretrainedCheckpoint(key, name, path=url)
        return PretrainedCheckpoint(key, name, url, cached_checkpoint_path(url))
    if name.startswith(_HTTP_SCHEMES):
        return PretrainedCheckpoint(key, name, name, cached_checkpoint_path(name))
    if '://' in name:  # s3://, pavi://...: read by the run's file backend
        return PretrainedCheckpoint(key, name)
    return PretrainedCheckpoint(key, name, path=osp.join(root, osp.expanduser(name)))


def mirrored_url(url: str, mirror: Optional[str]) -> str:
    """``url`` with its scheme and host replaced by ``mirror`` (which may add a path:
    ``http://m/openmmlab`` + ``https://h/a/b.pth`` -> ``http://m/openmmlab/a/b.pth``);
    ``url`` itself without a mirror."""
    from urllib.parse import urlparse
    if not mirror:
        return url
    parts = urlparse(mirror)
    if parts.scheme not in WEIGHTS_MIRROR_SCHEMES or not (parts.netloc or parts.scheme == 'file'):
        raise ValueError(f'weights mirror must be a URL with one of the schemes '
                         f'{list(WEIGHTS_MIRROR_SCHEMES)} (e.g. http://host:port/path or '
                         f'file:///shared/weights), got {mirror!r}')
    source = urlparse(url)
    return mirror.rstrip('/') + source.path + (f'?{source.query}' if source.query else '')


def fetch_checkpoint(checkpoint: PretrainedCheckpoint, mirror: Optional[str] = None,
                     progress: bool = False) -> str:
    """Download ``checkpoint`` (from ``mirror`` instead of its host, if given) to the file
    its runs read (``checkpoint.path``, in the torch hub cache) and return that path.

    The download goes to a temporary file next to it and is renamed into place only when
    complete (``torch.hub.download_url_to_file``); where the file name carries a hash
    (``name-<hex>.pth``, torch hub's and OpenMMLab's convention: the first hex digits of
    the file's SHA-256), the download must match it, or nothing is placed.

    Raises:
        ValueError: the checkpoint has no URL (a local file, or an unresolved name).
        RuntimeError: the download failed or does not match the hash in its name.
    """
    import torch.hub

    if checkpoint.url is None or checkpoint.path is None:
        raise ValueError(f'{checkpoint.name} ({checkpoint.key}) has no URL to download from'
                         + (f': {checkpoint.error}' if checkpoint.error else ''))
    source = mirrored_url(checkpoint.url, mirror)
    match = torch.hub.HASH_REGEX.search(osp.basename(checkpoint.path))
    os.makedirs(osp.dirname(checkpoint.path), exist_ok=True)
    try:
        torch.hub.download_url_to_file(source, checkpoint.path,
                                       match.group(1) if match else None, progress=progress)
    except Exception as error:  # URLError, HTTPError, the hash check's RuntimeError
        raise RuntimeError(f'downloading {source} to {checkpoint.path} failed '
                           f'({type(error).__name__}: {error}); nothing was written there'
                           ) from error
    return checkpoint.path


def finish_distributed_run(runner=None, exit_status: int = 0) -> None:
    """End a distributed worker (torchrun, slurm) once its work is done and saved.

    The runner's visualizer is closed (when no ``LoggerHook`` closed it already), the
    process group is destroyed, the interpreter's exit handlers run (``atexit``: the final
    flush of visualizer backends such as WandB and MLflow, of TensorBoard writers, and
    ``logging``'s), and the worker exits at once with ``exit_status`` (``os._exit``) instead of
    going through interpreter finalisation: with torch 2.13, mmengine 0.10.7 and gloo, rank 0
    aborted there about once in 13 CPU runs of ``tools/dist_train.sh`` ('terminate called
    without an active exception', SIGABRT, no Python frame on the stack, after the
    checkpoints and metrics were written), which torchrun reports as a failed job. Nothing
    happens in a non-distributed run.
    """
    import atexit

    import torch.distributed as torch_dist
    if not (torch_dist.is_available() and torch_dist.is_initialized()):
        return
    if runner is not None:
        from mmengine.hooks import LoggerHook
        if not any(isinstance(hook, LoggerHook) for hook in runner.hooks):
            runner.visualizer.close()  # LoggerHook.after_run closes it otherwise
    torch_dist.destroy_process_group()
    atexit._run_exitfuncs()  # what a normal exit runs before finalisation
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(exit_status)


def memoize_config_formatting() -> None:
    """Format each config text with yapf once per process.

    mmengine's ``Config.pretty_text`` runs yapf over the whole config every time it is read:
    for the log, the dumped config, the runtime info and the meta of *every checkpoint*
    (about 1 s each for a detector config on one CPU core: a run that checkpoints every
    iteration spends most of its time there). yapf is a pure function of the text and the
    style, so its result is kept per (text, style): the same bytes, formatted once.
    """
    import functools

    from mmengine.config import config as config_module

    format_code = config_module.FormatCode
    if getattr(format_code, '_mmdysample_memoized', False):
        return

    @functools.lru_cache(maxsize=16)
    def _format(text, style_items):
        return format_code(text, style_config=dict(style_items))

    @functools.wraps(format_code)
    def memoized(text, style_config=None, **kwargs):
        if kwargs or not isinstance(style_config, dict):
            return format_code(text, style_config=style_config, **kwargs)
        try:
            style_items = tuple(sorted(style_config.items()))
            hash(style_items)
        except TypeError:  # an unhashable style value: format as usual
            return format_code(text, style_config=style_config)
        return _format(text, style_items)

    memoized._mmdysample_memoized = True
    config_module.FormatCode = memoized


def memoize_external_config_lookup() -> None:
    """Look up each ``mmdet::``/``mmseg::`` config name once per process.

    To find the file of a base config named ``'mmdet::faster_rcnn/...'``, mmengine 0.10.7
    reads the package's ``model-index.yml`` and every metafile it imports (about 150 YAML
    files between mmdet and mmseg; ``mmengine.config.utils._get_cfg_metainfo``) and reloads
    ``pkg_resources`` to check that the package is installed (``is_installed``), each time
    a config names one: three quarters of the time that reading one of the paper's configs
    took (profiled on the 2-core dev machine). The installed packages do not change while a
    tool runs, so the answers are kept: the metafile entry per (package, config name), and
    the packages found installed.
    """
    import functools

    from mmengine.config import config as config_module
    from mmengine.config import utils as config_utils

    installed = config_module.is_installed
    if not getattr(installed, '_mmdysample_memoized', False):
        found = set()

        @functools.wraps(installed)
        def is_installed(package):
            if package not in found and installed(package):
                found.add(package)
            return package in found

        is_installed._mmdysample_memoized = True
        config_module.is_installed = is_installed

    lookup = config_utils._get_cfg_metainfo
    if getattr(lookup, '_mmdysample_memoized', False):
        return

    @functools.lru_cache(maxsize=None)
    def _lookup(package_path, cfg_path):
        try:
            return lookup(package_path, cfg_path), None
        except ValueError as error:  # not a model config (a _base_ file): mmengine's answer
            return None, error.args

    @functools.wraps(lookup)
    def memoized(package_path, cfg_path):
        metainfo, error = _lookup(package_path, cfg_path)
        if error is not None:
            raise ValueError(*error)
        return copy.deepcopy(metainfo)

    memoized._mmdysample_memoized = True
    config_utils._get_cfg_metainfo = memoized


def load_config(args: argparse.Namespace):
    """The config of ``args.config`` with ``--launcher``, ``--cfg-options`` and the work_dir
    (command line > config > ``./work_dirs/<config name>``) applied, and its scope's modules
    registered. Returns ``(cfg, scope)``; shared by ``tools/train.py`` and ``tools/test.py``.
    Config texts are formatted once per process (:func:`memoize_config_formatting`)."""
    from mmengine.config import Config

    memoize_config_formatting()
    cfg = Config.fromfile(args.config)
    cfg.launcher = args.launcher
    if args.cfg_options is not None:
        cfg.merge_from_dict(args.cfg_options)
    scope = register_scope_modules(cfg)
    if scope == 'mmdet':
        from mmdet.utils import setup_cache_size_limit_of_dynamo
        setup_cache_size_limit_of_dynamo()
    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir', None) is None:
        cfg.work_dir = osp.join('./work_dirs', osp.splitext(osp.basename(args.config))[0])
    return cfg, scope




def add_runner_arguments(parser: argparse.ArgumentParser) -> None:
    """The options every runner tool shares with mmdet's/mmseg's tools: ``--cfg-options``,
    ``--launcher`` and ``--local-rank`` (passed by ``torch.distributed.launch``)."""
    from mmengine.config import DictAction

    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override settings of the config, key=value pairs (nested keys '
                        'with dots, lists as key="[a,b]" or key=a,b, no white space)')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'],
                        default='none', help='job launcher')
    # torch.distributed.launch passes --local-rank (torch >= 2.0) or --local_rank.
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)


def load_average() -> Optional[List[float]]:
    """The 1, 5 and 15 minute load averages, rounded (``None`` where the OS has none)."""
    return [round(v, 2) for v in os.getloadavg()] if hasattr(os, 'getloadavg') else None


def merge_cfg_options(cfg, options: Sequence[str]) -> None:
    """Merge ``--cfg-options`` values (``key=value`` strings) into ``cfg``, parsed as the
    runner tools parse them."""
    if options:
        parser = argparse.ArgumentParser()
        add_runner_arguments(parser)
        cfg.merge_from_dict(parser.parse_args(['--cfg-options', *options]).cfg_options)


def training_phases(cfg) -> List[str]:
    """The dataloader phases a training run reads: ``train``, and ``val`` if it validates."""
    return ['train', 'val'] if cfg.get('val_cfg') else ['train']


def parse_runner_args(parser: argparse.ArgumentParser,
                      argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    """Parse ``argv`` and export ``LOCAL_RANK`` from ``--local-rank`` when the launcher did
    not set it (as the upstream tools do)."""
    args = parser.parse_args(argv)
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    return args


def build_runner(cfg):
    """The config's runner: ``runner_type`` from the registry, else mmengine's ``Runner``."""
    from mmengine.registry import RUNNERS
    from mmengine.runner import Runner

    if 'runner_type' not in cfg:
        return Runner.from_cfg(cfg)
    return RUNNERS.build(cfg)


# ---------------------------------------------------------------------------------------
# Measuring layers and models (tools/benchmark.py, tools/analyze_model.py): parameters, time,
# peak memory; building a model from a config (also tools/visualize_sampling.py and
# tools/convert_checkpoint.py). FLOPs are counted by the library: mmdysample.flops.
#
# Peak memory (:func:`peak_memory_bytes`): on CUDA, ``torch.cuda.max_memory_allocated`` over
# the call minus what was allocated before it. On CPU there is no allocator high-water mark,
# so the CPU allocator's own accounting is read through ``torch.profiler`` with
# ``profile_memory=True``: it reports every allocation and free made while profiling, with
# its size; the peak is the highest running sum of those sizes, i.e. the largest number of
# bytes of tensor memory that the call itself held at any one time (inputs and parameters
# that existed before the call are not included; memory that libraries allocate outside
# PyTorch's allocator, e.g. oneDNN scratch space or thread stacks, is not seen).
# ---------------------------------------------------------------------------------------
def count_parameters(module: 'torch.nn.Module', trainable_only: bool = False) -> int:
    """Number of parameter elements of ``module`` (shared parameters counted once)."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


def synchronize(device: Union[str, 'torch.device']) -> None:
    """Wait for the device's queued work (CUDA); nothing to do on CPU."""
    import torch
    device = torch.device(device)
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


@contextlib.contextmanager
def _native_stderr_silenced() -> Iterator[None]:
    """Send file descriptor 2 to /dev/null: the profiler's native library prints two
    'USDT ... profiler_start/stop' lines on every start/stop, which would bury the output."""
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def _cpu_peak_from_profiler(fn: Callable[[], Any]) -> int:
    from torch.profiler import ProfilerActivity, profile

    prof = profile(activities=[ProfilerActivity.CPU], profile_memory=True)
    with _native_stderr_silenced():
        prof.start()
    try:
        fn()
    finally:
        with _native_stderr_silenced():
            prof.stop()
    handle, trace_path = tempfile.mkstemp(suffix='.json')
    os.close(handle)
    try:
        prof.export_chrome_trace(trace_path)
        with open(trace_path) as trace_file:
            events = json.load(trace_file)['traceEvents']
    finally:
        os.remove(trace_path)
    memory_events = sorted(
        (e for e in events
         if e.get('name') == '[memory]' and e.get('args', {}).get('Device Type', 0) == 0),
        key=lambda e: (e['ts'], e['args'].get('Ev Idx', 0)))
    live_bytes = peak = 0
    for event in memory_events:
        live_bytes += event['args']['Bytes']  # negative for frees
        peak = max(peak, live_bytes)
    return peak


def peak_memory_bytes(fn: Callable[[], Any], device: Union[str, 'torch.device'] = 'cpu') -> int:
    """Peak bytes of tensor memory allocated by one call of ``fn`` beyond what was allocated
    before it (see the module docstring for how, per device).

    Release anything the previous call left (e.g. ``.grad``) before calling, or on CPU its
    freeing is not seen.
    """
    import torch
    device = torch.device(device)
    if device.type == 'cuda':
        synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        fn()
        synchronize(device)
        return int(torch.cuda.max_memory_allocated(device) - before)
    if device.type == 'cpu':
        return _cpu_peak_from_profiler(fn)
    raise ValueError(f"device must be 'cpu' or 'cuda', got {device.type!r}")


@dataclass
class TimingStats:
    """Summary of repeated timings, in milliseconds per call.

    ``samples`` holds one value per repeat (the mean over that repeat's iterations).
    """
    median: float
    q1: float
    q3: float
    minimum: float
    maximum: float
    iters: int
    samples: List[float]

    @property
    def iqr(self) -> float:
        return self.q3 - self.q1

    def to_dict(self) -> Dict[str, Any]:
        return {**asdict(self), 'iqr': self.iqr}


def summarize_times(samples_ms: Sequence[float], iters: int) -> TimingStats:
    """Median, quartiles (``statistics.quantiles``, inclusive method), min and max."""
    samples = [float(s) for s in samples_ms]
    if not samples:
        raise ValueError('samples_ms must hold at least one timing')
    if len(samples) == 1:
        q1 = q3 = samples[0]
    else:
        q1, _, q3 = statistics.quantiles(samples, n=4, method='inclusive')
    return TimingStats(statistics.median(samples), q1, q3, min(samples), max(samples), iters,
                       samples)


def time_per_call(fn: Callable[[], Any], iters: int,
                  device: Union[str, 'torch.device'] = 'cpu') -> float:
    """Mean wall time of ``fn()`` over ``iters`` back-to-back calls, in milliseconds
    (device synchronised before and after)."""
    if iters < 1:
        raise ValueError(f'iters must be a positive integer, got {iters!r}')
    synchronize(device)
    start = time.perf_counter()
    for _ in range(iters):
        fn()
    synchronize(device)
    return (time.perf_counter() - start) * 1e3 / iters


def event_time_per_call(fn: Callable[[], Any], iters: int,
                        event_class: Optional[Callable[..., Any]] = None) -> float:
    """Mean GPU time of ``fn()`` over ``iters`` back-to-back calls, in milliseconds, from two
    CUDA events recorded on the current stream around the calls (the host waits for the
    second). ``event_class``: ``torch.cuda.Event`` by default; anything with the same
    ``record()``, ``synchronize()`` and ``elapsed_time(other)`` (in ms) also works."""
    if iters < 1:
        raise ValueError(f'iters must be a positive integer, got {iters!r}')
    if event_class is None:
        import torch
        event_class = torch.cuda.Event
    start, end = event_class(enable_timing=True), event_class(enable_timing=True)
    start.record()
    for _ in range(iters):
        fn()
    end.record()
    end.synchronize()
    return start.elapsed_time(end) / iters


def device_time_per_call(fn: Callable[[], Any], iters: int,
                         device: Union[str, 'torch.device'] = 'cpu') -> float:
    """Milliseconds per call of ``fn()`` on ``device``: :func:`event_time_per_call` on CUDA
    (after the queued work is done), the wall clock (:func:`time_per_call`) elsewhere."""
    import torch
    device = torch.device(device)
    if device.type == 'cuda':
        synchronize(device)
        with torch.cuda.device(device):
            return event_time_per_call(fn, iters)
    return time_per_call(fn, iters, device)


def build_model(config,
                cfg_options: Optional[Dict[str, Any]] = None,
                checkpoint: Optional[str] = None,
                device: Union[str, 'torch.device'] = 'cpu') -> 'torch.nn.Module':
    """Build ``cfg.model`` in the config's ``default_scope`` (mmdet, mmseg...), without
    ``init_weights()`` (so no pretrained backbone is fetched; every layer has its
    constructor's initialisation, DySample its paper one), turn SyncBN into BatchNorm on
    CPU, optionally load a checkpoint
    (mmengine's ``load_checkpoint``, non-strict: the missing/unexpected keys are logged),
    and return it in eval mode on ``device``."""
    import torch
    from mmengine.config import Config
    from mmengine.registry import MODELS, init_default_scope
    from mmengine.runner import load_checkpoint

    import_mmdysample()  # registers the plugin's modules (the integrations with mmdet/mmseg)
    if isinstance(config, Config):
        cfg = copy.deepcopy(config)
    elif isinstance(config, (str, os.PathLike)):
        cfg = Config.fromfile(os.fspath(config))
    else:
        raise TypeError(f'config must be a path or an mmengine Config, got '
                        f'{type(config).__name__}')
    if cfg_options:
        cfg.merge_from_dict(dict(cfg_options))
    if 'model' not in cfg:
        raise ValueError(f'config {config} has no model')
    init_default_scope(cfg.get('default_scope', None) or 'mmengine')
    model = MODELS.build(cfg.model)
    if torch.device(device).type == 'cpu':
        from mmengine.model import revert_sync_batchnorm
        model = revert_sync_batchnorm(model)  # SyncBN needs CUDA and a process group
    if checkpoint is not None:
        load_checkpoint(model, checkpoint, map_location='cpu')
    model.cfg = cfg
    return model.to(device).eval()
