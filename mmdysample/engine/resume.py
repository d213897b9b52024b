"""Choosing the checkpoint a run resumes from, and setting a config up for an exact resume.

``tools/train.py --resume`` goes through :func:`configure_resume`; scripts that build the
runner themselves can call it on their config too.
"""
import glob
import os
import os.path as osp
from typing import Any, List, Optional, Sequence, Tuple

from mmengine.logging import print_log

__all__ = [
    'CheckpointError', 'load_resumable_checkpoint', 'find_resumable_checkpoint',
    'configure_resume', 'ensure_custom_hooks'
]


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be resumed from (the message names the file)."""


def load_resumable_checkpoint(path: str) -> dict:
    """Load ``path`` as ``Runner.resume`` will (mmengine's loader, weights-only with the
    globals of :mod:`mmdysample.compat`) and check that it is a training checkpoint.

    Raises:
        CheckpointError: naming ``path`` and why it cannot be resumed from (missing,
            truncated or otherwise unreadable, or not written by a runner).
    """
    from mmengine.runner.checkpoint import _load_checkpoint

    if not osp.isfile(path):
        raise CheckpointError(f'checkpoint {path} not found')
    try:
        checkpoint = _load_checkpoint(path, map_location='cpu')
    except Exception as error:  # torch/zipfile/pickle raise many types for a bad file
        raise CheckpointError(f'checkpoint {path} cannot be loaded (truncated or corrupt?): '
                              f'{type(error).__name__}: {error}') from error
    meta = checkpoint.get('meta') if isinstance(checkpoint, dict) else None
    if not isinstance(meta, dict) or 'iter' not in meta or 'epoch' not in meta \
            or 'state_dict' not in checkpoint:
        raise CheckpointError(f'checkpoint {path} is not a training checkpoint written by '
                              f"mmengine's runner (no state_dict or meta.epoch/meta.iter): "
                              f'it can be loaded with load_from, not resumed from')
    return checkpoint


def _candidates(work_dir: str) -> List[str]:
    """Checkpoints in ``work_dir`` (and the one ``last_checkpoint`` names, which may lie in
    the checkpoint hook's ``out_dir``), newest first."""
    paths = set(glob.glob(osp.join(work_dir, '*.pth')))
    pointer = osp.join(work_dir, 'last_checkpoint')
    if osp.isfile(pointer):
        with open(pointer) as f:
            named = f.read().strip()
        if named and '://' not in named and osp.isfile(named):
            paths.add(named)
            paths.update(glob.glob(osp.join(osp.dirname(named), '*.pth')))
    paths = {osp.abspath(p) for p in paths}
    return sorted(paths, key=lambda p: (os.stat(p).st_mtime_ns, p), reverse=True)


def find_resumable_checkpoint(work_dir: str) -> Tuple[Optional[str], Optional[dict]]:
    """The newest checkpoint under ``work_dir`` that loads, and its content.

    Unreadable ones are skipped with a warning that names each of them. Returns
    ``(None, None)`` when there is no checkpoint at all (a first run).

    Raises:
        CheckpointError: when there are checkpoints but none of them loads.
    """
    skipped = []
    for path in _candidates(work_dir):
        try:
            checkpoint = load_resumable_checkpoint(path)
        except CheckpointError as error:
            skipped.append(str(error))
            print_log(f'Skipping {path} for resuming: {error}', logger='current', level=30)
            continue
        return path, checkpoint
    if skipped:
        raise CheckpointError(f'no checkpoint in {work_dir} can be resumed from:\n  '
                              + '\n  '.join(skipped)
                              + '\nremove them (or use another --work-dir) to start anew')
    return None, None


def ensure_custom_hooks(cfg, hook_types: Sequence[str] = ('RandomStateHook',
                                                           'PreemptionCheckpointHook')) -> None:
    """Add a ``dict(type=...)`` of each of ``hook_types`` to ``cfg.custom_hooks`` unless the
    config has one (``tools/train.py``: generator states in every checkpoint, a checkpoint
    at a preemption signal)."""
    hooks = list(cfg.get('custom_hooks', None) or [])
    present = {hook.get('type') for hook in hooks if isinstance(hook, dict)}
    hooks += [dict(type=name) for name in hook_types if name not in present]
    cfg.custom_hooks = hooks


def configure_resume(cfg, resume: Any) -> Optional[str]:
    """Set ``cfg`` up to resume exactly, as ``tools/train.py --resume [PATH]`` does.

    Args:
        cfg: an mmengine ``Config`` with ``work_dir`` set.
        resume: ``None`` (no resume: ``cfg`` is left alone), ``'auto'`` (the newest
            checkpoint of ``cfg.work_dir`` that loads, see :func:`find_resumable_checkpoint`;
            when there is none at all the run starts anew, from the config's ``load_from``
            if it has one) or the path of a checkpoint.

    When a checkpoint is chosen, ``cfg.resume`` / ``cfg.load_from`` point to it and, when
    ``randomness.seed`` is unset, the seed is set to the checkpoint's: the runner then seeds
    the generators and the data sampler exactly as the interrupted run did (mmengine alone
    would draw a new sampler seed and shuffle the data differently).

    Returns:
        The checkpoint path, or ``None``.

    Raises:
        CheckpointError: an explicit checkpoint that cannot be resumed from, or only such
            checkpoints in the work dir (the message names every file).
    """
    if resume is None:
        return None
    if resume == 'auto':
        path, checkpoint = find_resumable_checkpoint(cfg.work_dir)
        if path is None:  # a first run: start anew (from the config's load_from, if any)
            cfg.resume = False
            return None
    else:
        path, checkpoint = resume, load_resumable_checkpoint(resume)
    cfg.resume = True
    cfg.load_from = path
    seed = checkpoint['meta'].get('seed')
    randomness = dict(cfg.get('randomness', None) or {})
    if randomness.get('seed') is None and seed is not None:
        randomness['seed'] = seed
        cfg.randomness = randomness
    return path
