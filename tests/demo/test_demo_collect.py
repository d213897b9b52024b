"""tools/collect_results.py --table demo on a tools/demo.py work directory: the rows the demo
trained (per seed), and how to train the others, not 'missing' for them."""
import json
import os.path as osp

from demo_helpers import load_tool

FASTER = 'faster-rcnn_r18-w16_fpn-{}_demo_synthetic-coco'
SEGFORMER = 'segformer_mit-w16_{}_demo_synthetic-ade20k'
DEMO_ROWS = [FASTER.format('nearest'), FASTER.format('dysample-lpg4'),
             SEGFORMER.format('bilinear'), SEGFORMER.format('dysample-lpg4')]
OTHER_MODELS = 'upernet, mask-rcnn, panoptic-fpn, depthformer'


def demo_run(run_dir, validation, exit_code=0):
    """``run_dir`` as tools/demo.py leaves it: mmengine's scalars, the exit code."""
    vis = run_dir / '20260101_000000' / 'vis_data'
    vis.mkdir(parents=True)
    records = [dict(lr=0.01, loss=1.0, step=1), dict(validation, step=300)]
    (vis / 'scalars.json').write_text(''.join(json.dumps(r) + '\n' for r in records))
    (run_dir / load_tool('paper_tables').EXIT_CODE).write_text(f'{exit_code}\n')


def validation(name, value):
    return {'coco/bbox_mAP': value} if name.startswith('faster') else {'mIoU': value}


def collect(work, capsys):
    assert load_tool('collect_results').main(['--table', 'demo', '--work-dir',
                                               str(work)]) == 0
    return capsys.readouterr().out


def table_rows(out):
    return [[c.strip() for c in line.strip().strip('|').split('|')]
            for line in out.splitlines() if line.startswith('| ') and '[config](' in line]


def test_make_demo_shows_its_rows_and_how_to_train_the_others(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    work = tmp_path / 'work_dirs' / 'demo'  # tools/demo.py's default: no --work-dir in hints
    for index, name in enumerate(DEMO_ROWS):
        demo_run(work / name, validation(name, 0.5 + index / 100))
    (work / 'demo_results.json').write_text('[]')
    out = collect(work, capsys)
    rows = table_rows(out)
    assert [row[-4].split('/')[-1] for row in rows] == [f'{name}.py)' for name in DEMO_ROWS]
    # COCO's 0-1 mAP in percent, as the paper tables print it
    assert [row[-3:] for row in rows] == [
        ['50.0 box AP', '', 'finished'], ['51.0 box AP', '', 'finished'],
        ['0.52 mIoU', '', 'finished'], ['0.53 mIoU', '', 'finished']]
    assert 'missing' not in out
    assert f'table demo, {work}: 4 finished\n' in out
    assert out.rstrip().endswith(
        f'not trained here: {OTHER_MODELS} (tools/demo.py trains the models of --models, '
        f'default faster-rcnn segformer); to train them: python tools/demo.py --models '
        f'{OTHER_MODELS.replace(", ", " ")}')


def test_demo_seeds_get_a_table_each_and_a_failed_run_says_so(tmp_path, capsys):
    work = tmp_path / 'work'
    for seed in (0, 1):
        for name in DEMO_ROWS[:2]:
            demo_run(work / f'{name}_seed{seed}', validation(name, 0.4 + seed / 10),
                     exit_code=1 if (seed, name) == (1, DEMO_ROWS[1]) else 0)
    (work / 'demo_results.json').write_text('[]')
    out = collect(work, capsys)
    assert out.count('### Demo') == 2 and ', seed 0\n' in out and ', seed 1\n' in out
    statuses = [row[-1] for row in table_rows(out)]
    assert statuses == ['finished', 'finished', 'finished', 'failed (exit code 1; rerun to '
                                                           'resume)']
    assert f'table demo, {work}: 1 failed, 3 finished\n' in out
    relative = osp.relpath(work)
    assert out.rstrip().endswith(f'--models segformer {OTHER_MODELS.replace(", ", " ")} '
                                 f'--work-dir {relative}')


def test_a_run_table_work_directory_still_lists_every_row(tmp_path, capsys):
    """Without demo_results.json (tools/run_table.py --table demo) a row without a run is
    missing: run_table was asked for the table's rows."""
    work = tmp_path / 'work'
    demo_run(work / DEMO_ROWS[0], validation(DEMO_ROWS[0], 0.5))
    out = collect(work, capsys)
    rows = table_rows(out)
    assert len(rows) == len(load_tool('paper_tables').get_table('demo').rows)
    assert f'1 finished, {len(rows) - 1} missing' in out
    assert 'not trained here' not in out
