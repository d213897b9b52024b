"""Choosing between the fused kernel and the reference path: switches, the one-time warning
when the kernel cannot be built, and the pre-build entry point."""
import sys
import warnings

import pytest
import torch
from fused_helpers import took_fused_path

from mmdysample.functional import dysample
from mmdysample.ops import extension as extension_module
from mmdysample.ops import fused_enabled, use_fused

def path_taken(**kwargs):
    x = torch.randn(1, 8, 4, 5, requires_grad=True)
    offset = torch.randn(1, 2 * 2 * 4, 4, 5)
    y = dysample(x, offset, 2, 2)
    return 'fused' if took_fused_path(y) else 'reference'


@pytest.mark.usefixtures('fused_extension', 'no_fused_env')
def test_fused_is_the_default():
    assert fused_enabled()
    assert path_taken() == 'fused'


@pytest.mark.usefixtures('fused_extension')
@pytest.mark.parametrize('value', ['0', 'false', 'OFF', ' no '])
def test_env_var_forces_reference(monkeypatch, value):
    monkeypatch.setenv('MMDYSAMPLE_FUSED', value)
    assert not fused_enabled()
    assert path_taken() == 'reference'
    with use_fused(True):  # cannot override the environment
        assert path_taken() == 'reference'


@pytest.mark.usefixtures('fused_extension')
@pytest.mark.parametrize('value', ['1', 'true', ''])
def test_env_var_other_values_keep_fused(monkeypatch, value):
    monkeypatch.setenv('MMDYSAMPLE_FUSED', value)
    assert path_taken() == 'fused'


@pytest.mark.usefixtures('fused_extension', 'no_fused_env')
def test_use_fused_call_and_context_manager():
    with use_fused(False):
        assert path_taken() == 'reference'
        with use_fused(True):
            assert path_taken() == 'fused'
        assert path_taken() == 'reference'
    assert path_taken() == 'fused'
    try:
        use_fused(False)  # plain call: stays off
        assert path_taken() == 'reference'
    finally:
        use_fused(True)
    assert path_taken() == 'fused'


@pytest.mark.usefixtures('no_fused_env')
def test_use_fused_is_per_thread():
    """Eight threads enter ``use_fused`` blocks with alternating settings, all are inside at
    once, then leave in the reverse order of entering: each must see its own setting inside
    and the default (on) after, whatever the others did; the main thread is never affected.
    (A process-wide switch ends with the setting of whichever thread restored last.)"""
    import threading
    threads = 8
    entered = [threading.Event() for _ in range(threads)]
    leave = [threading.Event() for _ in range(threads)]
    seen = {}

    def worker(index):
        if index:
            entered[index - 1].wait(10)  # enter in index order
        with use_fused(index % 2 == 0):
            entered[index].set()
            leave[index].wait(10)
            seen[index, 'inside'] = fused_enabled()
        seen[index, 'after'] = fused_enabled()
        if index:
            leave[index - 1].set()  # leave in reverse order

    workers = [threading.Thread(target=worker, args=(i, )) for i in range(threads)]
    for w in workers:
        w.start()
    entered[-1].wait(10)
    assert fused_enabled()  # main thread
    leave[-1].set()
    for w in workers:
        w.join(10)
    assert fused_enabled()
    assert {i: seen[i, 'inside'] for i in range(threads)} == {
        i: i % 2 == 0 for i in range(threads)}
    assert all(seen[i, 'after'] for i in range(threads))

    def plain_call():
        use_fused(False)
        seen['plain'] = fused_enabled()

    thread = threading.Thread(target=plain_call)
    thread.start()
    thread.join(10)
    assert seen['plain'] is False and fused_enabled()


def test_use_fused_rejects_non_bool():
    with pytest.raises(TypeError, match='enabled must be True or False'):
        use_fused('no')
    with pytest.raises(TypeError, match='enabled must be True or False'):
        use_fused(0)


