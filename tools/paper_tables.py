"""The paper's tables, read from the metafiles: one source for run_table.py,
collect_results.py and the tables inside the task READMEs.

Each model of a ``configs/*/metafile.yml`` (the files ``model-index.yml`` imports) lists
the paper rows it is in under ``Metadata: Paper Tables``::

    - Table: '6'            # paper table id ('1'-'9'), or 'demo'
      Row: DySample         # the row's label in the paper
      Backbone: R50         # optional, as are Params and FLOPs (the paper's strings)
      Params: +32.7K
      Metrics: {box AP: 38.6, box AP50: 59.9, ...}   # the paper's numbers, its columns
      Main Metric: box AP   # optional: the column compared with ours (default: the first)

and each collection names the tables its folder shows (``Metadata: Paper Tables``,
id -> title). The model's ``Metadata: Batch Size`` (images per iteration, all GPUs) is the
recipe's batch (``Row.batch_size``), which run_table.py's dry run shows against ``--gpus``.
The README of the folder carries each of them between the markers
``<!-- paper-table N -->`` and ``<!-- /paper-table N -->``, generated here::

    python tools/paper_tables.py --check     # READMEs and the demo metafile up to date?
    python tools/paper_tables.py --write     # regenerate them

The demo table's metafile (``configs/demo/metafile.yml``) is itself generated from
``tools/demo.py``'s ``DEMO_MODELS``: adding a demo model there is the one change needed.
"""
import argparse
import glob
import importlib.util
import json
import os
import os.path as osp
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence

import yaml

_YAML_LOADER = getattr(yaml, 'CSafeLoader', yaml.SafeLoader)

REPO_ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
TOOLS_DIR = osp.join(REPO_ROOT, 'tools')
DEMO_TABLE = 'demo'
DEMO_METAFILE = 'configs/demo/metafile.yml'


@dataclass(frozen=True)
class Metric:
    """A paper column: its README header and where mmengine logs our value
    (``key`` in ``vis_data/scalars.json``; ``scale`` turns it into the paper's unit) and
    the decimals ours is shown with where the paper has no value to match."""
    header: str
    key: Optional[str]  # None: no upstream evaluator computes it
    scale: float = 1.0
    decimals: int = 2


def _coco(prefix: str, kind: str) -> Dict[str, Metric]:
    suffixes = {'': '', '50': '_50', '75': '_75', 's': '_s', 'm': '_m', 'l': '_l'}
    # mmdet logs COCO's mAP rounded to 3 decimals in [0, 1]: one decimal in percent
    return {f'{prefix} AP{s}': Metric(f'{prefix} AP{s}', f'coco/{kind}_mAP{k}', 100.0, 1)
            for s, k in suffixes.items()}


# paper column -> (README header, mmengine scalar key, scale)
METRICS: Dict[str, Metric] = {
    **_coco('box', 'bbox'),
    **_coco('mask', 'segm'),
    # mmdet's CocoPanopticMetric and mmseg's IoUMetric already log percentages
    'PQ': Metric('PQ', 'coco_panoptic/PQ'),
    'PQ_th': Metric('PQ<sup>th</sup>', 'coco_panoptic/PQ_th'),
    'PQ_st': Metric('PQ<sup>st</sup>', 'coco_panoptic/PQ_st'),
    'SQ': Metric('SQ', 'coco_panoptic/SQ'),
    'RQ': Metric('RQ', 'coco_panoptic/RQ'),
    'mIoU': Metric('mIoU', 'mIoU'),
    'bIoU': Metric('bIoU', None),  # boundary IoU: no evaluator in mmseg 1.2.2
    # mmseg's DepthMetric (no prefix); fractions and metres, as in the paper
    'delta1': Metric('δ<1.25', 'd1', decimals=3),
    'delta2': Metric('δ<1.25²', 'd2', decimals=3),
    'delta3': Metric('δ<1.25³', 'd3', decimals=3),
    'Abs Rel': Metric('Abs Rel', 'abs_rel', decimals=3),
    'RMS': Metric('RMS', 'rmse', decimals=3),
    'log10': Metric('log10', 'log10', decimals=3),
    'RMS(log)': Metric('RMS(log)', 'rmse_log', decimals=3),
    'Sq Rel': Metric('Sq Rel', 'sq_rel', decimals=3),
}


