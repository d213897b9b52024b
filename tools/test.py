"""Test (and evaluate) a detector (mmdet config) or a segmentor (mmseg config) checkpoint
with mmdysample loaded.

The command line is mmdetection's ``tools/test.py``::

    python tools/test.py CONFIG CHECKPOINT [--work-dir DIR] [--out RESULTS.pkl] [--show]
        [--show-dir DIR] [--wait-time SECONDS] [--tta] [--cfg-options KEY=VALUE ...]
        [--launcher {none,pytorch,slurm,mpi}]

As in ``tools/train.py``: mmdysample is imported first, the registries of the config's
``default_scope`` are populated, and missing local test data stop the run at once.
``--out`` means what it means in the upstream tool of the config's scope: for mmdet (and
mmpretrain) a ``.pkl`` file of raw predictions (mmdet's ``DumpDetResults`` / mmengine's
``DumpResults``); for mmseg a directory where the metric writes the predicted label PNGs
(``test_evaluator.output_dir``, ``keep_results=True``), as mmseg's ``tools/test.py`` does.
``--show-dir`` saves painted predictions (mmdet: under ``work_dir/<timestamp>/DIR``;
mmseg: the visualizer's ``save_dir``). ``--tta`` uses the config's ``tta_model`` /
``tta_pipeline``; for detection configs without them, a horizontal-flip TTA as mmdet's.
"""
import argparse
import importlib.util
import os
import os.path as osp
import sys
import warnings
from copy import deepcopy
from typing import Optional, Sequence


def _load_train_tool():
    """tools/train.py as a module (it holds the helpers both tools share)."""
    name = '_mmdysample_tools_train'
    if name not in sys.modules:
        path = osp.join(osp.dirname(osp.abspath(__file__)), 'train.py')
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


_train_tool = _load_train_tool()
check_datasets = _train_tool.check_datasets
import_mmdysample = _train_tool.import_mmdysample


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    from mmengine.config import DictAction

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
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override settings of the config, key=value pairs (nested keys '
                        'with dots, lists as key="[a,b]" or key=a,b, no white space)')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'],
                        default='none', help='job launcher')
    parser.add_argument('--tta', action='store_true', help='test-time augmentation')
    # torch.distributed.launch passes --local-rank (torch >= 2.0) or --local_rank.
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args(argv)
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    return args


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
    import_mmdysample()

    from mmengine.registry import RUNNERS
    from mmengine.runner import Runner

    cfg, scope = _train_tool.load_config(args)

    if not osp.isfile(args.checkpoint) and '://' not in args.checkpoint:
        raise SystemExit(f'checkpoint {args.checkpoint} not found')
    cfg.load_from = args.checkpoint

    if args.show or args.show_dir:
        enable_visualization(cfg, args, scope)
    if args.tta:
        enable_tta(cfg, scope)

    dump_metric = None
    if args.out is not None:
        dump_metric = apply_out_option(cfg, args.out, scope)

    check_datasets(cfg, ['test'])

    if 'runner_type' not in cfg:
        runner = Runner.from_cfg(cfg)
    else:
        runner = RUNNERS.build(cfg)

    if dump_metric is not None:
        runner.test_evaluator.metrics.append(dump_metric)

    runner.test()
    _train_tool.finish_distributed_run()


if __name__ == '__main__':
    main()
