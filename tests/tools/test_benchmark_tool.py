"""tools/benchmark.py at a tiny size: every registered upsampler (guided ones with a guide),
ratios to bilinear recomputed from the raw samples, thread sections, fused-vs-reference,
components, the written files, argument errors."""
import json
import os
import statistics

import pytest
import torch

from mmdysample.upsamplers import registered_upsamplers

TINY = '1x32x6x5'  # 32 channels: the guided layers' GroupNorm needs a multiple of 32


@pytest.fixture(scope='module')
def all_layers(benchmark_tool, tmp_path_factory):
    out_dir = tmp_path_factory.mktemp('bench_all')
    report = benchmark_tool.main(['layers', '--sizes', TINY, '--iters', '1', '--warmup', '1',
                                  '--repeats', '2', '--no-plots', '--out-dir', str(out_dir)])
    return report, out_dir


@pytest.fixture(scope='module')
def threads_before():
    return torch.get_num_threads()


@pytest.fixture(scope='module')
def sections(benchmark_tool, tmp_path_factory, threads_before):
    out_dir = tmp_path_factory.mktemp('bench_sections')
    report = benchmark_tool.main([
        'layers', '--sizes', TINY, '1x32x4x3', '--threads', '1', '2', '--iters', '1',
        '--warmup', '1', '--repeats', '3', '--upsamplers', 'Bilinear', 'DySample-S+',
        '--compare-reference', '--components', '--out-dir', str(out_dir)
    ])
    return report, out_dir


@pytest.mark.slow
def test_every_registered_upsampler_is_benchmarked(all_layers):
    report, _ = all_layers
    (section, ) = report['sections']
    results = {r['label']: r for r in section['results']}
    expected = {'Nearest', 'Bilinear'} | set(registered_upsamplers()) - {'Interpolate'}
    assert set(results) == expected
    from mmengine.registry import MODELS
    for name, record in results.items():
        assert record['error'] is None, (name, record['error'])
        layer_type = MODELS.get(record['cfg']['type'])
        assert record['guided'] == bool(getattr(layer_type, 'requires_guide', False))
        assert record['forward_ms']['median'] > 0 and record['train_ms']['median'] > 0
        assert record['peak_memory_train_bytes'] > 0
    assert any(r['guided'] for r in results.values()) == any(
        getattr(MODELS.get(n), 'requires_guide', False) for n in registered_upsamplers())
    # FLOPs and parameters against formulas (C=32, 6x5 -> 12x10)
    assert results['Bilinear']['flops'] == 4 * 32 * 12 * 10
    assert results['Nearest']['flops'] == 32 * 12 * 10
    # DySample: lp, 4 groups, x2: 1x1 conv 32 -> 32 at 6x5, 4 MACs per output element
    assert results['DySample']['flops'] == 6 * 5 * 32 * 32 + 4 * 32 * 12 * 10
    assert results['DySample']['params'] == 32 * 32 + 32
    assert results['DySample']['paper_miou'] == 43.21
    assert results['Nearest']['paper_miou'] is None


@pytest.mark.slow
def test_ratios_are_recomputed_from_the_samples(all_layers):
    report, out_dir = all_layers
    (section, ) = report['sections']
    results = {r['label']: r for r in section['results']}
    bilinear = results['Bilinear']
    for record in results.values():
        for mode in ('forward', 'train'):
            ratios = [a / b for a, b in zip(record[f'{mode}_ms']['samples'],
                                            bilinear[f'{mode}_ms']['samples'])]
            assert record[f'{mode}_ratio_to_bilinear'] == pytest.approx(
                statistics.median(ratios))
        assert record['peak_memory_train_ratio_to_bilinear'] == pytest.approx(
            record['peak_memory_train_bytes'] / bilinear['peak_memory_train_bytes'])
    assert bilinear['forward_ratio_to_bilinear'] == 1.0
    with open(out_dir / 'benchmark.json') as json_file:
        saved = json.load(json_file)
    assert [r['label'] for r in saved['sections'][0]['results']] == list(results)
    table = (out_dir / 'benchmark.md').read_text()
    assert '| SAPA-B (guided) |' in table or 'SAPA-B' not in results
    assert not (out_dir / 'latency.png').exists()  # --no-plots


@pytest.mark.slow
def test_thread_sections_reference_and_components(sections, threads_before):
    report, out_dir = sections
    shapes_threads = [(s['input_shape'], s['threads']) for s in report['sections']]
    assert shapes_threads == [([1, 32, 6, 5], 1), ([1, 32, 6, 5], 2), ([1, 32, 4, 3], 1),
                              ([1, 32, 4, 3], 2)]
    for section in report['sections']:
        results = {r['label']: r for r in section['results']}
        assert set(results) == {
            'Bilinear', 'DySample-S+', 'DySample-S+ [reference]', 'DySample-S+: sampling op',
            'DySample-S+: offsets'
        }
        assert all(r['error'] is None for r in results.values())
        fused, reference = results['DySample-S+'], results['DySample-S+ [reference]']
        assert (fused['fused'], reference['fused']) == (True, False)
        speedup = statistics.median(r / f for r, f in zip(reference['forward_ms']['samples'],
                                                          fused['forward_ms']['samples']))
        assert fused['forward_speedup_over_reference'] == pytest.approx(speedup)
    for name in ('benchmark.md', 'benchmark.json', 'latency.png', 'latency_vs_miou.png'):
        assert os.path.getsize(out_dir / name) > 0
    with open(out_dir / 'latency.png', 'rb') as png:
        assert png.read(8) == b'\x89PNG\r\n\x1a\n'
    table = (out_dir / 'benchmark.md').read_text()
    assert table.count('### Input ') == 4 and "Speed-up over the authors' formulation" in table
    assert torch.get_num_threads() == threads_before  # restored after the sections


def test_bad_arguments(benchmark_tool):
    for argv in (['layers', '--sizes', '1x2x3'], ['layers', '--sizes', '0x8x8x8'],
                 ['layers', '--repeats', '0'], ['layers', '--upsamplers', 'Bicubic'],
                 ['layers', '--device', 'tpu'], ['layers', '--threads', '0'],
                 ['layers', '--scale', '1'], ['models', '--models', 'retinanet'],
                 ['models', '--batch', '0'], ['--upsamplers', 'Bicubic']):
        with pytest.raises(SystemExit):
            benchmark_tool.parse_args(argv)
    args = benchmark_tool.parse_args(['models'])
    assert args.models == ['faster_rcnn', 'segformer'] and args.batch == 2
    args = benchmark_tool.parse_args([])  # the layer benchmark by default, paper size
    assert args.command == 'layers' and args.sizes == [(1, 256, 64, 64)]