@dataclass
class Row:
    """One row of a paper table and the config that reproduces it."""
    table: str
    label: str
    config: str  # relative to the repository root
    name: str  # the metafile model's name: the row's work directory
    folder: str  # configs/<folder>
    backbone: Optional[str] = None
    params: Optional[str] = None
    flops: Optional[str] = None
    metrics: Dict[str, float] = field(default_factory=dict)
    main_metric: Optional[str] = None
    demo_model: Optional[str] = None  # tools/demo.py's DEMO_MODELS key (demo table)
    batch_size: Optional[int] = None  # the recipe's images per iteration, all GPUs together

    @property
    def exists(self) -> bool:
        return osp.isfile(osp.join(REPO_ROOT, self.config))

    @property
    def display_name(self) -> str:
        return f'{self.label} ({self.backbone})' if self.backbone else self.label


@dataclass
class Table:
    id: str
    rows: List[Row]
    titles: Dict[str, str]  # folder -> title

    def rows_of(self, folder: str) -> List[Row]:
        return [row for row in self.rows if row.folder == folder]

    @property
    def folders(self) -> List[str]:
        return list(dict.fromkeys(row.folder for row in self.rows))


def metafiles(root: str = REPO_ROOT) -> List[str]:
    """The metafiles model-index.yml imports, in its order."""
    with open(osp.join(root, 'model-index.yml')) as f:
        return list(yaml.load(f, Loader=_YAML_LOADER)['Import'])


def _metric_name(name: str, where: str) -> str:
    if name not in METRICS:
        raise ValueError(f'{where}: unknown metric {name!r}; known: {sorted(METRICS)}')
    return name


def load_tables(root: str = REPO_ROOT) -> Dict[str, Table]:
    """Every paper table (and the demo table) from the metafiles, rows in metafile order."""
    tables: Dict[str, Table] = {}
    for metafile in metafiles(root):
        folder = osp.basename(osp.dirname(metafile))
        with open(osp.join(root, metafile)) as f:
            meta = yaml.load(f, Loader=_YAML_LOADER)
        titles = {}
        for collection in meta.get('Collections', []):
            for table_id, title in collection.get('Metadata', {}).get('Paper Tables',
                                                                       {}).items():
                titles[str(table_id)] = title
        for model in meta.get('Models', []):
            for entry in model.get('Metadata', {}).get('Paper Tables', []):
                table_id = str(entry['Table'])
                where = f'{metafile}: {model["Name"]}, table {table_id}'
                if table_id not in titles:
                    raise ValueError(f'{where}: the collection of {metafile} has no title for '
                                     f'table {table_id} (Metadata: Paper Tables)')
                metrics = {_metric_name(k, where): float(v)
                           for k, v in (entry.get('Metrics') or {}).items()}
                main = entry.get('Main Metric') or next(iter(metrics), None)
                if main is not None:
                    _metric_name(main, where)
                batch_size = model.get('Metadata', {}).get('Batch Size')
                row = Row(table_id, str(entry['Row']), model['Config'], model['Name'], folder,
                          entry.get('Backbone'), entry.get('Params'), entry.get('FLOPs'),
                          metrics, main, entry.get('Demo Model'),
                          None if batch_size is None else int(batch_size))
                table = tables.setdefault(table_id, Table(table_id, [], {}))
                table.titles[folder] = titles[table_id]
                table.rows.append(row)
    for table in tables.values():
        names = [row.name for row in table.rows]
        duplicated = sorted({n for n in names if names.count(n) > 1})
        if duplicated:
            raise ValueError(f'table {table.id}: configs listed twice: {duplicated}')
    return tables


def table_ids(tables: Dict[str, Table]) -> List[str]:
    return sorted(tables, key=lambda t: (not t.isdigit(), int(t) if t.isdigit() else 0, t))


def get_table(table_id: str, root: str = REPO_ROOT) -> Table:
    tables = load_tables(root)
    if table_id not in tables:
        raise ValueError(f'--table must be one of {table_ids(tables)}, got {table_id!r}')
    return tables[table_id]


# ------------------------------------------------------------------- markdown rendering
def _decimals(values: Sequence[float]) -> int:
    """Decimals the paper printed a column with (the most any of its values needs)."""
    best = 0
    for value in values:
        text = repr(float(value))
        best = max(best, len(text.split('.')[1].rstrip('0')) if '.' in text else 0)
    return max(best, 1)


@dataclass
class Outcome:
    """What a run of a row gave: status and our value of every metric it logged."""
    status: str  # finished / running / failed / missing
    values: Dict[str, float] = field(default_factory=dict)  # paper metric name -> ours
    note: str = ''


