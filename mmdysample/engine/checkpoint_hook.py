"""Crash-safe checkpoints: mmengine's ``CheckpointHook`` writing each file atomically.

Upstream writes ``iter_N.pth`` in place and then ``last_checkpoint`` in place, and removes
the oldest kept checkpoint *before* writing the new one. A process killed (SIGKILL,
preemption, out-of-memory, node failure) or a disk filling up during the write leaves a
truncated checkpoint that ``last_checkpoint`` names -- and with ``max_keep_ckpts=1`` no
intact one at all -- and ``--resume`` fails.

Here every file is written to a temporary file in the same folder, flushed and
``fsync``-ed, then renamed over the final name (``os.replace``, atomic on POSIX file
systems), and the folder is ``fsync``-ed: a reader sees the old file or the complete new
one, never a part. The outdated checkpoint is removed only after the new one and
``last_checkpoint`` are in place.
"""
import glob
import os
import os.path as osp
import re
import uuid
from typing import List, Optional, Union

from mmengine.dist import is_main_process
from mmengine.fileio import LocalBackend, get_file_backend, register_backend
from mmengine.hooks import CheckpointHook as MMEngineCheckpointHook
from mmengine.registry import HOOKS

__all__ = ['CheckpointHook', 'AtomicLocalBackend', 'atomic_write', 'ATOMIC_BACKEND_NAME']

ATOMIC_BACKEND_NAME = 'local_atomic'
# .<final name>.<12 hex digits>.tmp
_TEMPORARY_NAME = re.compile(r'\..+\.[0-9a-f]{12}\.tmp')


def _fsync_directory(directory: str) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # e.g. a platform without directory handles
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(data: Union[bytes, str], path: str, encoding: str = 'utf-8') -> None:
    """Write ``data`` to ``path`` so that ``path`` holds either its previous content or all
    of ``data``, whatever happens during the call (kill, full disk, power loss after the
    call returned).

    Raises:
        OSError: when the data cannot be written (its ``filename`` is ``path``); the
            temporary file is removed and ``path`` is left as it was.
    """
    if isinstance(data, str):
        data = data.encode(encoding)
    directory = osp.dirname(osp.abspath(path))
    os.makedirs(directory, exist_ok=True)
    # Hidden, and not ending in .pth: never taken for a checkpoint by a resume scan.
    temporary = osp.join(directory, f'.{osp.basename(path)}.{uuid.uuid4().hex[:12]}.tmp')
    try:
        # os.open with 0o666 keeps the permissions the user's umask gives a new file.
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        with os.fdopen(fd, 'wb') as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except OSError as error:
        if osp.exists(temporary):
            os.remove(temporary)
        raise OSError(error.errno, error.strerror or str(error), path) from error
    except BaseException:
        if osp.exists(temporary):
            os.remove(temporary)
        raise
    _fsync_directory(directory)


def remove_temporary_files(directory: str) -> List[str]:
    """Remove what writes killed half way left in ``directory`` (the hidden temporary files
    of :func:`atomic_write`); returns their paths."""
    removed = []
    for path in glob.glob(osp.join(glob.escape(directory), '.*.tmp')):
        if _TEMPORARY_NAME.fullmatch(osp.basename(path)):
            os.remove(path)
            removed.append(path)
    return removed


@register_backend(ATOMIC_BACKEND_NAME)
class AtomicLocalBackend(LocalBackend):
    """mmengine's local file backend whose ``put``/``put_text`` write atomically
    (:func:`atomic_write`). Select it with ``backend_args=dict(backend='local_atomic')``."""

    def put(self, obj: bytes, filepath) -> None:
        atomic_write(obj, str(filepath))

    def put_text(self, obj: str, filepath, encoding: str = 'utf-8') -> None:
        atomic_write(obj, str(filepath), encoding=encoding)


