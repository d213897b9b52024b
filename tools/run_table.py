"""Train every row of one of the paper's tables, on a Slurm cluster or on this machine.

    python tools/run_table.py --table 6 --launcher slurm --partition P --gpus 8 --dry-run
    python tools/run_table.py --table 6 --launcher slurm --partition P --gpus 8
    python tools/run_table.py --table demo --launcher local --iters 20 --work-dir D
    python tools/collect_results.py --table 6 --work-dir work_dirs/tables

The rows come from the metafiles (``Metadata: Paper Tables``; ``tools/paper_tables.py``).
Each row trains in its own directory ``<work-dir>/<config name>`` (a config that is in
several tables, e.g. DySample in Tables 3 and 6, trains once). Rerunning the command skips
rows that finished and rows still queued or running, and resumes the others from their
last checkpoint (every job passes ``--resume`` to ``tools/train.py``: a fresh row starts
from scratch, an interrupted one continues).

Slurm: one ``sbatch`` job script per row (``<row dir>/run_table_job.sh``), which runs
``tools/train.py --launcher slurm`` through ``srun`` with ``--gpus`` tasks,
``--gpus-per-node`` tasks and GPUs per node and ``--cpus-per-task`` CPUs each. The job is
requeued on preemption (``--requeue``) and, warned 5 minutes before its time limit
(``--signal=B:USR1@300``), requeues itself; either way it resumes. sbatch's own
environment variables (``SBATCH_TIMELIMIT``, ``SBATCH_ACCOUNT``, ``SBATCH_QOS``...) apply.
Local: the rows run one after the other through ``tools/train.py`` (``--gpus`` > 1:
``tools/dist_train.sh``), each logging to ``<row dir>/run_table.log``.

Before anything runs, every row that would run is listed with its schedule (epochs or
iterations, images per GPU x GPUs against the recipe's batch) and what its job reads: the
dataset paths of its train and val phases and its pretrained checkpoints (resolved as
mmengine resolves ``torchvision://``, ``open-mmlab://``, ``mmcls://`` names and URLs, to the
file in torch hub's cache, ``$TORCH_HOME/hub/checkpoints``, which the job scripts export),
each present or missing. A real run with anything missing submits nothing and exits with
status 2 (``--force`` goes ahead). ``--fetch-weights`` first downloads the missing
checkpoints into that cache (``--weights-mirror URL``: from a mirror laid out like the
original hosts), checking the SHA-256 prefix that torch hub and OpenMMLab put in the names.
"""
import argparse
import datetime
import functools
import json
import os
import os.path as osp
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

TOOLS_DIR = osp.dirname(osp.abspath(__file__))
if TOOLS_DIR not in sys.path:
    sys.path.insert(0, TOOLS_DIR)

import paper_tables  # noqa: E402  (tools/ is not a package)
import tool_helpers  # noqa: E402
from paper_tables import EXIT_CODE, REPO_ROOT, RUN_RECORD, Row  # noqa: E402

JOB_SCRIPT = 'run_table_job.sh'
LOCAL_LOG = 'run_table.log'
REQUEUE_SIGNAL_S = 300


def smoke_schedule_options(iters: int) -> List[str]:
    """``--cfg-options`` that cut any config (epoch- or iteration-based) to ``iters``
    training iterations with one validation and one checkpoint at the end; learning-rate
    schedules keep their settings (a smoke run, not a shorter recipe). Reading the config is
    not needed, which matters: resolving an ``mmdet::`` config takes seconds to minutes."""
    return ['train_cfg._delete_=True', 'train_cfg.type=IterBasedTrainLoop',
            f'train_cfg.max_iters={iters}', f'train_cfg.val_interval={iters}',
            'default_hooks.checkpoint.by_epoch=False',
            f'default_hooks.checkpoint.interval={iters}', 'log_processor.by_epoch=False']


