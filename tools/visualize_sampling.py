#!/usr/bin/env python
"""Show where DySample samples: sampling points of a region (paper Fig. 9) and offset maps.

The model is built from a config (``--checkpoint`` optional: an untrained model works, its
offsets are ~0 so the points sit on the bilinear-initialised grid), the image is resized to
``--size``, normalised by the model's data preprocessor and run through the tensor-mode
forward, while forward hooks on every DySample layer record the sampling position of each
of its output pixels (:class:`DySampleRecorder`).

Written to ``--out-dir``:

* ``sampling_points.png``: one panel per DySample layer, zoomed on ``--region`` of the
  image. Each output pixel of the layer inside the region is a small grey cross at its
  centre, joined by a line to the point it samples (a dot, coloured by offset group) —
  where the paper's Fig. 9 draws the sampled points of a local region. Positions are
  mapped from the layer's input grid to image pixels by the layer's stride
  (``image size / layer input size``, per axis).
* ``offset_magnitude.png``: one panel per DySample layer, the learned displacement
  ``|sampling point - output pixel centre|`` in the layer's input pixels, averaged over the
  offset groups and over the ``s x s`` output pixels of each input pixel, drawn over the
  image's extent (0 everywhere means bilinear upsampling); plus the input image.
* ``sampling.json``: the per-layer statistics (mean/max displacement).

Example::

    python tools/visualize_sampling.py \\
        configs/demo/segformer_mit-w16_dysample-lpg4_demo_synthetic-ade20k.py \\
        --checkpoint work_dirs/segformer_mit-w16_dysample-lpg4_demo_synthetic-ade20k/iter_600.pth \
        --image data/synthetic/ade20k/images/validation/<name>.jpg
"""
import argparse
import json
import os
import sys
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn as nn

TOOLS_DIR = os.path.dirname(os.path.abspath(__file__))
if TOOLS_DIR not in sys.path:  # loaded by path rather than run as a script
    sys.path.append(TOOLS_DIR)
from tool_helpers import build_model, import_mmdysample  # noqa: E402

import_mmdysample()
from mmdysample.upsamplers import DySample  # noqa: E402

GROUP_COLOURS = ('#d62728', '#1f77b4', '#2ca02c', '#ff7f0e', '#9467bd', '#8c564b', '#e377c2',
                 '#17becf')



