"""The kernel build never hangs: stale lock files of killed builds are ignored, a process waits
a bounded time for another's build and then falls back, and concurrent cold starts build once.
"""
import os
import signal
import subprocess
import sys
import threading
import time
import warnings

import pytest
import torch

from mmdysample.functional import dysample
from mmdysample.ops import extension as extension_module
from mmdysample.ops import use_fused

EXTENSION_PY = extension_module.__file__

# A child process that loads the extension module by path (torch only: no package import, so
# that the test measures the build, not mmengine's import time) and checks the kernel.
CHILD = f'''
import importlib.util, sys, time, torch
spec = importlib.util.spec_from_file_location('mmdysample_extension', {EXTENSION_PY!r})
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
start = time.monotonic()
extension = module.load_extension()
assert extension is not None, module._load_error
x = torch.eye(4).view(1, 4, 1, 4)
offset = torch.zeros(1, 8, 1, 4)
out = extension.forward(x, offset, 2, 1, True)
assert torch.equal(out[0, :, 0, ::2], torch.eye(4)), out  # pixel centres: the input itself
print(f'loaded in {{time.monotonic() - start:.1f}} s')
'''


def load_in_thread(timeout_s):
    """``load_extension()`` in a daemon thread; ``(finished, result)`` after ``timeout_s``."""
    result = {}
    thread = threading.Thread(target=lambda: result.setdefault('ext', extension_module
                                                               .load_extension()), daemon=True)
    thread.start()
    thread.join(timeout_s)
    return not thread.is_alive(), result.get('ext')


@pytest.mark.usefixtures('fused_extension', 'fresh_loader')
def test_stale_lock_files_in_every_cache_folder_do_not_block():
    """A build killed by SIGKILL leaves torch's ``lock`` file behind (torch then waits on it
    forever, at every later first forward) and our own lock file (unlocked, so harmless)."""
    build_dir = extension_module.extension_cache_dir()
    planted = [folder / name for folder in (build_dir, build_dir.parent, build_dir.parent.parent)
               for name in ('lock', extension_module.BUILD_LOCK_NAME)]
    for path in planted:
        path.touch()
    try:
        finished, extension = load_in_thread(timeout_s=60)
        assert finished, 'load_extension() blocked on a stale lock file'
        assert extension is not None
        assert not (build_dir / 'lock').exists()
    finally:
        for path in planted:
            if path.name == 'lock':
                path.unlink(missing_ok=True)


@pytest.mark.usefixtures('fused_extension', 'fresh_loader')
def test_bounded_wait_then_reference_path_with_one_warning(monkeypatch):
    """Another process holding the build lock for longer than MMDYSAMPLE_BUILD_TIMEOUT: this
    one warns once, names the setting, and computes on the pure-PyTorch path."""
    import fcntl
    monkeypatch.setenv(extension_module.BUILD_TIMEOUT_ENV_VAR, '0.5')
    build_dir = extension_module.extension_cache_dir()
    holder = os.open(build_dir / extension_module.BUILD_LOCK_NAME, os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(holder, fcntl.LOCK_EX)  # a separate open file: conflicts with ours
        x = torch.randn(1, 4, 3, 5)
        offset = torch.randn(1, 8, 3, 5)
        with use_fused(False):
            expected = dysample(x, offset, 2, 1)
        start = time.monotonic()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter('always')
            outputs = [dysample(x, offset, 2, 1) for _ in range(3)]
        assert time.monotonic() - start < 30
    finally:
        os.close(holder)
    messages = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
    assert len(messages) == 1, messages
    assert 'MMDYSAMPLE_BUILD_TIMEOUT' in messages[0] and 'pure-PyTorch paths' in messages[0]
    for out in outputs:
        torch.testing.assert_close(out, expected, atol=0, rtol=0)


def test_build_timeout_setting_is_checked(monkeypatch):
    monkeypatch.setenv(extension_module.BUILD_TIMEOUT_ENV_VAR, 'soon')
    with pytest.raises(ValueError, match=r'MMDYSAMPLE_BUILD_TIMEOUT must be a number of '
                       r"seconds >= 0, got 'soon'"):
        extension_module.build_timeout_s()
    monkeypatch.setenv(extension_module.BUILD_TIMEOUT_ENV_VAR, '12.5')
    assert extension_module.build_timeout_s() == 12.5


def spawn(cache_root):
    env = dict(os.environ, MMDYSAMPLE_EXTENSIONS_DIR=str(cache_root), OMP_NUM_THREADS='1')
    return subprocess.Popen([sys.executable, '-c', CHILD], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)


@pytest.mark.slow
@pytest.mark.usefixtures('fused_extension')
def test_killed_cold_build_then_four_concurrent_cold_starts(tmp_path, monkeypatch):
    """One cold build, shared by two scenarios: a build killed with SIGKILL (its whole process
    group, as a scheduler's preemption does) a few seconds in, then at once four processes
    starting on that cache together: all finish, and each compile step ran once (ninja's log
    lists every output once: no two processes built at the same time)."""
    monkeypatch.setenv(extension_module.CACHE_ENV_VAR, str(tmp_path))
    build_dir = extension_module.extension_cache_dir()
    first = spawn(tmp_path)
    deadline = time.monotonic() + 120
    while not (build_dir / 'build.ninja').exists():  # the compiler has been started
        assert first.poll() is None, first.communicate()[0]
        assert time.monotonic() < deadline, 'the first build did not start'
        time.sleep(0.1)
    time.sleep(3)
    assert first.poll() is None, 'the cold build finished too fast to be killed mid-way'
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    assert (build_dir / 'lock').exists(), "the killed build left no torch 'lock' file"

    starts = [spawn(tmp_path) for _ in range(4)]
    outputs = []
    for process in starts:
        try:
            outputs.append(process.communicate(timeout=600)[0])
        except subprocess.TimeoutExpired:
            for other in starts:
                os.killpg(other.pid, signal.SIGKILL)
            pytest.fail('a process starting after the killed build did not finish')
        assert process.returncode == 0, outputs[-1]
    log = [line.split('\t')[3] for line in (build_dir / '.ninja_log').read_text().splitlines()
           if not line.startswith('#')]
    assert log and len(log) == len(set(log)), f'outputs built more than once: {log}'
