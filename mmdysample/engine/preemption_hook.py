"""Checkpoint at a preemption signal, then stop: the run loses no work when a scheduler
(Slurm, Kubernetes...) stops it with a signal and a grace period."""
import signal
from typing import Optional, Sequence

import torch
from mmengine.dist import all_reduce, get_world_size
from mmengine.hooks import CheckpointHook as MMEngineCheckpointHook
from mmengine.hooks import Hook
from mmengine.logging import print_log
from mmengine.registry import HOOKS
from mmengine.runner import IterBasedTrainLoop

__all__ = ['PreemptionCheckpointHook']


@HOOKS.register_module()
class PreemptionCheckpointHook(Hook):
    """On one of ``signals`` (by default SIGTERM, what Slurm sends at preemption or at the
    time limit before SIGKILL, and SIGUSR1, what ``srun --signal=USR1@SECONDS`` sends ahead
    of the time limit), finish the current iteration, write a checkpoint of it through the
    run's ``CheckpointHook`` and stop training. ``stopped_by`` then holds the signal number
    (``tools/train.py`` exits with status 128 + that number).

    With several processes the ranks agree at the end of every iteration (one
    ``all_reduce`` of one number) whether any of them received a signal, so all of them
    checkpoint and stop at the same iteration.

    Only iteration-based loops get a checkpoint at the signal: mmengine resumes an
    epoch-based loop at an epoch boundary only, so there the hook ends the process
    (``SystemExit(128 + signal)``) after the current iteration, and the resumed run repeats
    the interrupted epoch from its start.

    Args:
        signals (Sequence[str]): names of the signals to handle, e.g. ``('SIGTERM',)``.
    """

    priority = 'LOWEST'  # after CheckpointHook: no second write of a step it just saved

    def __init__(self, signals: Sequence[str] = ('SIGTERM', 'SIGUSR1')) -> None:
        self.signals = []
        for name in signals:
            number = getattr(signal, str(name), None)
            if not isinstance(number, signal.Signals) or not str(name).startswith('SIG'):
                raise ValueError(f'PreemptionCheckpointHook: signals must name signals such '
                                 f"as 'SIGTERM' or 'SIGUSR1', got {name!r}")
            self.signals.append(number)
        self.received: Optional[int] = None
        self.stopped_by: Optional[int] = None
        # Installed when the hook is built (with the runner), before the data loader forks
        # its worker processes: they inherit the handler, so a signal sent to the whole
        # process group (as Slurm does) does not kill them before the checkpoint is written.
        self._previous_handlers = {}
        for number in self.signals:
            try:
                self._previous_handlers[number] = signal.signal(number, self._on_signal)
            except ValueError:  # not the main thread: signals cannot be handled here
                print_log('PreemptionCheckpointHook: not built in the main thread, '
                          'preemption signals are not handled', logger='current', level=30)
                break

    def _on_signal(self, signum, frame) -> None:
        self.received = signum

    def after_run(self, runner) -> None:
        for number, handler in self._previous_handlers.items():
            signal.signal(number, handler)
        self._previous_handlers = {}

    def _any_rank_received(self) -> int:
        received = torch.tensor([self.received or 0], dtype=torch.int64)
        if get_world_size() > 1:
            all_reduce(received, op='max')
        return int(received.item())

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        signum = self._any_rank_received()
        if not signum:
            return
        step = runner.iter + 1
        name = signal.Signals(signum).name
        self.stopped_by = signum
        loop = runner.train_loop
        checkpoint_hooks = [hook for hook in runner.hooks
                            if isinstance(hook, MMEngineCheckpointHook)]
        if not (isinstance(loop, IterBasedTrainLoop) and checkpoint_hooks):
            print_log(f'{name} received: training stops after iteration {step}; resume '
                      f'from the last checkpoint (an epoch-based run repeats the '
                      f'interrupted epoch)', logger='current', level=30)
            raise SystemExit(128 + signum)  # an epoch loop would finish its epoch first
        hook = checkpoint_hooks[0]
        # the CheckpointHook may have written this step's checkpoint right before
        last = str(getattr(hook, 'last_ckpt', None) or '')
        if not last.endswith(hook.filename_tmpl.format(step)):
            hook._save_checkpoint_with_step(runner, step, meta=dict(epoch=runner.epoch,
                                                                    iter=step))
        print_log(f'{name} received: checkpoint of iteration {step} written, training '
                  f'stops (resume with --resume)', logger='current', level=30)
        loop.stop_training = True
