"""mmdysample.compat: mmengine checkpoints load and resume under torch's weights-only
unpickler, malicious pickles stay refused, and distributed runs work without CUDA; each fix
is applied when its module is imported and only where its problem exists."""
import http.server
import importlib
import inspect
import json
import os
import pickle
import socket
import subprocess
import sys
import textwrap
import threading
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as torch_dist
import torch.nn as nn
from mmengine.hooks import Hook
from mmengine.logging import HistoryBuffer
from mmengine.logging import history_buffer as history_buffer_module
from mmengine.model import BaseModel
from mmengine.runner import CheckpointLoader, Runner, load_checkpoint
from torch.utils.data import Dataset

import mmdysample  # noqa: F401  (applies the fixes at once: mmengine.runner is imported above)
from mmdysample import compat

TRAIN_ITERS = 3


class TinyRegressor(BaseModel):
    """y = w.x + b on 2-d inputs; loss is the mean squared error."""

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(2, 1)

    def forward(self, inputs, labels, mode='tensor'):
        outputs = self.linear(inputs).squeeze(-1)
        if mode == 'loss':
            return dict(loss=((outputs - labels)**2).mean())
        return outputs


class TinyLineDataset(Dataset):
    """8 points on y = 2 x0 - x1."""

    def __len__(self):
        return 8

    def __getitem__(self, index):
        inputs = torch.tensor([index / 8, 1.0 - index / 8])
        return dict(inputs=inputs, labels=2 * inputs[0] - inputs[1])


def build_runner(work_dir, max_iters, experiment_name, **kwargs):
    return Runner(
        model=TinyRegressor(),
        work_dir=str(work_dir),
        experiment_name=experiment_name,
        train_dataloader=dict(dataset=TinyLineDataset(),
                              sampler=dict(type='DefaultSampler', shuffle=False), batch_size=2,
                              num_workers=0, collate_fn=dict(type='default_collate')),
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.05, momentum=0.9)),
        param_scheduler=dict(type='LinearLR', start_factor=0.5, by_epoch=False, begin=0,
                             end=10),
        train_cfg=dict(by_epoch=False, max_iters=max_iters),
        default_hooks=dict(checkpoint=dict(type='CheckpointHook', interval=TRAIN_ITERS,
                                           by_epoch=False),
                           logger=dict(type='LoggerHook', interval=1)),
        randomness=dict(seed=0),
        log_level='WARNING',
        **kwargs)


def train_and_save(work_dir, experiment_name):
    """Train TRAIN_ITERS iterations; return (checkpoint path, weights, loss history)."""
    runner = build_runner(work_dir, TRAIN_ITERS, experiment_name)
    runner.train()
    weights = {k: v.clone() for k, v in runner.model.state_dict().items()}
    loss_history = runner.message_hub.get_scalar('train/loss').data[0].copy()
    return work_dir / f'iter_{TRAIN_ITERS}.pth', weights, loss_history


@pytest.fixture(scope='module')
def runner_checkpoints(tmp_path_factory):
    """Runner checkpoints in mmengine 0.10.7's own format (HistoryBuffer pickled with its
    statistics table, through builtins.getattr) and in the format written with the fix."""
    upstream_getstate = getattr(HistoryBuffer, compat._UPSTREAM_PREFIX + '__getstate__',
                                HistoryBuffer.__getstate__)
    patched_getstate = HistoryBuffer.__getstate__
    HistoryBuffer.__getstate__ = upstream_getstate
    try:
        upstream = train_and_save(tmp_path_factory.mktemp('upstream_format'), 'upstream_format')
    finally:
        HistoryBuffer.__getstate__ = patched_getstate
    fixed = train_and_save(tmp_path_factory.mktemp('fixed_format'), 'fixed_format')
    return dict(upstream=upstream, fixed=fixed)


RUNNER_CHECKPOINT_GLOBALS = {
    'numpy.ndarray', 'numpy.dtype', 'numpy._core.multiarray._reconstruct',
    'numpy._core.multiarray.scalar', 'mmengine.logging.history_buffer.HistoryBuffer'
}


def test_runner_checkpoints_need_exactly_the_listed_globals(runner_checkpoints):
    upstream_path = runner_checkpoints['upstream'][0]
    fixed_path = runner_checkpoints['fixed'][0]
    # NumPy 1.x writes numpy.core.multiarray.*, NumPy 2 numpy._core.multiarray.*
    numpy_core = np.zeros(1).__reduce__()[0].__module__.rsplit('.', 1)[0]
    expected = {name.replace('numpy._core', numpy_core) for name in RUNNER_CHECKPOINT_GLOBALS}
    # torch's default allow-list hides the globals it already accepts.
    assert set(torch.serialization.get_unsafe_globals_in_checkpoint(upstream_path)) == \
        expected | {'builtins.getattr'}
    assert set(torch.serialization.get_unsafe_globals_in_checkpoint(fixed_path)) == expected


