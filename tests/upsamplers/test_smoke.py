import torch
import torch.nn.functional as F
from mmengine.registry import MODELS

import mmdysample  # noqa: F401


def test_dysample_builds_from_root_registry_and_upsamples_x2():
    layer = MODELS.build(dict(type='DySample', in_channels=64))
    assert layer(torch.randn(1, 64, 8, 8)).shape == (1, 64, 16, 16)


def test_zero_offsets_give_bilinear():
    layer = MODELS.build(dict(type='DySample', in_channels=16))
    torch.nn.init.zeros_(layer.offset.weight)
    x = torch.randn(2, 16, 5, 7)
    expected = F.interpolate(x, scale_factor=2, mode='bilinear', align_corners=False)
    torch.testing.assert_close(layer(x), expected, atol=1e-5, rtol=0)
