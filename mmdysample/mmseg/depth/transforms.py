"""The two training transforms of the toolbox's NYU recipe that mmseg 1.2.2 lacks.

* :class:`NYUCrop`: the fixed crop of NYU's valid area (rows 45-471, columns 43-607 of a
  480x640 frame, the "Eigen crop" region without the white border of the released images),
  applied to the image and every ``seg_fields`` map (the depth).
* :class:`DepthColorAug`: BTS-style photometric augmentation (random gamma, brightness and
  per-channel colour factors on the image only), the toolbox's ``ColorAug``.

Both are registered in mmseg's ``TRANSFORMS``.
"""
from numbers import Real
from typing import Sequence, Tuple

import numpy as np
from mmcv.transforms import BaseTransform
from mmseg.datasets.transforms import RandomCrop
from mmseg.registry import TRANSFORMS

__all__ = ['NYUCrop', 'DepthColorAug', 'NYU_CROP_BOX']

#: ``(x1, y1, x2, y2)`` of the toolbox's NYUCrop, exclusive end, on a 480x640 frame
NYU_CROP_BOX = (43, 45, 608, 472)


@TRANSFORMS.register_module()
class NYUCrop(RandomCrop):
    """Crop the image and its maps to a fixed box (mmseg's ``RandomCrop`` without chance).

    Args:
        box: ``(x1, y1, x2, y2)``, ends exclusive; default :data:`NYU_CROP_BOX`.

    Raises:
        ValueError: at construction for a malformed box; at transform time when the image
            does not contain the box (the box is NYU's, for 480x640 frames).
    """

    def __init__(self, box: Sequence[int] = NYU_CROP_BOX):
        if len(box) != 4 or not all(isinstance(v, int) and v >= 0 for v in box) \
                or not (box[0] < box[2] and box[1] < box[3]):
            raise ValueError(f'box must be (x1, y1, x2, y2) with 0 <= x1 < x2 and '
                             f'0 <= y1 < y2, got {box!r}')
        super().__init__(crop_size=(box[3] - box[1], box[2] - box[0]))
        self.box = tuple(box)

    def crop_bbox(self, results: dict) -> Tuple[int, int, int, int]:
        """``(y1, y2, x1, x2)``, the order of mmseg's ``RandomCrop.crop``."""
        height, width = results['img'].shape[:2]
        x1, y1, x2, y2 = self.box
        if x2 > width or y2 > height:
            raise ValueError(f'NYUCrop: the box {self.box} (x1, y1, x2, y2) does not fit in '
                             f'an image of {height}x{width} ({results.get("img_path")}); '
                             f'it is meant for 480x640 NYU frames')
        return y1, y2, x1, x2

    def __repr__(self):
        return f'{type(self).__name__}(box={self.box})'


def _check_range(value, name: str) -> Tuple[float, float]:
    if len(value) != 2 or not all(isinstance(v, Real) and v > 0 for v in value) \
            or value[0] > value[1]:
        raise ValueError(f'{name} must be (low, high) with 0 < low <= high, got {value!r}')
    return float(value[0]), float(value[1])


@TRANSFORMS.register_module()
class DepthColorAug(BaseTransform):
    """With probability ``prob``: ``img = clip((img / 255) ** gamma * brightness * colour,
    0, 1) * 255`` with ``gamma``, ``brightness`` and one factor per channel drawn uniformly
    from their ranges. The depth map is untouched.

    Args:
        prob: probability of applying the augmentation, in [0, 1].
        gamma_range, brightness_range, color_range: ``(low, high)`` of the factors
            (the toolbox: (0.9, 1.1), (0.75, 1.25), (0.9, 1.1)).
    """

    def __init__(self,
                 prob: float = 0.5,
                 gamma_range: Sequence[float] = (0.9, 1.1),
                 brightness_range: Sequence[float] = (0.75, 1.25),
                 color_range: Sequence[float] = (0.9, 1.1)):
        if isinstance(prob, bool) or not isinstance(prob, Real) or not 0 <= prob <= 1:
            raise ValueError(f'prob must be a number in [0, 1], got {prob!r}')
        self.prob = float(prob)
        self.gamma_range = _check_range(gamma_range, 'gamma_range')
        self.brightness_range = _check_range(brightness_range, 'brightness_range')
        self.color_range = _check_range(color_range, 'color_range')

    def transform(self, results: dict) -> dict:
        if np.random.rand() >= self.prob:
            return results
        img = results['img']
        gamma = np.random.uniform(*self.gamma_range)
        brightness = np.random.uniform(*self.brightness_range)
        colour = np.random.uniform(*self.color_range, size=img.shape[-1])
        out = (img.astype(np.float32) / 255.0)**gamma * brightness * colour
        results['img'] = (np.clip(out, 0.0, 1.0) * 255.0).astype(np.float32)
        return results

    def __repr__(self):
        return (f'{type(self).__name__}(prob={self.prob}, gamma_range={self.gamma_range}, '
                f'brightness_range={self.brightness_range}, color_range={self.color_range})')
