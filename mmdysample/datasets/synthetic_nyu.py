"""Synthetic indoor scenes in the NYU Depth V2 layout that mmseg's ``NYUDataset`` reads.

Each scene is ray-cast through a pinhole camera (NYU's focal length relative to the image
width, 518.8 / 640): a room of five planes (floor, ceiling, two side walls, back wall) with
axis-aligned boxes standing on the floor and spheres resting on the floor or floating. The
depth map is the z-distance of the first hit, exactly what the RGB image shows (Lambertian
shading of every surface's own colour and texture), so depth is predictable from the image.

Files, as mmseg's ``tools/dataset_converters/nyu.py`` leaves the real data set::

    <out>/images/train/<scene>_0001_00000.jpg        RGB, JPEG
    <out>/annotations/train/<scene>_0001_00000.png   depth, 16-bit PNG, millimetres
    <out>/images/test/<scene>_00000.jpg
    <out>/annotations/test/<scene>_00000.png
    <out>/meta.json                                  the generation parameters

``<scene>`` is one of ``NYUDataset``'s scene categories (``bedroom``, ``kitchen``...), so the
dataset's ``category_id`` is set as for the real files. Depth values are in (0, 10] m: load
them with ``LoadDepthAnnotation(depth_rescale_factor=1e-3)`` as for NYU.
"""
import json
import os
import os.path as osp
import shutil
import time
from dataclasses import asdict, dataclass
from typing import Dict, Optional, Tuple

import cv2
import numpy as np

__all__ = ['NYUSceneSpec', 'render_nyu_scene', 'depth_to_png16', 'generate_synthetic_nyu',
           'NYU_FOCAL_RATIO', 'NYU_SPLITS', 'NYU_LAYOUT_VERSION']

NYU_LAYOUT_VERSION = 1
#: NYU Depth V2's focal length (518.8 px) over its image width (640 px)
NYU_FOCAL_RATIO = 518.8 / 640
NYU_SPLITS = ('train', 'test')
_SCENES = ('bedroom', 'kitchen', 'living_room', 'bathroom', 'office', 'classroom',
           'dining_room', 'study')  # a subset of NYUDataset.METAINFO['classes']
_SPLIT_SEED = {'train': 0, 'test': 1}


@dataclass(frozen=True)
class NYUSceneSpec:
    """Parameters of the rendered scenes.

    Args:
        height, width: image size in pixels (>= 32 each).
        max_depth: the back wall is at most this far (metres, <= 65.535 for 16-bit mm).
        min_boxes, max_boxes: boxes per scene (inclusive range).
        min_spheres, max_spheres: spheres per scene (inclusive range).
    """
    height: int = 72
    width: int = 96
    max_depth: float = 10.0
    min_boxes: int = 1
    max_boxes: int = 3
    min_spheres: int = 0
    max_spheres: int = 2

    def __post_init__(self):
        for name in ('height', 'width'):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 32:
                raise ValueError(f'{name} must be an int >= 32, got {value!r}')
        if not 3.0 <= self.max_depth <= 65.535:
            raise ValueError(f'max_depth must be in [3, 65.535] m (16-bit millimetres), got '
                             f'{self.max_depth!r}')
        for low, high in (('min_boxes', 'max_boxes'), ('min_spheres', 'max_spheres')):
            lo, hi = getattr(self, low), getattr(self, high)
            if not (isinstance(lo, int) and isinstance(hi, int) and 0 <= lo <= hi):
                raise ValueError(f'{low} and {high} must be ints with 0 <= {low} <= {high}, '
                                 f'got {lo!r} and {hi!r}')


def _camera_rays(height: int, width: int) -> np.ndarray:
    """Ray directions ``(H, W, 3)`` with z = 1 (so a ray's parameter t is the z-depth)."""
    focal = NYU_FOCAL_RATIO * width
    us = (np.arange(width) + 0.5 - width / 2) / focal
    vs = (np.arange(height) + 0.5 - height / 2) / focal
    grid_u, grid_v = np.meshgrid(us, vs)
    return np.stack([grid_u, grid_v, np.ones_like(grid_u)], axis=-1)


def _hit_plane(rays: np.ndarray, axis: int, value: float) -> np.ndarray:
    """Ray parameter where ``p[axis] == value`` (inf when behind or parallel)."""
    with np.errstate(divide='ignore', invalid='ignore'):
        t = value / rays[..., axis]
    return np.where(t > 1e-6, t, np.inf)


