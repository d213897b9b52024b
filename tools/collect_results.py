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
"""
import argparse
import os.path as osp
import sys
from typing import Optional, Sequence

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


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    table = args.table_obj
    work_dir = osp.abspath(args.work_dir)
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
