"""A tiny model, data set and config that run mmengine's real ``Runner`` (loops, hooks,
optimizer, scheduler, checkpoints, resume) in about a second, for the tests of
:mod:`mmdysample.engine`; and the entry points of the processes those tests kill.

Every random source a real training has is here: the sampler shuffles (its own torch
generator, seeded from the runner's seed), the data "augmentations" draw from NumPy's and
Python's global generators, the model draws dropout masks from torch's.

The tests fork their trainings from a ``multiprocessing`` forkserver that preloads this
module (tests/forked_runs.py): so everything a training imports is imported here, at the
top (the runner, and the matplotlib modules its visualizer imports when it is built), and
nothing is changed at import that other runs of that server would see.
"""
import os
import os.path as osp
import random
import signal
import threading
import time
import uuid

import matplotlib.backends.backend_agg  # noqa: F401  (mmengine's Visualizer: imported once)
import matplotlib.figure  # noqa: F401
import numpy as np
import torch
from mmengine.config import Config
from mmengine.hooks import Hook
from mmengine.model import BaseModel
from mmengine.registry import DATASETS, MODELS
from mmengine.runner import Runner
from torch import nn

import mmdysample.engine  # noqa: F401  (hooks, compat: checkpoints load weights-only)

# the process that imported this module: a forkserver's child that finds its own pid here
# imported it itself (the server could not preload it), paying every import again
IMPORTED_BY_PID = os.getpid()

FEATURES = 8


class PlainTextConfig(Config):
    """mmengine formats the whole config with yapf for every checkpoint's meta and the log
    (0.5 s a time here, most of a tiny run); these configs hold only literals, which are
    written plainly instead (still read back by ``Config.fromstring`` on resume). A
    subclass (the runner's copies keep it), so that no other config in the process, nor in
    the forkserver's other children, is written differently."""

    @property
    def pretty_text(self):
        return '\n'.join(f'{key} = {value!r}' for key, value in self.to_dict().items()) + '\n'


@MODELS.register_module(name='EngineTestNet', force=True)
class EngineTestNet(BaseModel):

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(FEATURES, 32), nn.ReLU(), nn.Dropout(0.5),
                                  nn.Linear(32, 1))

    def forward(self, inputs, target, mode='tensor'):
        output = self.body(inputs)
        if mode == 'loss':
            return dict(loss=((output - target) ** 2).mean())
        return output


@DATASETS.register_module(name='EngineTestData', force=True)
class EngineTestData(torch.utils.data.Dataset):

    def __init__(self, length=12):
        self.length = length

    def __len__(self):
        return self.length

    def __getitem__(self, index):
        x = torch.randn(FEATURES, generator=torch.Generator().manual_seed(index))
        # augmentations, drawing from the global generators as mmcv's transforms do
        x = x + torch.from_numpy(np.random.normal(0, 0.1, FEATURES).astype(np.float32))
        if random.random() < 0.5:
            x = -x
        return dict(inputs=x, target=x.sum().reshape(1))


def tiny_config(work_dir, max_iters=4, interval=2, seed=None, max_keep_ckpts=-1,
                launcher='none', **checkpoint_options):
    return PlainTextConfig(dict(
        model=dict(type='EngineTestNet'),
        work_dir=str(work_dir),
        experiment_name=f'engine_test_{uuid.uuid4().hex[:8]}',
        train_dataloader=dict(
            dataset=dict(type='EngineTestData'),
            sampler=dict(type='InfiniteSampler', shuffle=True),
            batch_size=4, num_workers=0, collate_fn=dict(type='default_collate')),
        train_cfg=dict(by_epoch=False, max_iters=max_iters),
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.01, momentum=0.9)),
        param_scheduler=dict(type='MultiStepLR', by_epoch=False, milestones=[3], gamma=0.5),
        default_hooks=dict(
            checkpoint=dict(type='CheckpointHook', interval=interval, by_epoch=False,
                            max_keep_ckpts=max_keep_ckpts, **checkpoint_options),
            logger=dict(type='LoggerHook', interval=1)),
        custom_hooks=[dict(type='RandomStateHook')],
        randomness=dict(seed=seed),
        launcher=launcher,
        env_cfg=dict(dist_cfg=dict(backend='gloo')),
        log_level='WARNING'))


def train(cfg):
    runner = Runner.from_cfg(cfg)
    runner.train()
    return runner


def state_dict(path):
    return torch.load(path, map_location='cpu', weights_only=False)['state_dict']


# ------------------------------------------------------ entry points of killed processes


class _KillSelfAfterCheckpoint(Hook):
    """SIGKILL this process ``delay_s`` seconds after checkpoint ``iteration`` was written.

    The kill comes from a timer thread, so that it lands wherever the training then is (in the
    next iteration's compute, in its checkpoint write, between the two), timed by the
    training's own progress rather than by a watcher that a busy machine may not schedule in
    time. A run that would start iteration ``iteration + 2``, or its last iteration, before
    the kill waits there for it: every kill hits a training with iterations left, at most one
    checkpoint past ``iteration``.
    """
    priority = 'LOWEST'  # after CheckpointHook (VERY_LOW) wrote the iteration's checkpoint

    def __init__(self, iteration, delay_s):
        self.iteration, self.delay_s, self.timer = iteration, delay_s, None

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        if runner.iter + 1 == self.iteration:
            self.timer = threading.Timer(self.delay_s, os.kill, (os.getpid(), signal.SIGKILL))
            self.timer.start()

    def before_train_iter(self, runner, batch_idx, data_batch=None):
        next_iteration = runner.iter + 1
        if self.timer is not None and next_iteration >= min(self.iteration + 2,
                                                            runner.max_iters):
            while True:  # the timer's SIGKILL ends this
                time.sleep(1)


