"""tools/benchmark.py layers for the performance targets: the authors' formulation that the
reference rows time, --compile rows next to the eager ones with their ratio to eager
recomputed from the raw samples (aot_eager backend: no code generation in CI), the summary
table across sections."""
import statistics

import pytest
import torch
import torch.nn.functional as F

from mmdysample.ops import use_fused
from mmdysample.upsamplers import build_upsampler


@pytest.mark.parametrize('name', ['DySample', 'DySample+', 'DySample-S', 'DySample-S+'])
def test_authors_formulation_is_conv2d_and_grid_sample_and_equals_the_layer(
        benchmark_tool, name):
    layer = build_upsampler(dict(type=name), 64, 2)
    with torch.no_grad():
        for conv in (layer.offset, getattr(layer, 'scope', None)):
            if conv is not None:
                conv.weight.normal_(0, 0.2)
    x = torch.randn(2, 64, 9, 13, requires_grad=True)
    with torch.profiler.profile() as profiler:
        out = benchmark_tool.authors_formulation(layer, x)
    ops = {event.name for event in profiler.events()}
    assert {'aten::convolution', 'aten::grid_sampler_2d'} <= ops and 'aten::bmm' not in ops
    torch.testing.assert_close(out, layer(x), rtol=1e-5, atol=1e-5)
    with use_fused(False):
        torch.testing.assert_close(out, layer(x), rtol=1e-5, atol=1e-5)
    assert F.mse_loss(out, F.interpolate(x, scale_factor=2, mode='bilinear')) > 1e-3


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


@pytest.mark.slow
def test_models_time_training_and_inference_against_the_twin(benchmark_tool, tmp_path):
    report = benchmark_tool.main(['models', '--models', 'segformer', '--batch', '1',
                                  '--size', '64', '--repeats', '2', '--warmup', '0',
                                  '--threads', '1', '--out-dir', str(tmp_path)])
    rows = {(r['phase'], r['case']): r for r in report['results']}
    assert set(rows) == {(phase, case) for phase in ('train', 'inference')
                         for case in ('bilinear', 'DySample (fused)', 'DySample (reference)')}
    for (phase, case), row in rows.items():
        twin = rows[(phase, 'bilinear')]
        ratios = [a / b for a, b in zip(row['wall_s']['samples'], twin['wall_s']['samples'])]
        assert row['wall_ratio_to_twin'] == statistics.median(ratios)
    text = (tmp_path / 'models.md').read_text()
    assert '| segformer | inference | DySample (fused) |' in text


@pytest.mark.slow
def test_fig8_measures_every_upsampler_in_segformer(benchmark_tool, tmp_path):
    report = benchmark_tool.main(['models', '--fig8', '--upsamplers', 'FADE', 'DySample',
                                  '--batch', '1', '--size', '64', '--flops-size', '64', '64',
                                  '--repeats', '2', '--warmup', '0', '--threads', '1',
                                  '--out-dir', str(tmp_path)])
    rows = {r['label']: r for r in report['results']}
    # bilinear first (the reference of the ratios), then the registry's order
    assert list(rows) == ['Bilinear', 'DySample', 'FADE']
    bilinear, dysample, fade = rows['Bilinear'], rows['DySample'], rows['FADE']
    # the decode head's six x2 steps: DySample adds 6 x (256 * 32 + 32) parameters, FADE
    # 6 x 47,257 (docs/guided_upsamplers.md), the upstream head none
    assert dysample['delta_params'] == 6 * 8224 and fade['delta_params'] == 6 * 47257
    assert bilinear['delta_params'] == 0 and dysample['flops'] > bilinear['flops']
    assert dysample['paper_miou'] == 43.21 and bilinear['paper_miou'] == 41.68
    for row in rows.values():
        ratios = [a / b for a, b in zip(row['train_step_ms']['samples'],
                                        bilinear['train_step_ms']['samples'])]
        assert row['train_step_ratio_to_bilinear'] == statistics.median(ratios)
        assert row['train_peak_memory_bytes'] > 0 and len(row['layer_forward_ms']['samples']) == 2
    text = (tmp_path / 'fig8.md').read_text()
    assert '| FADE | 43.06 | ' in text and (tmp_path / 'fig8.png').stat().st_size > 10_000
    with pytest.raises(SystemExit):
        benchmark_tool.parse_args(['models', '--upsamplers', 'FADE'])  # needs --fig8


def test_kernels_off_rows_time_the_device_agnostic_path(benchmark_tool, tmp_path, monkeypatch):
    """--kernels-off adds each learned upsampler again with the C++ kernels switched off: the
    reassembly layers then run the device-agnostic path (what a device without kernels runs),
    the plain rows the CPU kernel."""
    import types

    from mmdysample.ops import reassembly
    calls = {'Kernel': 0, 'Generic': 0}
    for kind in calls:
        original = getattr(reassembly, f'{kind}Reassemble')

        def apply(*args, _kind=kind, _original=original):
            calls[_kind] += 1
            return _original.apply(*args)
        monkeypatch.setattr(reassembly, f'{kind}Reassemble', types.SimpleNamespace(apply=apply))
    report = benchmark_tool.main([
        'layers', '--sizes', '1x32x6x5', '--threads', '1', '--iters', '1', '--warmup', '1',
        '--repeats', '2', '--upsamplers', 'Bilinear', 'CARAFE', '--kernels-off', '--no-plots',
        '--out-dir', str(tmp_path)])
    results = {r['label']: r for r in report['sections'][0]['results']}
    assert set(results) == {'Bilinear', 'CARAFE', 'CARAFE [kernels off]'}
    on, off = results['CARAFE'], results['CARAFE [kernels off]']
    assert off['error'] is None and off['params'] == on['params']
    assert off['peak_memory_train_ratio_to_bilinear'] is not None
    assert calls['Kernel'] > 0 and calls['Generic'] > 0
    assert '| CARAFE [kernels off] |' in (tmp_path / 'benchmark.md').read_text()
