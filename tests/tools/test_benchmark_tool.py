"""tools/benchmark.py at a tiny size: table, JSON, plots, ratios, fused-vs-reference."""
import json
import os

import pytest


@pytest.fixture(scope='module')
def tiny_report(benchmark_tool, tmp_path_factory):
    out_dir = tmp_path_factory.mktemp('bench')
    report = benchmark_tool.main([
        '--size', '8', '12', '--channels', '16', '--iters', '2', '--warmup', '1', '--repeats',
        '3', '--upsamplers', 'Nearest', 'Bilinear', 'DySample', 'DySample-S+', 'CARAFE',
        '--compare-reference', '--out-dir', str(out_dir)
    ])
    return report, out_dir


def test_outputs_written(tiny_report):
    report, out_dir = tiny_report
    for name in ('benchmark.md', 'benchmark.json', 'latency.png', 'latency_vs_miou.png'):
        assert os.path.getsize(out_dir / name) > 0
    with open(out_dir / 'latency.png', 'rb') as png:
        assert png.read(8) == b'\x89PNG\r\n\x1a\n'
    with open(out_dir / 'benchmark.json') as json_file:
        saved = json.load(json_file)
    assert [r['label'] for r in saved['results']] == [r['label'] for r in report['results']]
    table = (out_dir / 'benchmark.md').read_text()
    assert '| DySample-S+ |' in table and 'reference / fused' in table


def test_measurements(tiny_report):
    report, _ = tiny_report
    results = {r['label']: r for r in report['results']}
    assert set(results) == {'Nearest', 'Bilinear', 'DySample', 'DySample-S+', 'CARAFE',
                            'DySample [reference]', 'DySample-S+ [reference]'}
    assert report['settings']['input_shape'] == [1, 16, 8, 12]
    for record in results.values():
        assert record['error'] is None
        stats = record['forward_ms']
        assert len(stats['samples']) == 3 and stats['iters'] == 2
        assert stats['minimum'] <= stats['q1'] <= stats['median'] <= stats['q3'] <= \
            stats['maximum']
        assert record['peak_memory_train_bytes'] > 0
    assert results['Bilinear']['forward_ratio_to_bilinear'] == 1.0
    assert results['Bilinear']['flops'] == 4 * 16 * 16 * 24
    # DySample lp, 4 groups, x2: 1x1 conv 16 -> 32 at 8x12, 4 MACs per output element
    assert results['DySample']['flops'] == 8 * 12 * 16 * 32 + 4 * 16 * 16 * 24
    assert results['DySample']['params'] == 16 * 32 + 32
    assert results['DySample']['paper_miou'] == 43.21
    assert results['DySample']['fused'] is True
    assert results['DySample [reference]']['fused'] is False
    assert results['Nearest']['paper_miou'] is None
    ratio = results['CARAFE']['forward_ms']['median'] / results['Bilinear']['forward_ms'][
        'median']
    assert results['CARAFE']['forward_ratio_to_bilinear'] == pytest.approx(ratio)


def test_bad_arguments(benchmark_tool):
    for argv in (['--size', '1', '2', '3'], ['--repeats', '0'], ['--upsamplers', 'Bicubic'],
                 ['--device', 'tpu']):
        with pytest.raises(SystemExit):
            benchmark_tool.parse_args(argv)
