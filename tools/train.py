"""Train a detector (mmdet config) or a segmentor (mmseg config) with mmdysample loaded.

The command line is mmdetection's ``tools/train.py``::

    python tools/train.py CONFIG [--work-dir DIR] [--resume [CHECKPOINT]] [--amp]
        [--auto-scale-lr] [--cfg-options KEY=VALUE ...] [--launcher {none,pytorch,slurm,mpi}]

Differences from upstream, all additive:

* ``mmdysample`` is imported first (its compatibility fixes for current PyTorch, and its
  upsamplers and patched necks/heads in the registries), so configs need no
  ``custom_imports``;
* the registries of the config's ``default_scope`` (``mmdet``, ``mmseg`` or ``mmpretrain``)
  are populated, so one script serves detection and segmentation configs;
* before the runner is built, the local dataset files the config reads (``data_root``,
  annotation files, image/label directories, evaluator annotation files) are checked, and
  a missing one stops the run at once with its path and how to prepare the dataset;
* checkpoints carry the generator states of every process (``RandomStateHook`` is added
  to ``custom_hooks``); SIGTERM/SIGUSR1 make the run write a checkpoint at the end of the
  current iteration and exit with status 128 + signal (``PreemptionCheckpointHook``);
  ``--resume`` without a path takes the newest checkpoint of the work directory that loads
  (skipping unreadable ones with a warning), reusing its seed when ``randomness.seed`` is
  unset: a resumed run continues bit for bit (docs/training.md, "Preemption and resume");
* ``--amp`` without an accelerator stops with a clear message instead of mmengine's
  assertion deep in the runner;
* a config path that is not a file stops at once with one line (the path, and the configs
  of this checkout with close names) and exit status 2, as a usage error.

The helpers it shares with the other tools live in ``tools/tool_helpers.py``.
"""
import argparse
import os.path as osp
import sys
from typing import Optional, Sequence

TOOLS_DIR = osp.dirname(osp.abspath(__file__))
if TOOLS_DIR not in sys.path:  # loaded by path rather than run as a script
    sys.path.append(TOOLS_DIR)
import tool_helpers  # noqa: E402


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Train a detector or a segmentor')
    parser.add_argument('config', help='train config file path')
    parser.add_argument('--work-dir', help='the dir to save logs and models')
    parser.add_argument('--amp', action='store_true', default=False,
                        help='enable automatic-mixed-precision training (needs a GPU)')
    parser.add_argument('--auto-scale-lr', action='store_true',
                        help='enable automatically scaling LR (needs auto_scale_lr in config)')
    parser.add_argument('--resume', nargs='?', type=str, const='auto',
                        help='resume from this checkpoint; without a path, from the newest '
                        'checkpoint in the work directory that loads (unreadable ones are '
                        'skipped with a warning; none at all: start anew)')
    tool_helpers.add_runner_arguments(parser)
    return tool_helpers.parse_runner_args(parser, argv)


def _enable_amp(cfg) -> None:
    from mmengine.device import get_device
    from mmengine.logging import print_log

    if get_device() == 'cpu':
        raise SystemExit('--amp needs a GPU (or NPU/MLU/MUSA): mmengine\'s AmpOptimWrapper '
                         'does not run on CPU; drop --amp')
    optim_wrapper_type = cfg.optim_wrapper.get('type', 'OptimWrapper')
    if optim_wrapper_type == 'AmpOptimWrapper':
        print_log('AMP training is already enabled in the config.', logger='current')
        return
    if optim_wrapper_type != 'OptimWrapper':
        raise SystemExit(f'--amp works with optim_wrapper.type=\'OptimWrapper\', the config '
                         f'has {optim_wrapper_type!r}')
    cfg.optim_wrapper.type = 'AmpOptimWrapper'
    cfg.optim_wrapper.loss_scale = 'dynamic'


def main(argv: Optional[Sequence[str]] = None):
    args = parse_args(argv)
    tool_helpers.exit_if_missing(args.config, 'config', 'tools/train.py',
                                 tool_helpers.repo_config_files())
    tool_helpers.import_mmdysample()
    cfg, _ = tool_helpers.load_config(args)

    if args.amp:
        _enable_amp(cfg)

    if args.auto_scale_lr:
        if 'auto_scale_lr' in cfg and 'enable' in cfg.auto_scale_lr \
                and 'base_batch_size' in cfg.auto_scale_lr:
            cfg.auto_scale_lr.enable = True
        else:
            raise SystemExit('--auto-scale-lr needs auto_scale_lr=dict(enable=..., '
                             'base_batch_size=...) in the config')

    from mmdysample.engine import (CheckpointError, PreemptionCheckpointHook, configure_resume,
                                   ensure_custom_hooks)

    # Generator states in every checkpoint, so that --resume continues bit for bit, and a
    # checkpoint at SIGTERM/SIGUSR1 (preemption, time limit).
    ensure_custom_hooks(cfg)
    # --resume PATH: that checkpoint; --resume: the newest checkpoint in work_dir that loads.
    try:
        configure_resume(cfg, args.resume)
    except CheckpointError as error:
        raise SystemExit(f'--resume: {error}') from None

    tool_helpers.check_datasets(cfg, tool_helpers.training_phases(cfg))

    runner = tool_helpers.build_runner(cfg)
    runner.train()
    stopped_by = [hook.stopped_by for hook in runner.hooks
                  if isinstance(hook, PreemptionCheckpointHook) and hook.stopped_by]
    # 128 + signal: the scheduler sees an interrupted run, not a finished one.
    exit_status = 128 + stopped_by[0] if stopped_by else 0
    tool_helpers.finish_distributed_run(runner, exit_status)
    if exit_status:
        raise SystemExit(exit_status)


if __name__ == '__main__':
    main()
