"""Save the random-number-generator states of every process in checkpoints so that a
resumed run draws the same random numbers as an uninterrupted one.

mmengine's ``Runner.resume`` restores weights, optimizer, schedulers, the message hub and
the iteration counter, but not the generators: the draws the model makes (dropout,
mmdet's ``RandomSampler`` picking RoIs with ``torch.randperm``) and the data transforms
make continue from the state of a fresh start, and the weights drift away from the
uninterrupted run's after the first resumed iteration. Worse, when ``randomness.seed`` is
unset (every stock mmdet/mmseg config), ``Runner.resume`` re-seeds all generators with the
checkpoint's seed *after* the ``after_load_checkpoint`` hooks ran, so a restore made there
is undone.
"""
import random
from typing import Any, Dict, List, Optional

import numpy as np
import torch
from mmengine.dist import all_gather_object, get_rank, get_world_size
from mmengine.hooks import Hook
from mmengine.logging import print_log
from mmengine.registry import HOOKS
from mmengine.runner import IterBasedTrainLoop

__all__ = ['RandomStateHook', 'capture_random_states', 'restore_random_states']

CHECKPOINT_KEY = 'rng_states'


def capture_random_states() -> Dict[str, Any]:
    """The generator states of this process: torch CPU, the current CUDA device (when CUDA
    is initialised), NumPy's global generator and Python's ``random``."""
    states = dict(torch=torch.get_rng_state(), numpy=np.random.get_state(),
                  python=random.getstate())
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states['cuda'] = torch.cuda.get_rng_state()  # this process's device only
    return states


def restore_random_states(states: Dict[str, Any]) -> None:
    """Set the generators of this process to ``states`` (from :func:`capture_random_states`).
    A CUDA state is restored on the current device only, and only where CUDA is available."""
    torch.set_rng_state(states['torch'])
    np.random.set_state(states['numpy'])
    random.setstate(states['python'])
    if 'cuda' in states and torch.cuda.is_available():
        torch.cuda.set_rng_state(states['cuda'])


class _RestoreAfterReplay:
    """Stands in for ``IterBasedTrainLoop.dataloader_iterator`` in a resumed run: the first
    ``replayed`` batches (the loop skipping the data already trained on) pass through, then
    ``restore()`` runs just before the first new batch is drawn, and the loop gets its own
    iterator back."""

    def __init__(self, loop: IterBasedTrainLoop, replayed: int, restore) -> None:
        self._loop = loop
        self._iterator = loop.dataloader_iterator
        self._remaining = replayed
        self._restore = restore

    def __iter__(self):
        return self

    def __next__(self):
        if self._remaining > 0:
            self._remaining -= 1
            return next(self._iterator)
        self._restore()
        self._loop.dataloader_iterator = self._iterator
        return next(self._iterator)


@HOOKS.register_module()
class RandomStateHook(Hook):
    """Store the generator states of every process in each checkpoint
    (``checkpoint['rng_states']``: a list indexed by rank, see
    :func:`capture_random_states`) and restore them when the run resumes.

    When they are restored: after everything the runner does to the generators on resume
    (its re-seeding when ``randomness.seed`` is unset, the iteration-based loop replaying
    the data of the iterations already trained), right before the first new batch is drawn
    (iteration-based loops) or at the start of training (epoch-based loops, which resume at
    an epoch boundary). So the resumed run continues exactly from the saved states.

    Validation does not consume the training generators: their states are set back after
    each validation run, so a run validated at other iterations (or resumed where no
    validation runs) trains identically.

    With several processes every rank gets its own states back when the run resumes with the
    same number of processes; with another number the saved states cannot map onto the
    ranks, so none is restored (a warning says so; the runner's seeding stands). In a
    multi-process run the states are gathered on rank 0 (which writes the checkpoint) at the
    end of every training iteration: one ``all_gather_object`` of about 8 KB per process.

    Loading weights with ``load_from`` (no resume) leaves the generators alone; checkpoints
    without the states (older runs) resume as they did before.
    """

    # Before CheckpointHook (VERY_LOW) at the end of an iteration/epoch: the states saved
    # are the states gathered at that point.
    priority = 'LOW'

    def __init__(self) -> None:
        self._rank_states: Optional[List[Dict[str, Any]]] = None
        self._pending: Optional[Dict[str, Any]] = None
        self._states_before_val: Optional[Dict[str, Any]] = None

    # ------------------------------------------------------------------ saving
    def _gather(self) -> None:
        states = capture_random_states()
        self._rank_states = all_gather_object(states) if get_world_size() > 1 else [states]

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        self._gather()

    def after_train_epoch(self, runner) -> None:
        self._gather()

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        # Saved outside an iteration (e.g. by a user before training): this process only.
        checkpoint[CHECKPOINT_KEY] = self._rank_states or [capture_random_states()]

    # ---------------------------------------------------------------- restoring
    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        saved = checkpoint.get(CHECKPOINT_KEY)
        if not saved or not getattr(runner, '_resume', False):
            return
        if isinstance(saved, dict):  # written by this hook before per-rank states
            saved = [saved]
        world_size = get_world_size()
        if len(saved) != world_size:
            print_log(f'RandomStateHook: the checkpoint holds the generator states of '
                      f'{len(saved)} process(es), this run has {world_size}: the states are '
                      f'not restored, the resumed run draws other random numbers than the '
                      f'uninterrupted one would', logger='current', level=30)
            return
        self._pending = saved[get_rank()]

    def before_train(self, runner) -> None:
        if self._pending is None:
            return
        loop = runner.train_loop
        if isinstance(loop, IterBasedTrainLoop) and loop.iter > 0:
            loop.dataloader_iterator = _RestoreAfterReplay(loop, loop.iter, self._restore)
        else:
            self._restore()

    def _restore(self) -> None:
        restore_random_states(self._pending)
        self._pending = None

    # --------------------------------------------------------------- validation
    def before_val(self, runner) -> None:
        self._states_before_val = capture_random_states()

    def after_val(self, runner) -> None:
        if self._states_before_val is not None:
            restore_random_states(self._states_before_val)
            self._states_before_val = None
