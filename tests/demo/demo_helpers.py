"""Helpers of the demo tests: running the tools, reading their logs and checkpoints."""
import glob
import json
import os
import os.path as osp
import socket
import subprocess
import sys

REPO_ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
TOOLS_DIR = osp.join(REPO_ROOT, 'tools')
DEMO_CONFIGS = osp.join(REPO_ROOT, 'configs', 'demo')

if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)


def load_tool(tool: str):
    """tools/<tool>.py as a module."""
    name = f'_mmdysample_tests_tools_{tool}'
    if name not in sys.modules:
        import importlib.util
        spec = importlib.util.spec_from_file_location(name, osp.join(TOOLS_DIR, f'{tool}.py'))
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


def load_demo_tool():
    """tools/demo.py as a module."""
    return load_tool('demo')


def demo_config(name: str) -> str:
    path = osp.join(DEMO_CONFIGS, name)
    assert osp.isfile(path), path
    return path


def tool_env(threads: int = 1) -> dict:
    """Environment of the tool subprocesses: this interpreter's venv first on PATH (for
    tools/dist_train.sh, which calls `python`), the checkout importable, one thread."""
    env = dict(os.environ)
    env['PATH'] = osp.dirname(sys.executable) + os.pathsep + env.get('PATH', '')
    env['PYTHONPATH'] = REPO_ROOT + (os.pathsep + env['PYTHONPATH']
                                     if env.get('PYTHONPATH') else '')
    env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads),
               PYTHONUNBUFFERED='1')
    return env


def run_tool(args, timeout=600, env=None) -> subprocess.CompletedProcess:
    return subprocess.run(args, cwd=REPO_ROOT, env=env or tool_env(), capture_output=True,
                          text=True, timeout=timeout)


def train(config: str, work_dir: str, options, extra_args=(), timeout=600):
    """``tools/train.py config --work-dir work_dir [extra] --cfg-options options``, one
    thread, in a process forked from the test process's forkserver (tests/forked_runs.py:
    torch, mmdet, mmseg and mmdysample imported once, not by every run)."""
    import forked_runs
    return forked_runs.run_tool('train', [config, '--work-dir', str(work_dir), *extra_args,
                                          '--cfg-options', *options], cwd=REPO_ROOT,
                                timeout=timeout)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


def scalars(work_dir: str, timestamp_index: int = -1):
    """(train records, validation records) of mmengine's vis_data/scalars.json of the
    ``timestamp_index``-th run in ``work_dir`` (runs sorted by start time)."""
    files = sorted(glob.glob(osp.join(str(work_dir), '*', 'vis_data', 'scalars.json')))
    assert files, f'no scalars.json under {work_dir}'
    train_records, val_records = [], []
    with open(files[timestamp_index]) as f:
        for line in f:
            if line.strip():
                record = json.loads(line)
                (train_records if 'loss' in record else val_records).append(record)
    return train_records, val_records


def load_state_dict(path: str):
    import torch
    return torch.load(path, map_location='cpu', weights_only=False)['state_dict']


def detection_options(data_root: str, batch_size: int = 2, with_val: bool = False,
                      layout: str = 'coco'):
    """cfg-options for a short deterministic demo run on the tiny data set."""
    options = load_demo_tool().data_root_options(layout, data_root) + [
        f'train_dataloader.batch_size={batch_size}', 'randomness.deterministic=True',
        'default_hooks.logger.interval=1', 'log_processor.window_size=1'
    ]
    if with_val:
        options += ['val_dataloader.batch_size=4']
    else:
        options += ['val_cfg=None', 'val_dataloader=None', 'val_evaluator=None']
    return options
