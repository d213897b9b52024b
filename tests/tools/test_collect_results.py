"""tools/collect_results.py on run directories laid out as mmengine and run_table.py leave
them (the real logs of a demo run are collected in test_run_table.py)."""
import json
import os
import shutil
import subprocess

import pytest
from tools_testing import REPO, load_tool

FASTER = 'faster-rcnn_r50_fpn-{}_1x_coco'


@pytest.fixture(scope='module')
def paper_tables():
    return load_tool('paper_tables')


def fake_run(row_dir, validations, exit_code=None, record=None, train_records=3):
    """``row_dir`` as a run leaves it: scalars.json (train and validation records) in a
    timestamp folder, run_table's record and exit code."""
    vis = row_dir / '20260101_000000' / 'vis_data'
    vis.mkdir(parents=True)
    lines = [dict(lr=0.02, loss=1.0 / (i + 1), step=i + 1) for i in range(train_records)]
    lines += validations
    (vis / 'scalars.json').write_text(''.join(json.dumps(r) + '\n' for r in lines))
    if exit_code is not None:
        (row_dir / 'run_table_exit_code').write_text(f'{exit_code}\n')
    if record is not None:
        (row_dir / 'run_table.json').write_text(json.dumps(record))


def cells_by_config(out):
    rows = {}
    for line in out.splitlines():
        if line.startswith('| ') and '[config](' in line:
            cells = [c.strip() for c in line.strip().strip('|').split('|')]
            config = cells[-4].split('/')[-1].rstrip(')')
            rows[config[:-len('.py')]] = cells
    return rows


def test_statuses_ours_and_difference(tmp_path, monkeypatch, capsys):
    work = tmp_path / 'work'
    # finished: the last validation counts (COCO's 0-1 mAP in the paper's percent)
    fake_run(work / FASTER.format('dysample-lpg4'),
             [dict({'coco/bbox_mAP': 0.201}, step=6), dict({'coco/bbox_mAP': 0.389}, step=12)],
             exit_code=0, record=dict(job_id='17'))
    # running on slurm (squeue lists it): its latest validation so far
    fake_run(work / FASTER.format('carafe'), [dict({'coco/bbox_mAP': 0.301}, step=4)],
             record=dict(job_id='18'))
    # failed: train.py exited with 1
    fake_run(work / FASTER.format('deconv'), [], exit_code=1, record=dict(job_id='19'))
    # local run whose process is gone without an exit code: interrupted
    dead = subprocess.Popen(['true'])
    dead.wait()
    fake_run(work / FASTER.format('pixelshuffle'), [], record=dict(pid=dead.pid))
    bin_dir = tmp_path / 'bin'
    bin_dir.mkdir()
    (bin_dir / 'squeue').write_text('#!/usr/bin/env bash\n[ "$3" = 18 ] && echo RUNNING\n'
                                    'exit 0\n')
    (bin_dir / 'squeue').chmod(0o755)
    monkeypatch.setenv('PATH', f'{bin_dir}{os.pathsep}{os.environ["PATH"]}')

    assert load_tool('collect_results').main(['--table', '6', '--work-dir', str(work)]) == 0
    out = capsys.readouterr().out
    rows = cells_by_config(out)
    assert len(rows) == 14
    # paper (Table 6): DySample R50 38.6, CARAFE 38.6, Deconv 37.3, PixelShuffle 37.5
    assert rows[FASTER.format('dysample-lpg4')][-3:] == [
        f'{0.389 * 100:.1f}', f'{0.389 * 100 - 38.6:+.1f}', 'finished']
    assert rows[FASTER.format('carafe')][-3:] == [
        '30.1', f'{30.1 - 38.6:+.1f}', 'running (slurm job 18 running)']
    assert rows[FASTER.format('deconv')][-3:] == ['', '', 'failed (exit code 1; rerun to '
                                                          'resume)']
    assert rows[FASTER.format('pixelshuffle')][-3:] == ['', '', 'failed (interrupted; rerun '
                                                                'to resume)']
    assert rows[FASTER.format('nearest')][-3:] == ['', '', 'missing']
    assert out.rstrip().endswith(f'{work}: 2 failed, 1 finished, 10 missing, 1 running')
    assert out.startswith('### Table 6: Faster R-CNN on COCO')


def test_a_table_spanning_two_folders_prints_both(tmp_path, capsys):
    fake_run(tmp_path / 'segformer_mit-b1_dysample-lpg1_8xb2-160k_ade20k-512x512',
             [dict(mIoU=42.95, aAcc=80.0, step=160000)], exit_code=0)
    assert load_tool('collect_results').main(['--table', '2', '--work-dir',
                                              str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert '### Table 2: static scope factor (SegFormer-B1' in out
    assert '### Table 2: static scope factor (Faster R-CNN' in out
    rows = cells_by_config(out)
    # mmseg logs mIoU in percent already; the paper prints Table 2 with one decimal
    assert rows['segformer_mit-b1_dysample-lpg1_8xb2-160k_ade20k-512x512'][-3:] == [
        '43.0', '+0.6', 'finished']
    # the same config in Faster R-CNN's half is another run
    assert rows['faster-rcnn_r50_fpn-dysample-lpg1_1x_coco'][-1] == 'missing'


def test_update_readme_keeps_hand_text_and_results(tmp_path, paper_tables):
    """Writing results into the README replaces only the block between the markers, and
    regenerating the paper columns afterwards keeps the results."""
    readme = tmp_path / 'configs' / 'panoptic_fpn' / 'README.md'
    readme.parent.mkdir(parents=True)
    shutil.copy(os.path.join(REPO, 'configs', 'panoptic_fpn', 'README.md'), readme)
    original = readme.read_text()
    table = paper_tables.get_table('8')
    name = 'panoptic-fpn_r50_fpn-dysample-lpg4_1x_coco'
    outcome = paper_tables.Outcome('finished', {'PQ': 41.26})
    assert paper_tables.update_readme(table, 'panoptic_fpn', {name: outcome}, root=str(tmp_path))
    text = readme.read_text()
    begin, end = paper_tables.markers('8')
    assert text[:text.index(begin)] == original[:original.index(begin)]
    assert text[text.index(end):] == original[original.index(end):]
    block = text[text.index(begin):text.index(end)]
    (line, ) = [line for line in block.splitlines() if f'({name}.py)' in line]
    assert line.endswith('| 41.3 | -0.1 | finished |')  # paper 41.4; one decimal like it
    assert not paper_tables.update_readme(table, 'panoptic_fpn', None, root=str(tmp_path))
    assert readme.read_text() == text


def test_bad_table_is_named(capsys):
    with pytest.raises(SystemExit):
        load_tool('collect_results').main(['--table', '10'])
    assert "--table must be one of ['1', '2', '3', '4', '5', '6', '7', '8', '9', 'demo']" in \
        capsys.readouterr().err