def dysample_sampling_points(layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Where a DySample layer samples its input ``x``, for every output pixel.

    Returns:
        ``(B, groups, s*H, s*W, 2)`` ``(x, y)`` positions in input pixel units, with input
        pixel ``(i, j)`` covering ``[j, j+1] x [i, i+1]`` (its centre at ``(j+0.5, i+0.5)``),
        the convention of :mod:`mmdysample.functional`. Output pixel ``(Y, X)`` has its
        centre at ``((X + 0.5) / s, (Y + 0.5) / s)`` in the same units; with zero learned
        offsets and the bilinear initialisation the two coincide.
    """
    if not isinstance(layer, DySample):
        raise TypeError(f'layer must be a DySample module, got {type(layer).__name__}')
    s, groups = layer.scale_factor, layer.groups
    with torch.no_grad():
        offset = layer.sampling_offsets(x)  # (B, 2*g*s*s, H, W), [x|y][group][a][b]
    batch, _, height, width = offset.shape
    offset = offset.view(batch, 2, groups, s, s, height, width)
    centre_x = torch.arange(width, dtype=offset.dtype, device=offset.device) + 0.5
    centre_y = torch.arange(height, dtype=offset.dtype, device=offset.device) + 0.5
    pos_x = offset[:, 0] + centre_x  # (B, g, a, b, H, W)
    pos_y = offset[:, 1] + centre_y[:, None]
    points = torch.stack([pos_x, pos_y], dim=-1)  # (B, g, a, b, H, W, 2)
    # output row Y = s*h + a, column X = s*w + b
    points = points.permute(0, 1, 4, 2, 5, 3, 6).reshape(batch, groups, s * height,
                                                         s * width, 2)
    return points


def output_pixel_centres(height: int, width: int, scale_factor: int,
                         dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``(s*H, s*W, 2)`` centres of the output pixels in input pixel units (see
    :func:`dysample_sampling_points`)."""
    s = scale_factor
    xs = (torch.arange(s * width, dtype=dtype) + 0.5) / s
    ys = (torch.arange(s * height, dtype=dtype) + 0.5) / s
    grid_y, grid_x = torch.meshgrid(ys, xs, indexing='ij')
    return torch.stack([grid_x, grid_y], dim=-1)


class DySampleRecorder:
    """Forward hooks on every DySample layer of a model recording, per call, the layer
    input's size and the sampling points (:func:`dysample_sampling_points`).

    Use as a context manager; ``records`` maps each layer's qualified name to a list of
    ``dict(input_size=(H, W), scale_factor=s, points=(B, g, sH, sW, 2) tensor)``, one per
    call, in call order.
    """

    def __init__(self, model: nn.Module):
        self.layers = {name: m for name, m in model.named_modules() if isinstance(m, DySample)}
        self.records: Dict[str, List[Dict[str, Any]]] = {name: [] for name in self.layers}
        self._handles = []

    def _hook(self, name: str):

        def record(module, inputs, output):
            x = inputs[0]
            self.records[name].append(
                dict(input_size=tuple(x.shape[-2:]), scale_factor=module.scale_factor,
                     points=dysample_sampling_points(module, x.detach()).cpu()))

        return record

    def __enter__(self):
        if not self.layers:
            raise ValueError('the model has no DySample layer to record')
        self._handles = [m.register_forward_hook(self._hook(n)) for n, m in self.layers.items()]
        return self

    def __exit__(self, *exc_info):
        for handle in self._handles:
            handle.remove()
        self._handles = []
        return False

def load_image(path: Optional[str], size: Tuple[int, int]) -> np.ndarray:
    """``(H, W, 3)`` uint8 RGB image resized to ``size`` (bilinear); ``None`` path: a
    synthetic scene (mmdysample's synthetic-data renderer, seed 0)."""
    import mmcv

    height, width = size
    if path is None:
        from mmdysample.datasets.synthetic import SceneSpec, render_scene
        scene = render_scene(np.random.default_rng(0), SceneSpec())
        image = np.ascontiguousarray(scene.image)
    else:
        if not os.path.isfile(path):
            raise FileNotFoundError(f'image not found: {path}')
        image = mmcv.imread(path, channel_order='rgb')
    return mmcv.imresize(image, (width, height), interpolation='bilinear')


def preprocess(model, image_rgb: np.ndarray) -> torch.Tensor:
    """The model's data preprocessor applied to one image (it expects BGR, mmcv's order)."""
    bgr = np.ascontiguousarray(image_rgb[..., ::-1])
    tensor = torch.from_numpy(bgr).permute(2, 0, 1).contiguous()
    data = model.data_preprocessor(dict(inputs=[tensor]), False)
    return data['inputs']


def record_sampling(model, inputs: torch.Tensor) -> Dict[str, List[Dict[str, Any]]]:
    """Run the part of the model that holds its upsamplers: the whole tensor-mode forward
    of a segmentor (the decode head upsamples), ``extract_feat`` (backbone + neck) of a
    detector (whose heads need image metadata even in tensor mode)."""
    with DySampleRecorder(model) as recorder, torch.no_grad():
        if hasattr(model, 'decode_head') or not hasattr(model, 'extract_feat'):
            model(inputs, mode='tensor')
        else:
            model.extract_feat(inputs)
    return {name: calls for name, calls in recorder.records.items() if calls}


def layer_views(records: Dict[str, List[Dict[str, Any]]], image_size: Tuple[int, int]):
    """One view per (layer, call): points and output centres in image pixels."""
    views = []
    img_h, img_w = image_size
    for name, calls in records.items():
        for call_index, record in enumerate(calls):
            in_h, in_w = record['input_size']
            s = record['scale_factor']
            points = record['points'][0]  # first image: (g, sH, sW, 2)
            centres = output_pixel_centres(in_h, in_w, s, points.dtype)
            stride = torch.tensor([img_w / in_w, img_h / in_h], dtype=points.dtype)
            label = name if len(calls) == 1 else f'{name} (call {call_index})'
            views.append(
                dict(name=label, input_size=(in_h, in_w), scale_factor=s,
                     stride=stride.tolist(), points_img=points * stride,
                     centres_img=centres * stride,
                     displacement=(points - centres).norm(dim=-1)))  # (g, sH, sW), input px
    return views


def _grid(count: int):
    cols = min(count, 3)
    rows = (count + cols - 1) // cols
    return rows, cols


def plot_sampling_points(image: np.ndarray, views, region: Sequence[int], path: str,
                         title: str) -> None:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    from matplotlib.collections import LineCollection

    x0, y0, x1, y1 = region
    rows, cols = _grid(len(views))
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 4.4 * rows), squeeze=False)
    for ax in axes.flat[len(views):]:
        ax.axis('off')
    for ax, view in zip(axes.flat, views):
        ax.imshow(image, interpolation='nearest')
        centres, points = view['centres_img'], view['points_img']
        inside = ((centres[..., 0] >= x0) & (centres[..., 0] < x1) & (centres[..., 1] >= y0)
                  & (centres[..., 1] < y1))
        centre_list = centres[inside].numpy()
        ax.scatter(centre_list[:, 0], centre_list[:, 1], marker='+', s=14, c='0.6',
                   linewidths=0.7, label='output pixel centre')
        for group in range(points.shape[0]):
            colour = GROUP_COLOURS[group % len(GROUP_COLOURS)]
            sampled = points[group][inside].numpy()
            ax.add_collection(LineCollection(np.stack([centre_list, sampled], axis=1),
                                             colors=colour, linewidths=0.6, alpha=0.7))
            ax.scatter(sampled[:, 0], sampled[:, 1], s=6, c=colour,
                       label=f'sampled, group {group}')
        margin_x, margin_y = 0.05 * (x1 - x0), 0.05 * (y1 - y0)
        ax.set_xlim(x0 - margin_x, x1 + margin_x)
        ax.set_ylim(y1 + margin_y, y0 - margin_y)
        in_h, in_w = view['input_size']
        ax.set_title(f"{view['name']}\n{in_h}x{in_w} -> x{view['scale_factor']}, "
                     f"mean shift {view['displacement'].mean():.3f} px", fontsize=8)
        ax.tick_params(labelsize=6)
    axes.flat[0].legend(loc='upper right', fontsize=6, framealpha=0.8)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_offset_magnitude(image: np.ndarray, views, region: Sequence[int], path: str,
                          title: str) -> None:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.patches as patches
    import matplotlib.pyplot as plt

    rows, cols = _grid(len(views) + 1)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.8 * rows), squeeze=False)
    for ax in axes.flat[len(views) + 1:]:
        ax.axis('off')
    image_ax = axes.flat[0]
    image_ax.imshow(image)
    x0, y0, x1, y1 = region
    image_ax.add_patch(patches.Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False,
                                         edgecolor='yellow', linewidth=1.2))
    image_ax.set_title('input (yellow: region of sampling_points.png)', fontsize=8)
    img_h, img_w = image.shape[:2]
    for ax, view in zip(list(axes.flat)[1:], views):
        magnitude = input_pixel_magnitude(view['displacement'], view['scale_factor']).numpy()
        shown = ax.imshow(magnitude, cmap='magma', interpolation='nearest',
                          extent=(0, img_w, img_h, 0))
        fig.colorbar(shown, ax=ax, fraction=0.046, pad=0.02).ax.tick_params(labelsize=6)
        in_h, in_w = view['input_size']
        ax.set_title(f"{view['name']} ({in_h}x{in_w}): |offset| (input px)\n"
                     f"mean {magnitude.mean():.3f}, "
                     f"max {magnitude.max():.3f}", fontsize=8)
        ax.tick_params(labelsize=6)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def input_pixel_magnitude(displacement: torch.Tensor, scale_factor: int) -> torch.Tensor:
    """``(H, W)`` mean displacement of each input pixel's ``s x s`` output pixels and all
    offset groups, from ``(groups, s*H, s*W)``."""
    groups, out_h, out_w = displacement.shape
    s = scale_factor
    return displacement.reshape(groups, out_h // s, s, out_w // s, s).mean(dim=(0, 2, 4))


def parse_args(argv=None):
    from mmengine.config import DictAction

    parser = argparse.ArgumentParser(
        description='Draw DySample sampling points (Fig. 9 style) and offset heatmaps.')
    parser.add_argument('config', help='model config with DySample layers')
    parser.add_argument('--checkpoint', help='weights (default: untrained model)')
    parser.add_argument('--image', help='image file (default: a synthetic scene)')
    parser.add_argument('--size', type=int, nargs=2, default=None, metavar=('H', 'W'),
                        help="input size (default: the data preprocessor's size, else 512 512)")
    parser.add_argument('--region', type=int, nargs=4, default=None,
                        metavar=('X0', 'Y0', 'X1', 'Y1'),
                        help='image region whose points are drawn (default: the central '
                        'quarter-side square)')
    parser.add_argument('--layers', nargs='+', default=None,
                        help='names of the DySample layers to draw (default: all)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, default={})
    parser.add_argument('--out-dir', default='work_dirs/visualize_sampling')
    args = parser.parse_args(argv)
    if args.size is not None and min(args.size) < 32:
        parser.error(f'--size must be >= 32, got {args.size}')
    return args


def default_size(model) -> Tuple[int, int]:
    size = getattr(model.data_preprocessor, 'size', None)
    if size:
        return int(size[0]), int(size[1])
    return 512, 512


def check_region(region: Optional[Sequence[int]], size: Tuple[int, int]) -> Tuple[int, ...]:
    height, width = size
    if region is None:
        side_x, side_y = max(width // 4, 8), max(height // 4, 8)
        return ((width - side_x) // 2, (height - side_y) // 2, (width + side_x) // 2,
                (height + side_y) // 2)
    x0, y0, x1, y1 = region
    if not (0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height):
        raise ValueError(f'region must satisfy 0 <= X0 < X1 <= {width} and '
                         f'0 <= Y0 < Y1 <= {height} (the image size), got {list(region)}')
    return tuple(region)


def visualize(config, checkpoint=None, image=None, size=None, region=None, layers=None,
              cfg_options=None, out_dir='work_dirs/visualize_sampling') -> Dict[str, Any]:
    """Run the tool (see the module docstring); returns the paths, the views and stats."""
    model = build_model(config, cfg_options, checkpoint)
    size = tuple(size) if size else default_size(model)
    region = check_region(region, size)
    image_rgb = load_image(image, size)
    records = record_sampling(model, preprocess(model, image_rgb))
    if layers:
        unknown = [name for name in layers if name not in records]
        if unknown:
            raise ValueError(f'layers {unknown} are not DySample layers of the model; '
                             f'choose from {list(records)}')
        records = {name: records[name] for name in layers}
    views = layer_views(records, size)
    os.makedirs(out_dir, exist_ok=True)
    state = 'checkpoint ' + os.path.basename(checkpoint) if checkpoint else 'untrained'
    title = f"{os.path.splitext(os.path.basename(str(config)))[0]} ({state}), " \
            f"{size[0]}x{size[1]} input"
    paths = dict(points=os.path.join(out_dir, 'sampling_points.png'),
                 offsets=os.path.join(out_dir, 'offset_magnitude.png'),
                 json=os.path.join(out_dir, 'sampling.json'))
    plot_sampling_points(image_rgb, views, region, paths['points'], title)
    plot_offset_magnitude(image_rgb, views, region, paths['offsets'], title)
    stats = [dict(layer=v['name'], input_size=list(v['input_size']),
                  scale_factor=v['scale_factor'], stride=v['stride'],
                  mean_displacement=float(v['displacement'].mean()),
                  max_displacement=float(v['displacement'].max())) for v in views]
    with open(paths['json'], 'w') as json_file:
        json.dump(dict(config=str(config), checkpoint=checkpoint, image=image,
                       size=list(size), region=list(region), layers=stats), json_file,
                  indent=2)
    return dict(paths=paths, views=views, stats=stats, region=region, size=size)


def main(argv=None):
    args = parse_args(argv)
    result = visualize(args.config, args.checkpoint, args.image, args.size, args.region,
                       args.layers, args.cfg_options, args.out_dir)
    for stat in result['stats']:
        print(f"{stat['layer']}: input {stat['input_size']}, mean |offset| "
              f"{stat['mean_displacement']:.4f} px, max {stat['max_displacement']:.4f} px")
    print('wrote ' + ', '.join(result['paths'].values()))
    return result


if __name__ == '__main__':
    main(sys.argv[1:])
