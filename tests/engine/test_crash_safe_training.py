"""Training that survives being killed (issue 18), with mmengine's real Runner.

The trainings run in child processes forked from one server that imported torch, mmengine
and mmdysample once (``multiprocessing``'s forkserver, tests/forked_runs.py), so that
killing and restarting a training costs a fork, not an interpreter start.
"""
import glob
import os
import os.path as osp
import random
import signal
import time

import pytest
import torch

import engine_training
import forked_runs
from engine_training import state_dict, tiny_config, train
from mmdysample.engine import (CheckpointError, configure_resume, find_resumable_checkpoint,
                               load_resumable_checkpoint)

pytestmark = pytest.mark.slow


MAX_ITERS = 8
KILLS = 3


@pytest.fixture(scope='module')
def processes():
    """The forkserver context (tests/forked_runs.py: the server preloads engine_training);
    the server is started, and checked, before anything is timed."""
    return forked_runs.context()


def _run(context, target, *args, timeout=300):
    process = context.Process(target=target, args=args)
    process.start()
    process.join(timeout)
    if process.is_alive():
        engine_training.kill(process)
        raise AssertionError(f'{target.__name__}{args} did not finish in {timeout} s')
    return process.exitcode


@pytest.fixture(scope='module')
def uninterrupted_run(processes, tmp_path_factory):
    """MAX_ITERS iterations with seed 0, checkpoint after each (the last two kept)."""
    work_dir = str(tmp_path_factory.mktemp('uninterrupted'))
    assert _run(processes, engine_training.train_with_auto_resume, work_dir, MAX_ITERS, 0) == 0
    return work_dir


def _assert_same_weights(a, b):
    assert a.keys() == b.keys()
    for key in a:
        assert torch.isfinite(a[key]).all(), key
        assert torch.equal(a[key], b[key]), key


def _resume_point(work_dir):
    """The iteration a restart resumes from: the newest checkpoint that loads (a kill may
    have come after a checkpoint's rename and before ``last_checkpoint`` named it)."""
    _, checkpoint = find_resumable_checkpoint(work_dir) if osp.isdir(work_dir) else (None, None)
    return checkpoint['meta']['iter'] if checkpoint else 0


def _checkpoints(work_dir):
    return sorted(osp.basename(p) for p in glob.glob(osp.join(work_dir, '*.pth')))


@pytest.mark.parametrize('seed', [0, None])
def test_sigkill_at_random_moments_then_resume_equals_uninterrupted_run(
        tmp_path, processes, uninterrupted_run, seed):
    """A run checkpointing after every iteration is SIGKILLed KILLS times at random moments
    (in iterations and checkpoint writes), restarted with auto-resume each time, and
    ends with the weights of an uninterrupted run with the same seed, bit for bit. With the
    seed unset the run draws one at its first start; the uninterrupted run is given it.

    Each kill comes a random delay (up to one iteration with its checkpoint write, as the
    uninterrupted run took it) after a random checkpoint ahead of the resume point (the
    restarted run has resumed and trains), from a timer in the training process itself
    (engine_training._KillSelfAfterCheckpoint): a kill never misses its moment on a busy
    machine, and never hits a run that has finished."""
    straight = uninterrupted_run
    killed = str(tmp_path / 'killed')
    rng = random.Random(seed)
    iteration_s = os.stat(osp.join(straight, f'iter_{MAX_ITERS}.pth')).st_mtime - \
        os.stat(osp.join(straight, f'iter_{MAX_ITERS - 1}.pth')).st_mtime
    reached, rounds = 0, []
    for _ in range(KILLS):
        target = min(reached + rng.randint(1, 2), MAX_ITERS - 1)
        assert target > reached, (target, reached)
        process = processes.Process(
            target=engine_training.train_with_auto_resume,
            args=(killed, MAX_ITERS, seed, (target, rng.uniform(0, iteration_s))))
        process.start()
        process.join(240)
        engine_training.kill(process)  # (only if the timer never fired)
        reached = _resume_point(killed)
        rounds.append((target, process.exitcode, reached))
    # every kill hit a running training, after its target checkpoint
    assert all(code == -signal.SIGKILL and target <= reached <= min(target + 1, MAX_ITERS - 1)
               for target, code, reached in rounds), (rounds, iteration_s)
    assert _run(processes, engine_training.train_with_auto_resume, killed, MAX_ITERS, seed) == 0
    final = osp.join(killed, f'iter_{MAX_ITERS}.pth')
    if seed is None:
        drawn = torch.load(final, map_location='cpu', weights_only=False)['meta']['seed']
        straight = str(tmp_path / 'straight')
        assert _run(processes, engine_training.train_with_auto_resume, straight, MAX_ITERS,
                    drawn) == 0
    _assert_same_weights(state_dict(final), state_dict(osp.join(straight, osp.basename(final))))
    for path in glob.glob(osp.join(killed, '*.pth')):  # no partial file under a .pth name
        load_resumable_checkpoint(path)
    # the temporary files of writes that were killed were removed when the run restarted
    assert not [name for name in os.listdir(killed) if name.endswith('.tmp')]