@HOOKS.register_module(name='CheckpointHook', force=True)
class CheckpointHook(MMEngineCheckpointHook):
    """mmengine's ``CheckpointHook`` with crash-safe writes; registered over the upstream
    name, so ``default_hooks.checkpoint=dict(type='CheckpointHook', ...)`` in any config
    gets it once ``mmdysample`` is imported.

    Args:
        atomic (bool): write checkpoints, the best checkpoints and ``last_checkpoint``
            atomically, and remove an outdated checkpoint (``max_keep_ckpts``) only after
            the new one is complete. ``False`` behaves exactly as upstream
            (``default_hooks.checkpoint.atomic=False`` in a config, or
            ``--cfg-options default_hooks.checkpoint.atomic=False``). Applies to local
            folders written through mmengine's default backend; with ``backend_args`` or
            ``file_client_args`` (remote storage) the configured backend writes as it does.
        *args, **kwargs: the arguments of mmengine's ``CheckpointHook``.
    """

    def __init__(self, *args, atomic: bool = True, **kwargs) -> None:
        if not isinstance(atomic, bool):
            raise TypeError(f'CheckpointHook: atomic must be True or False, got {atomic!r}')
        super().__init__(*args, **kwargs)
        self.atomic = atomic

    @property
    def _writes_atomically(self) -> bool:
        return self.atomic and isinstance(self.file_backend, AtomicLocalBackend)

    def before_train(self, runner) -> None:
        super().before_train(runner)
        if self.atomic and self.backend_args is None and self.file_client_args is None \
                and type(self.file_backend) is LocalBackend:
            self.backend_args = dict(backend=ATOMIC_BACKEND_NAME)
            self.file_backend = get_file_backend(self.out_dir, backend_args=self.backend_args)
            if is_main_process():
                remove_temporary_files(self.out_dir)

    def _save_checkpoint_with_step(self, runner, step, meta) -> None:
        if not self._writes_atomically:
            return super()._save_checkpoint_with_step(runner, step, meta)
        # The bookkeeping of upstream's method, but the outdated checkpoint is removed
        # after the new one is written, not before.
        outdated: Optional[int] = None
        if self.max_keep_ckpts > 0 and not (self.keep_ckpt_ids
                                            and self.keep_ckpt_ids[-1] == step):
            if len(self.keep_ckpt_ids) == self.max_keep_ckpts:
                outdated = self.keep_ckpt_ids.popleft()
            self.keep_ckpt_ids.append(step)
            runner.message_hub.update_info('keep_ckpt_ids', list(self.keep_ckpt_ids))

        ckpt_filename = self.filename_tmpl.format(step)
        previous = getattr(self, 'last_ckpt', None)
        self.last_ckpt = self.file_backend.join_path(self.out_dir, ckpt_filename)
        runner.message_hub.update_info('last_ckpt', self.last_ckpt)
        try:
            runner.save_checkpoint(
                self.out_dir, ckpt_filename, self.file_client_args,
                save_optimizer=self.save_optimizer,
                save_param_scheduler=self.save_param_scheduler,
                meta=meta, by_epoch=self.by_epoch, backend_args=self.backend_args,
                **self.args)
        except OSError as error:  # disk full, quota, I/O error: stop, say what is safe
            kept = (f'the previous checkpoint {previous} is intact: free space (or fix the '
                    f'cause) and resume with --resume' if previous else
                    'no earlier checkpoint was written')
            raise OSError(error.errno, f'could not write checkpoint {self.last_ckpt} '
                          f'({error.strerror or error}); training stops, {kept}') from error
        if not is_main_process():
            return
        atomic_write(self.last_ckpt, osp.join(runner.work_dir, 'last_checkpoint'))
        if outdated is not None:
            path = self.file_backend.join_path(self.out_dir, self.filename_tmpl.format(outdated))
            if self.file_backend.isfile(path):
                self.file_backend.remove(path)
            elif self.file_backend.isdir(path):  # checkpoints saved by DeepSpeed
                self.file_backend.rmtree(path)
