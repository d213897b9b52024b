"""What the guided upsamplers (IndexNet, A2U, FADE, SAPA-B) share: the constructor
arguments every guided layer takes and the check of ``forward(x, guide)``'s inputs.

A guided upsampler maps the low-resolution ``x`` ``(B, C, H, W)`` to ``(B, C, s*H, s*W)``
using ``guide`` ``(B, C_guide, s*H, s*W)``, a feature the network already has at the output
resolution (an FPN lateral, a decoder skip). Sites call it through
:func:`mmdysample.upsamplers.sites.upsample`, which resizes the guide to ``(s*H, s*W)`` when
the site's target size differs (odd sizes).
"""
from typing import Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..functional import check_feature, check_positive_int, check_scale_factor
from ..ops.sampling import autocast_enabled, standard_operators_only

__all__ = [
    'GuidedUpsampler', 'check_group_norm_channels', 'softmax_kernels', 'pointwise_conv',
    'group_norm_pointwise_conv', 'GROUP_NORM_GROUPS'
]

#: GroupNorm groups used by A2U and SAPA-B (their authors' setting).
GROUP_NORM_GROUPS = 32


def check_group_norm_channels(channels: int, name: str) -> int:
    """Return ``channels`` if ``GroupNorm(32, channels)`` can normalise it, else raise a
    ``ValueError`` naming ``name``."""
    if channels % GROUP_NORM_GROUPS:
        raise ValueError(f'{name} must be divisible by {GROUP_NORM_GROUPS} (the GroupNorm '
                         f'groups of this upsampler), got {channels}')
    return channels


def softmax_kernels(logits: torch.Tensor) -> torch.Tensor:
    """Softmax over dim 1 (the ``k * k`` taps of each output pixel's kernel), computed in at
    least float32 so that fp16/bf16 logits under autocast give normalised kernels."""
    return logits.softmax(1, dtype=torch.promote_types(logits.dtype, torch.float32))


def _as_matrix_products(x: torch.Tensor, *parameters: Optional[torch.Tensor]) -> bool:
    """Whether :func:`pointwise_conv` / :func:`group_norm_pointwise_conv` compute by matrix
    products: eager mode or ``torch.compile`` on plain float32/float64 tensors of one dtype,
    no autocast. Traced and exported graphs (and autocast, whose per-op dtypes the modules
    follow) keep the modules' operators."""
    if standard_operators_only(x) or x.dtype not in (torch.float32, torch.float64):
        return False
    if autocast_enabled(x.device.type):
        return False
    return all(p is None or p.dtype == x.dtype for p in parameters)


def pointwise_conv(x: torch.Tensor, conv: nn.Conv2d) -> torch.Tensor:
    """``conv(x)`` for a 1x1 ``nn.Conv2d`` (stride 1, no padding, one group) as one matrix
    product over the pixels: the same values up to float rounding, with a backward that holds
    only the input gradient (oneDNN's and the slow path's 1x1 convolution backward allocate
    one or two more input-sized buffers on CPU: +16 / +34 MiB at 1 / 2 threads for a
    1 x 256 x 128 x 128 guide). Traced and exported graphs keep the convolution."""
    if not _as_matrix_products(x, conv.weight, conv.bias):
        return conv(x)
    B, C, H, W = x.shape
    weight = conv.weight.view(conv.out_channels, C)
    out = torch.matmul(weight, x.reshape(B, C, H * W))
    if conv.bias is not None:
        out = out + conv.bias.view(1, -1, 1)
    return out.view(B, conv.out_channels, H, W)


