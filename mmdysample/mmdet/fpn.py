"""mmdet's FPN whose top-down upsampling steps can be any registered upsampler.

Importing this module re-registers mmdet's ``FPN`` name (``force=True``) to
:class:`UpsamplerFPN`, so every unmodified mmdet config that says ``type='FPN'``
(Faster R-CNN, Mask R-CNN, Panoptic FPN, RetinaNet...) builds it. Without a ``type`` in
``upsample_cfg`` it *is* mmdet's FPN: same parameters, state-dict keys and output bits.
"""
from typing import List, Sequence, Tuple

import torch
import torch.nn.functional as F
from mmdet.models.necks.fpn import FPN
from mmdet.registry import MODELS
from mmengine.model import ModuleList

from ..upsamplers import build_upsampler

__all__ = ['UpsamplerFPN', 'match_spatial_size']


def match_spatial_size(feature: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Crop or replicate-pad ``feature`` at the bottom/right to spatial ``size``.

    Used after an exact x2 upsampling of FPN level ``j + 1`` to match level ``j``: a
    stride-2 layer that rounds up (ResNet, Swin patch merging...) gives a coarse map whose
    x2 upsampling is one pixel larger than an odd-sized fine map, one that rounds down gives
    one pixel less. In both cases coarse pixel ``i`` sits over fine pixel ``2i`` (top-left
    aligned), so dropping the extra last row/column, or repeating the last one, keeps every
    other upsampled pixel exactly where the x2 geometry puts it; no value is resampled.

    Args:
        feature: ``(B, C, H', W')`` upsampled feature.
        size: target ``(H, W)``; each of ``H' - H`` and ``W' - W`` must be -1, 0 or 1.

    Returns:
        ``(B, C, H, W)`` tensor (``feature`` itself when the sizes already agree).
    """
    height, width = int(size[0]), int(size[1])
    extra_rows = feature.shape[-2] - height
    extra_cols = feature.shape[-1] - width
    if abs(extra_rows) > 1 or abs(extra_cols) > 1:
        raise ValueError(
            f'an x2-upsampled FPN level of size {tuple(feature.shape[-2:])} cannot be matched '
            f'to the finer level of size {(height, width)}: learned upsamplers need '
            f'consecutive levels whose sizes differ by a factor of 2 (within one pixel)')
    if extra_rows > 0 or extra_cols > 0:
        feature = feature[..., :height, :width]
    if extra_rows < 0 or extra_cols < 0:
        feature = F.pad(feature, (0, max(-extra_cols, 0), 0, max(-extra_rows, 0)),
                        mode='replicate')
    return feature


class UpsamplerFPN(FPN):
    """mmdet's :class:`~mmdet.models.necks.FPN` with a pluggable upsampler per top-down step.

    Takes exactly mmdet's FPN arguments; only ``upsample_cfg`` is read differently:

    - **without** ``type`` (mmdet's default ``dict(mode='nearest')``,
      ``dict(scale_factor=2, mode='nearest')``, ``dict(mode='bilinear', align_corners=False)``
      ...): nothing changes. The module is mmdet's FPN (the upstream ``forward`` runs), with
      the same state-dict keys and bit-identical outputs, so upstream checkpoints load with
      ``strict=True``.
    - **with** ``type`` (``dict(type='DySample')``, ``dict(type='DySample+')``,
      ``dict(type='CARAFE')``, ``dict(type='Deconv')``... any name in
      :func:`mmdysample.upsamplers.registered_upsamplers`): every top-down step gets its own
      upsampler, built by :func:`~mmdysample.upsamplers.build_upsampler` with
      ``in_channels=out_channels`` and ``scale_factor=2``. They live in ``self.upsamplers``
      (an ``mmengine`` ``ModuleList``, so ``init_weights`` reaches them after FPN's Xavier
      init and they keep their own initialisation), ordered like the pyramid:
      ``upsamplers[j]`` upsamples used level ``j + 1`` (``laterals[j + 1]``) to the
      resolution of level ``j``; ``j = 0`` is the finest step. A standard 4-input ResNet FPN
      has 3 of them.

    Odd sizes. mmdet's FPN interpolates level ``j + 1`` straight to the size of level ``j``
    when ``upsample_cfg`` has no ``scale_factor``. A learned upsampler only upsamples by
    exactly 2, so here level ``j + 1`` is upsampled x2 and then cropped (when one pixel
    larger, e.g. ResNet on an odd-sized image: ``2 * ceil(h / 2) = h + 1``) or
    replicate-padded (when one pixel smaller) at the bottom/right to level ``j``'s size,
    see :func:`match_spatial_size`. This keeps the learned upsampler's outputs where its x2
    sampling geometry put them instead of resampling them a second time (as a final
    ``F.interpolate(size=...)`` would, shifting every pixel by a fraction of a pixel). Sizes
    that differ by more than one pixel raise ``ValueError``.

    Shape:
        inputs: tuple of ``len(in_channels)`` tensors ``(B, in_channels[i], H_i, W_i)``;
        outputs: tuple of ``num_outs`` tensors ``(B, out_channels, H'_k, W'_k)``.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.upsamplers = None
        if 'type' not in self.upsample_cfg:
            return
        num_top_down_steps = len(self.lateral_convs) - 1
        self.upsamplers = ModuleList([
            build_upsampler(self.upsample_cfg, self.out_channels, 2)
            for _ in range(num_top_down_steps)
        ])

    def forward(self, inputs: Tuple[torch.Tensor]) -> tuple:
        """Features from the backbone -> pyramid features (see the class docstring)."""
        if self.upsamplers is None:
            return super().forward(inputs)
        if len(inputs) != len(self.in_channels):
            raise ValueError(f'FPN expects {len(self.in_channels)} input levels '
                             f'(in_channels={self.in_channels}), got {len(inputs)}')
        laterals = [
            lateral_conv(inputs[i + self.start_level])
            for i, lateral_conv in enumerate(self.lateral_convs)
        ]
        laterals = self.top_down(laterals)

        num_used_levels = len(laterals)
        outs = [self.fpn_convs[i](laterals[i]) for i in range(num_used_levels)]
        # Extra levels, exactly as mmdet's FPN.forward builds them.
        if self.num_outs > len(outs):
            if not self.add_extra_convs:
                for _ in range(self.num_outs - num_used_levels):
                    outs.append(F.max_pool2d(outs[-1], 1, stride=2))
            else:
                if self.add_extra_convs == 'on_input':
                    extra_source = inputs[self.backbone_end_level - 1]
                elif self.add_extra_convs == 'on_lateral':
                    extra_source = laterals[-1]
                else:  # 'on_output'; FPN.__init__ accepts no other value
                    extra_source = outs[-1]
                outs.append(self.fpn_convs[num_used_levels](extra_source))
                for i in range(num_used_levels + 1, self.num_outs):
                    if self.relu_before_extra_convs:
                        outs.append(self.fpn_convs[i](F.relu(outs[-1])))
                    else:
                        outs.append(self.fpn_convs[i](outs[-1]))
        return tuple(outs)

    def top_down(self, laterals: List[torch.Tensor]) -> List[torch.Tensor]:
        """Top-down pathway with the learned upsamplers, coarsest step first.

        ``laterals[j] <- laterals[j] + match(upsamplers[j](laterals[j + 1]))``, for
        ``j = len(laterals) - 2, ..., 0``. Returns a new list; the input list is not changed.
        """
        laterals = list(laterals)
        for j in range(len(laterals) - 2, -1, -1):
            upsampled = self.upsamplers[j](laterals[j + 1])
            laterals[j] = laterals[j] + match_spatial_size(upsampled, laterals[j].shape[-2:])
        return laterals


MODELS.register_module(name='FPN', module=UpsamplerFPN, force=True)
MODELS.register_module(name='UpsamplerFPN', module=UpsamplerFPN, force=True)
