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


def _close_names(name: str) -> List[str]:
    """Registered names close to ``name``: a case-insensitive exact match alone, else
    :func:`difflib.get_close_matches` of the lower-cased names (best first)."""
    import difflib  # only on this error path: not at import

    by_lower = {registered.lower(): registered for registered in _UPSAMPLER_NAMES}
    if name.lower() in by_lower:
        return [by_lower[name.lower()]]
    return [by_lower[close] for close in difflib.get_close_matches(name.lower(), by_lower)]


def _unknown_type_message(layer_type) -> str:
    close = _close_names(layer_type) if isinstance(layer_type, str) else []
    names = [repr(name) for name in close]
    hint = ''
    if names:
        choices = f'{", ".join(names[:-1])} or {names[-1]}' if names[1:] else names[0]
        hint = f' (did you mean {choices}?)'
    return (f'unknown upsampler type {layer_type!r}{hint}; registered upsamplers: '
            f'{", ".join(_UPSAMPLER_NAMES)} (or give no type and an interpolation mode, '
            f"e.g. dict(mode='nearest'))")


def build_upsampler(cfg: Optional[Union[Dict, nn.Module]],
                    in_channels: int,
                    scale_factor: int = 2,
                    *,
                    guide_channels: Optional[int] = None,
                    where: Optional[str] = None) -> nn.Module:
    """Build an upsampling layer ``(B, C, H, W) -> (B, C, s*H, s*W)``.

    Args:
        cfg: either a config with a registered ``type`` (``dict(type='DySample')``,
            ``dict(type='DySample', style='pl', dyscope=True)``, ``dict(type='CARAFE')``...),
            or an interpolation config without ``type`` as mmdet's FPN takes it
            (``dict(mode='nearest')``, ``dict(mode='bilinear', align_corners=False)``),
            which gives a parameter-free :class:`Interpolate`. ``None`` means nearest.
        in_channels: channels of the feature to upsample.
        scale_factor: integer upsampling ratio >= 2.
        guide_channels: channels of the higher-resolution feature the calling site can pass
            as ``guide`` (see :func:`mmdysample.upsamplers.sites.upsample`); ``None`` when
            the site has none. A guided layer (class attribute ``requires_guide = True``)
            gets it as its ``guide_channels`` argument; with ``None`` it cannot be built at
            a site. Built directly (no ``where``), a guided layer takes it from here or from
            ``cfg['guide_channels']``, and needs one of them.
        where: the calling site, named in errors (e.g. ``'FPN top-down step 1'``); ``None``
            for a direct build.

    Raises:
        ValueError: an unknown ``type`` (with the close registered names, case-insensitive,
            and the list of all), a cfg that sets what the caller sets, a guided type
            without ``guide_channels`` (built directly) or at a site without a guide.
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
        raise ValueError(_unknown_type_message(layer_type))
    if 'mode' in cfg and 'mode' not in inspect.signature(layer_cls).parameters:
        name = layer_type if isinstance(layer_type, str) else layer_type.__name__
        raise ValueError(
            f"upsample cfg has both type={name!r} and the interpolation key 'mode', which "
            f"{name} does not take: a base config's dict(mode=...) was probably merged into "
            f"yours; write upsample_cfg=dict(_delete_=True, type={name!r}, ...) to replace it")
    if getattr(layer_cls, 'requires_guide', False):
        name = layer_type if isinstance(layer_type, str) else layer_type.__name__
        cfg_guide_channels = cfg.pop('guide_channels', None)
        if where is None and guide_channels is None:  # built directly: the cfg may say it
            guide_channels = cfg_guide_channels
        elif None not in (cfg_guide_channels, guide_channels) and \
                cfg_guide_channels != guide_channels:
            raise ValueError(f'the upsample cfg must not set guide_channels: '
                             f'{where or "the calling site"} sets it (here '
                             f'guide_channels={guide_channels})')
        if guide_channels is None and where is None:
            raise ValueError(
                f'upsampler type {name!r} is a guided upsampler: it upsamples x with a '
                f'higher-resolution feature, the guide (layer(x, guide), guide at the output '
                f'size); built directly, it needs guide_channels= (the channels of that '
                f'guide), e.g. build_upsampler(dict(type={name!r}), in_channels='
                f'{in_channels}, guide_channels=...)')
        if guide_channels is None:
            raise ValueError(
                f'upsampler type {name!r} is a guided upsampler (it needs the '
                f'higher-resolution feature as a guide), but {where} has no '
                f'such feature; use a non-guided type here (e.g. DySample)')
        cfg['guide_channels'] = check_positive_int(guide_channels, 'guide_channels')
    return layer_cls(in_channels=in_channels, scale_factor=s, **cfg)