def test_kill_during_checkpoint_write_leaves_the_previous_checkpoint(tmp_path, processes):
    """SIGKILL while checkpoint 3 is being written (``max_keep_ckpts=1``, where mmengine
    removes the previous checkpoint *before* writing the next): iter_2.pth stays, intact,
    ``last_checkpoint`` names it, and a resume continues from it."""
    work_dir, marker = str(tmp_path / 'work'), str(tmp_path / 'writing')
    process = processes.Process(target=engine_training.train_and_hang_in_checkpoint_write,
                                args=(work_dir, 3, marker))
    process.start()
    deadline = time.time() + 240
    while not osp.exists(marker) and process.is_alive() and time.time() < deadline:
        time.sleep(0.05)
    assert osp.exists(marker), 'the training never reached the write of checkpoint 3'
    engine_training.kill(process)

    assert _checkpoints(work_dir) == ['iter_2.pth']
    with open(osp.join(work_dir, 'last_checkpoint')) as f:
        assert f.read().strip() == osp.join(work_dir, 'iter_2.pth')
    assert load_resumable_checkpoint(osp.join(work_dir, 'iter_2.pth'))['meta']['iter'] == 2
    path, _ = find_resumable_checkpoint(work_dir)
    assert path == osp.abspath(osp.join(work_dir, 'iter_2.pth'))


@pytest.mark.parametrize('atomic', [True, False])
def test_disk_full_during_save_keeps_previous_checkpoint_and_stops(tmp_path, processes,
                                                                   atomic):
    """The write of checkpoint 3 fails half way (file size limit: EFBIG, as ENOSPC on a full
    disk). Crash-safe: the run stops with an error naming the file, iter_2.pth is intact and
    named by last_checkpoint. Upstream (``atomic=False``) had already deleted iter_2.pth and
    leaves a truncated iter_3.pth behind: nothing to resume from."""
    work_dir, error_file = str(tmp_path / 'work'), str(tmp_path / 'error.txt')
    assert _run(processes, engine_training.train_until_writes_fail, work_dir, 3, atomic,
                error_file) == 1
    with open(error_file) as f:
        error = f.read()
    if not atomic:
        assert _checkpoints(work_dir) == ['iter_3.pth']
        with pytest.raises(CheckpointError, match='iter_3.pth cannot be loaded'):
            load_resumable_checkpoint(osp.join(work_dir, 'iter_3.pth'))
        return
    assert error.startswith('OSError: ')
    assert (f'could not write checkpoint {osp.join(work_dir, "iter_3.pth")} (File too large); '
            f'training stops, the previous checkpoint {osp.join(work_dir, "iter_2.pth")} is '
            f'intact') in error
    assert _checkpoints(work_dir) == ['iter_2.pth']
    assert not [name for name in os.listdir(work_dir) if name.endswith('.tmp')]
    with open(osp.join(work_dir, 'last_checkpoint')) as f:
        assert f.read().strip() == osp.join(work_dir, 'iter_2.pth')
    assert load_resumable_checkpoint(osp.join(work_dir, 'iter_2.pth'))['meta']['iter'] == 2


