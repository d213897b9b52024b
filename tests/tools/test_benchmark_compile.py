"""tools/benchmark.py layers --compile: compiled rows next to the eager ones, their ratio to
eager recomputed from the raw samples (aot_eager backend: no code generation in CI); the
summary table across sections."""
import statistics


def test_compiled_rows_and_their_ratio_to_eager(benchmark_tool, tmp_path):
    report = benchmark_tool.main([
        'layers', '--sizes', '1x32x6x5', '--threads', '1', '2', '--iters', '1', '--warmup', '1',
        '--repeats', '3', '--upsamplers', 'Bilinear', 'DySample+', '--compile',
        '--compile-backend', 'aot_eager', '--no-plots', '--out-dir', str(tmp_path)])
    first, second = report['sections']
    assert (first['threads'], second['threads']) == (1, 2)
    results = {r['label']: r for r in first['results']}
    assert set(results) == {'Bilinear', 'DySample+', 'DySample+ [compiled]'}
    eager, compiled = results['DySample+'], results['DySample+ [compiled]']
    assert compiled['error'] is None and compiled['params'] == eager['params']
    for mode in ('forward', 'train'):
        ratios = [c / e for c, e in zip(compiled[f'{mode}_ms']['samples'],
                                        eager[f'{mode}_ms']['samples'])]
        assert eager[f'{mode}_compiled_over_eager'] == statistics.median(ratios)
    assert report['settings']['compile_backend'] == 'aot_eager'
    text = (tmp_path / 'benchmark.md').read_text()
    assert 'torch.compile (backend aot_eager) time / eager time' in text
    assert '| DySample+ [compiled] |' in text
    summary = text[text.index('### Summary'):].splitlines()
    assert summary[2] == '| Upsampler | 1x32x6x5, 1 thr | 1x32x6x5, 2 thr |'
    row = next(line for line in summary if line.startswith('| DySample+ |'))
    second_plus = next(r for r in second['results'] if r['label'] == 'DySample+')
    expected = ' / '.join(f'{second_plus[key]:.2f}' for key in (
        'forward_ratio_to_bilinear', 'train_ratio_to_bilinear',
        'peak_memory_train_ratio_to_bilinear'))
    assert row.endswith(f'| {expected} |')
