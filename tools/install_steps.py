"""The steps of ``make install`` that need more than one pip command (docs/install.md).

``check-toolkit --cuda-tag cu128``
    First step of a CUDA install, before anything is downloaded: nvcc is found (``CUDA_HOME``,
    else ``PATH``), its CUDA major version is the one the torch index is built with, and the
    GPU architectures to compile for are known (``TORCH_CUDA_ARCH_LIST``, or a GPU that
    ``nvidia-smi`` lists). Standard library only: it runs with the system Python, before
    ``.venv`` exists.
``check-torch --cpu | --cuda-tag cu128``
    After torch is installed: it is the build that was asked for (``torch.version.cuda``), and
    for CUDA the toolkit and architecture checks again, against the installed torch (the
    GPUs torch itself sees).
``mmcv [--cuda] --log FILE -- PIP-COMMAND...``
    Runs the pip command that installs mmcv, saying up front that mmcv compiles from source
    and how long that takes, then showing one line per compiled file (ninja's ``[n/N]``) and
    a line a minute, while the whole output goes to FILE. With ``--cuda`` an installed mmcv
    without CUDA ops is replaced (pip would keep it) and the new one is checked to have them.

Every check stops with exit status 1 and a message saying what to do.
"""
import argparse
import collections
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from typing import Deque, Optional, Sequence, TextIO

# mmcv 2.1.0 from source, CPU ops only, on the 2-core x86 dev machine (AMD EPYC), torch
# 2.13.0+cpu, MAX_JOBS=2: 12 min 18 s for its 77 files (fresh clone, empty pip cache, load
# average ~2, 2026-12-05; docs/install.md).
MMCV_BUILD_MINUTES_DEV = 12
MMCV_BUILD_MINUTES_LOADED = 30  # the same build on that machine under load from other jobs
# PyTorch's index URLs name the CUDA release they are built with: .../whl/cu128 = CUDA 12.8.
CUDA_TAG_PATTERN = re.compile(r'cu(\d+)(\d)')
# ninja -v (torch.utils.cpp_extension's builds): "[3/97] c++ ... -c /path/nms.cpp -o ..."
NINJA_STEP = re.compile(r'^\s*\[(\d+)/(\d+)\]\s+(.*)$')
SOURCE_FILE = re.compile(r'\.(c|cc|cpp|cxx|cu)$')
# pip -v lines worth showing besides the compile steps
PIP_MILESTONES = ('Building wheel for mmcv', 'Successfully installed',
                  'Requirement already satisfied: mmcv', 'ERROR:')
FAILURE_TAIL_LINES = 40


class InstallError(RuntimeError):
    """A check failed; the message says what to do."""


# ---------------------------------------------------------------------------- CUDA checks
def cuda_release(cuda_tag: str) -> str:
    """``'cu128'`` -> ``'12.8'``, ``'cu118'`` -> ``'11.8'``, ``'cu130'`` -> ``'13.0'``."""
    match = CUDA_TAG_PATTERN.fullmatch(cuda_tag)
    if match is None:
        raise InstallError(f'TORCH_INDEX_URL must end in a PyTorch CUDA index name such as '
                           f'cu128 (https://download.pytorch.org/whl/cu128), got {cuda_tag!r}')
    return f'{int(match.group(1))}.{match.group(2)}'


def cuda_tag(release: str) -> str:
    """``'12.8'`` -> ``'cu128'``."""
    major, minor = release.split('.')[:2]
    return f'cu{major}{minor}'


