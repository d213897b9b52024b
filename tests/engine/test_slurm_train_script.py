"""tools/slurm_train.sh with stand-ins for srun and scontrol (no Slurm cluster here): the
arguments it passes, the automatic --resume, the requeue after a time-limit checkpoint."""
import os
import stat
import subprocess

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRIPT = os.path.join(REPO, 'tools', 'slurm_train.sh')


def _fake(bin_dir, name, exit_status, log):
    path = bin_dir / name
    path.write_text(f'#!/bin/sh\necho "{name} $*" >> {log}\nexit {exit_status}\n')
    path.chmod(path.stat().st_mode | stat.S_IEXEC)


def _run(tmp_path, train_status, **env):
    bin_dir, log = tmp_path / 'bin', tmp_path / 'calls.log'
    bin_dir.mkdir()
    _fake(bin_dir, 'srun', train_status, log)
    _fake(bin_dir, 'scontrol', 0, log)
    environment = dict(os.environ, PATH=f'{bin_dir}:{os.environ["PATH"]}', **env)
    environment.pop('SLURM_JOB_ID', None)
    environment.update(env)
    result = subprocess.run(['bash', SCRIPT, 'gpu', 'job', 'cfg.py', 'work', '--amp'],
                            env=environment, capture_output=True, text=True, timeout=60)
    return result, log.read_text().splitlines()


def test_resume_is_automatic_and_user_arguments_follow(tmp_path):
    result, calls = _run(tmp_path, 0)
    assert result.returncode == 0, result.stderr
    (srun, ) = calls
    assert srun.startswith('srun -p gpu --job-name=job ')
    assert srun.endswith('train.py cfg.py --work-dir=work --launcher slurm --resume --amp')
    assert '--signal' not in srun


def test_time_limit_signal_checkpoint_then_requeue(tmp_path):
    result, calls = _run(tmp_path, 138, SIGNAL_LEAD='120', SLURM_JOB_ID='42')
    assert result.returncode == 138
    srun, scontrol = calls
    assert ' --signal=USR1@120 ' in srun
    assert scontrol == 'scontrol requeue 42'


def test_failure_is_not_requeued(tmp_path):
    result, calls = _run(tmp_path, 1, SIGNAL_LEAD='120', SLURM_JOB_ID='42')
    assert result.returncode == 1
    assert len(calls) == 1  # srun only