def render_table(rows: Sequence[Row], outcomes: Optional[Dict[str, Outcome]] = None,
                 link_base: str = '', all_columns: bool = True) -> str:
    """A markdown table of ``rows``: the paper's columns, the config, ours and the difference
    on the main metric, and the run's status (empty columns when ``outcomes`` is None).

    ``link_base`` is prepended to the config file name in the link ('' inside the
    folder's README, a path relative to wherever the table is written otherwise)."""
    columns = list(dict.fromkeys(m for row in rows for m in row.metrics)) if all_columns \
        else list(dict.fromkeys(row.main_metric for row in rows if row.main_metric))
    decimals = {m: _decimals([row.metrics[m] for row in rows if m in row.metrics])
                for m in columns}
    mains = list(dict.fromkeys(row.main_metric for row in rows if row.main_metric))
    main_header = METRICS[mains[0]].header if len(mains) == 1 else 'main metric'
    with_backbone = any(row.backbone for row in rows)
    with_flops = any(row.flops for row in rows)
    with_params = any(row.params for row in rows)
    header = ['Upsampler'] + (['Backbone'] * with_backbone) + (['FLOPs (paper)'] * with_flops)
    header += ['Params (paper)'] * with_params
    header += [METRICS[m].header for m in columns]
    header += ['Config', f'Ours ({main_header})', 'Difference', 'Status']
    lines = ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
    for row in rows:
        cells = [row.label] + ([row.backbone or ''] * with_backbone)
        cells += [row.flops or ''] * with_flops
        cells += [row.params or ''] * with_params
        for metric in columns:
            value = row.metrics.get(metric)
            cells.append('' if value is None else f'{value:.{decimals[metric]}f}')
        link = f'[config]({link_base}{osp.basename(row.config)})'
        cells.append(link)
        outcome = None if outcomes is None else outcomes.get(row.name)
        ours = difference = status = ''
        if outcome is not None:
            status = outcome.status + (f' ({outcome.note})' if outcome.note else '')
            main = row.main_metric
            if main is not None and main in outcome.values:
                places = decimals.get(main, METRICS[main].decimals)  # the paper's if any
                ours = f'{outcome.values[main]:.{places}f}'
                if len(mains) > 1:
                    ours += f' {METRICS[main].header}'
                if main in row.metrics:
                    difference = f'{outcome.values[main] - row.metrics[main]:+.{places}f}'
            elif main is not None and METRICS[main].key is None and outcome.status != 'missing':
                ours = 'not computed'
        cells += [ours, difference, status]
        lines.append('| ' + ' | '.join(cells) + ' |')
    return '\n'.join(lines)


# ----------------------------------------------------------- README blocks between markers
def markers(table_id: str) -> tuple:
    return (f'<!-- paper-table {table_id} -->', f'<!-- /paper-table {table_id} -->')


NOTE = ('<!-- generated by tools/paper_tables.py (paper numbers, from metafile.yml) or '
        'tools/collect_results.py --update-readme (with ours); edit the metafile, not this '
        'table -->')


def readme_block(table: Table, folder: str,
                 outcomes: Optional[Dict[str, Outcome]] = None) -> str:
    begin, end = markers(table.id)
    return '\n'.join([begin, NOTE, '', f'**{table.titles[folder]}**', '',
                      render_table(table.rows_of(folder), outcomes), '', end])


def replace_block(text: str, table_id: str, block: str, readme: str) -> str:
    begin, end = markers(table_id)
    pattern = re.compile(re.escape(begin) + r'.*?' + re.escape(end), re.S)
    if len(pattern.findall(text)) != 1:
        raise ValueError(f'{readme}: expected one block between {begin!r} and {end!r} '
                         f'(add the two marker lines where the table goes)')
    return pattern.sub(lambda _: block, text)


def readme_path(folder: str, root: str = REPO_ROOT) -> str:
    return osp.join(root, 'configs', folder, 'README.md')


RESULT_CELLS = 3  # the last cells of a row: ours, difference, status


def _result_cells(block: str) -> Dict[str, List[str]]:
    """config link -> the result cells of its row, in a rendered table."""
    cells = {}
    for line in block.splitlines():
        link = re.search(r'\[config\]\(([^)]+)\)', line)
        if line.startswith('|') and link:
            cells[link.group(1)] = [c.strip() for c in line.strip().strip('|').split('|')
                                    ][-RESULT_CELLS:]
    return cells