def find_nvcc(cuda_tag_: str, environ=os.environ) -> str:
    """The nvcc of the toolkit that torch's extension builder will use, found as torch finds
    it: ``$CUDA_HOME`` (or ``$CUDA_PATH``), else the folder above the ``bin/`` of the nvcc
    on ``PATH``; that folder must also hold the CUDA headers. (torch falls back to
    /usr/local/cuda as well; this check asks for the toolkit to be named instead.)"""
    release = cuda_release(cuda_tag_)
    major = release.split('.')[0]
    variable = 'CUDA_HOME' if environ.get('CUDA_HOME') else 'CUDA_PATH'
    cuda_home = environ.get(variable)
    if cuda_home:
        nvcc = os.path.join(cuda_home, 'bin', 'nvcc')
        if not os.access(nvcc, os.X_OK):
            raise InstallError(
                f'{variable}={cuda_home} has no bin/nvcc: point {variable} at a CUDA {major}.x '
                f'toolkit (the folder that holds bin/nvcc), e.g. export '
                f'CUDA_HOME=/usr/local/cuda-{release}, or load one (module load cuda/{release}) '
                f'and unset {variable}; then run make install again.')
    else:
        nvcc = shutil.which('nvcc', path=environ.get('PATH', os.defpath))
        if nvcc is None:
            hint = ''
            if os.access('/usr/local/cuda/bin/nvcc', os.X_OK):
                hint = ' (/usr/local/cuda/bin/nvcc exists here: export CUDA_HOME=/usr/local/cuda)'
            raise InstallError(
                f'TORCH_INDEX_URL asks for a CUDA {release} torch ({cuda_tag_}), so mmcv is '
                'compiled with its CUDA ops (FORCE_CUDA=1), which needs the CUDA compiler nvcc; '
                'but CUDA_HOME is not set and nvcc is not on PATH. Load a CUDA '
                f'{major}.x toolkit, best the release torch is built with (on a cluster: '
                f'module load cuda/{release}; module avail cuda lists them), or export '
                f'CUDA_HOME=/path/to/cuda-{release} (the folder that holds bin/nvcc){hint}; then '
                'run make install again.')
        cuda_home = os.path.dirname(os.path.dirname(nvcc))
        variable = f'CUDA_HOME (unset: torch takes the folder above the bin/ of {nvcc})'
    if not os.path.isfile(os.path.join(cuda_home, 'include', 'cuda_runtime.h')):
        raise InstallError(
            f'{variable} = {cuda_home} has no include/cuda_runtime.h, so torch would not find '
            f'the CUDA headers (is {nvcc} a wrapper script?): export CUDA_HOME=<the CUDA '
            f'{major}.x toolkit folder, with bin/nvcc and include/>, or load the toolkit '
            f'(module load cuda/{release}); then run make install again.')
    return nvcc


def nvcc_release(nvcc: str) -> str:
    """The CUDA release of ``nvcc`` (``'12.8'``), from ``nvcc --version``."""
    try:
        out = subprocess.run([nvcc, '--version'], capture_output=True, text=True,
                             timeout=60).stdout
    except OSError as error:
        raise InstallError(f'{nvcc} --version failed: {error}') from error
    match = re.search(r'release (\d+\.\d+)', out)
    if match is None:
        raise InstallError(f'cannot read the CUDA release from {nvcc} --version:\n{out}')
    return match.group(1)


def check_nvcc_matches(nvcc: str, nvcc_cuda: str, torch_cuda: str, what: str) -> None:
    """torch builds extensions only with an nvcc of its own CUDA major version."""
    major = torch_cuda.split('.')[0]
    if nvcc_cuda.split('.')[0] != major:
        raise InstallError(
            f'{nvcc} is CUDA {nvcc_cuda}, but {what} is built with CUDA {torch_cuda}: torch '
            f'compiles extensions only with a toolkit of the same major version (CUDA '
            f'{major}.x). Load one (module load cuda/{torch_cuda}) or export '
            f'CUDA_HOME=/path/to/cuda-{torch_cuda}; then run make install again.')
    note = '' if nvcc_cuda == torch_cuda else f' (torch: CUDA {torch_cuda}; the same major works)'
    print(f'mmdysample install: nvcc {nvcc}: CUDA {nvcc_cuda}{note}')


