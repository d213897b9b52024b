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
"""
import argparse
import datetime
import json
import os
import os.path as osp
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from typing import List, Optional, Sequence

TOOLS_DIR = osp.dirname(osp.abspath(__file__))
if TOOLS_DIR not in sys.path:
    sys.path.insert(0, TOOLS_DIR)

import paper_tables  # noqa: E402  (tools/ is not a package)
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


@dataclass
class Job:
    row: Row
    work_dir: str
    train_args: List[str]  # options of tools/train.py after the config
    script: str = ''


def _q(args: Sequence[str]) -> str:
    return ' '.join(shlex.quote(str(a)) for a in args)


def _script_head(row: Row, work_dir: str) -> List[str]:
    return [
        f'# tools/run_table.py: table {row.table}, row "{row.display_name}"',
        f'# config {row.config}; running this again resumes from the last checkpoint',
        'set -u',
        f'cd {shlex.quote(REPO_ROOT)}',
        f'export PYTHONPATH={shlex.quote(REPO_ROOT)}"${{PYTHONPATH:+:$PYTHONPATH}}"',
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
        resume = ' (resumes from its last checkpoint)' if status.status == 'failed' else ''
        if args.dry_run:
            warning = '' if job.row.exists else f' (WARNING: {job.row.config} is missing)'
            print(f'{head}: would {"submit" if args.launcher == "slurm" else "run"}{resume}'
                  f'{warning}')
            print(job.script, flush=True)
        elif args.launcher == 'slurm':
            job_id = submit(job, args)
            print(f'{head}: submitted as job {job_id}{resume}', flush=True)
        else:
            print(f'{head}: running{resume}, log {osp.join(job.work_dir, LOCAL_LOG)}',
                  flush=True)
            code = run_local(job, args)
            print(f'{head}: {"finished" if code == 0 else f"FAILED (exit {code})"}',
                  flush=True)
            if code != 0:
                failed.append(job.row.name)
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
