"""tools/check_device.py: the quick CPU run passes and reports every upsampler, a broken
layer makes it fail with one line, a missing GPU stops it at once, and the CUDA-only
branches (precisions, TF32, device properties, event timing, mmcv's CARAFE, the DDP plan)
run on CPU with stand-ins.

The tool is imported by its own name (``import check_device``, tools/ on ``sys.path``): the
DDP ranks it spawns import it by that name to find their entry point."""
import json
import math
import os.path as osp
import time
import types

import pytest
import torch

import tools_testing  # noqa: F401  (puts tools/ on sys.path)
import check_device  # noqa: E402  (isort: skip)
import tool_helpers  # noqa: E402  (isort: skip)
from mmdysample.upsamplers import DySample, Interpolate, registered_upsamplers  # noqa: E402

CPU = torch.device('cpu')


def _report(out_dir) -> dict:
    with open(osp.join(out_dir, 'check_device.json')) as f:
        return json.load(f)


def _last_stderr_line(capsys) -> str:
    return capsys.readouterr().err.strip().splitlines()[-1]


@pytest.mark.slow
def test_quick_cpu_run_passes_and_reports_every_upsampler(tmp_path, capsys):
    """The test suite's run of `--device cpu --quick`: every section, the JSON's structure,
    the markdown written and printed, exit status 0."""
    start = time.perf_counter()
    code = check_device.main(['--device', 'cpu', '--quick', '--threads', '1',
                              '--out', str(tmp_path)])
    seconds = time.perf_counter() - start
    out = capsys.readouterr().out
    report = _report(tmp_path)
    assert report['schema_version'] == check_device.SCHEMA_VERSION
    assert report['device'] == 'cpu' and report['quick'] is True
    assert set(report['sections']) == set(check_device.CHECKS)
    env = report['environment']
    assert env['status'] == 'passed', env
    assert env['torch'] == torch.__version__ and env['mmcv_ops']['probes'] == dict(
        nms='ok', roi_align='ok')
    assert env['fused_cpu_kernel']['built'] in (True, False)

    upsamplers = report['sections']['upsamplers']
    assert upsamplers['precisions'] == ['float32', 'autocast_bfloat16']
    assert [r['name'] for r in upsamplers['results']] == registered_upsamplers()
    for record in upsamplers['results']:
        assert [p['precision'] for p in record['parity']] == upsamplers['precisions']
        for item in record['parity']:
            expected = {'output', 'input_grad'} | ({'guide_grad'} if record['guided'] else set())
            assert expected <= set(item['errors']), (record['name'], item)
            if record['name'] != 'Interpolate':  # the one layer without parameters
                assert 'param_grad' in item['errors']
            assert item['status'] == 'passed', (record['name'], item)
        latency = record['latency']
        assert latency['error'] is None and latency['train_ms']['median'] > 0
        assert latency['peak_memory_train_bytes'] > 0
        assert latency['train_ratio_to_bilinear'] > 0
    assert report['sections']['carafe']['status'] == 'skipped'
    assert 'mmcv has no CPU CARAFE kernel' in report['sections']['carafe']['reason']
    training = report['sections']['training']
    assert [r['model'] for r in training['results']] == ['faster-rcnn', 'segformer']
    for record in training['results']:
        assert len(record['losses']) == 2 and all(map(math.isfinite, record['losses']))
    ddp = report['sections']['ddp']
    assert ddp['status'] == 'passed', ddp
    assert ddp['plan']['backend'] == 'gloo'
    assert ddp['rank_grad_disagreement'] == 0 and ddp['error_vs_single_process'] <= 1e-5

    with open(osp.join(tmp_path, 'check_device.md')) as f:
        text = f.read()
    assert text in out
    for heading in ('## Environment', '## Upsamplers', '## CARAFE', '## Training',
                    '## Two-process DistributedDataParallel'):
        assert heading in text
    # last: every layer's empty batch too (fails while a layer cannot take B=0)
    assert report['failures'] == [] and report['passed'] is True
    assert code == 0
    print(f'quick CPU check: {seconds:.1f} s')


def _fp32_only(function):
    """Apply ``function`` to a float32 tensor, leave float64 (the reference) alone."""
    return lambda t: function(t) if t.dtype == torch.float32 else t


