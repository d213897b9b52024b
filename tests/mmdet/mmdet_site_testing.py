"""Helpers shared by the tests of the mmdet upsampling sites."""
import inspect

import torch
import torch.nn.functional as F


class RecordingGuidedUpsampler(torch.nn.Module):
    """A guided layer with the interface of the guided upsamplers: ``forward(x, guide)``,
    guide at the output size. Returns nearest x2 plus the guide's channel mean and records
    ``(layer, x, guide)`` for each call in ``RecordingGuidedUpsampler.calls``."""
    requires_guide = True
    calls = []

    def __init__(self, in_channels, scale_factor=2, guide_channels=None):
        super().__init__()
        self.in_channels, self.scale_factor = in_channels, scale_factor
        self.guide_channels = guide_channels
        self.weight = torch.nn.Parameter(torch.ones(1))

    def forward(self, x, guide):
        assert guide.shape[1] == self.guide_channels
        type(self).calls.append((self, x, guide))
        return (F.interpolate(x, scale_factor=self.scale_factor, mode='nearest') * self.weight +
                guide.mean(1, keepdim=True))


def assert_upstream_signature(ours, upstream, new_keyword_only=()):
    """``ours.__init__`` takes ``upstream.__init__``'s parameters in the same order, kinds and
    defaults, followed only by the keyword-only ``new_keyword_only``."""
    ours_params = list(inspect.signature(ours).parameters.values())
    upstream_params = list(inspect.signature(upstream).parameters.values())
    upstream_var_keyword = [p for p in upstream_params if p.kind is p.VAR_KEYWORD]
    upstream_params = [p for p in upstream_params if p.kind is not p.VAR_KEYWORD]
    head = ours_params[:len(upstream_params)]
    assert [(p.name, p.kind, p.default) for p in head] == \
        [(p.name, p.kind, p.default) for p in upstream_params]
    tail = ours_params[len(upstream_params):]
    new = [p for p in tail if p.kind is not p.VAR_KEYWORD]
    assert [p.name for p in new] == list(new_keyword_only)
    assert all(p.kind is p.KEYWORD_ONLY for p in new)
    assert [p.name for p in tail if p.kind is p.VAR_KEYWORD] == \
        [p.name for p in upstream_var_keyword]
