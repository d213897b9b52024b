"""mmseg dataset class for the ADE20K-layout part of the synthetic data.

The files follow ADE20K exactly (``.jpg`` images, ``.png`` label maps, 0 = other), so the
upstream :class:`mmseg.datasets.ADE20KDataset` reads them; this subclass only replaces its
150 class names and palette with the synthetic ones.
"""
from mmseg.datasets import ADE20KDataset
from mmseg.registry import DATASETS

from .synthetic import SEMANTIC_CLASSES, SEMANTIC_PALETTE

__all__ = ['SyntheticADE20KDataset']


@DATASETS.register_module()
class SyntheticADE20KDataset(ADE20KDataset):
    """ADE20K-layout synthetic scenes: 4 thing and 3 stuff classes, label 0 ignored."""

    METAINFO = dict(classes=SEMANTIC_CLASSES, palette=SEMANTIC_PALETTE)
