"""Just-in-time build of the CPU extension and the switches that choose the fused path.

One extension holds every C++ kernel of the package: each family of kernels is one source
file in ``csrc/`` (their entry points declared in ``csrc/ops.h``), all bound to Python in
``csrc/bindings.cpp``; :data:`SOURCES` lists them. It is compiled on first use with
:func:`torch.utils.cpp_extension.load` into a per-user cache, one build per (Python, torch,
instruction set) triple:

* ``MMDYSAMPLE_EXTENSIONS_DIR`` sets the cache root (default
  ``$XDG_CACHE_HOME/mmdysample/extensions``, i.e. ``~/.cache/mmdysample/extensions``);
* on x86-64 CPUs where PyTorch itself runs its AVX2 (or AVX-512) kernels the build adds
  ``-mavx2 -mfma`` and is cached under a name ending in ``_avx2``; elsewhere it is built with
  portable flags only (``_generic``), so a cache is never loaded on a CPU it was not built for;
* it is compiled with OpenMP (``-fopenmp``), so that ``at::parallel_for`` uses PyTorch's
  intra-op threads (``torch.set_num_threads``);
* if the build fails (no compiler, no ninja, ...) a single :class:`RuntimeWarning` says why and
  every call takes the pure-PyTorch reference path.

* concurrent processes (the ranks of a distributed job, parallel test workers) build once:
  the build runs under an advisory file lock (``fcntl.flock``; ``msvcrt.locking`` on Windows)
  that the operating system releases when its holder dies, so a build killed by SIGKILL or
  preemption never blocks the next process. A process waits at most
  ``MMDYSAMPLE_BUILD_TIMEOUT`` seconds (default 900) for another's build, then warns once and
  takes the reference path. Lock files torch's builder leaves behind when killed are removed
  by whoever holds the lock (no one else can be building then).

Switches (checked on every call): the environment variable ``MMDYSAMPLE_FUSED=0`` (also
``false``/``off``/``no``) disables the fused kernel; so does :func:`use_fused` (``False``), as a
plain call or as a context manager, for the calling thread.
"""
import contextlib
import contextvars
import logging
import os
import platform
import shutil
import sys
import threading
import time
import warnings
from pathlib import Path
from typing import Optional

import torch

__all__ = [
    'FUSED_ENV_VAR', 'use_fused', 'fused_enabled', 'load_extension', 'extension_available',
    'extension_cache_dir', 'extension_name', 'build_lock', 'build_timeout_s', 'SOURCES',
    'BuildLockTimeout', 'BUILD_TIMEOUT_ENV_VAR'
]

FUSED_ENV_VAR = 'MMDYSAMPLE_FUSED'
CACHE_ENV_VAR = 'MMDYSAMPLE_EXTENSIONS_DIR'
BUILD_TIMEOUT_ENV_VAR = 'MMDYSAMPLE_BUILD_TIMEOUT'
DEFAULT_BUILD_TIMEOUT_S = 900.0
BUILD_LOCK_NAME = 'mmdysample-build.lock'  # ours (flock); torch's FileBaton uses 'lock'
_FALSE_WORDS = ('0', 'false', 'off', 'no')
CSRC = Path(__file__).resolve().parent / 'csrc'
#: the extension's C++ sources (every kernel file, then the bindings), compiled into one module
SOURCES = tuple(sorted(CSRC.glob('*.cpp'),
                      key=lambda path: (path.name == 'bindings.cpp', path.name)))

logger = logging.getLogger(__name__)

# per thread (and asyncio task), as torch.set_grad_enabled: a new thread starts enabled
_switch_on = contextvars.ContextVar('mmdysample_use_fused', default=True)
_lock = threading.Lock()
_extension = None
_load_error: Optional[BaseException] = None