@pytest.mark.parametrize('checkpoint_format', ['upstream', 'fixed'])
def test_load_checkpoint_restores_runner_checkpoint(runner_checkpoints, checkpoint_format):
    path, weights, loss_history = runner_checkpoints[checkpoint_format]
    model = TinyRegressor()
    checkpoint = load_checkpoint(model, str(path), map_location='cpu')
    for name, value in model.state_dict().items():
        torch.testing.assert_close(value, weights[name], rtol=0, atol=0)
    assert checkpoint['meta']['iter'] == TRAIN_ITERS
    assert isinstance(checkpoint['message_hub']['runtime_info']['eta'], np.floating)
    loaded_loss = checkpoint['message_hub']['log_scalars']['train/loss']
    np.testing.assert_array_equal(loaded_loss.data[0], loss_history)
    assert loaded_loss.mean() == pytest.approx(loss_history.mean())
    # the upstream-format file carries the statistics table; it resolves to the real methods
    assert HistoryBuffer._statistics_methods['mean'] is HistoryBuffer.__dict__['mean']


def test_checkpoint_globals_do_not_leak_out_of_mmengine_loading(runner_checkpoints):
    path = runner_checkpoints['upstream'][0]
    before = set(torch.serialization.get_safe_globals())
    CheckpointLoader.load_checkpoint(str(path))
    assert set(torch.serialization.get_safe_globals()) == before
    with pytest.raises(pickle.UnpicklingError, match='HistoryBuffer|numpy'):
        torch.load(path)


def test_user_allow_list_survives_an_mmengine_load(runner_checkpoints):
    # torch's own safe_globals context would remove on exit what the user had added before.
    torch.serialization.add_safe_globals([np.ndarray])
    try:
        CheckpointLoader.load_checkpoint(str(runner_checkpoints['fixed'][0]))
        assert np.ndarray in torch.serialization.get_safe_globals()
    finally:
        remaining = [g for g in torch.serialization.get_safe_globals() if g is not np.ndarray]
        torch.serialization.clear_safe_globals()
        torch.serialization.add_safe_globals(remaining)


class RecordStateBeforeTrain(Hook):
    """Records what the runner holds right after resuming (before the first new iteration)."""

    def before_train(self, runner):
        self.iter = runner.iter
        self.weights = {k: v.clone() for k, v in runner.model.state_dict().items()}
        self.loss_history = runner.message_hub.get_scalar('train/loss').data[0].copy()
        self.momentum_buffers = [
            state['momentum_buffer'].clone()
            for state in runner.optim_wrapper.optimizer.state.values()
        ]
        self.scheduler_last_step = runner.param_schedulers[0].last_step


@pytest.mark.parametrize('checkpoint_format', ['upstream', 'fixed'])
def test_runner_resumes_from_runner_checkpoint(runner_checkpoints, tmp_path, checkpoint_format):
    path, weights, loss_history = runner_checkpoints[checkpoint_format]
    saved = torch.load(path, weights_only=False)  # trusted: written by this test
    recorder = RecordStateBeforeTrain()
    runner = build_runner(tmp_path, TRAIN_ITERS + 1, f'resume_{checkpoint_format}', resume=True,
                          load_from=str(path), custom_hooks=[recorder])
    runner.train()
    assert recorder.iter == TRAIN_ITERS
    for name, value in recorder.weights.items():
        torch.testing.assert_close(value, weights[name], rtol=0, atol=0)
    np.testing.assert_array_equal(recorder.loss_history, loss_history)
    saved_buffers = [s['momentum_buffer'] for s in saved['optimizer']['state'].values()]
    assert len(recorder.momentum_buffers) == len(saved_buffers) == 2
    for resumed, expected in zip(recorder.momentum_buffers, saved_buffers):
        torch.testing.assert_close(resumed, expected, rtol=0, atol=0)
    assert recorder.scheduler_last_step == TRAIN_ITERS
    assert runner.iter == TRAIN_ITERS + 1


