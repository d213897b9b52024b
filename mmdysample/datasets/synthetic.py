"""Deterministic synthetic scenes written in the COCO, COCO-panoptic and ADE20K layouts.

A scene is an outdoor-looking picture made of three *stuff* regions (sky above a wavy
horizon, ground below it, sometimes a lake of water) under a few *thing* instances
(filled discs, rotated squares, triangles and rings of varied size and colour, which may
overlap and be cut by the image border), plus a few thin scribbles of unlabeled "clutter".
Every pixel therefore has exactly one meaning, and the same scene can be written as

* COCO instances: ``annotations/instances_{split}2017.json`` with boxes and RLE masks of
  the *visible* part of each thing, images in ``{split}2017/``;
* COCO panoptic: ``annotations/panoptic_{split}2017.json`` and the RGB-encoded
  ``annotations/panoptic_{split}2017/*.png`` (things and stuff, ``isthing`` per category,
  clutter = void);
* ADE20K (``ADEChallengeData2016`` layout): ``images/{training,validation}/*.jpg`` and
  ``annotations/{training,validation}/*.png`` label maps holding category ids, with 0 for
  clutter, so that ``reduce_zero_label=True`` turns it into the ignore index as for ADE20K.

Scene ``i`` of a split is drawn from its own generator seeded with ``(seed, split, i)``:
the data set is reproducible bit for bit, and the validation images do not change when the
number of training images does.
"""
import colorsys
import json
import math
import os
import os.path as osp
import shutil
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np
from pycocotools import mask as mask_utils

__all__ = [
    'THING_CLASSES', 'STUFF_CLASSES', 'CATEGORIES', 'SEMANTIC_CLASSES', 'SEMANTIC_PALETTE',
    'Scene', 'SceneSpec', 'render_scene', 'generate_synthetic_dataset', 'rgb_to_panoptic_id',
    'panoptic_id_to_rgb', 'FORMAT_VERSION'
]

#: Bumped whenever the rendering or the file layout changes, so stale data is regenerated.
FORMAT_VERSION = 1

THING_CLASSES = ('disc', 'square', 'triangle', 'ring')
STUFF_CLASSES = ('sky', 'ground', 'water')

# Category id -> (name, isthing, display colour). Things come first (ids 1..4) as mmdet's
# panoptic datasets order labels things-then-stuff; the ADE20K label value is the same id.
_CATEGORY_COLOURS = {
    'disc': (220, 20, 60),
    'square': (0, 160, 80),
    'triangle': (250, 200, 0),
    'ring': (180, 0, 200),
    'sky': (70, 130, 180),
    'ground': (140, 100, 50),
    'water': (0, 90, 110),
}
CATEGORIES: Tuple[dict, ...] = tuple(
    dict(id=i + 1, name=name, isthing=int(name in THING_CLASSES),
         supercategory='shape' if name in THING_CLASSES else 'stuff',
         color=list(_CATEGORY_COLOURS[name]))
    for i, name in enumerate(THING_CLASSES + STUFF_CLASSES))
_CATEGORY_ID = {c['name']: c['id'] for c in CATEGORIES}

#: Class order of the semantic (ADE20K-layout) data after ``reduce_zero_label``:
#: label ``k`` in the PNG is class ``k - 1`` here, 0 is ignored.
SEMANTIC_CLASSES = THING_CLASSES + STUFF_CLASSES
SEMANTIC_PALETTE = [list(_CATEGORY_COLOURS[name]) for name in SEMANTIC_CLASSES]

# Hue centre (degrees) of each thing class; colours vary around it so that both colour and
# shape carry the class, as a demo that converges in minutes needs.
_THING_HUES = {'disc': 355.0, 'square': 125.0, 'triangle': 55.0, 'ring': 290.0}

VOID = 0