class use_fused:  # noqa: N801  (used like a function, as torch.set_grad_enabled)
    """Turn the fused DySample CPU kernel on or off.

    Works as a plain call (the setting stays until changed) or as a context manager (the
    previous setting comes back on exit)::

        mmdysample.ops.use_fused(False)        # reference path from now on
        with mmdysample.ops.use_fused(False):  # reference path inside the block only
            y = upsampler(x)

    The setting belongs to the calling thread (a ``contextvars.ContextVar``, like
    ``torch.set_grad_enabled``): threads entering and leaving their own blocks never see each
    other's setting, and a new thread starts with the fused kernel on. ``use_fused(True)``
    cannot override ``MMDYSAMPLE_FUSED=0``, which applies to the whole process; see
    :func:`fused_enabled`.

    Args:
        enabled: ``True`` to use the fused kernel where supported, ``False`` for the
            pure-PyTorch reference path.
    """

    def __init__(self, enabled: bool):
        if not isinstance(enabled, bool):
            raise TypeError(f'enabled must be True or False, got {enabled!r}')
        self.previous = _switch_on.get()
        _switch_on.set(enabled)

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        _switch_on.set(self.previous)
        return False


def fused_enabled() -> bool:
    """Whether the fused kernel may be used: :func:`use_fused` is on and the environment
    variable ``MMDYSAMPLE_FUSED`` is not ``0``/``false``/``off``/``no``."""
    env = os.environ.get(FUSED_ENV_VAR, '1').strip().lower()
    return _switch_on.get() and env not in _FALSE_WORDS


def _simd_variant() -> str:
    machine = platform.machine().lower()
    capability = torch.backends.cpu.get_cpu_capability()
    if machine in ('x86_64', 'amd64') and capability.startswith(('AVX2', 'AVX512')):
        return 'avx2'
    return 'generic'


def extension_name() -> str:
    """Module name of the build for this CPU (``mmdysample_ops_avx2`` or ``..._generic``)."""
    return f'mmdysample_ops_{_simd_variant()}'


def extension_cache_dir() -> Path:
    """Directory holding the compiled extension for this Python, torch and CPU."""
    root = os.environ.get(CACHE_ENV_VAR)
    if not root:
        cache_home = os.environ.get('XDG_CACHE_HOME') or os.path.join(
            os.path.expanduser('~'), '.cache')
        root = os.path.join(cache_home, 'mmdysample', 'extensions')
    tag = f'py{sys.version_info.major}{sys.version_info.minor}-torch{torch.__version__}'
    return Path(root) / tag.replace('+', '-') / extension_name()


def _openmp_flags():
    """OpenMP for at::parallel_for: without it ATen's header runs the loop on one thread.
    (On Linux the kernel then links ``libgomp.so.1``, which resolves to the copy PyTorch has
    already loaded, so there is one thread pool and ``torch.set_num_threads`` governs it.)"""
    if os.name == 'nt':
        return ['/openmp']
    if sys.platform == 'darwin':
        return []  # Apple clang has no -fopenmp: single-threaded kernel
    return ['-fopenmp']


def _compile_flags():
    if os.name == 'nt':
        return ['/O2'] + (['/arch:AVX2'] if _simd_variant() == 'avx2' else []) + _openmp_flags()
    # -ffp-contract=off: the kernel fuses multiply-adds only where it says so (std::fma), so
    # that the sampling coordinates round exactly like the reference path's.
    flags = ['-O3', '-ffp-contract=off'] + _openmp_flags()
    if _simd_variant() == 'avx2':
        flags += ['-mavx2', '-mfma']
    return flags


def _compiler() -> str:
    """The C++ compiler torch's JIT builder will call (``$CXX``, else ``c++``/``cl``)."""
    return os.environ.get('CXX') or ('cl' if os.name == 'nt' else 'c++')


def build_timeout_s() -> float:
    """Seconds to wait for another process's build (``MMDYSAMPLE_BUILD_TIMEOUT``, default 900)."""
    value = os.environ.get(BUILD_TIMEOUT_ENV_VAR, '').strip()
    if not value:
        return DEFAULT_BUILD_TIMEOUT_S
    try:
        timeout = float(value)
    except ValueError:
        timeout = -1.0
    if not timeout >= 0:
        raise ValueError(f'{BUILD_TIMEOUT_ENV_VAR} must be a number of seconds >= 0, '
                         f'got {value!r}')
    return timeout