def test_resume_skips_unreadable_newest_checkpoint_with_a_warning(tmp_path, capfd):
    """Checkpoints 2 and 4; iter_4.pth truncated: auto-resume names it in a warning, resumes
    from iter_2 and reaches the uninterrupted run's iter_4 weights."""
    work_dir = tmp_path / 'work'
    train(tiny_config(work_dir, max_iters=4, interval=2, seed=None))
    expected = state_dict(work_dir / 'iter_4.pth')
    newest = work_dir / 'iter_4.pth'
    newest.write_bytes(newest.read_bytes()[:newest.stat().st_size // 2])

    cfg = tiny_config(work_dir, max_iters=4, interval=2, seed=None)
    capfd.readouterr()
    chosen = configure_resume(cfg, 'auto')
    assert chosen == str(work_dir / 'iter_2.pth')
    output = ''.join(capfd.readouterr())  # mmengine's logger prints the warning
    assert f'WARNING - Skipping {newest} for resuming: checkpoint {newest} cannot be loaded ' \
        '(truncated or corrupt?)' in output
    train(cfg)
    _assert_same_weights(state_dict(work_dir / 'iter_4.pth'), expected)


def test_explicit_corrupt_checkpoint_stops_naming_it(tmp_path):
    bad = tmp_path / 'iter_8.pth'
    bad.write_bytes(b'PK\x03\x04 not a whole checkpoint')
    cfg = tiny_config(tmp_path / 'work')
    with pytest.raises(CheckpointError, match=f'checkpoint {bad} cannot be loaded'):
        configure_resume(cfg, str(bad))
    with pytest.raises(CheckpointError, match=f'checkpoint {tmp_path}/missing.pth not found'):
        configure_resume(cfg, str(tmp_path / 'missing.pth'))
    # only unreadable checkpoints in the work dir: stop, naming each, never start anew
    work_dir = tmp_path / 'work'
    work_dir.mkdir()
    (work_dir / 'iter_1.pth').write_bytes(b'')
    with pytest.raises(CheckpointError, match=r'no checkpoint in .* can be resumed from'):
        configure_resume(tiny_config(work_dir), 'auto')


def test_first_run_with_auto_resume_starts_anew_from_load_from(tmp_path):
    cfg = tiny_config(tmp_path / 'empty')
    cfg.load_from = 'pretrained.pth'
    assert configure_resume(cfg, 'auto') is None
    assert cfg.resume is False and cfg.load_from == 'pretrained.pth'


def test_sigterm_writes_a_checkpoint_and_stops_then_resume_is_exact(tmp_path, processes):
    """SIGTERM (Slurm's preemption signal) during a run that checkpoints only at its end:
    it writes a checkpoint of the current iteration, exits with 128 + 15, and the resumed
    run ends with the uninterrupted run's weights."""
    max_iters = 24
    straight, stopped = str(tmp_path / 'straight'), str(tmp_path / 'stopped')
    assert _run(processes, engine_training.train_with_preemption_hook, straight, max_iters) == 0
    process = processes.Process(target=engine_training.train_with_preemption_hook,
                                args=(stopped, max_iters))
    process.start()
    deadline = time.time() + 240
    while not glob.glob(osp.join(stopped, '*', 'vis_data', 'scalars.json')) \
            and time.time() < deadline:  # the first iteration was logged
        time.sleep(0.02)
    os.kill(process.pid, signal.SIGTERM)
    process.join(240)
    assert process.exitcode == 128 + signal.SIGTERM
    (written, ) = _checkpoints(stopped)
    step = int(written[len('iter_'):-len('.pth')])
    assert 1 <= step < max_iters
    assert load_resumable_checkpoint(osp.join(stopped, written))['meta']['iter'] == step
    assert _run(processes, engine_training.train_with_preemption_hook, stopped, max_iters) == 0
    _assert_same_weights(state_dict(osp.join(stopped, f'iter_{max_iters}.pth')),
                         state_dict(osp.join(straight, f'iter_{max_iters}.pth')))


def test_preemption_hook_rejects_unknown_signal_names():
    from mmdysample.engine import PreemptionCheckpointHook
    with pytest.raises(ValueError, match=r"signals must name signals such as 'SIGTERM'.*"
                                         r"got 'TERM'"):
        PreemptionCheckpointHook(signals=('TERM', ))


def test_two_process_run_resumes_as_one_process(tmp_path, processes):
    """A 2-process gloo run (checkpoints at 2 and 4) resumed as 1 process runs to the end:
    the per-rank generator states cannot map onto one rank, so they are not restored and a
    warning says so (old hook: rank 0's CUDA states set on every device, failing with
    fewer GPUs)."""
    import socket
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        port = sock.getsockname()[1]
    work_dir = str(tmp_path / 'work')
    workers = [processes.Process(target=engine_training.distributed_worker,
                                 args=(rank, 2, port, work_dir, 4)) for rank in range(2)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(300)
    assert [worker.exitcode for worker in workers] == [0, 0]
    saved = torch.load(osp.join(work_dir, 'iter_4.pth'), map_location='cpu',
                       weights_only=False)['rng_states']
    assert len(saved) == 2  # one entry per rank

    assert _run(processes, engine_training.train_with_auto_resume, work_dir, 6, None) == 0
    assert load_resumable_checkpoint(osp.join(work_dir, 'iter_6.pth'))['meta']['iter'] == 6
    log = sorted(glob.glob(osp.join(work_dir, '*', '*.log')))[-1]  # the resumed run's
    assert 'holds the generator states of 2 process(es), this run has 1' in open(log).read()