def _with_result_cells(block: str, results: Dict[str, List[str]]) -> str:
    lines = []
    for line in block.splitlines():
        link = re.search(r'\[config\]\(([^)]+)\)', line)
        if line.startswith('|') and link and link.group(1) in results:
            cells = [c.strip() for c in line.strip().strip('|').split('|')]
            line = '| ' + ' | '.join(cells[:-RESULT_CELLS] + results[link.group(1)]) + ' |'
        lines.append(line)
    return '\n'.join(lines)


def update_readme(table: Table, folder: str, outcomes: Optional[Dict[str, Outcome]] = None,
                  root: str = REPO_ROOT, write: bool = True) -> bool:
    """Put the table into the folder's README between its markers (appended at the end
    when the README has none yet). Without ``outcomes`` the results already in the README
    (written by collect_results.py --update-readme) are kept. Returns whether the README
    changed."""
    path = readme_path(folder, root)
    text = open(path).read() if osp.isfile(path) else f'# configs/{folder}\n'
    block = readme_block(table, folder, outcomes)
    begin, end = markers(table.id)
    if begin in text:
        if outcomes is None:
            old_block = text[text.index(begin):text.index(end, text.index(begin))]
            block = _with_result_cells(block, _result_cells(old_block))
        new = replace_block(text, table.id, block, path)
    else:
        new = text.rstrip('\n') + '\n\n' + block + '\n'
    if new != text and write:
        with open(path, 'w') as f:
            f.write(new)
    return new != text


# --------------------------------------------------------------------- the demo metafile
def _load_demo_tool():
    name = '_mmdysample_tools_demo'
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, osp.join(TOOLS_DIR, 'demo.py'))
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


def demo_metric_name(metric_key: str) -> str:
    """The paper-column name whose mmengine key is ``metric_key`` (a DemoModel's)."""
    for name, metric in METRICS.items():
        if metric.key == metric_key:
            return name
    raise ValueError(f'no paper column logs {metric_key!r}; add it to METRICS in '
                     f'tools/paper_tables.py')


def demo_metafile_text() -> str:
    """configs/demo/metafile.yml as generated from tools/demo.py's DEMO_MODELS."""
    demo = _load_demo_tool()
    models = []
    for key, model in demo.DEMO_MODELS.items():
        for upsampler, config in model.configs.items():
            models.append({
                'Name': osp.splitext(osp.basename(config))[0],
                'In Collection': 'DySample CPU demo',
                'Config': config,
                'Metadata': {
                    'Training Data': 'synthetic (tools/make_synthetic_data.py)',
                    'Upsampler': upsampler,
                    'Results Source': 'none in the paper; `make demo` trains it on CPU',
                    'Paper Tables': [{'Table': DEMO_TABLE, 'Row': f'{model.name}, {upsampler}',
                                      'Main Metric': demo_metric_name(model.metric_key),
                                      'Demo Model': key}],
                },
            })
    meta = {
        'Collections': [{
            'Name': 'DySample CPU demo',
            'Metadata': {'Training Data': 'synthetic scenes (COCO, COCO-panoptic and ADE20K '
                                          'layouts)',
                         'Paper Tables': {DEMO_TABLE: 'Demo: tiny models on synthetic data, '
                                                      'DySample next to its baseline (CPU)'}},
            'Paper': {'URL': 'https://arxiv.org/abs/2308.15085',
                      'Title': 'Learning to Upsample by Learning to Sample'},
            'README': 'configs/demo/README.md',
        }],
        'Models': models,
    }
    header = ('# Generated by `python tools/paper_tables.py --write` from DEMO_MODELS in '
              'tools/demo.py; do not edit.\n')
    return header + dump_metafile(meta)


def dump_metafile(meta: dict) -> str:
    """YAML in the metafiles' layout (indented lists, a blank line between models)."""

    class Dumper(yaml.SafeDumper):

        def increase_indent(self, flow=False, indentless=False):
            return super().increase_indent(flow, False)

    text = yaml.dump(meta, Dumper=Dumper, sort_keys=False, allow_unicode=True, width=100)
    text = text.replace('\nModels:\n', '\n\nModels:\n')
    return re.sub(r'\n(  - Name: )', r'\n\n\1', text).replace('Models:\n\n', 'Models:\n') \
        .replace('Collections:\n\n', 'Collections:\n')


# ---------------------------------------------------------------------- a row's run
# tools/run_table.py leaves two files in a row's work directory: RUN_RECORD (what was
# started, how: launcher, slurm job id or local process id) when it submits or starts the
# row, and EXIT_CODE, written by the job script once tools/train.py has returned.
RUN_RECORD = 'run_table.json'
EXIT_CODE = 'run_table_exit_code'