class BuildLockTimeout(RuntimeError):
    """Another process held the build lock for longer than ``MMDYSAMPLE_BUILD_TIMEOUT``."""


def _try_lock(fd: int) -> bool:
    """Take an exclusive advisory lock on ``fd`` without blocking; ``False`` if held."""
    if os.name == 'nt':
        import msvcrt
        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
            return True
        except OSError:
            return False
    import fcntl
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False


@contextlib.contextmanager
def build_lock(build_dir: Path, timeout_s: float, poll_s: float = 0.2):
    """Hold the build lock of ``build_dir`` (released by the OS if this process dies).

    Raises:
        BuildLockTimeout: another process held it for ``timeout_s`` seconds.
    """
    fd = os.open(build_dir / BUILD_LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = time.monotonic() + timeout_s
        while not _try_lock(fd):
            if time.monotonic() >= deadline:
                raise BuildLockTimeout(
                    f'waited {timeout_s:g} s ({BUILD_TIMEOUT_ENV_VAR} sets the wait) for another '
                    f'process building the kernel in {build_dir}')
            time.sleep(poll_s)
        # Whoever holds our lock is the only builder, so a FileBaton 'lock' file of torch's
        # builder left here is a dead process's: without this, torch waits on it forever.
        with contextlib.suppress(FileNotFoundError):
            (build_dir / 'lock').unlink()
        yield
    finally:
        os.close(fd)  # releases the lock


def _build(verbose: bool):
    from torch.utils.cpp_extension import load
    compiler = _compiler()
    if shutil.which((compiler.split() or [''])[0]) is None:  # CXX may be 'ccache g++'
        raise RuntimeError(f'no C++ compiler: {compiler!r} (from $CXX or the default) is not '
                           'on PATH')
    build_dir = extension_cache_dir()
    build_dir.mkdir(parents=True, exist_ok=True)
    timeout_s = build_timeout_s()
    # ninja may live beside this interpreter (a venv's bin/) without being on PATH
    path = os.environ.get('PATH', '')
    extra = [os.path.dirname(sys.executable)]
    try:
        import ninja
        extra.insert(0, ninja.BIN_DIR)
    except (ImportError, AttributeError):
        pass
    os.environ['PATH'] = os.pathsep.join(extra + [path])
    try:
        with build_lock(build_dir, timeout_s):
            return load(
                name=extension_name(),
                sources=[str(source) for source in SOURCES],
                extra_cflags=_compile_flags(),
                extra_ldflags=[] if os.name == 'nt' else _openmp_flags(),
                build_directory=str(build_dir),
                verbose=verbose)
    finally:
        os.environ['PATH'] = path


def load_extension(verbose: bool = False):
    """The compiled extension module, building it on first use; ``None`` if it cannot be built.

    A failed build is not retried in the same process; it is reported once with a
    :class:`RuntimeWarning`. ``verbose=True`` shows the compiler commands (what ``make install``
    should call to pre-build the cache: ``python -m mmdysample.ops``).
    """
    global _extension, _load_error
    if _extension is not None or _load_error is not None:
        return _extension
    with _lock:
        if _extension is None and _load_error is None:
            logger.info('Compiling the CPU kernels (DySample sampling, reassembly) into %s '
                        '(first use only)', extension_cache_dir())
            try:
                _extension = _build(verbose)
            except Exception as error:  # no compiler, no ninja, compile error, bad cache...
                _load_error = error
                first_line = (str(error).strip().splitlines() or [''])[0]
                if len(first_line) > 400:
                    first_line = first_line[:400] + '...'
                warnings.warn(
                    'mmdysample: could not build the fused DySample CPU kernel and the '
                    f'reassembly kernels ({type(error).__name__}: {first_line}); using the '
                    'pure-PyTorch paths (same results, slower). `python -m mmdysample.ops '
                    f'--verbose` shows the build; {FUSED_ENV_VAR}=0 silences this warning.',
                    RuntimeWarning,
                    stacklevel=3)
    return _extension


def extension_available() -> bool:
    """Whether the fused kernel is built (building it now if needed) and loadable."""
    return load_extension() is not None