def check_gpu_architectures(arch_list: Optional[str], visible_gpus: int, looked: str) -> None:
    """torch compiles CUDA code for ``TORCH_CUDA_ARCH_LIST``, or else for the GPUs it sees;
    with neither, its extension builder fails (an empty architecture list)."""
    if arch_list and arch_list != 'native':
        print(f'mmdysample install: mmcv CUDA ops are compiled for '
              f'TORCH_CUDA_ARCH_LIST={arch_list}')
        return
    if visible_gpus == 0:
        raise InstallError(
            f'No GPU is visible here ({looked}), e.g. on a login node, so torch cannot tell '
            'which GPU architectures to compile mmcv\'s CUDA ops for. Set '
            'TORCH_CUDA_ARCH_LIST to the compute capabilities of the GPUs the jobs will run '
            'on, e.g. export TORCH_CUDA_ARCH_LIST="8.0;9.0" for A100 and H100 nodes '
            '(nvidia-smi --query-gpu=name,compute_cap --format=csv on a GPU node prints '
            'them); then run make install again.')
    print(f'mmdysample install: TORCH_CUDA_ARCH_LIST is not set: mmcv CUDA ops are compiled '
          f'for the {visible_gpus} GPU(s) visible here only ({looked}); set it to cover every '
          'GPU type the jobs may run on (docs/install.md)')


def nvidia_smi_gpus(environ=os.environ) -> int:
    """GPUs that ``nvidia-smi -L`` lists (0 without nvidia-smi or a driver)."""
    nvidia_smi = shutil.which('nvidia-smi', path=environ.get('PATH', os.defpath))
    if nvidia_smi is None:
        return 0
    try:
        out = subprocess.run([nvidia_smi, '-L'], capture_output=True, text=True,
                             timeout=60).stdout
    except (OSError, subprocess.TimeoutExpired):
        return 0
    return sum(line.startswith('GPU ') for line in out.splitlines())


def check_toolkit(cuda_tag_: str, environ=os.environ) -> None:
    """``check-toolkit``: everything a CUDA build needs that can be checked before torch."""
    release = cuda_release(cuda_tag_)
    nvcc = find_nvcc(cuda_tag_, environ)
    check_nvcc_matches(nvcc, nvcc_release(nvcc), release, f'the {cuda_tag_} torch')
    check_gpu_architectures(environ.get('TORCH_CUDA_ARCH_LIST'), nvidia_smi_gpus(environ),
                            'nvidia-smi -L')


def check_torch_build(torch_version: str, torch_cuda: Optional[str],
                      cuda_tag_: Optional[str]) -> None:
    """The installed torch is the build asked for: CUDA when ``cuda_tag_``, CPU otherwise."""
    if cuda_tag_ is None and torch_cuda is not None:
        raise InstallError(
            f'torch {torch_version} in .venv is a CUDA {torch_cuda} build (pip\'s default '
            'index serves CUDA builds on Linux), but TORCH_INDEX_URL names no CUDA index, so '
            'this is a CPU install: mmcv would be compiled without its CUDA ops. For CUDA: '
            f'make install TORCH_INDEX_URL=https://download.pytorch.org/whl/'
            f'{cuda_tag(torch_cuda)} (it needs nvcc: docs/install.md). For CPU only: make '
            'clean; make install TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu')
    if cuda_tag_ is not None and torch_cuda is None:
        raise InstallError(
            f'torch {torch_version} in .venv is a CPU build, but TORCH_INDEX_URL asks for '
            f'{cuda_tag_}: pip keeps an installed torch that satisfies TORCH_SPEC. Run make '
            'clean, then the same make install again.')
    print(f'mmdysample install: torch {torch_version}'
          + (f', CUDA {torch_cuda}' if torch_cuda else ', CPU build'))


def check_torch(cuda_tag_: Optional[str], environ=os.environ) -> None:
    """``check-torch``: :func:`check_torch_build`, then for CUDA the toolkit and the
    architectures against the installed torch."""
    import torch
    check_torch_build(torch.__version__, torch.version.cuda, cuda_tag_)
    if cuda_tag_ is not None:
        nvcc = find_nvcc(cuda_tag_, environ)
        check_nvcc_matches(nvcc, nvcc_release(nvcc), torch.version.cuda,
                           f'torch {torch.__version__}')
        check_gpu_architectures(environ.get('TORCH_CUDA_ARCH_LIST'),
                                torch.cuda.device_count(), 'torch.cuda.device_count()')


