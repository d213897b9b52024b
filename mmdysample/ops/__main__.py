"""``python -m mmdysample.ops``: build (or find) the fused kernel's cache and report it."""
import sys
import time

from .extension import extension_cache_dir, load_extension


def main() -> int:
    start = time.perf_counter()
    extension = load_extension(verbose='--verbose' in sys.argv[1:])
    if extension is None:
        print('mmdysample: the fused DySample CPU kernel could not be built; the pure-PyTorch '
              'path will be used', file=sys.stderr)
        return 1
    print(f'mmdysample: fused DySample CPU kernel ready ({extension.simd}) in '
          f'{extension_cache_dir()} [{time.perf_counter() - start:.1f} s]')
    return 0


if __name__ == '__main__':
    sys.exit(main())
