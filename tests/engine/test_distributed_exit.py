"""tools/tool_helpers.finish_distributed_run: a distributed worker exits with status 0 after
closing the visualizer and running the exit handlers a normal exit runs."""
import os
import subprocess
import sys
import textwrap

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

WORKER = textwrap.dedent('''
    import atexit, os, sys
    sys.path.append(os.path.join({repo!r}, 'tools'))
    import tool_helpers
    import torch.distributed as dist
    os.environ.update(MASTER_ADDR='127.0.0.1', MASTER_PORT='0', RANK='0', WORLD_SIZE='1')
    dist.init_process_group('gloo')

    class Visualizer:  # stands for mmengine's, whose backends flush on close
        def close(self):
            open(os.path.join({out!r}, 'visualizer_closed'), 'w').close()

    class Runner:
        hooks = []  # no LoggerHook: nothing else closes the visualizer
        visualizer = Visualizer()

    # e.g. wandb's and mlflow's final upload, TensorBoard's flush, logging.shutdown
    atexit.register(lambda: open(os.path.join({out!r}, 'atexit_ran'), 'w').close())
    tool_helpers.finish_distributed_run(Runner())
    print('finish_distributed_run returned')
    sys.exit(3)
''')


@pytest.mark.slow
def test_distributed_worker_runs_exit_handlers_and_exits_zero(tmp_path):
    script = tmp_path / 'worker.py'
    script.write_text(WORKER.format(repo=REPO, out=str(tmp_path)))
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                            timeout=300, env=dict(os.environ, OMP_NUM_THREADS='1'))
    assert result.returncode == 0, result.stdout + result.stderr
    assert 'finish_distributed_run returned' not in result.stdout
    assert (tmp_path / 'visualizer_closed').exists()
    assert (tmp_path / 'atexit_ran').exists()
