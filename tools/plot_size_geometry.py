"""Draw the geometry of ``DySample(x, size=...)`` (docs/images/dysample_size_geometry.png).

A 3x4 input upsampled to 5x7 (ratios 1.67 and 1.75): input pixels (solid), their s x s
sub-pixels (dotted, s = 2), the zero-offset sampling points of ``F.interpolate(x, size,
mode='bilinear', align_corners=False)`` (dots; they are the output points), and, for a random
offset field, each point's learned offset: the one predicted for the sub-pixel it falls in
(arrows, coloured by that sub-pixel). The positions are read from
:func:`mmdysample.functional.resized_sampling_grid`, i.e. from the code that samples.

Usage: ``python tools/plot_size_geometry.py [--out docs/images/dysample_size_geometry.png]``
"""
import argparse

import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from mmdysample.functional import resized_sampling_grid  # noqa: E402


def pixel_positions(grid, height, width):
    """Normalised grid -> continuous input coordinates (pixel j spans [j, j + 1))."""
    return (grid[..., 0] + 1) * width / 2, (grid[..., 1] + 1) * height / 2


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--out', default='docs/images/dysample_size_geometry.png')
    args = parser.parse_args(argv)
    height, width, scale, size = 3, 4, 2, (5, 7)
    generator = torch.Generator().manual_seed(1)
    offset = torch.randn(1, 2 * scale * scale, height, width, generator=generator,
                         dtype=torch.float64) * 0.12
    base_x, base_y = pixel_positions(
        resized_sampling_grid(torch.zeros_like(offset), size, scale, 1), height, width)
    point_x, point_y = pixel_positions(resized_sampling_grid(offset, size, scale, 1), height,
                                       width)
    figure, axes = plt.subplots(figsize=(7, 5.6))
    for k in range(scale * width + 1):
        axes.axvline(k / scale, color='0.6', lw=1.4 if k % scale == 0 else 0.6,
                     ls='-' if k % scale == 0 else ':')
    for k in range(scale * height + 1):
        axes.axhline(k / scale, color='0.6', lw=1.4 if k % scale == 0 else 0.6,
                     ls='-' if k % scale == 0 else ':')
    colours = plt.get_cmap('tab10')
    for row in range(size[0]):
        for col in range(size[1]):
            bx, by = base_x[0, row, col].item(), base_y[0, row, col].item()
            px, py = point_x[0, row, col].item(), point_y[0, row, col].item()
            sub = (min(int(by * scale), scale * height - 1) % scale) * scale + \
                min(int(bx * scale), scale * width - 1) % scale
            axes.plot(bx, by, 'o', color='k', ms=4)
            axes.annotate('', xy=(px, py), xytext=(bx, by),
                          arrowprops=dict(arrowstyle='->', color=colours(sub), lw=1.5))
    axes.set_xlim(0, width)
    axes.set_ylim(height, 0)
    axes.set_aspect('equal')
    axes.set_xlabel('x (input pixels)')
    axes.set_ylabel('y (input pixels)')
    axes.set_title(f'DySample(x, size={size}) on a {height}x{width} input, s={scale}:\n'
                   'dots: F.interpolate bilinear points; arrows: offset of the sub-pixel '
                   '(colour) each falls in', fontsize=9)
    figure.tight_layout()
    figure.savefig(args.out, dpi=110)
    print(f'wrote {args.out}')


if __name__ == '__main__':
    main()
