"""Runner additions for mmengine: hooks registered in mmengine's root ``HOOKS`` registry
(so that mmdet and mmseg configs find them too)."""
from .rng_state_hook import RandomStateHook

__all__ = ['RandomStateHook']