# ----------------------------------------------------------------------------- refusals
class PickledCall:
    """Pickles as ``function(*args)``, optionally followed by ``BUILD state`` and
    ``SETITEMS dictitems`` -- the building blocks of a hostile pickle."""

    def __init__(self, function, args, state=None, dictitems=None):
        self.function, self.args, self.state, self.dictitems = function, args, state, dictitems

    def __reduce__(self):
        return (self.function, self.args, self.state, None,
                iter(self.dictitems) if self.dictitems is not None else None)


def touch_command(marker):
    return f'touch {marker}'


MALICIOUS_CALLS = {
    'os.system': lambda marker: PickledCall(os.system, (touch_command(marker), )),
    'subprocess.call': lambda marker: PickledCall(subprocess.call, (['touch', str(marker)], )),
    'builtins.exec': lambda marker: PickledCall(exec, (f'open({str(marker)!r}, "w").close()', )),
    'builtins.eval': lambda marker: PickledCall(
        eval, (f'__import__("pathlib").Path({str(marker)!r}).touch()', )),
}


@pytest.mark.parametrize('callable_name', sorted(MALICIOUS_CALLS))
@pytest.mark.parametrize('entry_point', ['load_checkpoint', 'Runner.load_checkpoint'])
def test_pickle_calling_arbitrary_callable_is_refused(tmp_path, callable_name, entry_point):
    marker = tmp_path / 'executed'
    path = tmp_path / 'malicious.pth'
    torch.save(dict(state_dict={}, meta=MALICIOUS_CALLS[callable_name](marker)), path)
    with pytest.raises(pickle.UnpicklingError):
        if entry_point == 'load_checkpoint':
            load_checkpoint(TinyRegressor(), str(path))
        else:
            build_runner(tmp_path / 'work', 1, f'refuse_{callable_name}').load_checkpoint(
                str(path))
    assert not marker.exists()


def test_getattr_gadget_chain_is_refused(tmp_path):
    """With the builtin getattr allow-listed this pickle runs a shell command: it fetches
    ``eval`` through ``getattr(getattr, '__self__')``, plants it as ``np.array`` in
    mmengine.logging.history_buffer's globals (``getattr(HistoryBuffer.min,
    '__globals__')`` + SETITEMS), then calls the allow-listed ``HistoryBuffer(code, ...)``
    whose ``__init__`` runs ``np.array(code)``."""
    marker = tmp_path / 'executed'
    code = f'__import__("pathlib").Path({str(marker)!r}).touch()'
    builtins_module = PickledCall(getattr, (getattr, '__self__'))
    fake_numpy = PickledCall(HistoryBuffer, (), state=dict(
        array=PickledCall(getattr, (builtins_module, 'eval'))))
    plant = PickledCall(getattr, (HistoryBuffer.min, '__globals__'),
                        dictitems=[('np', fake_numpy)])
    trigger = PickledCall(HistoryBuffer, (code, '0' * len(code)))
    path = tmp_path / 'gadget.pth'
    torch.save(dict(state_dict={}, meta=[plant, trigger]), path)
    with pytest.raises(pickle.UnpicklingError, match='refusing getattr'):
        CheckpointLoader.load_checkpoint(str(path))
    assert not marker.exists()
    assert history_buffer_module.np is np


@pytest.mark.parametrize('owner, name', [
    (getattr, '__self__'),
    (HistoryBuffer, '__init__'),
    (HistoryBuffer, 'register_statistics'),
    (HistoryBuffer, '_statistics_methods'),
    (type('HistoryBufferSubclass', (HistoryBuffer, ), {}), 'min'),
    (os, 'system'),
])
def test_statistic_lookup_refuses_everything_but_the_four_statistics(owner, name):
    with pytest.raises(pickle.UnpicklingError, match='refusing getattr'):
        compat.history_buffer_statistic_lookup(owner, name)


def test_statistic_lookup_answers_the_four_statistics():
    for name in ('min', 'max', 'mean', 'current'):
        assert compat.history_buffer_statistic_lookup(HistoryBuffer, name) \
            is HistoryBuffer.__dict__[name]


def test_pickled_getattr_on_other_objects_is_refused(tmp_path):
    for index, call in enumerate([
            PickledCall(getattr, (HistoryBuffer, 'register_statistics')),
            PickledCall(getattr, (torch._utils._rebuild_tensor_v2, '__globals__')),
            PickledCall(getattr, (PickledCall(getattr, (getattr, '__self__')), 'system')),
    ]):
        path = tmp_path / f'getattr_{index}.pth'
        torch.save(dict(meta=call), path)
        with pytest.raises(pickle.UnpicklingError, match='refusing getattr'):
            CheckpointLoader.load_checkpoint(str(path))


