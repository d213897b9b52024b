"""Runner additions for mmengine, registered in mmengine's root ``HOOKS`` registry (so that
mmdet and mmseg configs find them too): generator states in checkpoints
(:class:`RandomStateHook`), crash-safe checkpoint writes (:class:`CheckpointHook`, over the
upstream name), a checkpoint at a preemption signal (:class:`PreemptionCheckpointHook`) and
the choice of the checkpoint to resume from (:func:`configure_resume`)."""
from .checkpoint_hook import AtomicLocalBackend, CheckpointHook, atomic_write
from .resume import (CheckpointError, configure_resume, ensure_custom_hooks,
                     find_resumable_checkpoint, load_resumable_checkpoint)
from .preemption_hook import PreemptionCheckpointHook
from .rng_state_hook import RandomStateHook, capture_random_states, restore_random_states

__all__ = [
    'AtomicLocalBackend', 'CheckpointHook', 'atomic_write', 'CheckpointError',
    'configure_resume', 'ensure_custom_hooks', 'find_resumable_checkpoint',
    'load_resumable_checkpoint', 'PreemptionCheckpointHook', 'RandomStateHook',
    'capture_random_states', 'restore_random_states'
]