def _hit_box(rays: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Slab test: entry parameter (inf when missed) and the entry face's axis."""
    with np.errstate(divide='ignore', invalid='ignore'):
        t1 = lo / rays
        t2 = hi / rays
    t_near = np.minimum(t1, t2)
    t_far = np.maximum(t1, t2)
    axis = np.argmax(t_near, axis=-1)
    t_enter = t_near.max(-1)
    t_exit = t_far.min(-1)
    hit = (t_exit >= t_enter) & (t_enter > 1e-6)
    return np.where(hit, t_enter, np.inf), axis


def _hit_sphere(rays: np.ndarray, centre: np.ndarray, radius: float) -> np.ndarray:
    a = (rays * rays).sum(-1)
    b = rays @ centre
    disc = b * b - a * (centre @ centre - radius * radius)
    with np.errstate(invalid='ignore'):
        t = (b - np.sqrt(np.maximum(disc, 0))) / a
    return np.where((disc >= 0) & (t > 1e-6), t, np.inf)


def render_nyu_scene(rng: np.random.Generator,
                     spec: NYUSceneSpec = NYUSceneSpec()) -> Tuple[np.ndarray, np.ndarray]:
    """Render one scene.

    Returns:
        ``(rgb, depth)``: ``(H, W, 3)`` uint8 RGB and ``(H, W)`` float32 z-depth in metres,
        every pixel in ``(0, spec.max_depth]``.
    """
    rays = _camera_rays(spec.height, spec.width)
    # room (camera at the origin, x right, y down, z forward)
    floor_y = rng.uniform(1.0, 1.6)
    ceiling_y = -rng.uniform(0.9, 1.5)
    left_x, right_x = -rng.uniform(1.5, 3.0), rng.uniform(1.5, 3.0)
    back_z = rng.uniform(0.55, 0.95) * spec.max_depth
    t_best = np.full(rays.shape[:2], np.inf)
    normal = np.zeros(rays.shape)
    colour = np.zeros(rays.shape)

    def paint(t, n, c):
        closer = t < t_best
        t_best[closer] = t[closer]
        normal[closer] = n[closer] if n.ndim == 3 else n
        colour[closer] = c[closer] if c.ndim == 3 else c

    points = None
    planes = [(1, floor_y, (0, -1, 0)), (1, ceiling_y, (0, 1, 0)), (0, left_x, (1, 0, 0)),
              (0, right_x, (-1, 0, 0)), (2, back_z, (0, 0, -1))]
    base = rng.uniform(0.35, 0.9, size=(len(planes), 3))
    for index, (axis, value, n) in enumerate(planes):
        t = _hit_plane(rays, axis, value)
        points = rays * np.where(np.isfinite(t), t, 0)[..., None]
        if index == 0:  # floor: checkerboard of 0.5 m tiles
            tiles = (np.floor(points[..., 0] / 0.5) + np.floor(points[..., 2] / 0.5)) % 2
            texture = 0.75 + 0.25 * tiles
        else:  # walls and ceiling: soft stripes
            along = points[..., 2] if axis == 0 else points[..., 0]
            texture = 0.85 + 0.15 * np.sin(along * rng.uniform(2.0, 6.0))
        paint(t, np.asarray(n, float), base[index] * texture[..., None])

    for _ in range(rng.integers(spec.min_boxes, spec.max_boxes + 1)):
        size = rng.uniform([0.4, 0.3, 0.4], [1.4, 1.2, 1.2])
        centre_x = rng.uniform(left_x + size[0] / 2, right_x - size[0] / 2)
        near_z = rng.uniform(1.2, back_z - size[2] - 0.1)
        lo = np.array([centre_x - size[0] / 2, floor_y - size[1], near_z])
        hi = np.array([centre_x + size[0] / 2, floor_y, near_z + size[2]])
        t, axis = _hit_box(rays, lo, hi)
        n = np.zeros(rays.shape)
        face_sign = -np.sign(np.take_along_axis(rays, axis[..., None], -1)[..., 0])
        np.put_along_axis(n, axis[..., None], face_sign[..., None], axis=-1)
        paint(t, n, rng.uniform(0.15, 0.95, size=3))

    for _ in range(rng.integers(spec.min_spheres, spec.max_spheres + 1)):
        radius = rng.uniform(0.2, 0.6)
        z = rng.uniform(1.5, back_z - radius - 0.1)
        x = rng.uniform(left_x + radius, right_x - radius)
        y = floor_y - radius if rng.random() < 0.6 else rng.uniform(ceiling_y + radius,
                                                                    floor_y - radius)
        centre = np.array([x, y, z])
        t = _hit_sphere(rays, centre, radius)
        hit_point = rays * np.where(np.isfinite(t), t, 0)[..., None]
        n = (hit_point - centre) / radius
        paint(t, n, rng.uniform(0.15, 0.95, size=3))

    light = np.array([0.3, -0.8, -0.5])
    light /= np.linalg.norm(light)
    lambert = np.clip(normal @ light, 0, 1)
    falloff = 1.0 / (1.0 + 0.04 * t_best**2)
    shade = (0.35 + 0.65 * lambert) * falloff
    rgb = np.clip(colour * shade[..., None] * 255 * 1.3, 0, 255).astype(np.uint8)
    depth = np.minimum(t_best, spec.max_depth).astype(np.float32)
    return rgb, depth


def depth_to_png16(depth_m: np.ndarray) -> np.ndarray:
    """Metres -> uint16 millimetres (rounded), the encoding of NYU's depth PNGs."""
    depth_mm = np.rint(np.asarray(depth_m, dtype=np.float64) * 1000.0)
    if depth_mm.min() < 0 or depth_mm.max() > 65535:
        raise ValueError('depth must be in [0, 65.535] m to fit 16-bit millimetres, got '
                         f'[{depth_m.min()}, {depth_m.max()}]')
    return depth_mm.astype(np.uint16)


def _file_stem(split: str, index: int, scene: str) -> str:
    # the converter's names: train 'bedroom_0001/rgb_00000.jpg' -> 'bedroom_0001_00000.jpg',
    # test 'bathroom/rgb_00045.jpg' -> 'bathroom_00045.jpg'
    return f'{scene}_0001_{index:05d}' if split == 'train' else f'{scene}_{index:05d}'


def generate_synthetic_nyu(out_dir: str,
                           seed: int = 0,
                           num_train: int = 200,
                           num_test: int = 50,
                           spec: Optional[NYUSceneSpec] = None,
                           skip_existing: bool = False,
                           jpeg_quality: int = 95) -> Dict[str, object]:
    """Render ``num_train + num_test`` scenes into ``out_dir`` in NYU's converted layout.

    Args:
        out_dir: output root (``data_root`` of ``NYUDataset``), created if needed. A data set
            this function wrote there before (``meta.json`` with ``layout='nyu'``) is
            replaced as a whole; other existing ``images/``/``annotations/`` folders raise
            ``ValueError`` (they are listed, not indexed, so stale files would be read).
        seed: scene ``i`` of split ``s`` uses ``np.random.default_rng((seed, s, i))``.
        num_train, num_test: scenes per split (>= 1).
        spec: :class:`NYUSceneSpec` (default 72x96, NYU's 3:4).
        skip_existing: return the existing ``meta.json`` unchanged when it records the
            same parameters.
        jpeg_quality: of the RGB images (1-100).

    Returns:
        The ``meta.json`` contents (parameters, counts, depth range, seconds).
    """
    spec = spec or NYUSceneSpec()
    for value, name in ((num_train, 'num_train'), (num_test, 'num_test')):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f'{name} must be an int >= 1, got {value!r}')
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f'seed must be an int >= 0, got {seed!r}')
    params = dict(layout='nyu', version=NYU_LAYOUT_VERSION, seed=seed, num_train=num_train,
                  num_test=num_test, spec=asdict(spec), jpeg_quality=jpeg_quality)
    meta_path = osp.join(out_dir, 'meta.json')
    previous = None
    if osp.isfile(meta_path):
        with open(meta_path) as f:
            previous = json.load(f)
    if skip_existing and previous and all(previous.get(k) == v for k, v in params.items()):
        return previous
    for sub in ('images', 'annotations'):
        path = osp.join(out_dir, sub)
        if osp.exists(path):
            if not (previous and previous.get('layout') == 'nyu'):
                raise ValueError(f'{path} exists and was not written by '
                                 f'generate_synthetic_nyu (no meta.json with layout nyu); '
                                 f'choose another out_dir')
            shutil.rmtree(path)
    start = time.time()
    depth_min, depth_max = np.inf, 0.0
    for split, count in (('train', num_train), ('test', num_test)):
        os.makedirs(osp.join(out_dir, 'images', split), exist_ok=True)
        os.makedirs(osp.join(out_dir, 'annotations', split), exist_ok=True)
        for index in range(count):
            rng = np.random.default_rng((seed, _SPLIT_SEED[split], index))
            scene = _SCENES[int(rng.integers(len(_SCENES)))]
            rgb, depth = render_nyu_scene(rng, spec)
            stem = _file_stem(split, index, scene)
            cv2.imwrite(osp.join(out_dir, 'images', split, stem + '.jpg'),
                        cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR),
                        [cv2.IMWRITE_JPEG_QUALITY, jpeg_quality])
            cv2.imwrite(osp.join(out_dir, 'annotations', split, stem + '.png'),
                        depth_to_png16(depth))
            depth_min, depth_max = min(depth_min, float(depth.min())), max(depth_max,
                                                                             float(depth.max()))
    meta = dict(params, depth_range_m=[depth_min, depth_max],
                seconds=round(time.time() - start, 2))
    with open(meta_path, 'w') as f:
        json.dump(meta, f, indent=1)
    return meta