def test_checkpoint_cannot_change_the_statistics_methods(tmp_path):
    """A pickled HistoryBuffer whose state (a) names a statistics table that swaps ``mean``
    for ``max`` and adds a new name, and (b) carries ``_statistics_methods`` as an instance
    key shadowing the class table: the loaded buffer computes the real statistics, the
    class-wide table is unchanged, the unknown key is dropped with a warning."""
    buffer = HistoryBuffer([1.0, 3.0], [1, 1])
    swapped = dict(mean=HistoryBuffer.max, injected=HistoryBuffer.max)
    state = dict(buffer.__dict__, statistics_methods=swapped, _statistics_methods=swapped)
    path = tmp_path / 'swapped_statistics.pth'
    torch.save(dict(meta=PickledCall(HistoryBuffer, (), state=state)), path)
    registered = dict(HistoryBuffer._statistics_methods)
    try:
        with pytest.warns(UserWarning, match=r"ignoring unknown state keys \['_statistics_"):
            loaded = CheckpointLoader.load_checkpoint(str(path))['meta']
        assert HistoryBuffer._statistics_methods == registered  # no name added or swapped
        assert '_statistics_methods' not in loaded.__dict__
        assert loaded.statistics('mean') == 2.0 and loaded.mean() == 2.0
        assert loaded.statistics('max') == 3.0
        np.testing.assert_array_equal(loaded.data[0], [1.0, 3.0])
        with pytest.raises(KeyError):
            loaded.statistics('injected')
    finally:
        HistoryBuffer._statistics_methods.clear()
        HistoryBuffer._statistics_methods.update(registered)


# ------------------------------------------------------------------------- http scheme
class QuietHandler(http.server.SimpleHTTPRequestHandler):

    def log_message(self, *args):
        pass