class _ScaleGradient(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return grad * 1.001


@pytest.mark.parametrize('broken, reason', [
    (_fp32_only(lambda y: y * 1.001), 'float32 output scaled error 0.001 > 0.0001'),
    (_fp32_only(_ScaleGradient.apply), 'float32 input_grad scaled error 0.001 > 0.0001'),
], ids=['output', 'gradient'])
def test_a_broken_upsampler_fails_with_a_one_line_reason(tmp_path, capsys, monkeypatch,
                                                         broken, reason):
    """DySample off by 0.1% in float32 only (output, or the gradient flowing back through
    it): the float64 reference is not, so the check fails and says where."""
    forward = DySample.forward
    monkeypatch.setattr(DySample, 'forward',
                        lambda self, x, size=None: broken(forward(self, x, size)))
    code = check_device.main(['--device', 'cpu', '--quick', '--threads', '1', '--checks',
                              'upsamplers', '--upsamplers', 'DySample', '--out',
                              str(tmp_path)])
    assert code == check_device.EXIT_FAILED
    line = _last_stderr_line(capsys)
    assert line.startswith(f'check_device: FAILED: upsamplers: DySample: {reason}'), line
    report = _report(tmp_path)
    assert report['passed'] is False and report['failures'][0] == \
        f'upsamplers: DySample: {reason}'
    (record, ) = report['sections']['upsamplers']['results']
    float32, bfloat16 = record['parity']
    assert float32['status'] == 'failed'
    assert bfloat16['status'] == 'passed'  # 0.1% is within bfloat16's limit


@pytest.mark.skipif(torch.cuda.is_available(), reason='this machine has CUDA')
def test_cuda_absent_exits_at_once(tmp_path, capsys):
    start = time.perf_counter()
    code = check_device.main(['--device', 'cuda', '--out', str(tmp_path / 'report')])
    assert code == check_device.EXIT_NO_DEVICE == 2
    assert time.perf_counter() - start < 5
    captured = capsys.readouterr()
    assert captured.err.strip().startswith('check_device: CUDA is not available: ')
    assert len(captured.err.strip().splitlines()) == 1
    assert not (tmp_path / 'report').exists()


def test_why_cuda_is_not_available(monkeypatch):
    monkeypatch.setattr(torch.version, 'cuda', None)
    with pytest.raises(check_device.DeviceUnavailable, match='a build without CUDA'):
        check_device.resolve_device('cuda')
    monkeypatch.setattr(torch.version, 'cuda', '12.4')
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)
    with pytest.raises(check_device.DeviceUnavailable,
                       match=r'CUDA 12.4\) finds no usable GPU'):
        check_device.resolve_device('cuda')
    assert check_device.resolve_device('cpu') == CPU


def test_unknown_upsampler_is_a_usage_error(tmp_path, capsys):
    code = check_device.main(['--device', 'cpu', '--upsamplers', 'DySampel', '--out',
                              str(tmp_path / 'report')])
    assert code == check_device.EXIT_USAGE
    assert "unknown ['DySampel']" in _last_stderr_line(capsys)
    assert not (tmp_path / 'report').exists()


def test_precisions_of_each_device():
    assert check_device.precisions('cpu', bf16=True, tf32=False) == ['float32',
                                                                   'autocast_bfloat16']
    assert check_device.precisions('cuda', bf16=True, tf32=True) == [
        'float32', 'tf32', 'autocast_float16', 'autocast_bfloat16']
    assert check_device.precisions('cuda', bf16=False, tf32=False) == ['float32',
                                                                     'autocast_float16']


