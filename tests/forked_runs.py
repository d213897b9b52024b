"""Runs in processes forked from one server that has imported everything once.

A test that needs a fresh process for a training (a kill, a signal, a run that must not
share this process's state) forks it from ``multiprocessing``'s forkserver instead of
starting an interpreter: the server imported torch, mmengine, mmcv, mmdet, mmseg and
mmdysample once (about 8 s of CPU per interpreter on the 2-core test machine), so a run
costs a fork.

One server per test process serves every module of :data:`PRELOAD` (Python has one
forkserver per process): ``engine_training`` (tests/engine) and this module, which preloads
``tools/train.py`` and ``tools/test.py`` with what they import. Nothing preloaded changes a
global that a run depends on (no registry filled, no default scope set, no monkeypatch).

:func:`run_tool` runs ``tools/<name>.py``'s ``main(argv)`` in such a child, as
``python tools/<name>.py ARGV`` would run it (same exit status for ``SystemExit`` and
uncaught errors, stdout and stderr captured from the file descriptors). The scripts' own
``__main__`` start stays covered by the tests that run them through a shell script or
another tool (tools/dist_train.sh, tools/demo.py, tools/run_table.py).
"""
import importlib.util
import multiprocessing
import os
import os.path as osp
import subprocess
import sys
import tempfile

TESTS = osp.dirname(osp.abspath(__file__))
REPO = osp.dirname(TESTS)
TOOLS = osp.join(REPO, 'tools')
# preloaded module -> the folder it is imported from
PRELOAD = {'forked_runs': TESTS, 'engine_training': osp.join(TESTS, 'engine')}
TOOL_NAMES = ('train', 'test')

if TOOLS not in sys.path:  # the tools import their shared helpers as `import tool_helpers`
    sys.path.append(TOOLS)

import matplotlib.backends.backend_agg  # noqa: E402,F401  (mmengine's Visualizer)
import matplotlib.figure  # noqa: E402,F401
import mmdet.datasets  # noqa: E402,F401  (what register_all_modules imports, without
import mmdet.engine  # noqa: E402,F401   calling it: the runs fill the registries)
import mmdet.evaluation  # noqa: E402,F401
import mmdet.models  # noqa: E402,F401
import mmdet.visualization  # noqa: E402,F401
import mmengine.runner  # noqa: E402,F401
import mmseg.datasets  # noqa: E402,F401
import mmseg.engine  # noqa: E402,F401
import mmseg.evaluation  # noqa: E402,F401
import mmseg.models  # noqa: E402,F401
import mmseg.visualization  # noqa: E402,F401
import tool_helpers  # noqa: E402
import torch  # noqa: E402

tool_helpers.import_mmdysample()


def _load_tool(name):
    spec = importlib.util.spec_from_file_location(f'_forked_runs_tool_{name}',
                                                  osp.join(TOOLS, f'{name}.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


TOOL_MODULES = {name: _load_tool(name) for name in TOOL_NAMES}
# a forkserver child that finds its own pid here imported this module itself: no preload
IMPORTED_BY_PID = os.getpid()

_context = None


def check_preloaded():
    """Entry point of the server's first child: exit status 3 unless every module of
    :data:`PRELOAD` was imported by the server (not again by this child)."""
    for name in PRELOAD:
        module = sys.modules.get(name)
        if module is None or module.IMPORTED_BY_PID == os.getpid():
            raise SystemExit(3)


def context():
    """The forkserver context; the server is started (and checked) on the first call."""
    global _context
    if _context is None:
        new = multiprocessing.get_context('forkserver')
        new.set_forkserver_preload(list(PRELOAD))
        # The server gets this environment, but not this process's sys.path (Python 3.11
        # ignores it): it finds the preloaded modules through PYTHONPATH.
        old_path = os.environ.get('PYTHONPATH')
        os.environ['PYTHONPATH'] = os.pathsep.join(
            list(dict.fromkeys(PRELOAD.values())) + ([old_path] if old_path else []))
        try:
            first = new.Process(target=check_preloaded)
            first.start()
            first.join(600)
        finally:
            if old_path is None:
                del os.environ['PYTHONPATH']
            else:
                os.environ['PYTHONPATH'] = old_path
        assert first.exitcode == 0, \
            f'the forkserver did not preload {list(PRELOAD)} (exit status {first.exitcode})'
        _context = new
    return _context


def _call_with_output_to(stdout_path, stderr_path, env, threads, target, args):
    """Child: ``target(*args)`` with stdout and stderr (the file descriptors) written to
    the two files, ``env`` added to the environment, ``threads`` intra-op threads."""
    for fd, path in ((1, stdout_path), (2, stderr_path)):
        out = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(out, fd)
        os.close(out)
    os.environ.update(env or {})
    torch.set_num_threads(threads)
    target(*args)  # SystemExit: its status, as a script's; an error: status 1 and traceback


def start(target, *args, env=None, threads=1):
    """A child forked from the server running ``target(*args)`` (a module-level function),
    its output captured: returns a handle for :func:`finish`."""
    tmp = tempfile.TemporaryDirectory()
    out, err = osp.join(tmp.name, 'stdout'), osp.join(tmp.name, 'stderr')
    process = context().Process(target=_call_with_output_to,
                                args=(out, err, env, threads, target, args))
    process.start()
    return process, tmp


def finish(handle, args=(), timeout=600):
    """Waits for the child of :func:`start` and returns it as ``subprocess.run(args,
    capture_output=True, text=True)`` would (``returncode``, ``stdout``, ``stderr``); kills it
    and raises ``subprocess.TimeoutExpired`` after ``timeout`` seconds."""
    process, tmp = handle
    with tmp:
        process.join(timeout)
        if process.is_alive():
            process.kill()
            process.join()
            raise subprocess.TimeoutExpired(args, timeout)
        with open(osp.join(tmp.name, 'stdout')) as out, \
                open(osp.join(tmp.name, 'stderr')) as err:
            return subprocess.CompletedProcess(args, process.exitcode, out.read(), err.read())


def _tool_main(name, argv, cwd):
    os.chdir(cwd)
    sys.argv = [osp.join(TOOLS, f'{name}.py'), *argv]
    TOOL_MODULES[name].main(list(argv))


def run_tool(name, argv, cwd=REPO, env=None, threads=1, timeout=600):
    """``python tools/<name>.py ARGV`` in ``cwd`` (``name`` in :data:`TOOL_NAMES`), run in
    a child forked from the server with ``threads`` intra-op threads and ``env`` added to the
    environment; as ``subprocess.run(..., capture_output=True, text=True)`` returns it."""
    argv = [str(arg) for arg in argv]
    handle = start(_tool_main, name, argv, str(cwd), env=env, threads=threads)
    return finish(handle, [sys.executable, osp.join(TOOLS, f'{name}.py'), *argv], timeout)