def check_one_warning_and_reference_results(*reasons):
    x = torch.randn(2, 8, 5, 3, requires_grad=True)
    offset = torch.randn(2, 2 * 4 * 4, 5, 3) * 2
    with use_fused(False):
        expected = dysample(x, offset, 2, 4)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        outputs = [dysample(x, offset, 2, 4) for _ in range(3)]
    messages = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
    assert len(messages) == 1, messages
    assert 'could not build the fused DySample CPU kernel' in messages[0]
    assert any(reason in messages[0] for reason in reasons), messages[0]
    assert 'MMDYSAMPLE_FUSED=0' in messages[0]
    for y in outputs:
        assert not took_fused_path(y)
        torch.testing.assert_close(y, expected, rtol=0, atol=0)
    outputs[0].sum().backward()
    assert x.grad is not None


@pytest.mark.usefixtures('fresh_loader')
def test_missing_compiler_falls_back_with_one_warning(monkeypatch, tmp_path):
    monkeypatch.setenv('CXX', str(tmp_path / 'no-such-c++'))
    monkeypatch.setenv('MMDYSAMPLE_EXTENSIONS_DIR', str(tmp_path / 'cache'))
    check_one_warning_and_reference_results('no C++ compiler')
    assert not (tmp_path / 'cache').exists()  # nothing half-built left behind


@pytest.mark.usefixtures('fresh_loader')
def test_unusable_cache_dir_falls_back_with_one_warning(monkeypatch, tmp_path):
    blocker = tmp_path / 'a-file'
    blocker.write_text('not a directory')
    monkeypatch.setenv('MMDYSAMPLE_EXTENSIONS_DIR', str(blocker / 'cache'))
    check_one_warning_and_reference_results('Error')


@pytest.mark.usefixtures('fresh_loader')
def test_failed_compilation_falls_back_with_one_warning(monkeypatch, tmp_path):
    """A compiler that runs but fails (here: a script that exits 1; torch's compiler check
    or the ninja build reports it)."""
    fake = tmp_path / 'broken-c++'
    fake.write_text('#!/bin/sh\necho "fake compiler error" >&2\nexit 1\n')
    fake.chmod(0o755)
    monkeypatch.setenv('CXX', str(fake))
    monkeypatch.setenv('MMDYSAMPLE_EXTENSIONS_DIR', str(tmp_path / 'cache'))
    check_one_warning_and_reference_results('CalledProcessError', 'Error building extension')


@pytest.mark.usefixtures('fresh_loader')
def test_env_var_silences_the_build(monkeypatch, tmp_path):
    monkeypatch.setenv('CXX', str(tmp_path / 'no-such-c++'))
    monkeypatch.setenv('MMDYSAMPLE_FUSED', '0')
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        assert path_taken() == 'reference'
    assert extension_module._load_error is None  # no build was attempted


def test_cache_dir_layout(monkeypatch, tmp_path):
    monkeypatch.setenv('MMDYSAMPLE_EXTENSIONS_DIR', str(tmp_path))
    cache = extension_module.extension_cache_dir()
    assert cache.parent.parent == tmp_path
    assert f'py{sys.version_info.major}{sys.version_info.minor}' in cache.parent.name
    assert torch.__version__.replace('+', '-') in cache.parent.name
    assert cache.name == extension_module.extension_name()
    monkeypatch.delenv('MMDYSAMPLE_EXTENSIONS_DIR')
    monkeypatch.setenv('XDG_CACHE_HOME', str(tmp_path / 'xdg'))
    assert extension_module.extension_cache_dir().parents[2] == tmp_path / 'xdg' / 'mmdysample'


@pytest.mark.usefixtures('fused_extension')
def test_prebuild_entry_point(capsys):
    """``python -m mmdysample.ops`` (what an install step would run) finds or builds the
    cache and says where. (Called in-process: a subprocess would spend its time importing
    mmdet/mmseg.)"""
    from mmdysample.ops.__main__ import main
    assert main([]) == 0
    out = capsys.readouterr().out
    assert 'fused DySample CPU kernel ready' in out
    assert str(extension_module.extension_cache_dir()) in out


