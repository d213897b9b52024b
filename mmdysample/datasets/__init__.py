"""Synthetic data in the COCO, COCO-panoptic and ADE20K layouts, and its dataset classes.

The COCO and COCO-panoptic files load with mmdet's ``CocoDataset`` and
``CocoPanopticDataset`` given ``metainfo=dict(classes=...)``; the ADE20K-layout files with
:class:`SyntheticADE20KDataset` (registered in mmseg's ``DATASETS``).
"""
from .synthetic import (CATEGORIES, SEMANTIC_CLASSES, SEMANTIC_PALETTE, STUFF_CLASSES,
                        THING_CLASSES, Scene, SceneSpec, generate_synthetic_dataset,
                        panoptic_id_to_rgb, render_scene, rgb_to_panoptic_id)
from .synthetic_ade20k import SyntheticADE20KDataset
from .synthetic_nyu import NYUSceneSpec, generate_synthetic_nyu, render_nyu_scene  # noqa: F401

__all__ = [
    'CATEGORIES', 'SEMANTIC_CLASSES', 'SEMANTIC_PALETTE', 'STUFF_CLASSES', 'THING_CLASSES',
    'Scene', 'SceneSpec', 'generate_synthetic_dataset', 'panoptic_id_to_rgb', 'render_scene',
    'rgb_to_panoptic_id', 'SyntheticADE20KDataset'
]
