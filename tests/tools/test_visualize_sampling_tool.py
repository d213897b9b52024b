"""tools/visualize_sampling.py: hooks, bilinear-init grid of an untrained model, PNGs."""
import json
import os

import pytest
import torch

from tools_testing import DEMO_DET_DYSAMPLE, DEMO_SEG_DYSAMPLE

from tool_helpers import build_model


@pytest.fixture(scope='module')
def untrained(visualize_tool, tmp_path_factory):
    out_dir = tmp_path_factory.mktemp('vis')
    return visualize_tool.visualize(DEMO_SEG_DYSAMPLE, size=(64, 96), out_dir=str(out_dir)), \
        out_dir


def test_untrained_points_form_bilinear_grid(untrained):
    result, out_dir = untrained
    views = result['views']
    assert [v['name'] for v in views] == [f'decode_head.upsamplers.{k}' for k in range(6)]
    # input of upsamplers[k]: 1/8, 1/16, 1/8, 1/32, 1/16, 1/8 of the 64x96 image
    strides = [8, 16, 8, 32, 16, 8]
    for view, stride in zip(views, strides):
        height, width = 64 // stride, 96 // stride
        assert view['input_size'] == (height, width)
        assert view['stride'] == [stride, stride]
        points = view['points_img']  # (groups, 2H, 2W, 2) in image pixels
        assert points.shape == (4, 2 * height, 2 * width, 2)
        # bilinear initialisation: output pixel (Y, X) samples the image point at
        # ((X + 0.5) * stride / 2, (Y + 0.5) * stride / 2), up to the N(0, 0.001) offsets
        xs = (torch.arange(2 * width) + 0.5) * stride / 2
        ys = (torch.arange(2 * height) + 0.5) * stride / 2
        torch.testing.assert_close(points[..., 0], xs.expand_as(points[..., 0]),
                                   atol=0.05 * stride, rtol=0)
        torch.testing.assert_close(points[..., 1], ys[:, None].expand_as(points[..., 1]),
                                   atol=0.05 * stride, rtol=0)
        assert view['displacement'].max() < 0.05
    for name in ('sampling_points.png', 'offset_magnitude.png'):
        with open(out_dir / name, 'rb') as png:
            assert png.read(8) == b'\x89PNG\r\n\x1a\n'
    with open(out_dir / 'sampling.json') as json_file:
        stats = json.load(json_file)
    assert stats['region'] == [36, 24, 60, 40]  # central quarter-side square
    assert len(stats['layers']) == 6


def test_checkpoint_offsets_are_drawn(visualize_tool, tmp_path):
    model = build_model(DEMO_SEG_DYSAMPLE)
    layer = model.decode_head.upsamplers[5]
    with torch.no_grad():
        layer.offset.weight.zero_()
        layer.offset.bias.zero_()
        layer.offset.bias[16:].fill_(2.0)  # y offsets of every group: +2 * 0.25 input px
    checkpoint = tmp_path / 'shifted.pth'
    torch.save(dict(state_dict=model.state_dict()), checkpoint)
    image = tmp_path / 'image.png'
    import mmcv
    mmcv.imwrite((torch.rand(50, 70, 3) * 255).byte().numpy(), str(image))
    result = visualize_tool.main([
        DEMO_SEG_DYSAMPLE, '--checkpoint', str(checkpoint), '--image', str(image), '--size',
        '64', '64', '--layers', 'decode_head.upsamplers.5', '--region', '0', '0', '32', '32',
        '--out-dir', str(tmp_path / 'out')
    ])
    (view, ) = result['views']
    torch.testing.assert_close(view['displacement'], torch.full_like(view['displacement'],
                                                                    0.5))
    shift = view['points_img'][..., 1] - (torch.arange(16) + 0.5)[:, None] * 4
    torch.testing.assert_close(shift, torch.full_like(shift, 0.5 * 8))  # stride 8
    assert os.path.isfile(tmp_path / 'out' / 'sampling_points.png')


def test_bad_region_and_layer(visualize_tool, tmp_path):
    with pytest.raises(ValueError, match='region must satisfy'):
        visualize_tool.check_region([10, 10, 5, 20], (64, 64))
    with pytest.raises(ValueError, match='not DySample layers'):
        visualize_tool.visualize(DEMO_SEG_DYSAMPLE, size=(64, 64), layers=['backbone'],
                                 out_dir=str(tmp_path))


def test_detector_neck_layers(visualize_tool, tmp_path):
    result = visualize_tool.visualize(DEMO_DET_DYSAMPLE, size=(64, 64), out_dir=str(tmp_path))
    # upsamplers[j] takes FPN level j + 1 (strides 8, 16, 32) to level j
    assert [(v['name'], v['input_size']) for v in result['views']] == [
        ('neck.upsamplers.0', (8, 8)), ('neck.upsamplers.1', (4, 4)),
        ('neck.upsamplers.2', (2, 2))]
    assert all(v['displacement'].max() < 0.05 for v in result['views'])


def test_input_pixel_magnitude(visualize_tool):
    displacement = torch.arange(2 * 4 * 6, dtype=torch.float32).reshape(2, 4, 6)
    magnitude = visualize_tool.input_pixel_magnitude(displacement, 2)
    assert magnitude.shape == (2, 3)
    expected = torch.stack([torch.stack([displacement[:, 2 * i:2 * i + 2, 2 * j:2 * j + 2].mean()
                                         for j in range(3)]) for i in range(2)])
    torch.testing.assert_close(magnitude, expected)
