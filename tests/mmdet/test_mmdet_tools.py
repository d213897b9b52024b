"""tools/train.py, tools/test.py and tools/dist_train.sh, run as a user runs them
(tools/test.py's ``main`` in a process forked from tests/forked_runs.py's server, which has
imported torch, mmdet and mmdysample once).

The detection runs use the real ``configs/faster_rcnn_dysample.py`` (its datasets,
pipelines, runner, loops and COCO metric) on a tiny COCO layout written here, with the model
shrunk on the command line (``--cfg-options``) so that one epoch takes seconds on a CPU.
"""
import importlib.util
import json
import os
import pickle
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from mmengine.config import Config

REPO = Path(__file__).resolve().parents[2]
TOOLS = REPO / 'tools'
TOP_LEVEL_CONFIG = REPO / 'configs' / 'faster_rcnn_dysample.py'
IMAGE_HEIGHT, IMAGE_WIDTH = 60, 90

# ResNet-18 with 8 base channels, 32-channel FPN/heads, 96x64 inputs, no ImageNet download,
# no worker processes; everything else is the config's.
TINY_RUN_OPTIONS = [
    'model.backbone.init_cfg=None', 'model.backbone.depth=18', 'model.backbone.base_channels=8',
    'model.neck.in_channels=[8,16,32,64]', 'model.neck.out_channels=32',
    'model.rpn_head.in_channels=32', 'model.rpn_head.feat_channels=32',
    'model.roi_head.bbox_roi_extractor.out_channels=32',
    'model.roi_head.bbox_head.in_channels=32', 'model.roi_head.bbox_head.fc_out_channels=64',
    'model.test_cfg.rcnn.score_thr=0.0',  # an untrained model must still output boxes
    'train_cfg.max_epochs=1', 'train_dataloader.batch_size=1',
    'train_dataloader.num_workers=0', 'train_dataloader.persistent_workers=False',
    'val_dataloader.num_workers=0', 'val_dataloader.persistent_workers=False',
    'test_dataloader.num_workers=0', 'test_dataloader.persistent_workers=False',
    'train_dataloader.dataset.pipeline.2.scale=(96,64)',
    'val_dataloader.dataset.pipeline.1.scale=(96,64)',
    'test_dataloader.dataset.pipeline.1.scale=(96,64)',
]


def tool_env():
    env = dict(os.environ, OMP_NUM_THREADS='1', MKL_NUM_THREADS='1', PYTHON=sys.executable,
               PYTHONWARNINGS='ignore')
    env.pop('LOCAL_RANK', None)
    return env


def write_tiny_coco(root: Path, images_per_split=2):
    """COCO 2017 layout (mmdet's): train2017/, val2017/, annotations/instances_*.json."""
    import cv2
    from mmdet.datasets import CocoDataset
    rng = np.random.default_rng(0)
    (root / 'annotations').mkdir(parents=True)
    for split in ('train2017', 'val2017'):
        (root / split).mkdir()
        images, annotations = [], []
        for index in range(images_per_split):
            image = rng.integers(0, 256, (IMAGE_HEIGHT, IMAGE_WIDTH, 3), dtype=np.uint8)
            image[10:45, 10:50] = (200, 40, 40)  # the annotated object
            name = f'{index:012d}.jpg'
            cv2.imwrite(str(root / split / name), image)
            images.append(dict(id=index + 1, file_name=name, height=IMAGE_HEIGHT,
                               width=IMAGE_WIDTH))
            annotations.append(dict(id=index + 1, image_id=index + 1, category_id=1,
                                    bbox=[10, 10, 40, 35], area=1400, iscrowd=0,
                                    segmentation=[[10, 10, 50, 10, 50, 45, 10, 45]]))
        # all 80 classes: the model predicts any of them and CocoMetric maps each back
        categories = [dict(id=i + 1, name=name, supercategory='thing')
                      for i, name in enumerate(CocoDataset.METAINFO['classes'])]
        (root / 'annotations' / f'instances_{split}.json').write_text(
            json.dumps(dict(images=images, annotations=annotations, categories=categories)))


def free_port():
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


