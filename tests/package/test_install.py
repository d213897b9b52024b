"""The install recipe (Makefile, tools/install_steps.py) and the package metadata
(pyproject.toml), without installing anything: ``make -n install`` shows the CPU and the
CUDA recipe, the CUDA toolkit checks stop at once with a message saying what to load, the
mmcv step shows its progress, and each extra declares what its modules import."""
import ast
import importlib.metadata
import importlib.util
import os
import re
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement

REPO = Path(__file__).resolve().parents[2]
CU128 = 'https://download.pytorch.org/whl/cu128'
VENV_PIP = '.venv/bin/python -m pip --disable-pip-version-check'
STAMP = re.compile(r'^touch (\.venv/\.installed-[0-9a-f]{12})$', re.M)


def _load_install_steps():
    spec = importlib.util.spec_from_file_location('mmdysample_tool_install_steps',
                                                  REPO / 'tools' / 'install_steps.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


install_steps = _load_install_steps()


def clean_env(**extra):
    """The environment without the variables the recipe reads from it."""
    env = {k: v for k, v in os.environ.items()
           if k not in ('CUDA_HOME', 'CUDA_PATH', 'TORCH_CUDA_ARCH_LIST', 'TORCH_SPEC',
                        'TORCH_INDEX_URL', 'MAKEFLAGS', 'MFLAGS', 'MAKELEVEL')}
    env.update(extra)
    return env


def make(*args, env=None):
    return subprocess.run(['make', '--no-print-directory', *args], cwd=REPO,
                          env=env or clean_env(), capture_output=True, text=True, timeout=60)


def dry_run(*variables) -> list:
    """``make -n -B install VARIABLES``: the commands the install would run, one a line."""
    result = make('-n', '-B', 'install', *variables)
    assert result.returncode == 0, result.stderr
    return result.stdout.splitlines()


def line_with(lines, text: str) -> int:
    (index, ) = [i for i, line in enumerate(lines) if text in line]
    return index


@pytest.fixture()
def wheel_cache(tmp_path):
    (tmp_path / 'mmcv-2.1.0-cp311-cp311-linux_x86_64.whl').touch()
    return tmp_path


def test_make_n_install_cpu(wheel_cache, tmp_path_factory):
    lines = dry_run(f'WHEEL_CACHE={wheel_cache}')
    text = '\n'.join(lines)
    torch = line_with(lines, 'install "torch')
    assert lines[torch] == f'{VENV_PIP} install "torch==2.13.0"'  # pip's index, no URL
    assert line_with(lines, 'tools/install_steps.py check-torch --cpu') == torch + 1
    mmcv = lines[line_with(lines, '"mmcv==2.1.0"')]
    assert mmcv.startswith('MAX_JOBS=') and 'FORCE_CUDA' not in mmcv
    assert (f'tools/install_steps.py mmcv --log .venv/mmcv-build.log -- {VENV_PIP} install -v '
            f'--no-build-isolation --find-links {wheel_cache} "mmcv==2.1.0"') in mmcv
    assert f'{VENV_PIP} install --no-build-isolation -e ".[all,test,bench]"' in lines
    assert 'check-toolkit' not in text and '--no-cache-dir' not in text
    assert 'mmcv 2.1.0 from the prebuilt CPU wheel' in lines[0]
    assert len(STAMP.findall(text)) == 1

    # no wheel in the cache (or a TORCH_SPEC it was not built for): mmcv compiles
    empty = tmp_path_factory.mktemp('no-wheels')
    for variables in ([f'WHEEL_CACHE={empty}'],
                      [f'WHEEL_CACHE={wheel_cache}', 'TORCH_SPEC=torch>=2.7']):
        lines = dry_run(*variables)
        assert '--find-links' not in '\n'.join(lines)
        assert 'mmcv 2.1.0 compiled from source' in lines[0]
    assert lines[line_with(lines, 'install "torch')] == f'{VENV_PIP} install "torch>=2.7"'


def test_make_n_install_cuda(wheel_cache):
    lines = dry_run(f'TORCH_INDEX_URL={CU128}', f'WHEEL_CACHE={wheel_cache}')
    text = '\n'.join(lines)
    # the toolkit check comes first: before the venv, torch's download and mmcv's build
    assert lines[1] == 'python3 tools/install_steps.py check-toolkit --cuda-tag cu128'
    torch = line_with(lines, 'install "torch')
    assert line_with(lines, 'python3 -m venv .venv') < torch
    assert lines[torch] == f'{VENV_PIP} install "torch==2.13.0" --index-url {CU128}'
    assert lines[torch + 1] == ('.venv/bin/python tools/install_steps.py check-torch '
                                '--cuda-tag cu128')
    mmcv = lines[line_with(lines, '"mmcv==2.1.0"')]
    assert mmcv.startswith('FORCE_CUDA=1 MAX_JOBS=')
    assert (f'tools/install_steps.py mmcv --cuda --log .venv/mmcv-build.log -- {VENV_PIP} install '
            f'-v --no-build-isolation --no-cache-dir "mmcv==2.1.0"') in mmcv
    assert '--find-links' not in text  # the CPU wheel cache is never offered to CUDA
    assert 'mmcv 2.1.0 with CUDA ops compiled from source' in lines[0]
    assert lines[-1].endswith('On a GPU node: .venv/bin/python tools/check_device.py '
                              '--device cuda"')
    assert len(STAMP.findall(text)) == 1

    # the architectures given on the command line reach mmcv's build; a trailing / is fine
    lines = dry_run(f'TORCH_INDEX_URL={CU128}/', 'TORCH_CUDA_ARCH_LIST=8.0;9.0+PTX')
    mmcv = lines[line_with(lines, '"mmcv==2.1.0"')]
    assert mmcv.startswith('FORCE_CUDA=1 MAX_JOBS=')
    assert ' TORCH_CUDA_ARCH_LIST="8.0;9.0+PTX" ' in mmcv


def test_make_install_stamp_is_a_hash_of_the_recipe_and_the_torch_asked_for():
    def stamp(*variables):
        (name, ) = STAMP.findall('\n'.join(dry_run(*variables)))
        return name
    default = stamp()
    assert stamp() == default
    others = {stamp('TORCH_SPEC=torch==2.12.0'), stamp(f'TORCH_INDEX_URL={CU128}'),
              stamp('TORCH_INDEX_URL=https://download.pytorch.org/whl/cu126'),
              stamp(f'TORCH_INDEX_URL={CU128}', 'TORCH_CUDA_ARCH_LIST=9.0')}
    assert len(others) == 4 and default not in others


def test_make_rejects_an_index_url_inside_torch_spec():
    # the old form: used to end in "Makefile:25: *** multiple target patterns"
    result = make('-n', 'install', f'TORCH_SPEC=torch==2.13.0 --index-url {CU128}')
    assert result.returncode != 0
    assert ('TORCH_SPEC must be one requirement such as torch==2.13.0, got "torch==2.13.0 '
            f'--index-url {CU128}"; give the index as TORCH_INDEX_URL=') in result.stderr
    result = make('check-cuda-toolkit')
    assert result.returncode != 0 and 'check-cuda-toolkit needs TORCH_INDEX_URL=' in result.stderr


def path_without(*programs) -> str:
    return os.pathsep.join(d for d in os.environ['PATH'].split(os.pathsep)
                           if not any(os.path.exists(os.path.join(d, p)) for p in programs))


def test_cuda_install_stops_at_once_without_nvcc():
    start = time.monotonic()
    result = make('check-cuda-toolkit', f'TORCH_INDEX_URL={CU128}',
                  env=clean_env(PATH=path_without('nvcc', 'nvidia-smi')))
    elapsed = time.monotonic() - start
    assert result.returncode != 0
    assert ('mmdysample install: TORCH_INDEX_URL asks for a CUDA 12.8 torch (cu128), so mmcv '
            'is compiled with its CUDA ops (FORCE_CUDA=1), which needs the CUDA compiler nvcc; '
            'but CUDA_HOME is not set and nvcc is not on PATH.') in result.stderr
    assert 'module load cuda/12.8' in result.stderr
    assert 'export CUDA_HOME=/path/to/cuda-12.8' in result.stderr
    assert elapsed < 30  # the standard library only: no torch import, no download


def fake_program(folder: Path, name: str, output: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    program = folder / name
    program.write_text(f'#!/bin/sh\ncat <<"EOF"\n{output}\nEOF\n')
    program.chmod(0o755)
    return program


NVCC_12_8 = 'nvcc: NVIDIA (R) Cuda compiler driver\nCuda compilation tools, release 12.8, V12.8.93'


def fake_toolkit(cuda_home: Path, nvcc_output: str = NVCC_12_8) -> Path:
    (cuda_home / 'include').mkdir(parents=True, exist_ok=True)
    (cuda_home / 'include' / 'cuda_runtime.h').touch()
    return fake_program(cuda_home / 'bin', 'nvcc', nvcc_output)


def test_toolkit_check_finds_nvcc_and_needs_the_architectures(tmp_path, capsys):
    cuda_home = tmp_path / 'cuda-12.8'
    fake_toolkit(cuda_home)
    no_gpu_path = path_without('nvcc', 'nvidia-smi')
    env = {'PATH': no_gpu_path, 'CUDA_HOME': str(cuda_home)}

    install_steps.check_toolkit('cu128', dict(env, TORCH_CUDA_ARCH_LIST='8.0;9.0'))
    out = capsys.readouterr().out
    assert f'nvcc {cuda_home}/bin/nvcc: CUDA 12.8' in out
    assert 'compiled for TORCH_CUDA_ARCH_LIST=8.0;9.0' in out

    # a login node: no GPU, no architecture list -> stop, saying how to set it
    with pytest.raises(install_steps.InstallError,
                       match=r'No GPU is visible here \(nvidia-smi -L\).*export '
                             r'TORCH_CUDA_ARCH_LIST="8.0;9.0" for A100 and H100 nodes'):
        install_steps.check_toolkit('cu128', env)
    # a GPU node: the visible GPU's architecture, said so
    bin_dir = tmp_path / 'gpu-bin'
    fake_program(bin_dir, 'nvidia-smi', 'GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-0)')
    install_steps.check_toolkit('cu128', dict(env, PATH=f'{bin_dir}{os.pathsep}{no_gpu_path}'))
    assert 'compiled for the 1 GPU(s) visible here only' in capsys.readouterr().out

    # nvcc found on PATH (a loaded module) when CUDA_HOME is not set
    on_path = dict(env, PATH=f'{cuda_home / "bin"}{os.pathsep}{no_gpu_path}',
                   TORCH_CUDA_ARCH_LIST='9.0')
    del on_path['CUDA_HOME']
    install_steps.check_toolkit('cu128', on_path)
    assert f'nvcc {cuda_home}/bin/nvcc: CUDA 12.8' in capsys.readouterr().out
    # a CUDA 12.6 toolkit for a 12.8 torch: same major version, accepted
    fake_program(cuda_home / 'bin', 'nvcc', NVCC_12_8.replace('12.8', '12.6'))
    install_steps.check_toolkit('cu128', dict(env, TORCH_CUDA_ARCH_LIST='9.0'))
    assert 'CUDA 12.6 (torch: CUDA 12.8; the same major works)' in capsys.readouterr().out


def test_toolkit_check_rejects_a_wrong_toolkit(tmp_path):
    cuda_home = tmp_path / 'cuda-11.8'
    fake_toolkit(cuda_home, NVCC_12_8.replace('12.8', '11.8'))
    env = {'PATH': path_without('nvcc'), 'CUDA_HOME': str(cuda_home),
           'TORCH_CUDA_ARCH_LIST': '8.0'}
    with pytest.raises(install_steps.InstallError,
                       match=r'is CUDA 11\.8, but the cu128 torch is built with CUDA 12\.8: '
                             r'.*same major version \(CUDA 12\.x\)'):
        install_steps.check_toolkit('cu128', env)
    with pytest.raises(install_steps.InstallError, match=f'CUDA_HOME={tmp_path} has no bin/nvcc'):
        install_steps.check_toolkit('cu128', dict(env, CUDA_HOME=str(tmp_path)))
    del env['CUDA_HOME']
    with pytest.raises(install_steps.InstallError, match=f'CUDA_PATH={tmp_path} has no bin/nvcc'):
        install_steps.check_toolkit('cu128', dict(env, CUDA_PATH=str(tmp_path)))
    # an nvcc on PATH outside a toolkit (a wrapper script in /usr/local/bin, as on the dev
    # machine): torch would take /usr/local as CUDA_HOME and miss the headers
    wrapper = fake_program(tmp_path / 'wrapper' / 'bin', 'nvcc', NVCC_12_8)
    with pytest.raises(install_steps.InstallError,
                       match=f'takes the folder above the bin/ of {wrapper}\\) = '
                             f'{tmp_path / "wrapper"} has no include/cuda_runtime.h'):
        install_steps.check_toolkit('cu128', dict(env, PATH=f'{wrapper.parent}{os.pathsep}'
                                                             f'{env["PATH"]}'))
    with pytest.raises(install_steps.InstallError,
                       match=r"must end in a PyTorch CUDA index name such as cu128.*got 'cuda'"):
        install_steps.check_toolkit('cuda', env)


@pytest.mark.parametrize('tag, release', [('cu128', '12.8'), ('cu118', '11.8'),
                                          ('cu130', '13.0'), ('cu92', '9.2')])
def test_cuda_release_of_an_index_name(tag, release):
    assert install_steps.cuda_release(tag) == release
    assert install_steps.cuda_tag(release) == tag


def test_torch_build_must_be_the_one_asked_for(capsys):
    # pip's default index serves a CUDA torch on Linux: a CPU install would build mmcv
    # without CUDA ops beside it, and the prebuilt CPU mmcv wheel does not fit it
    with pytest.raises(install_steps.InstallError,
                       match=r'torch 2\.13\.0 in \.venv is a CUDA 12\.8 build.*'
                             r'make install TORCH_INDEX_URL=https://download\.pytorch\.org/whl/'
                             r'cu128 .*make clean; make install TORCH_INDEX_URL=https://download'
                             r'\.pytorch\.org/whl/cpu'):
        install_steps.check_torch_build('2.13.0', '12.8', None)
    # a CPU torch left in .venv satisfies torch==2.13.0: pip would keep it
    with pytest.raises(install_steps.InstallError,
                       match=r'torch 2\.13\.0\+cpu in \.venv is a CPU build, but TORCH_INDEX_URL '
                             r'asks for cu128.*Run make clean'):
        install_steps.check_torch_build('2.13.0+cpu', None, 'cu128')
    install_steps.check_torch_build('2.13.0+cu128', '12.8', 'cu128')
    install_steps.check_torch_build('2.13.0+cpu', None, None)
    assert capsys.readouterr().out.splitlines() == [
        'mmdysample install: torch 2.13.0+cu128, CUDA 12.8',
        'mmdysample install: torch 2.13.0+cpu, CPU build']


@pytest.mark.slow  # an interpreter imports torch
def test_check_torch_reads_the_installed_torch():
    # this machine's torch is a CPU build, refused for a CUDA install (the CPU install's
    # check-torch --cpu runs in every `make install`)
    cuda = subprocess.run([sys.executable, str(REPO / 'tools' / 'install_steps.py'), 'check-torch',
                           '--cuda-tag', 'cu128'], capture_output=True, text=True, timeout=300)
    assert cuda.returncode == 1
    assert (f'torch {importlib.metadata.version("torch")} in .venv is a CPU build, but '
            'TORCH_INDEX_URL asks for cu128') in cuda.stderr


# the shape of torch's ninja -v lines ("-c" twice: in the flags and before the source)
FAKE_PIP = r'''
import sys, time
print('Collecting mmcv==2.1.0', flush=True)
print('  Building wheel for mmcv (setup.py): started', flush=True)
time.sleep(1.5)
print('  [1/3] c++ -MMD -MF /b/nms.o.d -I/inc -c -c '
      '/tmp/pip-install-x/mmcv_1/mmcv/ops/csrc/pytorch/nms.cpp -o /b/nms.o -O3', flush=True)
print('  compiler noise', flush=True)
print('  [2/3] /usr/local/cuda/bin/nvcc --generate-dependencies-with-compile '
      '-c /x/cuda/roi_align_cuda.cu -o /b/r.o -DX', flush=True)
print('  [3/3] c++ /b/nms.o /b/r.o -shared -L/t/lib -o /b/_ext.so', flush=True)
print('Successfully installed mmcv-2.1.0', flush=True)
'''


def shown(output: str) -> list:
    """The progress lines, without their elapsed time."""
    return [re.sub(r'^  mmcv \d+m\d\ds ', '', line) for line in output.splitlines()
            if line.startswith('  mmcv ')]


def test_mmcv_progress_one_line_a_file_and_a_heartbeat(tmp_path, capsys):
    log = tmp_path / 'mmcv-build.log'
    returncode = install_steps.run_with_progress([sys.executable, '-c', FAKE_PIP], str(log),
                                                 heartbeat_s=0.2)
    assert returncode == 0
    lines = shown(capsys.readouterr().out)
    heartbeat = 'still running (pip is downloading / preparing the build)'
    assert [line for line in lines if line != heartbeat] == [
        'Building wheel for mmcv (setup.py): started', '[1/3] nms.cpp', '[2/3] roi_align_cuda.cu',
        '[3/3] linking', 'Successfully installed mmcv-2.1.0']
    # the 1.5 s without output between "Building wheel" and the first step
    assert heartbeat in lines[lines.index('Building wheel for mmcv (setup.py): started'):
                              lines.index('[1/3] nms.cpp')]
    assert 'compiler noise' in log.read_text() and 'Collecting mmcv' in log.read_text()


def test_mmcv_failure_shows_the_end_of_the_output(tmp_path, capsys):
    log = tmp_path / 'mmcv-build.log'
    command = [sys.executable, '-c', 'import sys\nfor i in range(60): print(f"line {i}")\n'
               'sys.exit(3)']
    assert install_steps.run_with_progress(command, str(log)) == 3
    out = capsys.readouterr().out
    assert 'line 19\n' not in out and 'line 20\nline 21' in out and out.count('line 59') == 1
    assert (f'mmdysample install: installing mmcv failed (exit status 3) after 0m00s; the '
            f'whole output: {log}') in out
    assert log.read_text().count('\n') == 60


def test_mmcv_note_says_it_compiles_and_how_long(monkeypatch):
    pip = ['pip', 'install', '-v', '--no-build-isolation', 'mmcv==2.1.0']
    note = install_steps.build_note(pip, cuda=False, log_path='L', environ={'MAX_JOBS': '2'})
    assert note.startswith('mmcv 2.1.0 compiles from source: 12 min for the CPU ops alone on the '
                           '2-core dev machine with MAX_JOBS=2, up to 30 min on a loaded machine.')
    assert 'MAX_JOBS=2 parallel compiles' in note and 'the whole output in L' in note
    note = install_steps.build_note(pip, cuda=True, log_path='L', environ={'MAX_JOBS': '8'})
    assert 'with its CUDA ops' in note and 'the CUDA ops take longer' in note
    cached = pip[:-1] + ['--find-links', '/w', 'mmcv==2.1.0']
    note = install_steps.build_note(cached, cuda=False, log_path='L', environ={})
    assert note.startswith('mmcv 2.1.0: the prebuilt CPU wheel in /w (seconds) when it fits this '
                           'Python; otherwise mmcv 2.1.0 compiles from source')


def test_mmcv_cuda_step_replaces_an_mmcv_without_cuda_ops(tmp_path, monkeypatch, capsys):
    # CPU stand-in for the CUDA branch: mmcv_cuda_ops and pip uninstall are faked, the
    # "pip install" is a script that prints what pip prints
    reports = iter(['not available', '12.8'])
    uninstalled = []
    monkeypatch.setattr(install_steps, 'mmcv_cuda_ops', lambda: next(reports))
    monkeypatch.setattr(install_steps.subprocess, 'run',
                        lambda command, check: uninstalled.append(command))
    pip = [sys.executable, '-c', 'print("Successfully installed mmcv-2.1.0")']
    assert install_steps.install_mmcv(pip, True, str(tmp_path / 'log'), 60.0) == 0
    assert uninstalled == [[sys.executable, '-m', 'pip', 'uninstall', '-y', '-q', 'mmcv']]
    out = capsys.readouterr().out
    assert 'the mmcv in .venv has no CUDA ops (an earlier CPU install): replacing it' in out
    assert out.rstrip().endswith('mmdysample install: mmcv ops compiled with CUDA 12.8')

    # an mmcv that still comes out without CUDA ops (e.g. from a cache) stops the install
    reports = iter([None, 'not available'])
    with pytest.raises(install_steps.InstallError,
                       match="mmcv was installed without CUDA ops .*'not available'"):
        install_steps.install_mmcv(pip, True, str(tmp_path / 'log'), 60.0)


@pytest.mark.slow  # an interpreter imports torch and mmcv.ops
def test_mmcv_cuda_ops_reads_the_installed_mmcv():
    # this machine's mmcv has its CPU ops only
    assert install_steps.mmcv_cuda_ops(sys.executable) == 'not available'


# ---------------------------------------------------------------------------- metadata
def project():
    with open(REPO / 'pyproject.toml', 'rb') as f:
        return tomllib.load(f)['project']


def declared(extra=None) -> set:
    """Distribution names an install of mmdysample (with ``extra``) asks for, its own extras
    followed."""
    metadata = project()
    requirements = list(metadata['dependencies'])
    pending = [extra] if extra else []
    while pending:
        for requirement in metadata['optional-dependencies'][pending.pop()]:
            parsed = Requirement(requirement)
            if parsed.name == 'mmdysample':
                pending.extend(parsed.extras)
            else:
                requirements.append(requirement)
    return {Requirement(r).name.lower() for r in requirements}


def with_dependencies(names: set) -> set:
    """``names`` and, recursively, what their installed distributions require."""
    closure, pending = set(), list(names)
    while pending:
        name = pending.pop().lower()
        if name in closure:
            continue
        closure.add(name)
        try:
            requires = importlib.metadata.requires(name) or []
        except importlib.metadata.PackageNotFoundError:
            continue
        for requirement in map(Requirement, requires):
            if requirement.marker is None or requirement.marker.evaluate({'extra': ''}):
                pending.append(requirement.name)
    return {n.replace('_', '-') for n in closure}


def imported_distributions(paths) -> set:
    """The distributions whose modules ``paths`` import at module level, outside ``try``
    (optional imports and imports inside functions, e.g. mmcv's CUDA CARAFE kernel, are
    not requirements)."""
    top_level = set()
    for path in paths:
        for node in ast.parse(path.read_text(encoding='utf-8')).body:
            if isinstance(node, ast.Import):
                top_level |= {alias.name.split('.')[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                top_level.add(node.module.split('.')[0])
    distributions = importlib.metadata.packages_distributions()
    return {d.lower().replace('_', '-') for module in top_level - set(sys.stdlib_module_names)
            - {'mmdysample'} for d in distributions.get(module, [module])}


def test_base_install_is_torch_and_mmengine():
    assert declared() == {'torch', 'mmengine', 'numpy', 'ninja'}
    assert set(project()['optional-dependencies']) == {'mmdet', 'mmseg', 'depth', 'all', 'test',
                                                        'bench'}
    assert declared('all') - declared() == {'mmcv', 'mmdet', 'mmsegmentation', 'mmpretrain',
                                            'ftfy', 'regex'}
    assert 'onnxscript' in declared('test')  # torch's default ONNX exporter needs it


@pytest.mark.parametrize('extra, folder, excluded', [
    (None, 'mmdysample', ('mmdet', 'mmseg', 'datasets')),  # the layers, ops, engine, compat
    ('mmdet', 'mmdysample/mmdet', ()),
    ('mmseg', 'mmdysample/mmseg', ('depth', )),
    ('depth', 'mmdysample/mmseg/depth', ()),
    ('all', 'mmdysample/datasets', ()),  # the synthetic data sets of the demo
])
def test_each_extra_declares_what_its_modules_import(extra, folder, excluded):
    root = REPO / folder
    paths = [p for p in root.rglob('*.py')
             if not set(p.relative_to(root).parts[:-1]) & set(excluded)]
    imported = imported_distributions(paths)
    assert imported, folder
    # mmcv's own requirements bring opencv and mmdet's pycocotools (the datasets import them)
    assert imported - with_dependencies(declared(extra)) == set()
    if extra is None:
        assert not imported & {'mmcv', 'mmdet', 'mmsegmentation', 'mmpretrain'}