def test_cuda_device_properties_with_stand_ins(monkeypatch):
    """The CUDA branch of device_properties on a stand-in H100 (compute capability 9.0)."""
    props = types.SimpleNamespace(name='Stand-in H100', total_memory=80 * 2**30, major=9,
                                  minor=0)
    monkeypatch.setattr(torch.cuda, 'get_device_properties', lambda device: props)
    monkeypatch.setattr(torch.cuda, 'device_count', lambda: 2)
    monkeypatch.setattr(torch.cuda, 'is_bf16_supported', lambda: True)
    assert check_device.device_properties(torch.device('cuda', 0)) == dict(
        name='Stand-in H100', memory_bytes=80 * 2**30, capability='9.0', device_count=2,
        bf16=True, tf32=True)
    props.major = 7  # Volta: no TF32
    assert check_device.device_properties(torch.device('cuda', 0))['tf32'] is False
    cpu = check_device.device_properties(CPU)
    assert cpu['memory_bytes'] > 0 and cpu['bf16'] is True and cpu['tf32'] is False


@pytest.mark.parametrize('precision, tf32, autocast', [
    ('float32', False, None), ('tf32', True, None),
    ('autocast_bfloat16', False, torch.bfloat16), ('autocast_float16', False, torch.float16),
])
def test_precision_mode(precision, tf32, autocast):
    """TF32 only for 'tf32' (and restored), autocast in the precision's dtype. The device
    only picks torch.autocast's device type: on CPU this is the CUDA logic too."""
    before = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    with check_device.precision_mode(precision, CPU):
        assert torch.backends.cuda.matmul.allow_tf32 is tf32
        assert torch.backends.cudnn.allow_tf32 is tf32
        assert torch.is_autocast_enabled('cpu') is (autocast is not None)
        if autocast is not None:
            assert torch.get_autocast_dtype('cpu') == autocast
    assert (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32) == before
    with pytest.raises(ValueError, match='precision must be one of'):
        with check_device.precision_mode('float8', CPU):
            pass


def test_errors_and_limits():
    reference = torch.tensor([[4.0, -2.0], [0.0, 1.0]], dtype=torch.float64)
    actual = reference + torch.tensor([[0.0, 0.1], [0.2, 0.0]], dtype=torch.float64)
    assert check_device.scaled_error(actual, reference) == pytest.approx(0.2 / 4)
    assert check_device.normwise_error(actual, reference) == pytest.approx(
        math.sqrt(0.1**2 + 0.2**2) / math.sqrt(16 + 4 + 1))
    assert check_device.scaled_error(actual[0], reference) == math.inf  # shape
    assert check_device.scaled_error(actual * math.nan, reference) == math.inf
    assert check_device.scaled_error(torch.ones(2), torch.zeros(2)) == 1.0  # absolute
    assert check_device.scaled_error(torch.ones(0), torch.ones(0)) == 0.0
    # float32 judges everything at 1e-4; the reduced precisions the guide and parameter
    # gradients norm-wise
    assert check_device.LIMITS['float32'] == dict(
        output=('scaled', 1e-4), input_grad=('scaled', 1e-4), guide_grad=('scaled', 1e-4),
        param_grad=('normwise', 1e-4))
    assert check_device.LIMITS['autocast_bfloat16'] == dict(
        output=('scaled', 5e-2), input_grad=('scaled', 5e-2),
        guide_grad=('normwise', 2.5e-1), param_grad=('normwise', 2.5e-1))
    assert set(check_device.LIMITS) == set(check_device.precisions('cuda', True, True))
    # compare(): the parameters' gradients as one vector, the worst tensor named; a missing
    # gradient is infinitely wrong
    ref = dict(output=reference, input_grad=reference,
               param_grads=dict(a=reference, b=reference, c=None))
    got = dict(output=reference, input_grad=reference.clone(),
               param_grads=dict(a=reference, b=actual, c=None))
    record = check_device.compare(got, ref, 'float32')
    whole = math.sqrt(0.1**2 + 0.2**2) / math.sqrt(2 * (16 + 4 + 1))
    assert record['errors']['param_grad'] == pytest.approx(whole)
    assert record['errors']['param_grad_worst'] == 'b'
    assert record['errors']['param_grad_worst_error'] == pytest.approx(whole * math.sqrt(2))
    assert record['status'] == 'failed'
    assert record['reason'] == (f'float32 param_grad normwise error {whole:.2g} > 0.0001 '
                                f'(worst tensor b: {whole * math.sqrt(2):.2g})')
    assert check_device.compare(got, ref, 'autocast_bfloat16')['status'] == 'passed'
    got['input_grad'] = None
    record = check_device.compare(got, ref, 'autocast_bfloat16')
    assert record['errors']['input_grad'] == math.inf
    assert record['reason'].startswith('autocast_bfloat16 input_grad scaled error inf')
    got.update(input_grad=reference, param_grads=dict(a=reference, b=None, c=None))
    record = check_device.compare(got, ref, 'autocast_bfloat16')
    assert record['errors']['param_grad'] == math.inf
    assert record['errors']['param_grad_worst'] == 'b'
    got['param_grads'] = dict(a=reference, b=reference, c=None)
    assert check_device.compare(got, ref, 'float32')['status'] == 'passed'