@pytest.fixture(scope='module')
def trained_on_tiny_coco(tmp_path_factory):  # (its tests are one xdist group: one run)
    """``tools/dist_train.sh configs/faster_rcnn_dysample.py 2`` on CPU: two processes over
    gloo, one epoch (1 image per process) and the COCO evaluation on the val split."""
    workspace = tmp_path_factory.mktemp('tiny_coco_run')
    write_tiny_coco(workspace / 'data' / 'coco')
    args = ['bash', str(TOOLS / 'dist_train.sh'), str(TOP_LEVEL_CONFIG), '2',
            '--work-dir', 'work', '--cfg-options', *TINY_RUN_OPTIONS]
    env = tool_env()
    env['PORT'] = str(free_port())
    result = subprocess.run(args, cwd=workspace, env=env, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return workspace


@pytest.mark.slow
@pytest.mark.xdist_group('tiny-coco-run')
def test_dist_train_on_cpu_runs_the_config_on_coco_layout(trained_on_tiny_coco):
    work = trained_on_tiny_coco / 'work'
    (log_file,) = work.glob('*/*.log')
    log = log_file.read_text()
    assert 'Distributed training: True' in log and 'GPU number: 2' in log
    # 2 training images split over 2 processes with batch size 1: one iteration each
    assert 'Epoch(train) [1][1/1]' in log
    scalars_file = log_file.parent / 'vis_data' / f'{log_file.stem}.json'
    records = [json.loads(line) for line in scalars_file.read_text().splitlines()]
    train_records = [r for r in records if 'loss' in r]
    assert train_records and all(np.isfinite(r['loss']) for r in train_records)
    assert {'loss_rpn_cls', 'loss_rpn_bbox', 'loss_cls', 'loss_bbox'} <= set(train_records[0])
    val_records = [r for r in records if 'coco/bbox_mAP' in r]
    assert val_records and 0.0 <= val_records[-1]['coco/bbox_mAP'] <= 1.0
    import torch
    checkpoint = torch.load(work / 'epoch_1.pth', map_location='cpu', weights_only=False)
    upsampler_keys = sorted(k for k in checkpoint['state_dict'] if '.offset.' in k)
    assert upsampler_keys == [f'neck.upsamplers.{j}.offset.{name}' for j in range(3)
                              for name in ('bias', 'weight')]
    assert checkpoint['state_dict']['neck.upsamplers.0.offset.weight'].shape == (32, 32, 1, 1)


@pytest.mark.slow
@pytest.mark.xdist_group('tiny-coco-run')
def test_test_tool_evaluates_the_checkpoint_and_dumps_predictions(trained_on_tiny_coco):
    import forked_runs
    workspace = trained_on_tiny_coco
    result = forked_runs.run_tool('test', [str(TOP_LEVEL_CONFIG), 'work/epoch_1.pth',
                                           '--work-dir', 'test_work', '--out', 'preds.pkl',
                                           '--cfg-options', *TINY_RUN_OPTIONS],
                                  cwd=workspace, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert 'coco/bbox_mAP' in result.stdout + result.stderr
    with open(workspace / 'preds.pkl', 'rb') as f:
        predictions = pickle.load(f)
    assert sorted(p['img_id'] for p in predictions) == [1, 2]
    for prediction in predictions:
        boxes = prediction['pred_instances']['bboxes']
        assert boxes.shape[1] == 4 and len(boxes) > 0
        # rescaled to the original image
        assert float(boxes[:, 2].max()) <= IMAGE_WIDTH + 1e-3
        assert float(boxes[:, 3].max()) <= IMAGE_HEIGHT + 1e-3


# ---------------------------------------------------------------- scope handling, in process


def load_tool(name):
    module_name = f'_mmdysample_tools_{name}'
    if module_name not in sys.modules:
        spec = importlib.util.spec_from_file_location(module_name, TOOLS / f'{name}.py')
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        spec.loader.exec_module(module)
    return sys.modules[module_name]


@pytest.fixture
def train_tool(monkeypatch):
    monkeypatch.setenv('LOCAL_RANK', '0')  # parse_args sets it when absent
    return load_tool('train')


@pytest.fixture
def test_tool(monkeypatch):
    monkeypatch.setenv('LOCAL_RANK', '0')
    return load_tool('test')


def test_train_tool_reads_the_scope_of_mmseg_configs(train_tool, tmp_path, monkeypatch):
    segformer_configs = sorted((REPO / 'configs' / 'segformer').glob('*.py'))
    assert segformer_configs
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as stop:
        train_tool.main([str(segformer_configs[0])])
    message = str(stop.value)
    assert 'data/ade/ADEChallengeData2016 not found (train_dataloader.dataset.data_root' \
        in message
    assert "in mmseg's layout" in message
    from mmseg.registry import MODELS as MMSEG_MODELS
    assert MMSEG_MODELS.get('EncoderDecoder') is not None  # mmseg's registries were filled


def test_register_scope_modules_rejects_unknown_scope():
    tool_helpers = load_tool('tool_helpers')
    assert tool_helpers.register_scope_modules(Config(dict(default_scope='mmdet'))) == 'mmdet'
    with pytest.raises(SystemExit, match=r"default_scope=None is not supported.*'mmdet', "
                                         r"'mmseg', 'mmpretrain'"):
        tool_helpers.register_scope_modules(Config(dict()))


def test_out_option_follows_the_upstream_tool_of_each_scope(test_tool):
    from mmdet.evaluation import DumpDetResults
    detection = Config(dict(test_evaluator=dict(type='CocoMetric')))
    assert isinstance(test_tool.apply_out_option(detection, 'r.pkl', 'mmdet'), DumpDetResults)
    with pytest.raises(SystemExit, match=r"\.pkl or \.pickle file for mmdet configs"):
        test_tool.apply_out_option(detection, 'predictions', 'mmdet')
    # mmseg's tools/test.py: --out is a directory for the predicted label maps
    segmentation = Config(dict(test_evaluator=dict(type='IoUMetric')))
    assert test_tool.apply_out_option(segmentation, 'pred_dir', 'mmseg') is None
    assert segmentation.test_evaluator == dict(type='IoUMetric', output_dir='pred_dir',
                                               keep_results=True)


def stop_line(main, argv, capsys):
    """The one stderr line and the exit status of a tool stopped on a usage error."""
    with pytest.raises(SystemExit) as stop:
        main(argv)
    err = capsys.readouterr().err
    assert err.count('\n') == 1, err
    return stop.value.code, err.strip()


def test_test_tool_missing_checkpoint_stops_with_one_line(test_tool, tmp_path, monkeypatch,
                                                          capsys):
    monkeypatch.chdir(tmp_path)
    code, line = stop_line(test_tool.main, [str(TOP_LEVEL_CONFIG), 'nowhere.pth'], capsys)
    assert (code, line) == (2, 'tools/test.py: error: checkpoint nowhere.pth not found')
    # a typo in a work directory's checkpoint names the ones there that are close to it
    (tmp_path / 'run').mkdir()
    for name in ('epoch_12.pth', 'epoch_1.pth', 'last_checkpoint'):
        (tmp_path / 'run' / name).write_text('')
    code, line = stop_line(test_tool.main, [str(TOP_LEVEL_CONFIG), 'run/epoch12.pth'], capsys)
    assert (code, line) == (2, 'tools/test.py: error: checkpoint run/epoch12.pth not found; '
                               'did you mean run/epoch_12.pth or run/epoch_1.pth?')


@pytest.mark.parametrize('tool', ['train', 'test'])
def test_missing_config_stops_with_one_line_naming_close_configs(tool, tmp_path, monkeypatch,
                                                                 capsys):
    monkeypatch.setenv('LOCAL_RANK', '0')
    main = load_tool(tool).main
    monkeypatch.chdir(REPO)
    extra = ['epoch_1.pth'] if tool == 'test' else []
    typo = 'configs/faster_rcnn/faster-rcnn_r50_fpn-dysampel-lpg4_1x_coco.py'
    code, line = stop_line(main, [typo] + extra, capsys)
    assert code == 2
    assert line.startswith(f'tools/{tool}.py: error: config configs/faster_rcnn/'
                           'faster-rcnn_r50_fpn-dysampel-lpg4_1x_coco.py not found; did you mean '
                           'configs/faster_rcnn/faster-rcnn_r50_fpn-dysample-lpg4_1x_coco.py')
    monkeypatch.chdir(tmp_path)
    code, line = stop_line(main, ['my_config.py'] + extra, capsys)
    assert (code, line) == (2, f'tools/{tool}.py: error: config my_config.py not found')
    code, line = stop_line(main, [str(tmp_path)] + extra, capsys)
    assert (code, line) == (2, f'tools/{tool}.py: error: config {tmp_path} is a directory, '
                               'not a file')


def test_train_script_on_a_missing_config_prints_no_traceback(tmp_path):
    """As a user runs it: one line on stderr, exit status 2, nothing imported or written."""
    result = subprocess.run([sys.executable, str(TOOLS / 'train.py'), 'configs/none.py'],
                            cwd=tmp_path, env=tool_env(), capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 2
    assert result.stderr == 'tools/train.py: error: config configs/none.py not found\n'
    assert list(tmp_path.iterdir()) == []


def test_train_without_coco_stops_at_once_naming_the_missing_path(train_tool, tmp_path,
                                                                  monkeypatch):
    """``python tools/train.py configs/faster_rcnn_dysample.py`` (its ``main``) in a folder
    without ``data/coco``. The script itself runs in the dist_train.sh test above."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as stop:
        train_tool.main([str(TOP_LEVEL_CONFIG)])
    message = str(stop.value)  # printed to stderr, exit status 1
    assert message.startswith('Dataset files are missing, nothing was run')
    assert (f'data/coco/ not found (train_dataloader.dataset.data_root, i.e. '
            f'{tmp_path / "data" / "coco"}') in message
    assert 'data/coco/annotations/instances_val2017.json not found (val_evaluator.ann_file' \
        in message
    assert 'download COCO 2017' in message
    assert list(tmp_path.iterdir()) == []  # no work_dirs: the runner was never built


def test_train_without_demo_data_says_how_to_generate_it(train_tool, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = REPO / 'configs' / 'demo' / 'segformer_mit-w16_bilinear_demo_synthetic-ade20k.py'
    with pytest.raises(SystemExit) as stop:
        train_tool.main([str(config)])
    message = str(stop.value)
    assert 'data/synthetic/ade20k/ not found (train_dataloader.dataset.data_root' in message
    assert 'python tools/make_synthetic_data.py --out data/synthetic' in message
    assert 'download' not in message
