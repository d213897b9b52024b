"""Save the random-number-generator states in checkpoints so that a resumed run draws the
same random numbers as an uninterrupted one.

mmengine's ``Runner.resume`` restores weights, optimizer, schedulers and the iteration
counter, and ``IterBasedTrainLoop`` then advances the data iterator through the iterations
already trained, which re-runs the data transforms and so reproduces the NumPy / ``random``
draws they make. The draws made by the model itself (e.g. mmdet's ``RandomSampler`` picking
RoIs with ``torch.randperm``) are not replayed: without this hook the resumed run continues
from the torch generator state of a fresh start, and its weights drift away from the
uninterrupted run's after the first resumed iteration.
"""
import random
from typing import Optional

import numpy as np
import torch
from mmengine.hooks import Hook
from mmengine.registry import HOOKS
from mmengine.runner import IterBasedTrainLoop

__all__ = ['RandomStateHook']

CHECKPOINT_KEY = 'rng_states'


@HOOKS.register_module()
class RandomStateHook(Hook):
    """Store the torch (CPU and CUDA), NumPy and ``random`` generator states in every
    checkpoint (``checkpoint['rng_states']``) and restore them when the run resumes.

    On resume the torch states are always restored. The NumPy and ``random`` states are
    restored only when the train loop does not replay the data (``IterBasedTrainLoop``
    re-runs the transforms of the skipped iterations, which brings those two generators to
    the saved state by itself; restoring them first would advance them twice).

    Loading weights with ``load_from`` (no resume) leaves the generators alone. With several
    processes, each checkpoint holds rank 0's states (mmengine saves on rank 0 only).
    """

    priority = 'VERY_LOW'

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        states = dict(torch=torch.get_rng_state(), numpy=np.random.get_state(),
                      python=random.getstate())
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            states['cuda'] = torch.cuda.get_rng_state_all()
        checkpoint[CHECKPOINT_KEY] = states

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        states: Optional[dict] = checkpoint.get(CHECKPOINT_KEY)
        if not states or not getattr(runner, '_resume', False):
            return
        torch.set_rng_state(states['torch'])
        if 'cuda' in states and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(states['cuda'])
        if not isinstance(getattr(runner, '_train_loop', None), IterBasedTrainLoop):
            np.random.set_state(states['numpy'])
            random.setstate(states['python'])