# ------------------------------------------------------------------ what a row needs
@dataclass
class Schedule:
    """A row's training schedule, as its config (with the run's options) sets it."""
    unit: str  # 'epochs' or 'iterations'
    length: int
    batch_per_gpu: Optional[int]
    recipe_batch: Optional[int]  # images per iteration the recipe trains with, all GPUs
    val_interval: Optional[int] = None  # in the loop's unit
    checkpoint_interval: Optional[int] = None
    checkpoint_unit: str = 'epochs'
    checkpoint_last: bool = True  # CheckpointHook's save_last

    def describe(self, gpus: int) -> str:
        unit = self.unit[:-1] if self.length == 1 else self.unit
        text = f'{self.length:,} {unit}'
        if self.batch_per_gpu is not None:
            total = self.batch_per_gpu * gpus
            text += (f', {self.batch_per_gpu} images/GPU x {gpus} GPU{"s" * (gpus > 1)} = '
                     f'{total} images/iteration')
            if self.recipe_batch is not None:
                recipe_gpus = self.recipe_batch / self.batch_per_gpu
                recipe = (f'{recipe_gpus:g} GPUs x {self.batch_per_gpu}'
                          if recipe_gpus == int(recipe_gpus) else 'see its config')
                text += (f' (the recipe\'s {self.recipe_batch})' if total == self.recipe_batch
                         else f' (the recipe trains with {self.recipe_batch} = {recipe}: '
                         'scale the batch or the learning rate with --cfg-options)')
        if self.val_interval:
            text += f'; validation every {_every(self.val_interval, self.unit)}'
        if self.checkpoint_interval and self.checkpoint_unit == self.unit \
                and self.checkpoint_interval >= self.length:
            text += ', checkpoint at the end' if self.checkpoint_last else ', no checkpoint'
        elif self.checkpoint_interval:
            text += f', checkpoint every {_every(self.checkpoint_interval, self.checkpoint_unit)}'
        return text


def _every(interval: int, unit: str) -> str:
    return unit[:-1] if interval == 1 else f'{interval:,} {unit}'


@dataclass
class RowNeeds:
    """What a row's job reads: its schedule, the dataset paths of its train and val phases
    (``(phase, config key, path, preparation hint)``) and its pretrained checkpoints
    (``(config key, name)``)."""
    schedule: Optional[Schedule]
    data: List[Tuple[str, str, str, str]] = field(default_factory=list)
    checkpoints: List[Tuple[str, str]] = field(default_factory=list)


def _schedule(cfg, recipe_batch: Optional[int]) -> Optional[Schedule]:
    train_cfg = cfg.get('train_cfg', None) or {}
    if 'max_epochs' in train_cfg:
        unit, length = 'epochs', train_cfg['max_epochs']
    elif 'max_iters' in train_cfg:
        unit, length = 'iterations', train_cfg['max_iters']
    else:
        return None
    dataloader = cfg.get('train_dataloader', None) or {}
    recipe_batch = recipe_batch or (cfg.get('auto_scale_lr', None) or {}).get('base_batch_size')
    checkpoint = (cfg.get('default_hooks', None) or {}).get('checkpoint', None) or {}
    return Schedule(unit, int(length), dataloader.get('batch_size'), recipe_batch,
                    train_cfg.get('val_interval'), checkpoint.get('interval'),
                    'epochs' if checkpoint.get('by_epoch', True) else 'iterations',
                    checkpoint.get('save_last', True))


@functools.lru_cache(maxsize=None)
def _read_needs(config: str, recipe_batch: Optional[int], options: Tuple[str, ...]) -> RowNeeds:
    """A config read once per process and options (each ``mmdet::``/``mmseg::`` base name
    looked up once: :func:`tool_helpers.memoize_external_config_lookup`); its custom
    imports are for the job, not for this process. ``recipe_batch``: the metafile's, else
    the config's ``auto_scale_lr``."""
    from mmengine.config import Config

    tool_helpers.memoize_external_config_lookup()
    cfg = Config.fromfile(osp.join(REPO_ROOT, config), import_custom_modules=False)
    tool_helpers.merge_cfg_options(cfg, options)  # as the job's tools/train.py parses them
    paths = tool_helpers.dataset_paths(cfg, tool_helpers.training_phases(cfg))
    data = [(key.split('_', 1)[0], key, path, hint) for key, path, hint in paths]
    return RowNeeds(_schedule(cfg, recipe_batch), data, tool_helpers.config_checkpoints(cfg))


def _cfg_options(train_args: Sequence[str]) -> Tuple[str, ...]:
    args = list(train_args)
    return tuple(args[args.index('--cfg-options') + 1:]) if '--cfg-options' in args else ()