# ---------------------------------------------------------------------------- mmcv build
def _minutes(seconds: float) -> str:
    return f'{int(seconds // 60)}m{int(seconds % 60):02d}s'


def describe_step(line: str) -> Optional[str]:
    """``'[3/97] c++ ... -c /x/nms.cpp -o ...'`` -> ``'[3/97] nms.cpp'``; None for a line
    that is not a ninja step."""
    match = NINJA_STEP.match(line)
    if match is None:
        return None
    tokens = match.group(3).split()
    # torch's ninja rules pass "-c" twice (in cflags and before the source): name the source
    sources = [t for t in tokens if SOURCE_FILE.search(t)]
    if sources:
        what = os.path.basename(sources[0])
    elif '-shared' in tokens:
        what = 'linking'
    else:
        what = os.path.basename(tokens[0]) if tokens else ''
    return f'[{match.group(1)}/{match.group(2)}] {what}'


def run_with_progress(command: Sequence[str], log_path: str, heartbeat_s: float = 60.0,
                      out: Optional[TextIO] = None, env=None) -> int:
    """Runs ``command``, its whole output going to ``log_path``; prints the compile steps
    (:func:`describe_step`) and :data:`PIP_MILESTONES` as they come, and a line every
    ``heartbeat_s`` seconds when nothing was printed. On failure prints the output's last
    lines. Returns the exit status."""
    out = out or sys.stdout
    start = time.monotonic()
    lock = threading.Lock()
    state = {'printed': start, 'last_step': None}
    done = threading.Event()

    def say(text: str) -> None:
        with lock:
            out.write(f'  mmcv {_minutes(time.monotonic() - start)} {text}\n')
            out.flush()
            state['printed'] = time.monotonic()

    def heartbeat() -> None:
        while not done.wait(min(heartbeat_s, 5.0)):
            if time.monotonic() - state['printed'] >= heartbeat_s:
                last = state['last_step']
                say('still running' + (f' (last compiled: {last})' if last
                                       else ' (pip is downloading / preparing the build)'))

    tail: Deque[str] = collections.deque(maxlen=FAILURE_TAIL_LINES)
    with open(log_path, 'w', encoding='utf-8') as log:
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                   text=True, errors='replace', bufsize=1, env=env)
        ticker = threading.Thread(target=heartbeat, daemon=True)
        ticker.start()
        try:
            for line in process.stdout:
                log.write(line)
                tail.append(line.rstrip('\n'))
                step = describe_step(line)
                if step is not None:
                    state['last_step'] = step
                    say(step)
                elif line.strip().startswith(PIP_MILESTONES):
                    say(line.strip())
            returncode = process.wait()
        finally:
            done.set()
            ticker.join()
    if returncode != 0:
        out.write('\n'.join(['  mmcv: the last lines of the output:', *tail]) + '\n')
        out.write(f'mmdysample install: installing mmcv failed (exit status {returncode}) '
                  f'after {_minutes(time.monotonic() - start)}; the whole output: {log_path}\n')
    else:
        out.write(f'mmdysample install: mmcv step done in {_minutes(time.monotonic() - start)} '
                  f'(output: {log_path})\n')
    out.flush()
    return returncode


def mmcv_cuda_ops(python: str = sys.executable) -> Optional[str]:
    """What the installed mmcv's ops were compiled with: the CUDA release, ``'not
    available'`` (CPU ops only), or None (no mmcv, or no compiled ops)."""
    code = 'from mmcv.ops import get_compiling_cuda_version as v; print(v())'
    result = subprocess.run([python, '-c', code], capture_output=True, text=True, timeout=600)
    lines = result.stdout.strip().splitlines()
    return lines[-1] if result.returncode == 0 and lines else None