@pytest.fixture
def http_root(tmp_path, monkeypatch):
    """Serve ``tmp_path / 'served'`` on localhost; torch hub caches under tmp_path."""
    served = tmp_path / 'served'
    served.mkdir()
    monkeypatch.setattr(torch.hub, '_hub_dir', str(tmp_path / 'hub'))
    server = http.server.ThreadingHTTPServer(('127.0.0.1', 0),
                                             partial(QuietHandler, directory=str(served)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield served, f'http://127.0.0.1:{server.server_address[1]}'
    server.shutdown()
    server.server_close()


def test_http_checkpoint_loads_weights_only(runner_checkpoints, http_root):
    served, url = http_root
    path, weights, _ = runner_checkpoints['upstream']
    (served / 'runner.pth').write_bytes(path.read_bytes())
    model = TinyRegressor()
    load_checkpoint(model, f'{url}/runner.pth')
    torch.testing.assert_close(model.linear.weight, weights['linear.weight'], rtol=0, atol=0)

    marker = served.parent / 'executed'
    torch.save(dict(meta=PickledCall(os.system, (touch_command(marker), ))),
               served / 'malicious.pth')
    # mmengine downloads through torch.hub.load_state_dict_from_url(weights_only=False)
    with pytest.raises(pickle.UnpicklingError):
        load_checkpoint(TinyRegressor(), f'{url}/malicious.pth')
    assert not marker.exists()


# ------------------------------------------------------------------------ idempotence
def test_applying_twice_wraps_nothing_twice(runner_checkpoints):
    importlib.reload(compat)
    compat.apply()
    from mmengine.dist import utils as dist_utils
    from mmengine.model.wrappers import MMDistributedDataParallel
    from mmengine.runner import checkpoint as checkpoint_module
    wrapped = [
        CheckpointLoader.__dict__['load_checkpoint'].__func__, checkpoint_module.load_url,
        checkpoint_module.load_from_local, checkpoint_module.load_from_http,
        dist_utils._init_dist_pytorch, MMDistributedDataParallel.__init__,
        *CheckpointLoader._schemes.values()
    ]
    for function in wrapped:
        original = function.__mmdysample_original__
        assert not hasattr(original, '__mmdysample_original__'), function
    assert getattr(HistoryBuffer, compat._UPSTREAM_PREFIX + '__getstate__').__module__ \
        == 'mmengine.logging.history_buffer'
    assert CheckpointLoader.load_checkpoint(str(runner_checkpoints['upstream'][0]))['meta'][
        'iter'] == TRAIN_ITERS


# ------------------------------------------------------------------ distributed on CPU
def free_port():
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


@pytest.mark.skipif(torch.cuda.is_available(), reason='the fix only acts without CUDA')
def test_pytorch_launcher_and_ddp_wrapper_work_without_cuda(monkeypatch):
    from mmengine.dist import utils as dist_utils
    from mmengine.model.wrappers import MMDistributedDataParallel
    for name, value in dict(RANK='0', LOCAL_RANK='0', WORLD_SIZE='1', MASTER_ADDR='127.0.0.1',
                            MASTER_PORT=str(free_port())).items():
        monkeypatch.setenv(name, value)
    # what mmengine.dist.init_dist('pytorch') calls; the configs' default backend is nccl
    dist_utils._init_dist_pytorch('nccl')
    try:
        assert torch_dist.get_backend() == 'gloo'
        module = nn.Linear(2, 1)
        # Runner.wrap_model passes device_ids=[LOCAL_RANK]
        wrapped = MMDistributedDataParallel(module=module, device_ids=[0],
                                            broadcast_buffers=False)
        inputs = torch.ones(3, 2)
        torch.testing.assert_close(wrapped(inputs), module(inputs))
    finally:
        torch_dist.destroy_process_group()


# --------------------------------------------------------------- torchvision:// names
@pytest.mark.skipif(compat.torchvision_importable(), reason='torchvision imports here')
def test_torchvision_names_resolve_without_torchvision(monkeypatch):
    from mmengine.runner import checkpoint as checkpoint_module
    upstream = checkpoint_module.get_torchvision_models.__mmdysample_original__
    with pytest.raises(ImportError, match='torchvision'):
        upstream()
    requested = []
    monkeypatch.setattr(checkpoint_module, 'load_from_http',
                        lambda url, map_location=None: requested.append(url) or {})
    CheckpointLoader.load_checkpoint('torchvision://resnet50')  # R50 detectors' init_cfg
    assert requested == ['https://download.pytorch.org/models/resnet50-0676ba61.pth']


# -------------------------------------------------------- each fix only where it is needed
def test_probes_see_the_problems_of_upstream(monkeypatch):
    """The probes on mmengine 0.10.7's own HistoryBuffer methods and torch 2.13's defaults;
    the probes leave the class-wide statistics table as it was."""
    upstream = {name: getattr(HistoryBuffer, compat._UPSTREAM_PREFIX + name)
                for name in ('__getstate__', '__setstate__')}
    statistics = dict(HistoryBuffer._statistics_methods)
    for name, method in upstream.items():
        monkeypatch.setattr(HistoryBuffer, name, method)
    assert compat.history_buffer_pickles_statistics()
    assert compat.history_buffer_setstate_changes_statistics()
    assert HistoryBuffer._statistics_methods == statistics
    monkeypatch.undo()
    assert not compat.history_buffer_pickles_statistics()
    assert not compat.history_buffer_setstate_changes_statistics()

    assert compat.mmengine_checkpoints_fail_to_load()
    monkeypatch.setenv('TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD', '1')
    assert not compat.mmengine_checkpoints_fail_to_load()

    assert compat.load_url_unpickles_everything(torch.hub.load_state_dict_from_url)
    assert not compat.load_url_unpickles_everything(
        lambda url, model_dir=None, weights_only=True: None)
    assert not compat.load_url_unpickles_everything(lambda url, model_dir=None: None)


def test_torchvision_probe(tmp_path, monkeypatch):
    monkeypatch.delitem(sys.modules, 'torchvision', raising=False)
    monkeypatch.syspath_prepend(str(tmp_path))
    package = tmp_path / 'torchvision'
    package.mkdir()
    # installed but broken beside this torch, as PyPI's torchvision beside a CPU torch build
    (package / '__init__.py').write_text('raise RuntimeError("operator torchvision::nms '
                                         'does not exist")\n')
    importlib.invalidate_caches()
    assert not compat.torchvision_importable()
    (package / '__init__.py').write_text('__version__ = "0.99.0"\n')
    assert compat.torchvision_importable()
    assert compat.torchvision_importable()  # imported now: answered from sys.modules
    monkeypatch.delitem(sys.modules, 'torchvision')
    (package / '__init__.py').unlink()
    package.rmdir()
    importlib.invalidate_caches()
    assert not compat.torchvision_importable()  # not installed


def _fix_status():
    """Which fixes are applied in this interpreter (imports mmengine's runner)."""
    import mmengine.runner  # noqa: F401
    from mmengine.dist import utils as dist_utils
    from mmengine.logging import HistoryBuffer
    from mmengine.model.wrappers import distributed
    from mmengine.runner import checkpoint

    def wrapped(function):
        return hasattr(function, '__mmdysample_original__')

    return dict(
        checkpoint_loaders=[wrapped(checkpoint.CheckpointLoader.load_checkpoint.__func__),
                            wrapped(checkpoint.load_from_local)],
        http_weights_only=wrapped(checkpoint.load_url),
        history_buffer=[HistoryBuffer.__getstate__.__module__ == 'mmdysample.compat',
                        HistoryBuffer.__setstate__.__module__ == 'mmdysample.compat'],
        torchvision_urls=wrapped(checkpoint.get_torchvision_models),
        dist_launchers=wrapped(dist_utils._init_dist_pytorch),
        ddp_cpu_modules=wrapped(distributed.MMDistributedDataParallel.__init__))


EVERY_FIX = dict(checkpoint_loaders=[True, True], http_weights_only=True,
                 history_buffer=[True, True], torchvision_urls=True, dist_launchers=True,
                 ddp_cpu_modules=True)


@pytest.mark.skipif(torch.cuda.is_available() or compat.torchvision_importable(),
                    reason='this machine lacks torchvision and CUDA; elsewhere see below')
def test_every_fix_is_applied_where_every_problem_exists():
    """This process: torch 2.13 loads weights-only, mmengine 0.10.7's HistoryBuffer, no
    torchvision, no accelerator (mmengine imported before mmdysample, at the top)."""
    assert _fix_status() == EVERY_FIX


# A fresh interpreter that simulates upstream fixes (argv[2], comma-separated), imports
# mmdysample and mmengine's runner in the order argv[1] ('hook': mmdysample first, the fixes
# run when mmengine's modules are imported; 'eager': mmengine first, the fixes run at
# `import mmdysample`) and prints _fix_status().
_SIMULATED_UPSTREAM = '''
import json, sys
order, simulated = sys.argv[1], set(sys.argv[2].split(','))
if 'history_buffer' in simulated:  # an mmengine whose HistoryBuffer pickles only its state
    from mmengine.logging import HistoryBuffer
    KEYS = ('max_length', '_log_history', '_count_history')
    def getstate(self):
        return {key: self.__dict__[key] for key in KEYS}
    def setstate(self, state):
        self._set_default_statistics()
        self.__dict__.update({key: state[key] for key in KEYS})
    HistoryBuffer.__getstate__, HistoryBuffer.__setstate__ = getstate, setstate
if 'accelerator' in simulated:
    import torch
    torch.cuda.is_available = lambda: True
if order == 'eager':
    import mmengine.runner
import mmdysample
'''


@pytest.mark.slow
def test_each_fix_is_skipped_where_upstream_is_fixed(tmp_path):
    """Two fresh interpreters, side by side: an mmengine whose HistoryBuffer pickles cleanly
    and an importable torchvision (the other problems remain: those fixes still apply), and
    upstream fixed everywhere (also ``torch.load`` not weights-only by default, an
    accelerator): nothing is replaced."""
    fake_torchvision = tmp_path / 'site' / 'torchvision'
    fake_torchvision.mkdir(parents=True)
    (fake_torchvision / '__init__.py').write_text('__version__ = "0.99.0"\n')
    script = (textwrap.dedent(_SIMULATED_UPSTREAM) + textwrap.dedent(
        inspect.getsource(_fix_status)) + 'print(json.dumps(_fix_status()))\n')
    repo = str(Path(__file__).resolve().parents[1])

    def start(order, simulated, weights_only_default=True):
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([repo, str(tmp_path / 'site')]))
        env.pop('TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD', None)
        if not weights_only_default:
            env['TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD'] = '1'
        return subprocess.Popen([sys.executable, '-c', script, order, ','.join(simulated)],
                                env=env, cwd=tmp_path, text=True, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)

    runs = dict(clean_history_buffer=start('hook', ['history_buffer']),
                fixed=start('eager', ['history_buffer', 'accelerator'],
                            weights_only_default=False))
    status = {}
    for name, proc in runs.items():
        out, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err
        status[name] = json.loads(out.strip().splitlines()[-1])
    assert status['clean_history_buffer'] == dict(EVERY_FIX, history_buffer=[False, False],
                                                  torchvision_urls=False)
    assert status['fixed'] == dict(checkpoint_loaders=[False, False], http_weights_only=False,
                                   history_buffer=[False, False], torchvision_urls=False,
                                   dist_launchers=False, ddp_cpu_modules=False)
