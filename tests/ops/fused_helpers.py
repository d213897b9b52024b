"""Helpers shared by the fused-kernel tests."""
import torch

FUSED_OP = 'mmdysample_dysample_sample'  # in the autograd node name of the custom op


def took_fused_path(output: torch.Tensor) -> bool:
    """Whether ``output`` (requiring grad) came out of the fused kernel's custom op."""
    return FUSED_OP in type(output.grad_fn).__name__