@pytest.mark.usefixtures('fresh_loader')
def test_prebuild_entry_point_reports_failure(monkeypatch, tmp_path, capsys):
    from mmdysample.ops.__main__ import main
    monkeypatch.setenv('CXX', str(tmp_path / 'no-such-c++'))
    with pytest.warns(RuntimeWarning, match='no C\\+\\+ compiler'):
        assert main(['--verbose']) == 1
    assert 'could not be built' in capsys.readouterr().err


def test_prebuild_entry_point_rejects_unknown_arguments(capsys):
    from mmdysample.ops.__main__ import main
    assert main(['--bogus']) == 2
    assert 'unknown arguments' in capsys.readouterr().err


# ------------------------------------------------------------------ rounding probe

class FakeExtension:
    """Samples by the reference path, then moves ``wrong[fused]`` outputs off by 1e-3: a
    kernel build whose unnormalisation rounds neither as the probe's two forms do."""

    def __init__(self, wrong):
        self.wrong = wrong

    def forward(self, x, offset, scale, groups, fused):
        from mmdysample.ops.reference import grid_sample_dysample
        out = grid_sample_dysample(x, offset, scale, groups).clone()
        out.view(-1)[:self.wrong[fused]] += 1e-3
        return out


@pytest.mark.parametrize('wrong, choice, warns', [
    ({True: 3, False: 0}, False, False),  # matches the twice-rounded form: no warning
    ({True: 3, False: 40}, True, True),  # neither: the closer one, and one warning
    ({True: 40, False: 3}, False, True),
])
def test_rounding_probe_warns_once_when_neither_rounding_reproduces_grid_sample(
        monkeypatch, wrong, choice, warns):
    from mmdysample.ops import sampling
    monkeypatch.setattr(sampling, '_fused_unnormalize', {})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        for _ in range(3):
            assert sampling._unnormalize_rounding(FakeExtension(wrong), torch.float32) is choice
    messages = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
    assert len(messages) == int(warns), messages
    if warns:
        for words in ('torch.float32', 'rounded once', 'rounded twice', 'last bit',
                      'border', 'MMDYSAMPLE_FUSED=0', f'using the {"once" if choice else "twice"}'):
            assert words in messages[0], words


# -------------------------------------------------------------- plane size bound

@pytest.mark.usefixtures('fused_extension')
def test_plane_bound_is_the_kernels_32_bit_index_rule():
    """The channels-last buffer is indexed with int32 and a channel block holds up to 32
    float32 channels: H * W * 32 must stay within 2**31 - 1. Python's predicate and the C++
    check agree at the boundary (empty batches: nothing is allocated)."""
    from mmdysample.ops import load_extension, sampling
    limit = sampling._MAX_PLANE
    assert limit * 32 <= 2**31 - 1 < (limit + 1) * 32
    assert sampling.plane_fits_kernel(1, limit) and sampling.plane_fits_kernel(limit, 1)
    assert not sampling.plane_fits_kernel(1, limit + 1)
    assert sampling.plane_fits_kernel(8191, 8192) and not sampling.plane_fits_kernel(8192, 8193)
    extension = load_extension()
    for width, fits in ((limit, True), (limit + 1, False)):
        x, offset = torch.empty(0, 1, 1, width), torch.empty(0, 8, 1, width)
        assert sampling.fused_supported(x, offset) is fits
        if fits:
            assert extension.forward(x, offset, 2, 1, True).shape == (0, 1, 2, 2 * width)
        else:
            with pytest.raises(RuntimeError, match="too large for the kernel's 32-bit buffer"):
                extension.forward(x, offset, 2, 1, True)
            with pytest.raises(RuntimeError, match="too large for the kernel's 32-bit buffer"):
                extension.backward(torch.empty(0, 1, 2, 2 * width), x, offset, 2, 1, True,
                                   True, True)


def test_empty_batch_is_supported_empty_planes_are_not():
    from mmdysample.ops import fused_supported
    assert fused_supported(torch.empty(0, 8, 4, 5), torch.empty(0, 8, 4, 5))
    assert not fused_supported(torch.empty(1, 8, 0, 5), torch.empty(1, 8, 0, 5))
    assert not fused_supported(torch.empty(1, 0, 4, 5), torch.empty(1, 8, 4, 5))
