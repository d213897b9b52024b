"""Shared pieces of the tool tests: the scripts of tools/ loaded as modules, demo config
paths and an independent DySample forward, written from the paper (Eq. 4/5) in the authors'
formulation: offsets from 1x1 convs, ``+ init_pos``, the s x s sub-pixel grid,
``grid_sample`` (bilinear, border, align_corners=False). LP style only.

(Imported by name, as ``tools_testing``: ``from conftest import ...`` finds whichever
folder's conftest was imported first.)"""
import importlib.util
import os
import sys

import torch
import torch.nn.functional as F

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TOOLS = os.path.join(REPO, 'tools')
if TOOLS not in sys.path:  # the tools import their shared helpers as `import tool_helpers`
    sys.path.append(TOOLS)


def load_tool(name: str):
    """tools/<name>.py as a module (tools/ is not a package), loaded once."""
    module_name = f'mmdysample_tool_{name}'
    if module_name in sys.modules:
        return sys.modules[module_name]
    spec = importlib.util.spec_from_file_location(module_name,
                                                  os.path.join(REPO, 'tools', f'{name}.py'))
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module

DEMO_SEG_DYSAMPLE = os.path.join(REPO, 'configs', 'demo',
                                 'segformer_mit-w16_dysample-lpg4_demo_synthetic-ade20k.py')
DEMO_SEG_BILINEAR = os.path.join(REPO, 'configs', 'demo',
                                 'segformer_mit-w16_bilinear_demo_synthetic-ade20k.py')
DEMO_DET_DYSAMPLE = os.path.join(REPO, 'configs', 'demo',
                                 'faster-rcnn_r18-w16_fpn-dysample-lpg4_demo_synthetic-coco.py')


def reference_dysample(x, params, scale=2, groups=4, dyscope=False, scope_factor=0.25):
    """``params``: dict with ``offset.weight``/``offset.bias`` and, with ``dyscope``,
    ``scope.weight`` (+ optional ``scope.bias``)."""
    batch, channels, height, width = x.shape
    offset = F.conv2d(x, params['offset.weight'], params['offset.bias'])
    if dyscope:
        scope = F.conv2d(x, params['scope.weight'], params.get('scope.bias'))
        offset = offset * scope.sigmoid() * (2 * scope_factor)
    else:
        offset = offset * scope_factor
    # sub-pixel a (row), b (column) of an s x s block sits at ((b+.5)/s-.5, (a+.5)/s-.5)
    sub = [(i + 0.5) / scale - 0.5 for i in range(scale)]
    init = torch.zeros(2, groups, scale, scale, dtype=x.dtype)
    for a in range(scale):
        for b in range(scale):
            init[0, :, a, b] = sub[b]
            init[1, :, a, b] = sub[a]
    offset = offset + init.reshape(1, -1, 1, 1)
    out = x.new_empty(batch, channels, scale * height, scale * width)
    per_group = channels // groups
    offset = offset.view(batch, 2, groups, scale, scale, height, width)
    for g in range(groups):
        for a in range(scale):
            for b in range(scale):
                px = offset[:, 0, g, a, b] + torch.arange(width) + 0.5  # (B, H, W)
                py = offset[:, 1, g, a, b] + torch.arange(height)[:, None] + 0.5
                grid = torch.stack([px / width * 2 - 1, py / height * 2 - 1], dim=-1)
                sampled = F.grid_sample(x[:, g * per_group:(g + 1) * per_group], grid,
                                        mode='bilinear', padding_mode='border',
                                        align_corners=False)
                out[:, g * per_group:(g + 1) * per_group, a::scale, b::scale] = sampled
    return out
