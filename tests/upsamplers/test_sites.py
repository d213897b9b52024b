"""The site interface every patched neck/head uses: guide routing, exact output sizes, cfg
reading (mmdysample.upsamplers.sites and build_upsampler's guide_channels)."""
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from mmdysample.upsamplers import (Deconv, Interpolate, build_upsampler,
                                   check_interpolation_cfg, has_upsampler_type, requires_guide,
                                   upsample)


class AddGuide(nn.Module):
    """A minimal guided layer: nearest x2 of ``x`` plus a 1x1 projection of the guide."""
    requires_guide = True
    accepts_size = False

    def __init__(self, in_channels, scale_factor=2, guide_channels=None):
        super().__init__()
        self.scale_factor = scale_factor
        self.guide_channels = guide_channels
        self.proj = nn.Conv2d(guide_channels, in_channels, 1)

    def forward(self, x, guide):
        return F.interpolate(x, scale_factor=self.scale_factor) + self.proj(guide)


def test_guided_type_needs_a_site_with_a_guide():
    with pytest.raises(ValueError, match=r"guided upsampler.*FPN step 0 has no such feature"):
        build_upsampler(dict(type=AddGuide), 8, 2, where='FPN step 0')
    layer = build_upsampler(dict(type=AddGuide), 8, 2, guide_channels=4)
    assert layer.guide_channels == 4 and layer.proj.in_channels == 4
    assert requires_guide(layer) and requires_guide(AddGuide)
    with pytest.raises(ValueError, match='guide_channels must be a positive integer'):
        build_upsampler(dict(type=AddGuide), 8, 2, guide_channels=0)


def test_non_guided_layers_ignore_guide_channels():
    layer = build_upsampler(dict(type='Deconv'), 8, 2, guide_channels=16)
    assert type(layer) is Deconv and not requires_guide(layer)


def test_upsample_passes_the_guide_and_checks_it_is_there():
    torch.manual_seed(0)
    layer = build_upsampler(dict(type=AddGuide), 8, 2, guide_channels=4)
    x, guide = torch.randn(2, 8, 5, 7), torch.randn(2, 4, 10, 14)
    expected = F.interpolate(x, scale_factor=2) + layer.proj(guide)
    assert torch.equal(upsample(layer, x, guide=guide), expected)
    with pytest.raises(ValueError, match='needs the higher-resolution feature'):
        upsample(layer, x)


def test_upsample_to_an_odd_size_resizes_guide_and_output_bilinearly():
    torch.manual_seed(0)
    layer = build_upsampler(dict(type=AddGuide), 8, 2, guide_channels=4)
    x, guide = torch.randn(1, 8, 5, 7), torch.randn(1, 4, 9, 13)  # ResNet-style odd level
    natural_guide = F.interpolate(guide, size=(10, 14), mode='bilinear', align_corners=False)
    expected = F.interpolate(layer(x, natural_guide), size=(9, 13), mode='bilinear',
                             align_corners=False)
    out = upsample(layer, x, size=(9, 13), guide=guide)
    assert out.shape == (1, 8, 9, 13)
    assert torch.equal(out, expected)


def test_fixed_ratio_layers_are_resized_and_size_aware_layers_asked_for_the_size():
    torch.manual_seed(0)
    x = torch.randn(1, 8, 5, 7)
    deconv = build_upsampler(dict(type='Deconv'), 8, 2)
    assert upsample(deconv, x).shape == (1, 8, 10, 14)
    assert torch.equal(
        upsample(deconv, x, size=(11, 13)),
        F.interpolate(deconv(x), size=(11, 13), mode='bilinear', align_corners=False))
    nearest = build_upsampler(dict(mode='nearest'), 8, 2)
    assert type(nearest) is Interpolate and nearest.accepts_size
    # exactly what mmdet's FPN does without scale_factor: interpolate straight to the size
    assert torch.equal(upsample(nearest, x, size=(9, 13)),
                       F.interpolate(x, size=(9, 13), mode='nearest'))
    assert torch.equal(upsample(nearest, x), F.interpolate(x, scale_factor=2, mode='nearest'))


def test_cfg_reading():
    assert not has_upsampler_type(None, 'Head')
    assert not has_upsampler_type(dict(mode='nearest'), 'Head')
    assert has_upsampler_type(dict(type='DySample'), 'Head')
    with pytest.raises(TypeError, match='Head: upsample_cfg must be None or a dict'):
        has_upsampler_type('DySample', 'Head')
    interpolation = dict(mode='bilinear', align_corners=False)
    assert check_interpolation_cfg(None, 'Head', interpolation) is None
    assert check_interpolation_cfg(dict(mode='bilinear'), 'Head', interpolation) == \
        dict(mode='bilinear')
    with pytest.raises(ValueError, match=r"unexpected keys \['scale'\]"):
        check_interpolation_cfg(dict(scale=2), 'Head', interpolation)
    with pytest.raises(ValueError, match="mode='nearest' differs"):
        check_interpolation_cfg(dict(mode='nearest'), 'Head', interpolation)
