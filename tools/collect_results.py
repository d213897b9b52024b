"""Collect the results of a paper table's runs next to the paper's numbers.

    python tools/collect_results.py --table 6 --work-dir work_dirs/tables
    python tools/collect_results.py --table demo --work-dir D --update-readme

Reads what mmengine wrote in every row's directory ``<work-dir>/<config name>`` (made by
``tools/run_table.py``): the validations in ``<timestamp>/vis_data/scalars.json`` (our
value: the latest validation, i.e. the final one of a finished run, the latest so far of
a running one) and the files run_table's job leaves (exit code, slurm job id or local
process). Prints a markdown table per configs folder of the table: the paper's columns,
the config, ours and the difference (ours - paper) on the row's main metric, and the
status: finished / running / failed / missing. ``--update-readme`` writes it into the
folder's README between its ``<!-- paper-table N -->`` markers.

A work directory of ``tools/demo.py`` (it holds ``demo_results.json``) is read as the demo
trained it: ``--table demo`` shows the rows it trained (one table per seed when it ran
several, each row from ``<config name>_seed<S>``), and names the demo models it did not
train with the ``tools/demo.py`` options that train them, instead of calling them missing.
"""
import argparse
import os
import os.path as osp
import re
import sys
from typing import Dict, Optional, Sequence

TOOLS_DIR = osp.dirname(osp.abspath(__file__))
if TOOLS_DIR not in sys.path:
    sys.path.insert(0, TOOLS_DIR)

import paper_tables  # noqa: E402  (tools/ is not a package)


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog='\n\n'.join(__doc__.split('\n\n')[1:]))
    parser.add_argument('--table', required=True, help="paper table id ('1'-'9') or 'demo'")
    parser.add_argument('--work-dir', default='work_dirs/tables',
                        help='the --work-dir given to tools/run_table.py')
    parser.add_argument('--update-readme', action='store_true',
                        help='also write the table into the task README(s)')
    args = parser.parse_args(argv)
    try:
        args.table_obj = paper_tables.get_table(args.table)
    except ValueError as error:
        parser.error(str(error))
    return args


def collect(table: paper_tables.Table, work_dir: str) -> dict:
    """row name -> Outcome, for every row of ``table``."""
    return {row.name: paper_tables.read_outcome(row, osp.join(work_dir, row.name))
            for row in table.rows}


DEMO_RESULTS = 'demo_results.json'  # what tools/demo.py writes at the end of its runs
DEFAULT_DEMO_WORK_DIR = 'work_dirs/demo'  # tools/demo.py's default --work-dir


def demo_runs(table: paper_tables.Table, work_dir: str) -> Optional[Dict[Optional[int], list]]:
    """For a tools/demo.py work directory: seed (``None`` for single-seed runs, whose
    directories have no suffix) -> the rows of ``table`` trained with it, from the row
    directories there. ``None`` when ``work_dir`` is not a demo work directory."""
    if not osp.isfile(osp.join(work_dir, DEMO_RESULTS)):
        return None
    entries = set(os.listdir(work_dir))
    by_seed: Dict[Optional[int], list] = {}
    for row in table.rows:
        if row.name in entries:
            by_seed.setdefault(None, []).append(row)
        for entry in sorted(entries):
            match = re.fullmatch(re.escape(row.name) + r'_seed(\d+)', entry)
            if match:
                by_seed.setdefault(int(match.group(1)), []).append(row)
    return dict(sorted(by_seed.items(), key=lambda item: -1 if item[0] is None else item[0]))


def untrained_demo_hint(table: paper_tables.Table, trained: Sequence, work_dir: str) -> str:
    """Which demo models the demo work directory has no run of, and how to train them."""
    models = list(dict.fromkeys(row.demo_model for row in table.rows if row not in trained))
    if not models:
        return ''
    command = f'python tools/demo.py --models {" ".join(models)}'
    if osp.abspath(DEFAULT_DEMO_WORK_DIR) != work_dir:
        command += f' --work-dir {osp.relpath(work_dir)}'
    return (f'not trained here: {", ".join(models)} (tools/demo.py trains the models of '
            f'--models, default faster-rcnn segformer); to train them: {command}')


def print_demo_tables(table: paper_tables.Table, work_dir: str,
                      runs: Dict[Optional[int], list]) -> None:
    """The demo table of a tools/demo.py work directory: its rows per seed, then what it
    did not train."""
    counts: Dict[str, int] = {}
    for seed, rows in runs.items():
        suffix = '' if seed is None else f'_seed{seed}'
        outcomes = {row.name: paper_tables.read_outcome(row, osp.join(work_dir, row.name +
                                                                      suffix)) for row in rows}
        link_base = osp.relpath(osp.join(paper_tables.REPO_ROOT, 'configs', rows[0].folder))
        title = table.titles[rows[0].folder] + ('' if seed is None else f', seed {seed}')
        print(f'### {title}\n')
        print(paper_tables.render_table(rows, outcomes, link_base + '/') + '\n')
        for outcome in outcomes.values():
            counts[outcome.status] = counts.get(outcome.status, 0) + 1
    trained = [row for rows in runs.values() for row in rows]
    print(f'table {table.id}, {work_dir}: ' +
          (', '.join(f'{n} {status}' for status, n in sorted(counts.items())) or 'no runs'))
    hint = untrained_demo_hint(table, trained, work_dir)
    if hint:
        print(hint)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    table = args.table_obj
    work_dir = osp.abspath(args.work_dir)
    runs = demo_runs(table, work_dir) if table.id == paper_tables.DEMO_TABLE else None
    if runs is not None and not args.update_readme:
        print_demo_tables(table, work_dir, runs)
        return 0
    outcomes = collect(table, work_dir)
    for folder in table.folders:
        link_base = osp.relpath(osp.join(paper_tables.REPO_ROOT, 'configs', folder)) + '/'
        print(f'### {table.titles[folder]}\n')
        print(paper_tables.render_table(table.rows_of(folder), outcomes, link_base) + '\n')
        if args.update_readme:
            paper_tables.update_readme(table, folder, outcomes)
            print(f'(written into {osp.relpath(paper_tables.readme_path(folder))})\n')
    counts = {}
    for outcome in outcomes.values():
        counts[outcome.status] = counts.get(outcome.status, 0) + 1
    print(f'table {table.id}, {work_dir}: ' +
          ', '.join(f'{n} {status}' for status, n in sorted(counts.items())))
    return 0


if __name__ == '__main__':
    sys.exit(main())