def train_with_auto_resume(work_dir, max_iters, seed, kill_after=None):
    """What ``tools/train.py --resume`` does, with the tiny model: resume from the newest
    checkpoint that loads (or start), checkpoint after every iteration. ``kill_after=
    (iteration, delay_s)``: SIGKILL the run ``delay_s`` seconds after checkpoint
    ``iteration`` was written (:class:`_KillSelfAfterCheckpoint`)."""
    torch.set_num_threads(1)
    from mmdysample.engine import configure_resume
    cfg = tiny_config(work_dir, max_iters=max_iters, interval=1, seed=seed, max_keep_ckpts=2)
    configure_resume(cfg, 'auto')
    runner = Runner.from_cfg(cfg)
    if kill_after is not None:
        runner.register_hook(_KillSelfAfterCheckpoint(*kill_after))
    runner.train()


def train_and_hang_in_checkpoint_write(work_dir, hang_at_iter, marker):
    """Train with a checkpoint after every iteration (``max_keep_ckpts=1``); in the write of
    checkpoint ``hang_at_iter``, once its bytes are in the temporary file and before they are
    synced and renamed, touch ``marker`` and wait to be killed."""
    torch.set_num_threads(1)
    fsync = os.fsync

    def fsync_or_hang(fd):
        if f'iter_{hang_at_iter}.pth' in os.readlink(f'/proc/self/fd/{fd}'):
            open(marker, 'w').close()
            while True:
                time.sleep(1)
        fsync(fd)

    os.fsync = fsync_or_hang
    train(tiny_config(work_dir, max_iters=hang_at_iter, interval=1, seed=0, max_keep_ckpts=1))


class _FileSizeLimitAt(Hook):
    """At the end of iteration ``iteration``, before its checkpoint is written, limit the
    size of every file this process writes to ``limit`` bytes (``RLIMIT_FSIZE``): the
    checkpoint write fails half way with ``EFBIG``, as a write to a full disk fails with
    ``ENOSPC``."""
    priority = 'VERY_HIGH'

    def __init__(self, iteration, limit):
        self.iteration, self.limit = iteration, limit

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        if runner.iter + 1 == self.iteration:
            import resource
            resource.setrlimit(resource.RLIMIT_FSIZE, (self.limit, resource.RLIM_INFINITY))


def train_until_writes_fail(work_dir, fail_at_iter, atomic, error_file):
    """Train with ``max_keep_ckpts=1``; the write of checkpoint ``fail_at_iter`` fails with
    a full-disk-like error. The exception's text goes to ``error_file``."""
    import resource
    torch.set_num_threads(1)
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write then fails with EFBIG
    cfg = tiny_config(work_dir, max_iters=fail_at_iter, interval=1, seed=0, max_keep_ckpts=1,
                      atomic=atomic)
    runner = Runner.from_cfg(cfg)
    runner.register_hook(_FileSizeLimitAt(fail_at_iter, limit=2000))
    try:
        runner.train()
    except BaseException as error:  # noqa: B902 (the test reads what the user would see)
        resource.setrlimit(resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY,) * 2)
        with open(error_file, 'w') as f:
            f.write(f'{type(error).__name__}: {error}')
        raise SystemExit(1)


def distributed_worker(rank, world_size, port, work_dir, max_iters):
    """One process of a ``world_size``-process gloo run (as ``torchrun`` would start)."""
    torch.set_num_threads(1)
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world_size),
                      MASTER_ADDR='127.0.0.1', MASTER_PORT=str(port))
    cfg = tiny_config(work_dir, max_iters=max_iters, interval=2, seed=None,
                      launcher='pytorch')
    cfg.train_dataloader.batch_size = 2
    from mmdysample.engine import configure_resume
    configure_resume(cfg, 'auto')
    train(cfg)
    import torch.distributed as dist
    dist.destroy_process_group()


def kill(process):
    if process.is_alive():
        os.kill(process.pid, signal.SIGKILL)
    process.join()


def train_with_preemption_hook(work_dir, max_iters):
    """``tools/train.py --resume`` with the tiny model: checkpoints only at the end (and at
    a SIGTERM/SIGUSR1); exit status 128 + signal when a signal stopped the run."""
    torch.set_num_threads(1)
    from mmdysample.engine import PreemptionCheckpointHook, configure_resume
    cfg = tiny_config(work_dir, max_iters=max_iters, interval=10 ** 6, seed=0)
    cfg.custom_hooks.append(dict(type='PreemptionCheckpointHook'))
    configure_resume(cfg, 'auto')
    runner = train(cfg)
    (hook, ) = [h for h in runner.hooks if isinstance(h, PreemptionCheckpointHook)]
    if hook.stopped_by:
        raise SystemExit(128 + hook.stopped_by)