@dataclass(frozen=True)
class SceneSpec:
    """What a scene may contain.

    Args:
        height, width: image size in pixels (>= 32).
        min_objects, max_objects: number of thing instances, drawn uniformly.
        min_object_size, max_object_size: instance size as a fraction of
            ``min(height, width)`` (disc/ring diameter, square side, triangle circumdiameter).
        max_occlusion: a new instance is re-placed (up to 30 tries, else dropped) if it would
            hide more than this fraction of an earlier instance's visible pixels.
        hue_jitter: half-width (degrees) of the hue band around each class's hue centre.
        empty_prob: probability that a scene has no thing at all.
        water_prob: probability of a lake.
        max_clutter: up to this many thin unlabeled scribbles (void / ignore).
        noise_std: std of the pixel noise added to the whole image (0..255 scale).
    """
    height: int = 128
    width: int = 128
    min_objects: int = 1
    max_objects: int = 4
    min_object_size: float = 0.18
    max_object_size: float = 0.45
    max_occlusion: float = 0.3
    hue_jitter: float = 20.0
    empty_prob: float = 0.03
    water_prob: float = 0.5
    max_clutter: int = 2
    noise_std: float = 4.0

    def __post_init__(self):
        for name in ('height', 'width'):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 32:
                raise ValueError(f'{name} must be an integer >= 32, got {value!r}')
        if not (isinstance(self.min_objects, int) and isinstance(self.max_objects, int)
                and 0 <= self.min_objects <= self.max_objects):
            raise ValueError('min_objects and max_objects must be integers with '
                             f'0 <= min_objects <= max_objects, got {self.min_objects!r}, '
                             f'{self.max_objects!r}')
        if not 0 < self.min_object_size <= self.max_object_size <= 1:
            raise ValueError('object sizes must satisfy 0 < min_object_size <= '
                             f'max_object_size <= 1, got {self.min_object_size!r}, '
                             f'{self.max_object_size!r}')
        for name in ('max_occlusion', 'empty_prob', 'water_prob'):
            value = getattr(self, name)
            if not 0 <= value <= 1:
                raise ValueError(f'{name} must be in [0, 1], got {value!r}')


@dataclass
class Scene:
    """One rendered scene.

    Attributes:
        image: ``(H, W, 3)`` uint8 RGB image.
        semantic: ``(H, W)`` uint8 category id of every pixel (``VOID`` = 0 for clutter).
        instance_ids: ``(H, W)`` int32 map, ``k >= 1`` where the ``k``-th entry of
            ``instance_categories`` is visible, 0 elsewhere.
        instance_categories: category id of each thing instance, in drawing order.
    """
    image: np.ndarray
    semantic: np.ndarray
    instance_ids: np.ndarray
    instance_categories: List[int] = field(default_factory=list)

    def instance_masks(self) -> List[np.ndarray]:
        """Visible ``(H, W)`` bool mask of each instance (every one has pixels)."""
        return [self.instance_ids == k + 1 for k in range(len(self.instance_categories))]


# --------------------------------------------------------------------------- rendering


