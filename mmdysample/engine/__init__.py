"""Runner additions for mmengine, registered in mmengine's root ``HOOKS`` registry (so that
mmdet and mmseg configs find them too): generator states in checkpoints
(:class:`RandomStateHook`), crash-safe checkpoint writes (:class:`CheckpointHook`, over the
upstream name) and the choice of the checkpoint to resume from (:func:`configure_resume`)."""
from .checkpoint_hook import AtomicLocalBackend, CheckpointHook, atomic_write
from .resume import (CheckpointError, configure_resume, ensure_random_state_hook,
                     find_resumable_checkpoint, load_resumable_checkpoint)
from .rng_state_hook import RandomStateHook, capture_random_states, restore_random_states

__all__ = [
    'AtomicLocalBackend', 'CheckpointHook', 'atomic_write', 'CheckpointError',
    'configure_resume', 'ensure_random_state_hook', 'find_resumable_checkpoint',
    'load_resumable_checkpoint', 'RandomStateHook', 'capture_random_states',
    'restore_random_states'
]
