"""Empty batches (B=0 images, 0 RoIs) at the patched upsampling sites, against upstream.

A patched site must do on an empty batch what the upstream module (the same config without
``type``, or mmdet's/mmseg's own class) does: give outputs of the same structure, shapes
and dtypes, and let a loss on those (empty) outputs back-propagate, every parameter getting
a zero gradient. Shared by the mmdet, mmseg and depth site tests.
"""
from typing import Callable, Dict, List

import pytest
import torch
import torch.nn as nn
from mmengine.registry import MODELS

from mmdysample.upsamplers import registered_upsamplers, requires_guide

__all__ = ['upsampler_types', 'leaves', 'assert_empty_batch_like_upstream']


def upsampler_types(guided: bool = True) -> List[str]:
    """Every registered upsampler name (the guided ones only with ``guided``)."""
    return [name for name in registered_upsamplers()
            if guided or not requires_guide(MODELS.get(name))]


def leaves(output) -> List:
    """The leaves of a module's output (tensors and anything else), in order: tuples, lists
    and dicts (by key) are walked."""
    if isinstance(output, (tuple, list)):
        return [leaf for item in output for leaf in leaves(item)]
    if isinstance(output, dict):
        return [leaf for key in sorted(output) for leaf in leaves(output[key])]
    return [output]


def _structure(output):
    if isinstance(output, (tuple, list)):
        return type(output).__name__, [_structure(item) for item in output]
    if isinstance(output, dict):
        return 'dict', {key: _structure(value) for key, value in output.items()}
    if isinstance(output, torch.Tensor):
        return 'tensor', tuple(output.shape), output.dtype
    return type(output).__name__


def _grads(module: nn.Module) -> Dict[str, torch.Tensor]:
    return {name: p.grad for name, p in module.named_parameters() if p.requires_grad}


def assert_empty_batch_like_upstream(ours: nn.Module, upstream: nn.Module,
                                     make_inputs: Callable[[], object],
                                     run: Callable = lambda module, inputs: module(inputs),
                                     learned_prefix: str = 'upsamplers.') -> bool:
    """Run ``upstream`` and ``ours`` (both in training mode) on the empty inputs that
    ``make_inputs()`` returns, then back-propagate the sum of every floating output.

    Asserts that ``ours`` gives the same output structure, shapes and dtypes as
    ``upstream``; that the inputs get gradients (of their shapes) where upstream's do; that
    every parameter both modules have gets a gradient exactly where upstream's gets one, and
    every parameter under ``learned_prefix`` (the learned upsamplers) gets one; and that all
    these gradients are zero. Where upstream itself raises on the empty batch, ``ours`` must
    raise the same exception type with the same message.

    Returns:
        whether upstream raised (the caller asserts that it expected it).
    """
    results = []
    for module in (upstream, ours):
        module.train()
        inputs = make_inputs()
        if module is upstream:
            try:
                output = run(module, inputs)
            except Exception as error:  # noqa: BLE001  (ours must raise the same)
                with pytest.raises(type(error)) as raised:
                    run(ours, make_inputs())
                assert str(raised.value) == str(error)
                return True
        else:
            output = run(module, inputs)
        floats = [t for t in leaves(output)
                  if isinstance(t, torch.Tensor) and t.is_floating_point()]
        assert floats and all(t.numel() == 0 for t in floats), _structure(output)
        sum(t.sum() for t in floats if t.requires_grad).backward()
        input_grads = [None if leaf.grad is None else tuple(leaf.grad.shape)
                       for leaf in leaves(inputs)
                       if isinstance(leaf, torch.Tensor) and leaf.requires_grad]
        results.append((_structure(output), input_grads, _grads(module)))
    (expected, expected_input_grads, upstream_grads), (got, input_grads, grads) = results
    assert got == expected
    assert input_grads == expected_input_grads and any(input_grads)
    for name, grad in grads.items():
        if name in upstream_grads:
            assert (grad is None) == (upstream_grads[name] is None), name
        elif name.startswith(learned_prefix):
            assert grad is not None, f'{name} got no gradient'
        if grad is not None:
            assert not grad.any(), f'{name} has a non-zero gradient on an empty batch'
    return False