def _slurm_job_state(job_id: str) -> Optional[str]:
    """The job's state from ``squeue`` ('' when it is no longer queued; None without
    squeue)."""
    squeue = shutil.which('squeue')
    if squeue is None:
        return None
    try:
        out = subprocess.run([squeue, '-h', '-j', str(job_id), '-o', '%T'],
                             capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else ''


def _process_alive(pid: int) -> bool:
    """Whether process ``pid`` exists and has not ended (a killed process stays a zombie
    until it is reaped: that one has ended)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f'/proc/{pid}/stat') as f:
            state = f.read().rsplit(')', 1)[1].split()[0]
    except (OSError, IndexError):
        return True  # no procfs (macOS): trust the signal probe
    return state not in ('Z', 'X')


def run_status(work_dir: str) -> Outcome:
    """finished / running / failed / missing, from the files run_table.py's job left in
    ``work_dir`` (values not filled in: see :func:`read_outcome`)."""
    exit_path = osp.join(work_dir, EXIT_CODE)
    if osp.isfile(exit_path):
        text = open(exit_path).read().strip()
        if text == '0':
            return Outcome('finished')
        return Outcome('failed', note=f'exit code {text}; rerun to resume')
    record_path = osp.join(work_dir, RUN_RECORD)
    if not osp.isfile(record_path):
        return Outcome('missing')
    with open(record_path) as f:
        record = json.load(f)
    if record.get('job_id'):
        state = _slurm_job_state(record['job_id'])
        if state is None:
            return Outcome('running', note=f'slurm job {record["job_id"]}; no squeue here')
        if state:
            return Outcome('running', note=f'slurm job {record["job_id"]} {state.lower()}')
        return Outcome('failed', note=f'slurm job {record["job_id"]} ended without an exit '
                       'code (cancelled or killed); rerun to resume')
    if record.get('pid') and _process_alive(int(record['pid'])):
        return Outcome('running', note=f'process {record["pid"]}')
    return Outcome('failed', note='interrupted; rerun to resume')


def validation_records(work_dir: str) -> List[dict]:
    """Every validation mmengine logged in ``work_dir`` (``<timestamp>/vis_data/
    scalars.json`` of each start, a resumed run being a later start), oldest first."""
    records = []
    for path in sorted(glob.glob(osp.join(work_dir, '*', 'vis_data', 'scalars.json'))):
        with open(path) as f:
            for line in f:
                line = line.strip()
                if line:
                    record = json.loads(line)
                    if 'loss' not in record and 'lr' not in record:
                        records.append(record)
    return records


def read_outcome(row: Row, work_dir: str) -> Outcome:
    """The row's status and our value of every paper column that its validations logged
    (the latest validation that has it), in the paper's units."""
    outcome = run_status(work_dir)
    records = validation_records(work_dir) if osp.isdir(work_dir) else []
    for name in list(row.metrics) + ([row.main_metric] if row.main_metric else []):
        metric = METRICS[name]
        for record in reversed(records):
            if metric.key is not None and metric.key in record:
                outcome.values[name] = float(record[metric.key]) * metric.scale
                break
    return outcome


# ----------------------------------------------------------------------------------- CLI
def stale_files(root: str = REPO_ROOT, write: bool = False) -> List[str]:
    """Generated files that differ from what the sources give (rewritten with ``write``)."""
    stale = []
    demo_path = osp.join(root, DEMO_METAFILE)
    text = demo_metafile_text()
    if not osp.isfile(demo_path) or open(demo_path).read() != text:
        stale.append(DEMO_METAFILE)
        if write:
            with open(demo_path, 'w') as f:
                f.write(text)
    tables = load_tables(root)
    for table_id in table_ids(tables):
        table = tables[table_id]
        for folder in table.folders:
            if update_readme(table, folder, None, root, write=write):
                stale.append(osp.relpath(readme_path(folder, root), root) + f' (table {table_id})')
    return stale


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument('--check', action='store_true',
                       help='exit 1 if a README table or the demo metafile is out of date')
    group.add_argument('--write', action='store_true', help='regenerate them')
    args = parser.parse_args(argv)
    stale = stale_files(write=args.write)
    for path in stale:
        print(('rewrote ' if args.write else 'out of date: ') + path)
    if args.check and stale:
        print('run: python tools/paper_tables.py --write', file=sys.stderr)
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