def row_needs(job: 'Job') -> RowNeeds:
    """What the row's job will read, with the options the job passes to tools/train.py."""
    return _read_needs(job.row.config, job.row.batch_size, _cfg_options(job.train_args))


@dataclass
class Requirement:
    """One thing a row needs before its job can run, and whether it is there."""
    kind: str  # 'data' or 'weights'
    label: str  # 'train', 'val' (data) or the checkpoint name (weights)
    path: Optional[str]  # absolute; None for a checkpoint that cannot be checked from here
    status: str  # present / missing / unresolved / unchecked
    hint: str = ''  # data: how to prepare it
    checkpoint: Optional[tool_helpers.PretrainedCheckpoint] = None

    def line(self) -> str:
        if self.kind == 'data':
            return f'data ({self.label}): {self.path}  {self.status}'
        ckpt = self.checkpoint
        where = f' -> {ckpt.path}' if ckpt.path else ''
        note = {'unresolved': f' ({ckpt.error})',
                'unchecked': ' (read by the job\'s file backend; not checked here)'}.get(
                    self.status, '')
        return f'weights: {ckpt.name}{where}  {self.status}{note}'

    @property
    def blocking(self) -> bool:
        return self.status in ('missing', 'unresolved')


def requirements(needs: RowNeeds) -> List[Requirement]:
    """The row's data paths and checkpoints, each checked now (the jobs start in
    ``REPO_ROOT``: relative paths are read from there)."""
    found = []
    for phase, _, path, hint in needs.data:
        path = osp.join(REPO_ROOT, path)
        found.append(Requirement('data', phase, path,
                                 'present' if osp.exists(path) else 'missing', hint))
    for key, name in needs.checkpoints:
        ckpt = tool_helpers.resolve_checkpoint(name, key, root=REPO_ROOT)
        found.append(Requirement('weights', name, ckpt.path, ckpt.status, checkpoint=ckpt))
    return found


def fetch_weights(needed: Sequence[Requirement], mirror: Optional[str]) -> List[str]:
    """Download every missing checkpoint of ``needed`` that has a URL into the cache the
    jobs read; returns the errors (one line each)."""
    errors, done = [], set()
    for requirement in needed:
        ckpt = requirement.checkpoint
        if requirement.kind != 'weights' or requirement.status != 'missing' \
                or ckpt.url is None or ckpt.path in done:
            continue
        done.add(ckpt.path)
        source = tool_helpers.mirrored_url(ckpt.url, mirror)
        print(f'fetching {ckpt.name}: {source} -> {ckpt.path}', flush=True)
        try:
            tool_helpers.fetch_checkpoint(ckpt, mirror, progress=sys.stderr.isatty())
        except RuntimeError as error:
            errors.append(str(error))
            print(f'  FAILED: {error}', file=sys.stderr, flush=True)
            continue
        print(f'  done, {osp.getsize(ckpt.path) / 2**20:.1f} MiB', flush=True)
    return errors


def missing_summary(table: str, needed: Sequence[Requirement]) -> str:
    """One message naming every missing data path and checkpoint (each once) and how to
    get them."""
    blocking = list({(r.kind, r.path, r.label): r for r in needed if r.blocking}.values())
    data = [r for r in blocking if r.kind == 'data']
    weights = [r for r in blocking if r.kind == 'weights']
    counts = [f'{len(data)} data path(s)'] * bool(data) + \
        [f'{len(weights)} pretrained checkpoint(s)'] * bool(weights)
    lines = [f'table {table}: missing, and needed by the rows above: {" and ".join(counts)}']
    lines += [f'  {r.path} ({r.label} data)' for r in data]
    for r in weights:
        ckpt = r.checkpoint
        source = (f'{ckpt.name}: {ckpt.error}' if ckpt.error else
                  f'from {ckpt.url}' if ckpt.url == ckpt.name else
                  f'{ckpt.name}, from {ckpt.url}' if ckpt.url else ckpt.name)
        lines.append(f'  {ckpt.path or ckpt.name} ({source})')
    fixes = list(dict.fromkeys(r.hint for r in data))
    if any(r.checkpoint.url for r in weights):
        fixes.append('fetch the checkpoints into the cache the jobs read '
                     f'({tool_helpers.checkpoint_cache_dir()}): add --fetch-weights to this '
                     'command (--weights-mirror URL to download them from a mirror)')
    return '\n'.join(lines + ['To fix: ' + '\n        '.join(fixes)] if fixes else lines)


