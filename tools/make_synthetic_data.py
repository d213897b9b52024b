"""Write the synthetic demo data in the COCO, COCO-panoptic and ADE20K layouts.

    python tools/make_synthetic_data.py --out data/synthetic
    python tools/make_synthetic_data.py --out data/synthetic --seed 1 --num-train 2000 --size 256

The result is deterministic for given arguments (see mmdysample/datasets/synthetic.py for
the scenes and the file layout). With ``--skip-existing`` nothing is written when
``<out>/meta.json`` already records the same arguments.
"""
import argparse
import json
import os.path as osp
import sys


def parse_size(text: str):
    """``'128'`` -> (128, 128); ``'96x160'`` -> (96, 160) as (height, width)."""
    parts = text.lower().split('x')
    try:
        values = [int(p) for p in parts]
    except ValueError:
        values = []
    if len(values) == 1:
        values = values * 2
    if len(values) != 2 or min(values) < 32:
        raise argparse.ArgumentTypeError(
            f'--size must be N or HxW with integers >= 32, got {text!r}')
    return tuple(values)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--out', default='data/synthetic', help='output root folder')
    parser.add_argument('--seed', type=int, default=0, help='base random seed (>= 0)')
    parser.add_argument('--num-train', type=int, default=800, help='training scenes')
    parser.add_argument('--num-val', type=int, default=200, help='validation scenes')
    parser.add_argument('--size', type=parse_size, default=(128, 128),
                        help='image size: N (square) or HxW, default 128')
    parser.add_argument('--min-objects', type=int, default=1)
    parser.add_argument('--max-objects', type=int, default=4)
    parser.add_argument('--formats', nargs='+', default=['coco', 'panoptic', 'ade20k'],
                        choices=['coco', 'panoptic', 'ade20k'], help='layouts to write')
    parser.add_argument('--skip-existing', action='store_true',
                        help='do nothing if <out>/meta.json records the same arguments')
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    # imported here so that --help answers without loading numpy/OpenCV
    from mmdysample.datasets.synthetic import (FORMAT_VERSION, SceneSpec,
                                               generate_synthetic_dataset)
    try:
        spec = SceneSpec(height=args.size[0], width=args.size[1],
                         min_objects=args.min_objects, max_objects=args.max_objects)
    except ValueError as error:
        print(f'error: {error}', file=sys.stderr)
        return 2
    meta_path = osp.join(args.out, 'meta.json')
    if args.skip_existing and osp.isfile(meta_path):
        with open(meta_path) as f:
            meta = json.load(f)
        wanted = dict(format_version=FORMAT_VERSION, seed=args.seed, num_train=args.num_train,
                      num_val=args.num_val, formats=list(args.formats),
                      spec=spec.__dict__.copy())
        if all(meta.get(key) == value for key, value in wanted.items()):
            print(f'{args.out}: synthetic data already there ({meta_path}), skipping')
            return 0
    try:
        meta = generate_synthetic_dataset(args.out, seed=args.seed, num_train=args.num_train,
                                          num_val=args.num_val, spec=spec,
                                          formats=args.formats)
    except ValueError as error:
        print(f'error: {error}', file=sys.stderr)
        return 2
    counts = ', '.join(f'{split}: {c["images"]} images / {c["instances"]} instances'
                       for split, c in meta['counts'].items())
    print(f'wrote {args.out} ({", ".join(args.formats)}; {spec.height}x{spec.width}; '
          f'{counts}) in {meta["seconds"]:.1f} s')
    return 0


if __name__ == '__main__':
    sys.exit(main())
