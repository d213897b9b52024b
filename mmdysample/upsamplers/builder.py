"""One builder for every upsampler of the plugin.

Upsamplers are registered in mmengine's root ``MODELS`` (where mmcv's
``build_upsample_layer`` looks, and which mmdet's and mmseg's registries fall back to) through
:func:`register_upsampler`, which also records their names so that errors can list them.
"""
import copy
import inspect
from typing import Dict, List, Optional, Union

import torch.nn as nn
from mmengine.registry import MODELS

from ..functional import check_positive_int, check_scale_factor

__all__ = ['register_upsampler', 'build_upsampler', 'registered_upsamplers']

_UPSAMPLER_NAMES: List[str] = []


def register_upsampler(*names: str):
    """Class decorator: register an upsampler in the root ``MODELS`` under ``names``.

    The class must take ``(in_channels, scale_factor=2, **kwargs)`` and map
    ``(B, C, H, W)`` to ``(B, C, s*H, s*W)``.
    """

    def wrap(cls):
        for name in names or (cls.__name__, ):
            MODELS.register_module(name=name, module=cls)
            if name not in _UPSAMPLER_NAMES:
                _UPSAMPLER_NAMES.append(name)
        return cls

    return wrap


def registered_upsamplers() -> List[str]:
    """Names accepted as ``type`` by :func:`build_upsampler`."""
    return list(_UPSAMPLER_NAMES)


def build_upsampler(cfg: Optional[Union[Dict, nn.Module]],
                    in_channels: int,
                    scale_factor: int = 2) -> nn.Module:
    """Build an upsampling layer ``(B, C, H, W) -> (B, C, s*H, s*W)``.

    Args:
        cfg: either a config with a registered ``type`` (``dict(type='DySample')``,
            ``dict(type='DySample', style='pl', dyscope=True)``, ``dict(type='CARAFE')``...),
            or an interpolation config without ``type`` as mmdet's FPN takes it
            (``dict(mode='nearest')``, ``dict(mode='bilinear', align_corners=False)``),
            which gives a parameter-free :class:`Interpolate`. ``None`` means nearest.
        in_channels: channels of the feature to upsample.
        scale_factor: integer upsampling ratio >= 2.
    """
    s = check_scale_factor(scale_factor)
    in_channels = check_positive_int(in_channels, 'in_channels')
    if cfg is None:
        cfg = dict(mode='nearest')
    if not isinstance(cfg, dict):
        raise TypeError(f'upsample cfg must be a dict, got {type(cfg).__name__}')
    cfg = copy.deepcopy(dict(cfg))
    for key, needed in (('in_channels', in_channels), ('scale_factor', s)):
        if key in cfg and cfg.pop(key) != needed:
            raise ValueError(f'the upsample cfg must not set {key}: the neck or head sets it '
                             f'(here {key}={needed})')
    layer_type = cfg.pop('type', 'Interpolate')
    if inspect.isclass(layer_type):
        layer_cls = layer_type
    elif layer_type in _UPSAMPLER_NAMES:
        layer_cls = MODELS.get(layer_type)
    else:
        raise ValueError(f'unknown upsampler type {layer_type!r}; registered upsamplers: '
                         f'{", ".join(_UPSAMPLER_NAMES)} (or give no type and an '
                         f"interpolation mode, e.g. dict(mode='nearest'))")
    if 'mode' in cfg and 'mode' not in inspect.signature(layer_cls).parameters:
        name = layer_type if isinstance(layer_type, str) else layer_type.__name__
        raise ValueError(
            f"upsample cfg has both type={name!r} and the interpolation key 'mode', which "
            f"{name} does not take: a base config's dict(mode=...) was probably merged into "
            f"yours; write upsample_cfg=dict(_delete_=True, type={name!r}, ...) to replace it")
    return layer_cls(in_channels=in_channels, scale_factor=s, **cfg)