@dataclass
class Job:
    row: Row
    work_dir: str
    train_args: List[str]  # options of tools/train.py after the config
    script: str = ''


def _q(args: Sequence[str]) -> str:
    return ' '.join(shlex.quote(str(a)) for a in args)


def torch_home() -> str:
    """The ``TORCH_HOME`` whose ``hub/checkpoints`` holds the pretrained weights the jobs
    read: the one this process sees (torch's default when unset); the job scripts export it,
    so that the jobs read the cache that run_table.py checked and --fetch-weights filled."""
    return osp.dirname(osp.dirname(tool_helpers.checkpoint_cache_dir()))


def _script_head(row: Row, work_dir: str) -> List[str]:
    return [
        f'# tools/run_table.py: table {row.table}, row "{row.display_name}"',
        f'# config {row.config}; running this again resumes from the last checkpoint',
        'set -u',
        f'cd {shlex.quote(REPO_ROOT)}',
        f'export PYTHONPATH={shlex.quote(REPO_ROOT)}"${{PYTHONPATH:+:$PYTHONPATH}}"',
        f'export TORCH_HOME={shlex.quote(torch_home())}  # pretrained weights: '
        '$TORCH_HOME/hub/checkpoints',
        f'mkdir -p {shlex.quote(work_dir)}',
        f'rm -f {shlex.quote(osp.join(work_dir, EXIT_CODE))}',
    ]


def _script_tail(work_dir: str) -> List[str]:
    return ['code=$?', f'echo "$code" > {shlex.quote(osp.join(work_dir, EXIT_CODE))}',
            'exit "$code"']


def local_script(job: Job, gpus: int, python: str) -> str:
    config = osp.join(REPO_ROOT, job.row.config)
    if gpus > 1:
        command = (f'PYTHON={shlex.quote(python)} '
                   + _q([osp.join(TOOLS_DIR, 'dist_train.sh'), config, gpus] + job.train_args))
    else:
        command = _q([python, osp.join(TOOLS_DIR, 'train.py'), config] + job.train_args)
    return '\n'.join(['#!/usr/bin/env bash'] + _script_head(job.row, job.work_dir) +
                     [command] + _script_tail(job.work_dir)) + '\n'


