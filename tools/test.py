"""Test (and evaluate) a detector (mmdet config) or a segmentor (mmseg config) checkpoint
with mmdysample loaded.

The command line is mmdetection's ``tools/test.py``::

    python tools/test.py CONFIG CHECKPOINT [--work-dir DIR] [--out RESULTS.pkl] [--show]
        [--show-dir DIR] [--wait-time SECONDS] [--tta] [--cfg-options KEY=VALUE ...]
        [--launcher {none,pytorch,slurm,mpi}]

As in ``tools/train.py``: mmdysample is imported first, the registries of the config's
``default_scope`` are populated, and missing local test data stop the run at once. A config
or checkpoint path that is not a file stops it before anything is imported, with one line
(the path, and files of close names: configs of this checkout, checkpoints in the same
folder) and exit status 2.
``--out`` means what it means in the upstream tool of the config's scope: for mmdet (and
mmpretrain) a ``.pkl`` file of raw predictions (mmdet's ``DumpDetResults`` / mmengine's
``DumpResults``); for mmseg a directory where the metric writes the predicted label PNGs
(``test_evaluator.output_dir``, ``keep_results=True``), as mmseg's ``tools/test.py`` does.
``--show-dir`` saves painted predictions (mmdet: under ``work_dir/<timestamp>/DIR``;
mmseg: the visualizer's ``save_dir``). ``--tta`` uses the config's ``tta_model`` /
``tta_pipeline``; for detection configs without them, a horizontal-flip TTA as mmdet's.
"""
import argparse
import os.path as osp
import sys
import warnings
from copy import deepcopy
from typing import Optional, Sequence

TOOLS_DIR = osp.dirname(osp.abspath(__file__))
if TOOLS_DIR not in sys.path:  # loaded by path rather than run as a script
    sys.path.append(TOOLS_DIR)
import tool_helpers  # noqa: E402


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Test (and evaluate) a detector or segmentor')
    parser.add_argument('config', help='test config file path')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument('--work-dir',
                        help='the directory to save the file containing evaluation metrics')
    parser.add_argument('--out', type=str,
                        help='mmdet configs: pickle file (.pkl) to dump the predictions to; '
                        'mmseg configs: directory to save the predicted label maps in')
    parser.add_argument('--show', action='store_true', help='show prediction results')
    parser.add_argument('--show-dir',
                        help='directory where painted images will be saved (relative to '
                        'work_dir/<timestamp>/ for detection configs)')
    parser.add_argument('--wait-time', type=float, default=2, help='the interval of show (s)')
    parser.add_argument('--tta', action='store_true', help='test-time augmentation')
    tool_helpers.add_runner_arguments(parser)
    return tool_helpers.parse_runner_args(parser, argv)


def apply_out_option(cfg, out: str, scope: str):
    """Handle ``--out`` as the scope's upstream tool does.

    Returns the metric to append to the runner's test evaluator (pickle dump), or ``None``
    when ``cfg`` was changed instead (mmseg: ``test_evaluator.output_dir`` and
    ``keep_results``).

    Raises:
        SystemExit: for a pickle scope when ``out`` is not a ``.pkl``/``.pickle`` path.
    """
    if scope == 'mmseg':
        cfg.test_evaluator['output_dir'] = out
        cfg.test_evaluator['keep_results'] = True
        return None
    if not out.endswith(('.pkl', '.pickle')):
        raise SystemExit(f'--out must be a .pkl or .pickle file for {scope} configs, '
                         f'got {out!r}')
    if scope == 'mmdet':
        from mmdet.evaluation import DumpDetResults
        return DumpDetResults(out_file_path=out)
    from mmengine.evaluator import DumpResults
    return DumpResults(out_file_path=out)


def enable_visualization(cfg, args, scope: str):
    """Turn the config's visualization hook on for ``--show`` / ``--show-dir``."""
    visualization_hook = cfg.default_hooks.get('visualization') \
        if 'default_hooks' in cfg else None
    if visualization_hook is None:
        raise SystemExit('--show/--show-dir need a visualization hook in default_hooks, e.g. '
                         "visualization=dict(type='DetVisualizationHook') or "
                         "dict(type='SegVisualizationHook')")
    visualization_hook['draw'] = True
    if args.show:
        visualization_hook['show'] = True
        visualization_hook['wait_time'] = args.wait_time
    if args.show_dir:
        if scope == 'mmseg':
            cfg.visualizer['save_dir'] = args.show_dir
        else:
            visualization_hook['test_out_dir'] = args.show_dir


def enable_tta(cfg, scope: str) -> None:
    """Wrap the model in the config's ``tta_model`` and test with its ``tta_pipeline``."""
    from mmengine.config import ConfigDict

    if scope == 'mmdet':
        if 'tta_model' not in cfg:
            warnings.warn('no tta_model in the config: using DetTTAModel with NMS')
            cfg.tta_model = dict(
                type='DetTTAModel',
                tta_cfg=dict(nms=dict(type='nms', iou_threshold=0.5), max_per_img=100))
        if 'tta_pipeline' not in cfg:
            warnings.warn('no tta_pipeline in the config: using the test pipeline with and '
                          'without horizontal flip')
            test_dataset = cfg.test_dataloader.dataset
            while 'dataset' in test_dataset:
                test_dataset = test_dataset['dataset']
            cfg.tta_pipeline = deepcopy(test_dataset.pipeline)
            cfg.tta_pipeline[-1] = dict(
                type='TestTimeAug',
                transforms=[[dict(type='RandomFlip', prob=1.),
                             dict(type='RandomFlip', prob=0.)],
                            [dict(type='PackDetInputs',
                                  meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape',
                                             'scale_factor', 'flip', 'flip_direction'))]])
    elif 'tta_model' not in cfg or 'tta_pipeline' not in cfg:
        raise SystemExit('--tta needs tta_model and tta_pipeline in the config')
    cfg.model = ConfigDict(**cfg.tta_model, module=cfg.model)
    cfg.test_dataloader.dataset.pipeline = cfg.tta_pipeline


def main(argv: Optional[Sequence[str]] = None):
    args = parse_args(argv)
    tool_helpers.exit_if_missing(args.config, 'config', 'tools/test.py',
                                 tool_helpers.repo_config_files())
    tool_helpers.exit_if_missing(args.checkpoint, 'checkpoint', 'tools/test.py',
                                 tool_helpers.checkpoint_files_near(args.checkpoint))
    tool_helpers.import_mmdysample()
    cfg, scope = tool_helpers.load_config(args)
    cfg.load_from = args.checkpoint

    if args.show or args.show_dir:
        enable_visualization(cfg, args, scope)
    if args.tta:
        enable_tta(cfg, scope)

    dump_metric = None
    if args.out is not None:
        dump_metric = apply_out_option(cfg, args.out, scope)

    tool_helpers.check_datasets(cfg, ['test'])
    runner = tool_helpers.build_runner(cfg)

    if dump_metric is not None:
        runner.test_evaluator.metrics.append(dump_metric)

    runner.test()
    tool_helpers.finish_distributed_run(runner)


if __name__ == '__main__':
    main()