def test_empty_batch_record(monkeypatch):
    assert check_device.empty_batch('Interpolate', CPU, (0, 8, 4, 5))['status'] == 'passed'

    def fails(self, x):
        raise RuntimeError('cannot reshape tensor of 0 elements')

    monkeypatch.setattr(Interpolate, 'forward', fails)
    record = check_device.empty_batch('Interpolate', CPU, (0, 8, 4, 5))
    assert record == dict(size=[0, 8, 4, 5], status='failed',
                          reason='B=0: RuntimeError: cannot reshape tensor of 0 elements')


def test_carafe_check_with_a_stand_in_for_mmcv():
    """The CUDA comparison on CPU: mmcv's kernel replaced by the naive loops of
    tests/upsamplers/reference_carafe.py (right) and by a shifted copy (wrong)."""
    from upsamplers.reference_carafe import carafe_naive

    def naive(features, masks, k, group, scale):
        return carafe_naive(features, masks, k, group, scale).to(features.dtype)

    size = (1, 4, 3, 5)
    passed = check_device.check_carafe(CPU, size, mmcv_carafe=naive, kernel_size=3,
                                       group_size=2)
    assert passed['status'] == 'passed', passed
    assert set(passed['errors']) == {'output', 'features_grad', 'masks_grad'}
    assert max(passed['errors'].values()) < 1e-6

    def shifted(features, masks, k, group, scale):
        return naive(features.roll(1, dims=3), masks, k, group, scale)

    failed = check_device.check_carafe(CPU, size, mmcv_carafe=shifted, kernel_size=3,
                                       group_size=2)
    assert failed['status'] == 'failed'
    assert failed['reason'].startswith('mmcv.ops.carafe vs mmdysample.functional.carafe: '
                                       'output error')
    skipped = check_device.check_carafe(CPU, size)
    assert skipped['status'] == 'skipped' and 'CUDA-only' in skipped['reason']


def test_ddp_plan():
    assert check_device.ddp_plan('cpu', 0) == dict(backend='gloo', devices=['cpu', 'cpu'],
                                                   note=None)
    assert check_device.ddp_plan('cuda', 2)['backend'] == 'nccl'
    assert check_device.ddp_plan('cuda', 2)['devices'] == ['cuda:0', 'cuda:1']
    one_gpu = check_device.ddp_plan('cuda', 1)
    assert one_gpu['backend'] == 'gloo' and one_gpu['devices'] == ['cuda:0', 'cuda:0']
    assert 'nccl' in one_gpu['note']


class _StandInEvent:
    """torch.cuda.Event's timing interface on the host clock."""

    def __init__(self, enable_timing=False):
        assert enable_timing
        self.time = None

    def record(self):
        self.time = time.perf_counter()

    def synchronize(self):
        assert self.time is not None

    def elapsed_time(self, end):
        return (end.time - self.time) * 1e3


def test_event_time_per_call_with_stand_in_events():
    """The CUDA timing path with host-clock stand-ins for the events: 3 calls of a 20 ms
    sleep average to ~20 ms a call."""
    calls = []

    def sleep():
        calls.append(1)
        time.sleep(0.02)

    ms = tool_helpers.event_time_per_call(sleep, 3, event_class=_StandInEvent)
    assert len(calls) == 3
    assert 20 <= ms < 200
    with pytest.raises(ValueError, match='iters must be a positive integer'):
        tool_helpers.event_time_per_call(sleep, 0, event_class=_StandInEvent)
    assert tool_helpers.device_time_per_call(sleep, 2, 'cpu') >= 20  # the wall clock on CPU