def slurm_script(job: Job, args: argparse.Namespace) -> str:
    nodes = -(-args.gpus // args.gpus_per_node)
    name = f'dysample-t{job.row.table}-{job.row.name}'
    directives = [
        f'--job-name={name}', f'--partition={args.partition}', f'--nodes={nodes}',
        f'--ntasks={args.gpus}', f'--ntasks-per-node={min(args.gpus, args.gpus_per_node)}',
        f'--gres=gpu:{min(args.gpus, args.gpus_per_node)}',
        f'--cpus-per-task={args.cpus_per_task}',
        f'--output={osp.join(job.work_dir, "slurm-%j.out")}', '--open-mode=append',
        '--requeue', f'--signal=B:USR1@{REQUEUE_SIGNAL_S}'
    ]
    train = _q([args.python, '-u', osp.join(TOOLS_DIR, 'train.py'),
                osp.join(REPO_ROOT, job.row.config), '--launcher', 'slurm'] + job.train_args)
    lines = ['#!/usr/bin/env bash'] + [f'#SBATCH {d}' for d in directives]
    lines += _script_head(job.row, job.work_dir)
    lines += [
        'requeue() {',
        '    echo "run_table: job $SLURM_JOB_ID is near its time limit: requeued, it will '
        'resume from the last checkpoint"',
        '    scontrol requeue "$SLURM_JOB_ID"',
        '    exit 0',
        '}',
        'trap requeue USR1',
        f'srun --kill-on-bad-exit=1 {train} &',
        'wait $!',
    ]
    return '\n'.join(lines + _script_tail(job.work_dir)) + '\n'


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split('\n\n')[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog='\n\n'.join(__doc__.split('\n\n')[1:]))
    parser.add_argument('--table', required=True,
                        help="paper table id ('1'-'9') or 'demo'")
    parser.add_argument('--launcher', required=True, choices=['local', 'slurm'])
    parser.add_argument('--dry-run', action='store_true',
                        help='print the job script (slurm) or command (local) of every row '
                        'that would run, submit and run nothing')
    parser.add_argument('--rows', nargs='+', default=None, metavar='NAME',
                        help='only these rows (config names, as in the metafile)')
    parser.add_argument('--gpus', type=int, default=None,
                        help='GPUs (slurm tasks) per row; default $GPUS, else 8 on slurm and '
                        '1 locally (local > 1: tools/dist_train.sh)')
    parser.add_argument('--gpus-per-node', type=int, default=None,
                        help='slurm: GPUs per node; default $GPUS_PER_NODE, else 8')
    parser.add_argument('--cpus-per-task', type=int, default=None,
                        help='slurm: CPUs per task; default $CPUS_PER_TASK, else 5')
    parser.add_argument('--partition', default=os.environ.get('PARTITION'),
                        help='slurm partition (required with slurm; default $PARTITION)')
    parser.add_argument('--work-dir', default='work_dirs/tables',
                        help='rows train in <work-dir>/<config name> (default: '
                        'work_dirs/tables, shared by all tables)')
    parser.add_argument('--iters', type=int, default=None,
                        help='smoke run: every row trains only N iterations (validated and '
                        'saved at the end)')
    parser.add_argument('--cfg-options', nargs='+', default=[], metavar='KEY=VALUE',
                        help='more overrides passed to tools/train.py for every row')
    parser.add_argument('--data-root', default='data/synthetic',
                        help='demo table: the synthetic data (written with tools/demo.py\'s '
                        'defaults if missing)')
    parser.add_argument('--python', default=sys.executable,
                        help='interpreter of the jobs (default: this one)')
    parser.add_argument('--force', action='store_true',
                        help='submit (or run) even when data or pretrained checkpoints that '
                        'the rows need are missing')
    parser.add_argument('--fetch-weights', action='store_true',
                        help="download the rows' missing pretrained checkpoints into the "
                        'cache the jobs read ($TORCH_HOME/hub/checkpoints) first (also with '
                        '--dry-run)')
    parser.add_argument('--weights-mirror', default=None, metavar='URL',
                        help='with --fetch-weights: download from this mirror instead (it '
                        'replaces the scheme and host of every checkpoint URL; http(s):// or '
                        'file:// for a shared folder laid out like the original hosts)')
    args = parser.parse_args(argv)

    def env_int(name, default):
        value = os.environ.get(name)
        if value is None or value == '':
            return default
        if not value.isdigit():
            parser.error(f'${name} must be a positive integer, got {value!r}')
        return int(value)

    if args.gpus is None:
        args.gpus = env_int('GPUS', 8 if args.launcher == 'slurm' else 1)
    if args.gpus_per_node is None:
        args.gpus_per_node = env_int('GPUS_PER_NODE', 8)
    if args.cpus_per_task is None:
        args.cpus_per_task = env_int('CPUS_PER_TASK', 5)
    for name in ('gpus', 'gpus_per_node', 'cpus_per_task', 'iters'):
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f'--{name.replace("_", "-")} must be >= 1, got {value}')
    if args.weights_mirror is not None:
        if not args.fetch_weights:
            parser.error('--weights-mirror is used with --fetch-weights')
        try:
            tool_helpers.mirrored_url('https://host/x.pth', args.weights_mirror)
        except ValueError as error:
            parser.error(f'--weights-mirror: {error}')
    if args.launcher == 'slurm' and not args.partition:
        parser.error('--partition is required with --launcher slurm')
    if args.launcher == 'slurm' and args.gpus > args.gpus_per_node \
            and args.gpus % args.gpus_per_node:
        parser.error(f'--gpus ({args.gpus}) must be a multiple of --gpus-per-node '
                     f'({args.gpus_per_node}) when it spans several nodes')
    try:
        args.table_rows = paper_tables.get_table(args.table).rows
    except ValueError as error:
        parser.error(str(error))
    if args.rows:
        known = [row.name for row in args.table_rows]
        unknown = [name for name in args.rows if name not in known]
        if unknown:
            parser.error(f'--rows: {unknown} not in table {args.table}; its rows: {known}')
        args.table_rows = [row for row in args.table_rows if row.name in args.rows]
    args.work_dir = osp.abspath(args.work_dir)
    return args


