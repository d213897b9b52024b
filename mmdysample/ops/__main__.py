"""``python -m mmdysample.ops [--verbose]``: build (or find) the CPU kernels' cache and say
where it is; exit status 1 if it cannot be built (the pure-PyTorch path is then used)."""
import sys
import time

from .extension import extension_cache_dir, load_extension


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    unknown = [arg for arg in argv if arg != '--verbose']
    if unknown:
        print(f'usage: python -m mmdysample.ops [--verbose]; unknown arguments: {unknown}',
              file=sys.stderr)
        return 2
    start = time.perf_counter()
    extension = load_extension(verbose='--verbose' in argv)
    if extension is None:
        print('mmdysample: the CPU kernels (fused DySample, reassembly) could not be built; '
              'the pure-PyTorch paths will be used', file=sys.stderr)
        return 1
    print(f'mmdysample: fused DySample CPU kernel ready, with the reassembly kernels '
          f'({extension.simd}), in '
          f'{extension_cache_dir()} [{time.perf_counter() - start:.1f} s]')
    return 0


if __name__ == '__main__':
    sys.exit(main())
