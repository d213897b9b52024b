"""SAPA-B (Lu et al., NeurIPS 2022, "SAPA: Similarity-Aware Point Affiliation for Feature
Upsampling"), the base variant the DySample paper uses (Sec. 4), as a guided upsampler.

Each output pixel ``p`` is affiliated with the ``K x K`` low-resolution neighbours of
``p // s`` by the similarity of its query (from the high-resolution guide) with their keys
(from the input): ``softmax_k(<q(p), key(p // s + delta_k)>)``, and takes the weighted sum of
those neighbours of the input.

The authors compute the similarities and the weighted sum with two CUDA ops (``qk``,
``av``; no CPU path). In those kernels a neighbour outside the map is skipped: its
similarity stays 0 (it still enters the softmax with logit 0) and it adds no value. Here both
are :mod:`mmdysample.ops.reassembly`'s operations, with those zeros: the similarity is the
reassembly's mask-gradient form (:func:`~mmdysample.ops.reassembly.similarity`), the
weighted sum :func:`mmdysample.functional.carafe`; C++ kernels on CPU, standard operators
elsewhere.
"""
from typing import Optional

import torch
import torch.nn as nn

from ..functional import carafe, check_bool, check_odd_kernel, check_positive_int
from ..ops.reassembly import similarity
from .builder import register_upsampler
from .guided import (GROUP_NORM_GROUPS, GuidedUpsampler, check_group_norm_channels,
                     group_norm_pointwise_conv, pointwise_conv, softmax_kernels)


def similarity_logits(query: torch.Tensor, key: torch.Tensor, kernel_size: int,
                      scale_factor: int) -> torch.Tensor:
    """Dot products of each high-resolution query with the ``K x K`` low-resolution keys
    around its parent pixel.

    Args:
        query: ``(B, E, s*H, s*W)``.
        key: ``(B, E, H, W)``.

    Returns:
        ``(B, K*K, s*H, s*W)`` in ``key``'s dtype; channel ``ky * K + kx`` is the neighbour
        ``(p // s + ky - K // 2, q // s + kx - K // 2)``, 0 where it lies outside the map.
    """
    return similarity(query.to(key.dtype), key, kernel_size, scale_factor)


@register_upsampler('SAPA-B')
class SAPA_B(GuidedUpsampler):
    """SAPA-B upsampler.

    ``q = conv1x1(GroupNorm(guide))`` ``(B, E, s*H, s*W)``, ``key = conv1x1(GroupNorm(x))``
    ``(B, E, H, W)`` (both 1x1 convs with bias when ``qkv_bias``); kernels
    ``softmax_k(similarity_logits(q, key))``; output: the reassembly of the *un-normalised*
    ``x`` with those kernels.

    Parameters: ``2 C_g + 2 C + (C_g + C) E + 2 E`` with norm and bias (17,472 at
    ``C = C_g = 256``, ``E = 32``).

    Args:
        in_channels: channels ``C`` of ``x`` (divisible by 32 when ``norm``).
        scale_factor: integer ratio ``s >= 2`` (2 in the paper).
        guide_channels: channels ``C_g`` of ``guide`` (divisible by 32 when ``norm``);
            ``None`` means ``in_channels``.
        up_kernel: neighbourhood size ``K`` (odd; 5).
        embedding_dim: query/key channels ``E`` (32).
        qkv_bias: bias in the query and key convs (True).
        norm: GroupNorm(32) on guide and input before the query/key convs (True).

    Shape:
        ``x (B, C, H, W)``, ``guide (B, C_g, s*H, s*W)`` -> ``(B, C, s*H, s*W)``.

    Initialisation: conv weights ~ N(0, 0.02), zero biases (as the authors').
    """

    def __init__(self, in_channels: int, scale_factor: int = 2,
                 guide_channels: Optional[int] = None, up_kernel: int = 5,
                 embedding_dim: int = 32, qkv_bias: bool = True, norm: bool = True):
        super().__init__(in_channels, scale_factor, guide_channels)
        self.up_kernel = check_odd_kernel(up_kernel, 'up_kernel')
        self.embedding_dim = check_positive_int(embedding_dim, 'embedding_dim')
        self.norm = check_bool(norm, 'norm')
        check_bool(qkv_bias, 'qkv_bias')
        if norm:
            self.norm_x = nn.GroupNorm(
                GROUP_NORM_GROUPS, check_group_norm_channels(self.in_channels,
                                                             'in_channels'))
            self.norm_guide = nn.GroupNorm(
                GROUP_NORM_GROUPS, check_group_norm_channels(self.guide_channels,
                                                             'guide_channels'))
        self.query = nn.Conv2d(self.guide_channels, embedding_dim, 1, bias=qkv_bias)
        self.key = nn.Conv2d(self.in_channels, embedding_dim, 1, bias=qkv_bias)
        self.init_weights()

    def init_weights(self):
        """Query/key weights ~ N(0, 0.02), zero biases, GroupNorm affine (1, 0) (also
        restores them after a parent module's ``init_cfg`` initialised every ``Conv2d``)."""
        super().init_weights()
        for conv in (self.query, self.key):
            nn.init.normal_(conv.weight, std=0.02)
            if conv.bias is not None:
                nn.init.zeros_(conv.bias)

    def kernels(self, x: torch.Tensor, guide: torch.Tensor) -> torch.Tensor:
        """Normalised reassembly kernels ``(B, K^2, s*H, s*W)``. (GroupNorm and the 1x1
        projections are computed together, without the normalised tensors:
        :func:`~mmdysample.upsamplers.guided.group_norm_pointwise_conv`.)"""
        if self.norm:
            query = group_norm_pointwise_conv(guide, self.norm_guide, self.query)
            key = group_norm_pointwise_conv(x, self.norm_x, self.key)
        else:
            query, key = pointwise_conv(guide, self.query), pointwise_conv(x, self.key)
        return softmax_kernels(similarity_logits(query, key, self.up_kernel, self.scale_factor))

    def forward(self, x: torch.Tensor, guide: torch.Tensor) -> torch.Tensor:
        self.check_inputs(x, guide)
        return carafe(x, self.kernels(x, guide), self.up_kernel, 1, self.scale_factor)

    def extra_repr(self) -> str:
        return (f'{super().extra_repr()}, up_kernel={self.up_kernel}, '
                f'embedding_dim={self.embedding_dim}, '
                f'qkv_bias={self.query.bias is not None}, norm={self.norm}')
