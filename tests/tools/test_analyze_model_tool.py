"""tools/analyze_model.py on the tiny demo SegFormers: params/FLOP deltas, train steps."""
import json
import os

import pytest

from tools_testing import DEMO_SEG_BILINEAR, DEMO_SEG_DYSAMPLE, REPO


@pytest.fixture(scope='module')
def report(analyze_tool, tmp_path_factory):
    out_dir = tmp_path_factory.mktemp('analyze')
    result = analyze_tool.main([
        DEMO_SEG_DYSAMPLE, '--baseline', DEMO_SEG_BILINEAR, '--size', '64', '64',
        '--train-step', DEMO_SEG_BILINEAR, DEMO_SEG_DYSAMPLE, '--train-size', '64', '64',
        '--batch', '2', '--warmup', '0', '--repeats', '2', '--out-dir', str(out_dir)
    ])
    return result, out_dir


def test_complexity_deltas(report):
    result, out_dir = report
    (row, ) = result['complexity']
    channels = 64  # demo head channels; 6 DySample layers (lp, 4 groups, x2)
    assert row['delta_params'] == 6 * (channels * 32 + 32)
    # 4 MACs per output element of the 1 + 2 + 3 chained layers of a 64x64 input
    # (features 16, 8, 4, 2 wide): outputs 16^2 x3, 8^2 x2, 4^2 x1
    assert row['flops_by_operator']['grid_sampler'] == 4 * channels * (3 * 256 + 2 * 64 + 16)
    assert row['paper_row'] is None and row['paper'] is None
    with open(os.path.join(out_dir, 'model_complexity.json')) as json_file:
        assert json.load(json_file)['complexity'][0]['params'] == row['params']
    assert os.path.basename(DEMO_SEG_DYSAMPLE)[:-3] in (out_dir / 'model_complexity.md').read_text()


def test_train_step_comparison(report):
    result, _ = report
    first, second = result['train_step']
    assert first['time_ratio'] == 1.0 and first['memory_ratio'] == 1.0
    assert second['time_ratio'] == pytest.approx(second['step_ms']['median']
                                                 / first['step_ms']['median'])
    for row in (first, second):
        assert len(row['step_ms']['samples']) == 2
        assert row['peak_memory_bytes'] > 0
        assert row['losses']['decode.loss_ce'] > 0
    assert second['trainable_params'] - first['trainable_params'] == 6 * (64 * 32 + 32)


def test_paper_rows(analyze_tool):
    # from the metafiles: the config of each Table 4 row
    name = os.path.join(REPO, 'configs', 'segformer',
                        'segformer_mit-b1_{}_8xb2-160k_ade20k-512x512.py')
    assert analyze_tool.paper_row(name.format('dysample-s-plus')) == 'DySample-S+'
    assert analyze_tool.paper_row(name.format('dysample')) == 'DySample'
    assert analyze_tool.paper_row(name.format('dysample-lpg1')) is None
    assert analyze_tool.paper_row(name.format('bilinear')) == 'Bilinear'
    assert analyze_tool.paper_numbers('Deconv') == dict(params='+3.5M', flops='+34.4G',
                                                        miou=40.71, biou=25.94)
    with pytest.raises(SystemExit):
        analyze_tool.parse_args(['does/not/exist.py'])