def build_note(pip_command: Sequence[str], cuda: bool, log_path: str, environ=os.environ) -> str:
    """What the mmcv step will take, said before it starts."""
    jobs = environ.get('MAX_JOBS', 'all cores')
    from_source = (f'mmcv 2.1.0 compiles from source{" with its CUDA ops" if cuda else ""}: '
                   f'{MMCV_BUILD_MINUTES_DEV} min for the CPU ops alone on the 2-core dev '
                   f'machine with MAX_JOBS=2, up to {MMCV_BUILD_MINUTES_LOADED} min on a loaded '
                   f'machine{"; the CUDA ops take longer" if cuda else ""}. MAX_JOBS={jobs} '
                   f'parallel compiles; one line per compiled file below, the whole output in '
                   f'{log_path}.')
    if '--find-links' in pip_command:
        wheels = pip_command[pip_command.index('--find-links') + 1]
        return (f'mmcv 2.1.0: the prebuilt CPU wheel in {wheels} (seconds) when it fits this '
                f'Python; otherwise {from_source}')
    return from_source


def install_mmcv(pip_command: Sequence[str], cuda: bool, log_path: str,
                 heartbeat_s: float) -> int:
    """``mmcv``: see the module docstring."""
    if cuda and mmcv_cuda_ops() == 'not available':
        print('mmdysample install: the mmcv in .venv has no CUDA ops (an earlier CPU '
              'install): replacing it')
        subprocess.run([sys.executable, '-m', 'pip', 'uninstall', '-y', '-q', 'mmcv'],
                       check=True)
    print(f'mmdysample install: {build_note(pip_command, cuda, log_path)}', flush=True)
    returncode = run_with_progress(pip_command, log_path, heartbeat_s,
                                   env=dict(os.environ, PYTHONUNBUFFERED='1'))
    if returncode == 0 and cuda:
        compiled_with = mmcv_cuda_ops()
        if compiled_with in (None, 'not available'):
            raise InstallError(
                f'mmcv was installed without CUDA ops (mmcv.ops reports {compiled_with!r}): '
                f'see {log_path}; make clean and run make install again')
        print(f'mmdysample install: mmcv ops compiled with CUDA {compiled_with}')
    return returncode


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    steps = parser.add_subparsers(dest='step', required=True)
    toolkit = steps.add_parser('check-toolkit', help='nvcc and GPU architectures, before torch')
    toolkit.add_argument('--cuda-tag', required=True, help='cu128, ...: the torch index name')
    torch_step = steps.add_parser('check-torch', help='the installed torch is the build asked for')
    build = torch_step.add_mutually_exclusive_group(required=True)
    build.add_argument('--cpu', action='store_true', help='a CPU install')
    build.add_argument('--cuda-tag', help='a CUDA install from this torch index (cu128, ...)')
    mmcv = steps.add_parser('mmcv', help='run the pip command that installs mmcv, with progress')
    mmcv.add_argument('--cuda', action='store_true', help='mmcv must have CUDA ops')
    mmcv.add_argument('--log', required=True, help='file for the whole pip output')
    mmcv.add_argument('--heartbeat', type=float, default=60.0,
                      help='seconds between "still running" lines (default 60)')
    mmcv.add_argument('pip_command', nargs=argparse.REMAINDER,
                      help='-- then the pip command')
    args = parser.parse_args(argv)
    try:
        if args.step == 'check-toolkit':
            check_toolkit(args.cuda_tag)
        elif args.step == 'check-torch':
            check_torch(args.cuda_tag)
        else:
            command = args.pip_command[1:] if args.pip_command[:1] == ['--'] else args.pip_command
            if not command:
                parser.error('mmcv: give the pip command after --')
            return install_mmcv(command, args.cuda, args.log, args.heartbeat)
    except InstallError as error:
        print(f'mmdysample install: {error}', file=sys.stderr)
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