def build_jobs(args: argparse.Namespace) -> List[Job]:
    demo = paper_tables._load_demo_tool() if args.table == paper_tables.DEMO_TABLE else None
    jobs = []
    for row in args.table_rows:
        work_dir = osp.join(args.work_dir, row.name)
        options: List[str] = []
        if demo is not None:
            model = demo.DEMO_MODELS[row.demo_model]
            options += demo.data_root_options(model.layout, osp.abspath(args.data_root))
            if args.iters is not None:
                options += demo.schedule_options(row.config, args.iters, None)[0]
        elif args.iters is not None:
            options += smoke_schedule_options(args.iters)
        options += list(args.cfg_options)
        train_args = ['--work-dir', work_dir, '--resume']
        if options:
            train_args += ['--cfg-options'] + options
        job = Job(row, work_dir, train_args)
        job.script = (slurm_script(job, args) if args.launcher == 'slurm' else
                      local_script(job, args.gpus, args.python))
        jobs.append(job)
    return jobs


def _write_record(job: Job, args: argparse.Namespace, **fields) -> None:
    record = dict(table=job.row.table, row=job.row.display_name, config=job.row.config,
                  launcher=args.launcher, started=datetime.datetime.now().isoformat(
                      timespec='seconds'), **fields)
    with open(osp.join(job.work_dir, RUN_RECORD), 'w') as f:
        json.dump(record, f, indent=2)


def _write_script(job: Job) -> str:
    os.makedirs(job.work_dir, exist_ok=True)
    path = osp.join(job.work_dir, JOB_SCRIPT)
    with open(path, 'w') as f:
        f.write(job.script)
    os.chmod(path, 0o755)
    exit_path = osp.join(job.work_dir, EXIT_CODE)
    if osp.isfile(exit_path):
        os.remove(exit_path)  # a failed attempt's: this one decides again
    return path


def submit(job: Job, args: argparse.Namespace) -> str:
    sbatch = shutil.which('sbatch')
    if sbatch is None:
        raise SystemExit('sbatch not found on PATH: run this on a Slurm login node '
                         '(or use --dry-run to see the job scripts)')
    path = _write_script(job)
    result = subprocess.run([sbatch, path], capture_output=True, text=True)
    match = re.search(r'Submitted batch job (\d+)', result.stdout)
    if result.returncode != 0 or match is None:
        raise SystemExit(f'sbatch {path} failed (exit {result.returncode}): '
                         f'{(result.stdout + result.stderr).strip()}')
    _write_record(job, args, job_id=match.group(1), script=path)
    return match.group(1)


def run_local(job: Job, args: argparse.Namespace) -> int:
    path = _write_script(job)
    log_path = osp.join(job.work_dir, LOCAL_LOG)
    with open(log_path, 'a') as log:
        proc = subprocess.Popen(['bash', path], stdout=log, stderr=subprocess.STDOUT,
                                cwd=REPO_ROOT)
        _write_record(job, args, pid=proc.pid, script=path, log=log_path)
        return proc.wait()


EXIT_MISSING = 2  # a real run stopped before submitting: data or checkpoints missing


