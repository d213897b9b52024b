"""Helpers shared by the fused-kernel tests."""
import torch

# autograd node names: the eager autograd.Function, the custom op (torch.compile)
FUSED_NODES = ('_FusedSampleBackward', 'mmdysample_dysample_sample')


def took_fused_path(output: torch.Tensor) -> bool:
    """Whether ``output`` (requiring grad) came out of the fused kernel."""
    return any(name in type(output.grad_fn).__name__ for name in FUSED_NODES)