def _smooth_noise(rng: np.random.Generator, height: int, width: int, cell: int) -> np.ndarray:
    """``(H, W)`` float32 noise with unit-ish std varying over ``cell`` pixels."""
    coarse = rng.standard_normal((height // cell + 2, width // cell + 2)).astype(np.float32)
    return cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC)


def _hsv_to_rgb(hue_deg: float, saturation: float, value: float) -> np.ndarray:
    return np.array(colorsys.hsv_to_rgb((hue_deg % 360.0) / 360.0, saturation, value),
                    dtype=np.float32) * 255.0


def _sky(rng, height, width) -> np.ndarray:
    top = _hsv_to_rgb(rng.uniform(200, 220), rng.uniform(0.55, 0.75), rng.uniform(0.6, 0.8))
    bottom = _hsv_to_rgb(rng.uniform(190, 210), rng.uniform(0.2, 0.4), rng.uniform(0.85, 1.0))
    ramp = np.linspace(0.0, 1.0, height, dtype=np.float32)[:, None, None]
    sky = top * (1 - ramp) + bottom * ramp
    clouds = np.clip(_smooth_noise(rng, height, width, max(8, width // 6)), 0, None)
    return sky + clouds[..., None] * 35.0 * rng.uniform(0.3, 1.0)


def _ground(rng, height, width) -> np.ndarray:
    base = _hsv_to_rgb(rng.uniform(25, 40), rng.uniform(0.35, 0.6), rng.uniform(0.4, 0.6))
    blotches = _smooth_noise(rng, height, width, max(4, width // 12))
    speckles = rng.standard_normal((height, width)).astype(np.float32)
    return base * (1 + 0.12 * blotches[..., None]) + 10.0 * speckles[..., None]


def _water(rng, height, width) -> np.ndarray:
    base = _hsv_to_rgb(rng.uniform(180, 195), rng.uniform(0.6, 0.85), rng.uniform(0.35, 0.5))
    rows = np.arange(height, dtype=np.float32)[:, None]
    cols = np.arange(width, dtype=np.float32)[None, :]
    period = rng.uniform(4.0, 7.0)
    waves = np.sin(2 * np.pi * rows / period + 0.3 * np.sin(cols / rng.uniform(6, 12)))
    return base * (1 + 0.15 * waves[..., None])


def _shape_mask(rng: np.random.Generator, kind: str, centre: Tuple[float, float], size: float,
                height: int, width: int) -> np.ndarray:
    """Full (unoccluded, border-clipped) ``(H, W)`` bool mask of one thing."""
    canvas = np.zeros((height, width), np.uint8)
    cx, cy = centre
    shift = 4  # sub-pixel precision for cv2's drawing functions
    scale = 1 << shift
    if kind in ('disc', 'ring'):
        radius = size / 2
        cv2.circle(canvas, (round(cx * scale), round(cy * scale)), round(radius * scale), 1, -1,
                   cv2.LINE_8, shift)
        if kind == 'ring':
            inner = radius * rng.uniform(0.45, 0.6)
            cv2.circle(canvas, (round(cx * scale), round(cy * scale)), round(inner * scale), 0,
                       -1, cv2.LINE_8, shift)
    elif kind == 'square':
        corners = cv2.boxPoints(((cx, cy), (size, size), rng.uniform(0, 90)))
        cv2.fillPoly(canvas, [np.round(corners * scale).astype(np.int32)], 1, cv2.LINE_8, shift)
    elif kind == 'triangle':
        angle0 = rng.uniform(0, 2 * np.pi)
        angles = angle0 + np.array([0, 2, 4]) * np.pi / 3
        corners = np.stack([cx + size / 2 * np.cos(angles), cy + size / 2 * np.sin(angles)], 1)
        cv2.fillPoly(canvas, [np.round(corners * scale).astype(np.int32)], 1, cv2.LINE_8, shift)
    else:
        raise ValueError(f'unknown shape {kind!r}; expected one of {THING_CLASSES}')
    return canvas.astype(bool)


def render_scene(rng: np.random.Generator, spec: SceneSpec = SceneSpec()) -> Scene:
    """Draw one scene from ``rng`` (see the module docstring for what it contains)."""
    height, width = spec.height, spec.width
    # Stuff: sky above a wavy horizon, ground below, maybe an elliptic lake in the ground.
    cols = np.arange(width, dtype=np.float32)
    horizon = (rng.uniform(0.25, 0.55) * height + rng.uniform(1, 0.06 * height) *
               np.sin(2 * np.pi * cols / rng.uniform(0.5, 1.5) / width + rng.uniform(0, 6.3)))
    rows = np.arange(height, dtype=np.float32)[:, None]
    is_sky = rows < horizon[None, :]
    image = np.where(is_sky[..., None], _sky(rng, height, width), _ground(rng, height, width))
    semantic = np.where(is_sky, _CATEGORY_ID['sky'], _CATEGORY_ID['ground']).astype(np.uint8)
    if rng.random() < spec.water_prob:
        lake = np.zeros((height, width), np.uint8)
        centre = (int(rng.uniform(0.2, 0.8) * width),
                  int(rng.uniform(float(horizon.max()) / height + 0.15, 0.95) * height))
        axes = (int(rng.uniform(0.15, 0.4) * width), int(rng.uniform(0.06, 0.15) * height))
        cv2.ellipse(lake, centre, axes, 0, 0, 360, 1, -1)
        is_water = lake.astype(bool) & ~is_sky
        np.copyto(image, _water(rng, height, width), where=is_water[..., None])
        semantic[is_water] = _CATEGORY_ID['water']

    # Clutter: thin dark scribbles, unlabeled (void in panoptic, ignored in ADE20K).
    for _ in range(int(rng.integers(0, spec.max_clutter + 1))):
        points = np.stack([rng.uniform(0, width, 4), rng.uniform(0, height, 4)], 1)
        scribble = np.zeros((height, width), np.uint8)
        cv2.polylines(scribble, [points.astype(np.int32)], False, 1, int(rng.integers(1, 3)))
        scribble = scribble.astype(bool)
        image[scribble] = rng.uniform(20, 80)
        semantic[scribble] = VOID

    # Things, drawn back to front; the visible part of each is what gets annotated.
    instance_ids = np.zeros((height, width), np.int32)
    categories: List[int] = []
    num_objects = 0 if rng.random() < spec.empty_prob else int(
        rng.integers(spec.min_objects, spec.max_objects + 1))
    short_side = min(height, width)
    for _ in range(num_objects):
        kind = THING_CLASSES[int(rng.integers(len(THING_CLASSES)))]
        for _attempt in range(30):
            size = rng.uniform(spec.min_object_size, spec.max_object_size) * short_side
            # keep at least ~70% of the shape inside the image
            margin = 0.2 * size
            centre = (rng.uniform(margin, width - margin), rng.uniform(margin, height - margin))
            mask = _shape_mask(rng, kind, centre, size, height, width)
            if mask.sum() < 0.6 * _full_area(kind, size) or mask.sum() < 16:
                continue
            hidden = np.bincount(instance_ids[mask], minlength=len(categories) + 1)[1:]
            visible = np.bincount(instance_ids.ravel(), minlength=len(categories) + 1)[1:]
            remaining = visible - hidden
            if np.any(hidden > spec.max_occlusion * visible) or np.any(
                    (visible > 0) & (remaining < 16)):
                continue
            break
        else:
            continue
        hue = _THING_HUES[kind] + rng.uniform(-spec.hue_jitter, spec.hue_jitter)
        colour = _hsv_to_rgb(hue, rng.uniform(0.65, 1.0), rng.uniform(0.7, 1.0))
        shading = 1 + 0.08 * _smooth_noise(rng, height, width, max(4, int(size) // 3))
        np.copyto(image, colour * shading[..., None], where=mask[..., None])
        categories.append(_CATEGORY_ID[kind])
        instance_ids[mask] = len(categories)
        semantic[mask] = _CATEGORY_ID[kind]

    if spec.noise_std > 0:
        image += rng.normal(0.0, spec.noise_std, image.shape).astype(np.float32)
    image = np.clip(np.round(image), 0, 255).astype(np.uint8)

    # An instance may have been fully hidden by a later one (only if max_occlusion >= 1):
    # renumber so that every listed instance has pixels.
    present = [k for k in range(1, len(categories) + 1) if np.any(instance_ids == k)]
    if len(present) != len(categories):
        remap = np.zeros(len(categories) + 1, np.int32)
        remap[present] = np.arange(1, len(present) + 1)
        instance_ids = remap[instance_ids]
        categories = [categories[k - 1] for k in present]
    return Scene(image, semantic, instance_ids, categories)


def _full_area(kind: str, size: float) -> float:
    """Area of the unclipped shape (rings: lower bound with the largest hole)."""
    if kind == 'disc':
        return math.pi * size * size / 4
    if kind == 'ring':
        return math.pi * size * size / 4 * (1 - 0.6**2)
    if kind == 'square':
        return size * size
    return 3 * math.sqrt(3) / 4 * (size / 2)**2  # equilateral triangle, circumradius size/2


# ----------------------------------------------------------------------------- writers


def panoptic_id_to_rgb(segment_ids: np.ndarray) -> np.ndarray:
    """COCO-panoptic encoding ``id = R + 256 G + 256^2 B``: ``(H, W)`` int -> ``(H, W, 3)``."""
    segment_ids = np.asarray(segment_ids, dtype=np.int64)
    return np.stack([segment_ids % 256, segment_ids // 256 % 256, segment_ids // 65536 % 256],
                    axis=-1).astype(np.uint8)


def rgb_to_panoptic_id(rgb: np.ndarray) -> np.ndarray:
    """Inverse of :func:`panoptic_id_to_rgb`: ``(H, W, 3)`` uint8 -> ``(H, W)`` int64."""
    rgb = np.asarray(rgb, dtype=np.int64)
    return rgb[..., 0] + 256 * rgb[..., 1] + 65536 * rgb[..., 2]


def _write_png(path: str, array: np.ndarray) -> None:
    if array.ndim == 3:
        array = array[..., ::-1]  # RGB -> BGR for OpenCV
    if not cv2.imwrite(path, np.ascontiguousarray(array)):
        raise OSError(f'could not write {path}')


def _write_jpeg(path: str, rgb: np.ndarray, quality: int = 95) -> None:
    if not cv2.imwrite(path, np.ascontiguousarray(rgb[..., ::-1]),
                       [cv2.IMWRITE_JPEG_QUALITY, quality]):
        raise OSError(f'could not write {path}')


def _bbox_xywh(mask: np.ndarray) -> List[float]:
    """Tight COCO box ``[x, y, w, h]`` around the ``True`` pixels (pixel-edge convention)."""
    ys, xs = np.nonzero(mask)
    return [float(xs.min()), float(ys.min()), float(xs.max() - xs.min() + 1),
            float(ys.max() - ys.min() + 1)]


def _coco_split_name(split: str) -> str:
    return f'{split}2017'


_ADE_SPLIT = {'train': 'training', 'val': 'validation'}
FORMATS = ('coco', 'panoptic', 'ade20k')


def generate_synthetic_dataset(out_dir: str,
                               seed: int = 0,
                               num_train: int = 800,
                               num_val: int = 200,
                               spec: Optional[SceneSpec] = None,
                               formats: Sequence[str] = FORMATS,
                               jpeg_quality: int = 95) -> Dict[str, object]:
    """Render ``num_train + num_val`` scenes and write them in the requested layouts.

    Layout under ``out_dir``::

        coco/train2017/000000000001.jpg ...          images (COCO and panoptic share them)
        coco/val2017/...
        coco/annotations/instances_{train,val}2017.json
        coco/annotations/panoptic_{train,val}2017.json
        coco/annotations/panoptic_{train,val}2017/000000000001.png ...
        ade20k/images/{training,validation}/synthetic_{train,val}_00000001.jpg
        ade20k/annotations/{training,validation}/synthetic_{train,val}_00000001.png
        meta.json                                     the generation parameters

    Args:
        out_dir: output root, created if needed. A data set this function wrote there
            before (``meta.json`` present) is replaced as a whole, so that no stale image
            of a larger earlier set stays in the ADE20K folders (which are listed, not
            indexed); ``coco/`` or ``ade20k/`` folders of other origin raise ``ValueError``.
        seed: base seed; scene ``i`` of split ``s`` uses ``np.random.default_rng((seed, s, i))``.
        num_train, num_val: number of scenes per split (>= 1).
        spec: :class:`SceneSpec`; default 128x128 scenes with 1-4 things.
        formats: subset of ``('coco', 'panoptic', 'ade20k')``.
        jpeg_quality: JPEG quality of the images (1-100).

    Returns:
        The metadata also written to ``meta.json`` (parameters, counts, seconds taken).
    """
    spec = SceneSpec() if spec is None else spec
    formats = tuple(formats)
    unknown = [f for f in formats if f not in FORMATS]
    if unknown or not formats:
        raise ValueError(f'formats must be a non-empty subset of {FORMATS}, got {formats!r}')
    for name, value in (('num_train', num_train), ('num_val', num_val)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f'{name} must be a positive integer, got {value!r}')
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f'seed must be a non-negative integer, got {seed!r}')
    start = time.perf_counter()
    coco_root = osp.join(out_dir, 'coco')
    ade_root = osp.join(out_dir, 'ade20k')
    ours = osp.isfile(osp.join(out_dir, 'meta.json'))
    for root in (coco_root, ade_root):
        if osp.isdir(root) and os.listdir(root):
            if not ours:
                raise ValueError(f'out_dir {out_dir!r} already has a non-empty {root!r} that '
                                 'was not written by generate_synthetic_dataset (no '
                                 'meta.json); choose another out_dir')
            shutil.rmtree(root)
    thing_categories = [c for c in CATEGORIES if c['isthing']]
    counts: Dict[str, Dict[str, int]] = {}
    for split_index, (split, num_images) in enumerate((('train', num_train), ('val', num_val))):
        coco_split = _coco_split_name(split)
        image_dir = osp.join(coco_root, coco_split)
        panoptic_dir = osp.join(coco_root, 'annotations', f'panoptic_{coco_split}')
        ade_image_dir = osp.join(ade_root, 'images', _ADE_SPLIT[split])
        ade_label_dir = osp.join(ade_root, 'annotations', _ADE_SPLIT[split])
        if 'coco' in formats or 'panoptic' in formats:
            os.makedirs(image_dir, exist_ok=True)
            os.makedirs(osp.join(coco_root, 'annotations'), exist_ok=True)
        if 'panoptic' in formats:
            os.makedirs(panoptic_dir, exist_ok=True)
        if 'ade20k' in formats:
            os.makedirs(ade_image_dir, exist_ok=True)
            os.makedirs(ade_label_dir, exist_ok=True)

        images, instance_anns, panoptic_anns = [], [], []
        num_instances = 0
        for index in range(num_images):
            rng = np.random.default_rng((seed, split_index, index))
            scene = render_scene(rng, spec)
            image_id = index + 1
            file_name = f'{image_id:012d}.jpg'
            images.append(dict(id=image_id, file_name=file_name, height=spec.height,
                               width=spec.width))
            if 'coco' in formats or 'panoptic' in formats:
                _write_jpeg(osp.join(image_dir, file_name), scene.image, jpeg_quality)
            masks = scene.instance_masks()
            num_instances += len(masks)
            if 'coco' in formats:
                for mask, category_id in zip(masks, scene.instance_categories):
                    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
                    instance_anns.append(
                        dict(id=len(instance_anns) + 1, image_id=image_id,
                             category_id=int(category_id),
                             segmentation=dict(size=[int(s) for s in rle['size']],
                                               counts=rle['counts'].decode('ascii')),
                             area=float(mask.sum()), bbox=_bbox_xywh(mask), iscrowd=0))
            if 'panoptic' in formats:
                segment_ids = np.zeros((spec.height, spec.width), np.int64)
                segments_info = []
                # thing k -> id category*1000 + k, stuff -> category*1000: unique per image
                for k, (mask, category_id) in enumerate(zip(masks, scene.instance_categories)):
                    segments_info.append((category_id * 1000 + k + 1, category_id, mask))
                for category in CATEGORIES:
                    if not category['isthing']:
                        mask = (scene.semantic == category['id']) & (scene.instance_ids == 0)
                        if mask.any():
                            segments_info.append((category['id'] * 1000, category['id'], mask))
                for segment_id, _, mask in segments_info:
                    segment_ids[mask] = segment_id
                _write_png(osp.join(panoptic_dir, file_name.replace('.jpg', '.png')),
                           panoptic_id_to_rgb(segment_ids))
                panoptic_anns.append(
                    dict(image_id=image_id, file_name=file_name.replace('.jpg', '.png'),
                         segments_info=[
                             dict(id=int(segment_id), category_id=int(category_id),
                                  area=int(mask.sum()), bbox=_bbox_xywh(mask), iscrowd=0)
                             for segment_id, category_id, mask in segments_info
                         ]))
            if 'ade20k' in formats:
                stem = f'synthetic_{split}_{image_id:08d}'
                _write_jpeg(osp.join(ade_image_dir, stem + '.jpg'), scene.image, jpeg_quality)
                _write_png(osp.join(ade_label_dir, stem + '.png'), scene.semantic)

        info = dict(description=f'mmdysample synthetic shapes, {split} split', version=str(
            FORMAT_VERSION), seed=seed)
        if 'coco' in formats:
            _dump_json(
                osp.join(coco_root, 'annotations', f'instances_{coco_split}.json'),
                dict(info=info, licenses=[], images=images, annotations=instance_anns,
                     categories=[_coco_category(c) for c in thing_categories]))
        if 'panoptic' in formats:
            _dump_json(
                osp.join(coco_root, 'annotations', f'panoptic_{coco_split}.json'),
                dict(info=info, licenses=[], images=images, annotations=panoptic_anns,
                     categories=[_coco_category(c, panoptic=True) for c in CATEGORIES]))
        counts[split] = dict(images=num_images, instances=num_instances)

    meta = dict(format_version=FORMAT_VERSION, seed=seed, num_train=num_train, num_val=num_val,
                formats=list(formats), spec=spec.__dict__.copy(), counts=counts,
                categories=[dict(id=c['id'], name=c['name'], isthing=c['isthing'])
                            for c in CATEGORIES],
                seconds=round(time.perf_counter() - start, 2))
    _dump_json(osp.join(out_dir, 'meta.json'), meta, indent=2)
    return meta


def _coco_category(category: dict, panoptic: bool = False) -> dict:
    out = dict(id=category['id'], name=category['name'],
               supercategory=category['supercategory'])
    if panoptic:
        out.update(isthing=category['isthing'], color=category['color'])
    return out


def _dump_json(path: str, obj, indent: Optional[int] = None) -> None:
    os.makedirs(osp.dirname(path) or '.', exist_ok=True)
    with open(path, 'w') as f:
        json.dump(obj, f, indent=indent)