def needs_lines(job: Job, gpus: int, needed: Sequence[Requirement]) -> List[str]:
    """The row's schedule and what it reads, one line each, indented under its head."""
    schedule = row_needs(job).schedule
    lines = [f'schedule: {schedule.describe(gpus)}'] if schedule is not None else []
    return ['    ' + line for line in lines + [r.line() for r in needed]]


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    if args.launcher == 'local' and args.table == paper_tables.DEMO_TABLE and not args.dry_run:
        data_root = osp.abspath(args.data_root)
        if not osp.isfile(osp.join(data_root, 'meta.json')):
            demo = paper_tables._load_demo_tool()
            defaults = demo.parse_args([])
            demo.ensure_data(data_root, defaults.num_train, defaults.num_val, defaults.data_seed)
    jobs = build_jobs(args)
    missing = [job.row for job in jobs if not job.row.exists]
    failed: List[str] = []
    print(f'table {args.table}: {len(jobs)} rows, {args.launcher} launcher, work dirs under '
          f'{args.work_dir}/', flush=True)
    planned = []  # (head, job, status) of the rows that would run
    for index, job in enumerate(jobs, 1):
        head = f'[{index}/{len(jobs)}] {job.row.display_name}: {job.row.name}'
        status = paper_tables.run_status(job.work_dir)
        if status.status in ('finished', 'running'):
            note = f' ({status.note})' if status.note else ''
            print(f'{head}: skipped, {status.status}{note}', flush=True)
            continue
        if not job.row.exists and not args.dry_run:
            print(f'{head}: NOT RUN, config {job.row.config} is missing from this checkout',
                  flush=True)
            continue
        planned.append((head, job, status))

    def check() -> Dict[str, List[Requirement]]:
        return {job.row.name: requirements(row_needs(job)) for _, job, _ in planned
                if job.row.exists}

    needed = check()
    if planned:
        print(f'the jobs start in {REPO_ROOT} (relative data paths are read from there) and '
              f'read pretrained weights from {tool_helpers.checkpoint_cache_dir()} (torch '
              'hub\'s cache; the job scripts export TORCH_HOME)', flush=True)
        if args.launcher == 'slurm':
            print('time limit: sbatch\'s (e.g. SBATCH_TIMELIMIT=2-00:00:00); 5 minutes before '
                  'it a job requeues itself and resumes from its last checkpoint '
                  '(docs/reproduce.md, "Schedules and time limits")', flush=True)
    if args.fetch_weights:
        errors = fetch_weights([r for rows in needed.values() for r in rows],
                               args.weights_mirror)
        if errors:
            print(f'table {args.table}: --fetch-weights: {len(errors)} checkpoint(s) could not '
                  'be fetched (above); nothing was submitted or run', file=sys.stderr)
            return EXIT_MISSING
        needed = check()
    blocking = [r for rows in needed.values() for r in rows if r.blocking]
    stop = bool(blocking) and not args.dry_run and not args.force
    for head, job, status in planned:
        rows_needs = needed.get(job.row.name)
        lines = needs_lines(job, args.gpus, rows_needs) if rows_needs is not None else []
        resume = ' (resumes from its last checkpoint)' if status.status == 'failed' else ''
        verb = 'submit' if args.launcher == 'slurm' else 'run'
        if args.dry_run:
            warning = '' if job.row.exists else f' (WARNING: {job.row.config} is missing)'
            print('\n'.join([f'{head}: would {verb}{resume}{warning}'] + lines))
            print(job.script, flush=True)
        elif stop:
            print('\n'.join([f'{head}: not {verb}{"ted" if verb == "submit" else ""}']
                            + lines), flush=True)
        elif args.launcher == 'slurm':
            job_id = submit(job, args)
            print('\n'.join([f'{head}: submitted as job {job_id}{resume}'] + lines),
                  flush=True)
        else:
            print('\n'.join([f'{head}: running{resume}, log '
                             f'{osp.join(job.work_dir, LOCAL_LOG)}'] + lines), flush=True)
            code = run_local(job, args)
            print(f'{head}: {"finished" if code == 0 else f"FAILED (exit {code})"}',
                  flush=True)
            if code != 0:
                failed.append(job.row.name)
    if blocking:
        outcome = ('a real run stops here; --force submits anyway' if args.dry_run else
                   'nothing was submitted or run; --force goes ahead anyway' if stop else
                   'went ahead anyway (--force)')
        print(missing_summary(args.table, blocking) + f'\n({outcome})', file=sys.stderr,
              flush=True)
        if stop:
            return EXIT_MISSING
    if missing:
        print(f'table {args.table}: {len(missing)} row(s) without their config on this '
              f'checkout: {", ".join(row.config for row in missing)}', file=sys.stderr)
    if failed:
        print(f'table {args.table}: failed rows: {", ".join(failed)} (see their '
              f'{LOCAL_LOG}; rerunning resumes them)', file=sys.stderr)
    if not args.dry_run:
        print(f'collect: python tools/collect_results.py --table {args.table} --work-dir '
              f'{args.work_dir}')
    return 1 if failed or (missing and not args.dry_run) else 0


if __name__ == '__main__':
    sys.exit(main())
