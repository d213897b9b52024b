"""Suite-wide: the order in which tests start.

``make test`` runs the suite in 2 pytest-xdist workers with ``--dist loadgroup``
(pyproject.toml): tests are handed out one at a time (or one ``xdist_group`` at a time,
for tests that share an expensive module fixture) in collection order. Tests marked
``slow`` (those that train, start interpreters or build full-size models) are moved to the
front, so that both workers take them first and the many fast tests fill in around them:
no minute-long test starts last and leaves the other worker idle.
"""
import pytest


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    # stable: within the slow and the fast tests, files and tests keep their order
    items.sort(key=lambda item: item.get_closest_marker('slow') is None)


@pytest.fixture(autouse=True)
def no_default_scope_leaks():
    """A test that makes a registry scope current (a Runner makes mmengine's,
    ``register_all_modules`` mmdet's or mmseg's) leaves it current for whichever test the
    worker runs next; remove the scopes a test created when it ends. Scopes made by module
    fixtures stay: those fixtures run again when their module's tests resume."""
    from mmengine.registry import DefaultScope
    before = set(DefaultScope._instance_dict)
    yield
    for name in [name for name in DefaultScope._instance_dict if name not in before]:
        del DefaultScope._instance_dict[name]


@pytest.fixture(scope='session')
def upstream_equivalence(request, tmp_path_factory):
    """``(upstream, plugin)``: the records of tests/upstream_equivalence_probe.py for
    mmdet's and mmseg's sampled configs, built without mmdysample (a fresh interpreter that
    never imports it) and with it (a child of tests/forked_runs.py's forkserver, which has
    imported it), side by side. The tests of both libraries share it (their files are in
    one xdist group, so that one worker builds it once).

    The upstream side depends only on the installed packages and the probe: it is cached in
    pytest's cache under their versions and the probe's hash, so a rerun builds the plugin
    side only.
    """
    import hashlib
    import os
    import subprocess
    import sys

    import mmcv
    import mmdet
    import mmengine
    import mmseg
    import torch

    import forked_runs
    import upstream_equivalence_probe as probe

    with open(probe.__file__, 'rb') as f:
        probe_hash = hashlib.sha1(f.read()).hexdigest()[:10]
    key = '-'.join([torch.__version__, mmcv.__version__, mmengine.__version__,
                    mmdet.__version__, mmseg.__version__, probe_hash])
    if getattr(request.config, 'cache', None) is not None:
        cache = request.config.cache.mkdir('mmdysample-upstream-equivalence')
    else:  # pytest -p no:cacheprovider: no cache across runs
        cache = tmp_path_factory.mktemp('upstream-equivalence-cache')
    upstream_path = cache / f'upstream-{key}.pt'
    plugin_path = tmp_path_factory.mktemp('upstream-equivalence') / 'plugin.pt'
    upstream = None
    if not upstream_path.exists():
        partial = upstream_path.with_suffix(f'.{os.getpid()}.partial')
        upstream = subprocess.Popen([sys.executable, probe.__file__, str(partial)],
                                    env=dict(os.environ, OMP_NUM_THREADS='1'),
                                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    plugin = forked_runs.finish(forked_runs.start(probe.record_plugin_side, str(plugin_path)),
                                timeout=900)
    assert plugin.returncode == 0, f'plugin side failed:\n{plugin.stderr[-4000:]}'
    if upstream is not None:
        output, _ = upstream.communicate(timeout=900)
        assert upstream.returncode == 0, f'upstream side failed:\n{output[-4000:]}'
        os.replace(partial, upstream_path)
    return (torch.load(upstream_path, weights_only=False),
            torch.load(plugin_path, weights_only=False))


# Settings shared by several test folders; each folder's conftest turns on the ones it needs
# with an autouse fixture that requests them.
@pytest.fixture
def one_intra_op_thread():
    """Run the test with one intra-op thread, then restore the previous setting (a test may
    set another count; it is restored too). The models of these tests are tiny: extra OpenMP
    threads bring no speed, and on a busy 2-core machine their spin-waiting made a tiny
    MaskFormer step 20x slower (6.5 s vs 0.35 s)."""
    import torch
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture
def mmdet_default_scope():
    """Build in mmdet's scope whatever scope earlier tests left current (a test of another
    folder can leave mmseg's or mmengine's, and which tests ran before depends on how
    pytest-xdist shared them out)."""
    from mmengine.registry import DefaultScope
    with DefaultScope.overwrite_default_scope('mmdet'):
        yield


@pytest.fixture
def mmseg_default_scope():
    """Build in mmseg's scope whatever scope earlier tests (mmdet's) left current."""
    from mmengine.registry import DefaultScope
    with DefaultScope.overwrite_default_scope('mmseg'):
        yield