class _GroupNormPointwiseConv(torch.autograd.Function):
    """``conv1x1(group_norm(x))`` without the normalised tensor.

    With ``mean``, ``rstd`` of each (sample, group), ``scale_c = gamma_c * rstd`` and
    ``shift_c = beta_c - scale_c * mean``, the result is ``(W * scale) @ x + (W @ shift + b)``:
    one batched product on ``x`` itself. Saved: ``x`` (the caller holds it), the statistics and
    the parameters. The input gradient is ``(W * scale)^T @ grad`` plus, per group,
    ``alpha * x + beta`` (the chain rule through the mean and the variance), added in place:
    one input-sized tensor, where GroupNorm + convolution keep the normalised input for the
    convolution's backward and make its gradient and GroupNorm's besides. A double backward
    differentiates the modules' formulation."""

    @staticmethod
    def forward(ctx, x, gamma, beta, weight, bias, groups, eps):
        if not (x.is_contiguous() or x.is_contiguous(memory_format=torch.channels_last)):
            x = x.contiguous()  # GroupNorm's kernel reads one of the two layouts
        B, C, H, W = x.shape
        flat = x.reshape(B, C, H * W)
        # GroupNorm's own statistics, (B, G) (its vectorised moments: var_mean's generic
        # reduction took 3x the time); the normalised tensor it returns is dropped at once
        _, mean, rstd = torch.native_group_norm(x, None, None, B, C, H * W, groups, eps)
        scale, shift = _GroupNormPointwiseConv.affine(gamma, beta, mean, rstd, C // groups)
        matrix = weight.view(weight.shape[0], C)
        offset = shift @ matrix.T if bias is None else torch.addmm(bias, shift, matrix.T)
        out = torch.baddbmm(offset.unsqueeze(2), matrix * scale.unsqueeze(1), flat)
        ctx.save_for_backward(x, gamma, beta, weight, bias, mean, rstd)
        ctx.config = (groups, eps)
        return out.view(B, weight.shape[0], H, W)

    @staticmethod
    def affine(gamma, beta, mean, rstd, per_group):
        """Per-(sample, channel) ``scale`` and ``shift`` of the normalisation, ``(B, C)``."""
        scale = gamma * rstd.repeat_interleave(per_group, 1)
        return scale, beta - scale * mean.repeat_interleave(per_group, 1)

    @staticmethod
    def backward(ctx, grad_out):
        x, gamma, beta, weight, bias, mean, rstd = ctx.saved_tensors
        groups, eps = ctx.config
        needs = ctx.needs_input_grad
        if torch.is_grad_enabled():  # create_graph=True: the differentiable formulation
            inputs = (x, gamma, beta, weight, bias)
            wanted = [i for i, t in enumerate(inputs) if needs[i] and t is not None]
            with torch.enable_grad():
                out = F.conv2d(F.group_norm(x, groups, gamma, beta, eps), weight, bias)
            grads = torch.autograd.grad(out, [inputs[i] for i in wanted], grad_out,
                                        create_graph=True)
            result = [None] * 7
            for i, grad in zip(wanted, grads):
                result[i] = grad
            return tuple(result)
        B, C, H, W = x.shape
        per_group = C // groups
        flat = x.reshape(B, C, H * W)
        grad = grad_out.reshape(B, weight.shape[0], H * W)
        matrix = weight.view(weight.shape[0], C)
        scale, shift = _GroupNormPointwiseConv.affine(gamma, beta, mean, rstd, per_group)
        grad_matrix = torch.bmm(grad, flat.transpose(1, 2))  # wrt (W * scale): (B, E, C)
        grad_offset = grad.sum(2)  # wrt (W @ shift + b): (B, E)
        grad_shift = grad_offset @ matrix  # (B, C)
        grad_scale = (grad_matrix * matrix).sum(1) - grad_shift * mean.repeat_interleave(
            per_group, 1)
        grad_x = None
        if needs[0]:
            grad_x = torch.bmm((matrix * scale.unsqueeze(1)).transpose(1, 2), grad)
            # through rstd (scale) and the mean (shift) of each group: alpha * x + beta
            grad_rstd = (grad_scale * gamma).view(B, groups, per_group).sum(2)
            grad_mean = -(grad_shift * scale).view(B, groups, per_group).sum(2)
            count = per_group * H * W
            alpha = grad_rstd * (-rstd**3) / count  # 2 * (-rstd^3 / 2) * grad_rstd / count
            offset = grad_mean / count - alpha * mean
            # (B, G, C / G, H * W) views: x may be channels_last (strides that a view
            # merging channels and pixels cannot express); no copy either way
            grad_x = grad_x.view(B, groups, per_group, H * W)
            grad_x.addcmul_(flat.view(B, groups, per_group, H * W), alpha[:, :, None, None])
            grad_x.add_(offset[:, :, None, None])
            grad_x = grad_x.view(B, C, H, W)
        return (grad_x,
                (grad_scale * rstd.repeat_interleave(per_group, 1)).sum(0) if needs[1] else None,
                grad_shift.sum(0) if needs[2] else None,
                ((grad_matrix * scale.unsqueeze(1)).sum(0) + grad_offset.T @ shift).view_as(
                    weight) if needs[3] else None,
                grad_offset.sum(0) if needs[4] else None, None, None)


def group_norm_pointwise_conv(x: torch.Tensor, norm: nn.GroupNorm,
                              conv: nn.Conv2d) -> torch.Tensor:
    """``conv(norm(x))`` for an affine ``nn.GroupNorm`` and a 1x1 ``nn.Conv2d`` (one group)
    without materialising ``norm(x)`` (:class:`_GroupNormPointwiseConv`): a training step
    holds one input-sized gradient instead of the normalised input, its gradient and the
    convolution's extra buffers. Traced and exported graphs, autocast and other dtypes keep
    the modules."""
    if not norm.affine or not _as_matrix_products(x, norm.weight, norm.bias, conv.weight,
                                                  conv.bias):
        return conv(norm(x))
    return _GroupNormPointwiseConv.apply(x, norm.weight, norm.bias, conv.weight, conv.bias,
                                         norm.num_groups, norm.eps)


class GuidedUpsampler(nn.Module):
    """Base of the guided upsamplers: argument checks shared by all of them.

    Args:
        in_channels: channels ``C`` of the low-resolution input ``x``.
        scale_factor: integer ratio ``s``; a subclass may restrict it through
            ``supported_scale_factors``.
        guide_channels: channels of ``guide``; ``None`` means ``in_channels``.
    """
    requires_guide = True
    accepts_size = False
    #: ratios a subclass supports; ``None``: every integer >= 2.
    supported_scale_factors: Optional[Tuple[int, ...]] = None

    def __init__(self, in_channels: int, scale_factor: int = 2,
                 guide_channels: Optional[int] = None):
        super().__init__()
        self.in_channels = check_positive_int(in_channels, 'in_channels')
        self.scale_factor = check_scale_factor(scale_factor)
        allowed = self.supported_scale_factors
        if allowed is not None and self.scale_factor not in allowed:
            raise ValueError(f'{type(self).__name__} supports scale_factor in {allowed}, '
                             f'got {scale_factor!r}')
        self.guide_channels = (self.in_channels if guide_channels is None else
                               check_positive_int(guide_channels, 'guide_channels'))

    def init_weights(self):
        """PyTorch's default initialisation of every submodule (what IndexNet's and A2U's
        authors use); restores it after a parent module's ``init_cfg`` (e.g. FPN's Xavier
        init of every ``Conv2d``). Subclasses with their own scheme extend this."""
        for module in self.modules():
            if module is not self and hasattr(module, 'reset_parameters'):
                module.reset_parameters()

    def check_inputs(self, x: torch.Tensor, guide: torch.Tensor) -> None:
        """Raise unless ``x`` is ``(B, in_channels, H, W)`` and ``guide`` is
        ``(B, guide_channels, s*H, s*W)``."""
        check_feature(x, 'x', self.in_channels)
        check_feature(guide, 'guide')
        B, _, H, W = x.shape
        s = self.scale_factor
        expected = (B, self.guide_channels, s * H, s * W)
        if tuple(guide.shape) != expected:
            raise ValueError(
                f'guide must have shape (B, guide_channels, scale_factor * H, '
                f'scale_factor * W) = {expected} for x of shape {tuple(x.shape)} '
                f'(guide_channels={self.guide_channels}, scale_factor={s}); got '
                f'{tuple(guide.shape)}')

    def extra_repr(self) -> str:
        return (f'in_channels={self.in_channels}, scale_factor={self.scale_factor}, '
                f'guide_channels={self.guide_channels}')
