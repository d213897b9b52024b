"""tools/run_table.py: one job per paper-table row, on slurm through a fake sbatch/srun/squeue
that record their arguments, and locally end to end on the demo table (a row killed mid-run
is resumed, not restarted); before anything is submitted, each row's schedule, data and
pretrained checkpoints are listed and checked, and --fetch-weights fills the jobs' weight
cache from a mirror (a local HTTP server here)."""
import functools
import hashlib
import http.server
import json
import os
import os.path as osp
import re
import signal
import subprocess
import sys
import threading
import time

import pytest
from tools_testing import REPO, load_tool

# Table 6 of the paper, row by row (upsampler, backbone)
TABLE_6 = [(u, 'R50') for u in ('Nearest', 'Deconv', 'PixelShuffle', 'CARAFE', 'IndexNet',
                                 'A2U', 'FADE', 'SAPA-B', 'DySample-S', 'DySample-S+',
                                 'DySample', 'DySample+')] + [('Nearest', 'R101'),
                                                              ('DySample+', 'R101')]

FAKE_SBATCH = r'''#!/usr/bin/env bash
# records its arguments and the script; FAKE_SBATCH_RUN=1 runs the script at once (as the job)
n=$(( $(cat "$FAKE_SLURM_DIR/next_id" 2>/dev/null || echo 1000) + 1 ))
echo "$n" > "$FAKE_SLURM_DIR/next_id"
printf '%s\0' "$@" > "$FAKE_SLURM_DIR/sbatch-$n.args"
cp "${@: -1}" "$FAKE_SLURM_DIR/sbatch-$n.sh"
if [ "${FAKE_SBATCH_RUN:-0}" = 1 ]; then
    SLURM_JOB_ID=$n bash "${@: -1}" > /dev/null 2>&1
fi
echo "Submitted batch job $n"
'''
FAKE_SRUN = r'''#!/usr/bin/env bash
printf '%s\0' "$@" > "$FAKE_SLURM_DIR/srun-$SLURM_JOB_ID.args"
exit "${FAKE_SRUN_EXIT:-0}"
'''
FAKE_SQUEUE = r'''#!/usr/bin/env bash
# squeue -h -j ID -o %T: the state listed for ID in $FAKE_SLURM_DIR/queue ("ID STATE" lines)
while [ "$#" -gt 0 ]; do [ "$1" = -j ] && id=$2; shift; done
if [ -f "$FAKE_SLURM_DIR/queue" ]; then
    while read -r job state; do [ "$job" = "$id" ] && echo "$state"; done < "$FAKE_SLURM_DIR/queue"
fi
exit 0
'''


@pytest.fixture(scope='module')
def run_table():
    return load_tool('run_table')


@pytest.fixture
def fake_slurm(tmp_path, monkeypatch):
    """sbatch/srun/squeue on PATH that record what they are given (in tmp_path/slurm)."""
    bin_dir, record_dir = tmp_path / 'bin', tmp_path / 'slurm'
    bin_dir.mkdir()
    record_dir.mkdir()
    for name, text in (('sbatch', FAKE_SBATCH), ('srun', FAKE_SRUN),
                       ('squeue', FAKE_SQUEUE)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    monkeypatch.setenv('PATH', f'{bin_dir}{os.pathsep}{os.environ["PATH"]}')
    monkeypatch.setenv('FAKE_SLURM_DIR', str(record_dir))
    for name in ('GPUS', 'GPUS_PER_NODE', 'CPUS_PER_TASK', 'PARTITION', 'FAKE_SBATCH_RUN'):
        monkeypatch.delenv(name, raising=False)
    return record_dir


@pytest.fixture
def torch_home(tmp_path, monkeypatch):
    """TORCH_HOME of this process (and of the job scripts run_table.py writes)."""
    home = tmp_path / 'torch'
    monkeypatch.setenv('TORCH_HOME', str(home))
    return home


def _recorded(record_dir, tool):
    """[(job id, arguments)] of every call of the fake ``tool``, in submission order."""
    calls = []
    for path in record_dir.glob(f'{tool}-*.args'):
        job_id = path.name.split('-')[1].split('.')[0]
        calls.append((job_id, path.read_text().split('\0')[:-1]))
    return sorted(calls, key=lambda call: int(call[0]))


def submissions(record_dir):
    return [dict(job_id=job_id, args=args,
                 script=(record_dir / f'sbatch-{job_id}.sh').read_text())
            for job_id, args in _recorded(record_dir, 'sbatch')]


def directives(script):
    return dict(re.findall(r'^#SBATCH --([\w-]+)(?:=(\S+))?$', script, re.M))


def table_rows(run_table, table):
    return load_tool('paper_tables').get_table(table).rows


def test_table_6_rows_are_the_papers(run_table):
    rows = table_rows(run_table, '6')
    assert [(row.label, row.backbone) for row in rows] == TABLE_6


def test_dry_run_prints_one_job_script_per_row_of_table_6(run_table, fake_slurm, torch_home,
                                                          capsys):
    assert run_table.main(['--table', '6', '--launcher', 'slurm', '--dry-run', '--partition',
                           'P', '--gpus', '8']) == 0
    out = capsys.readouterr().out
    scripts = out.split('#!/usr/bin/env bash')[1:]
    rows = table_rows(run_table, '6')
    assert len(scripts) == len(rows) == 14
    for script, row in zip(scripts, rows):
        assert directives(script) == {
            'job-name': f'dysample-t6-{row.name}', 'partition': 'P', 'nodes': '1',
            'ntasks': '8', 'ntasks-per-node': '8', 'gres': 'gpu:8', 'cpus-per-task': '5',
            'output': osp.join(REPO, 'work_dirs', 'tables', row.name, 'slurm-%j.out'),
            'open-mode': 'append', 'requeue': '', 'signal': 'B:USR1@300'}
        train = re.search(r'^srun --kill-on-bad-exit=1 (.*) &$', script, re.M).group(1)
        assert train.split()[1:] == [
            '-u', osp.join(REPO, 'tools', 'train.py'), osp.join(REPO, row.config),
            '--launcher', 'slurm', '--work-dir',
            osp.join(REPO, 'work_dirs', 'tables', row.name), '--resume']
        # the jobs read the weight cache that run_table.py checked
        assert f'\nexport TORCH_HOME={torch_home}  #' in script
    assert not submissions(fake_slurm)  # nothing submitted
    assert not osp.exists(osp.join(REPO, 'work_dirs', 'tables', rows[0].name))


@pytest.mark.slow
def test_slurm_submits_each_row_once_honouring_the_resources(run_table, fake_slurm,
                                                             tmp_path, capsys):
    work = tmp_path / 'work'
    # --force: COCO and the ResNet weights are not on this machine (see the preflight tests)
    args = ['--table', '6', '--launcher', 'slurm', '--partition', 'gpu', '--gpus', '16',
            '--gpus-per-node', '4', '--cpus-per-task', '6', '--work-dir', str(work), '--force',
            '--cfg-options', 'train_dataloader.batch_size=4']
    rows = table_rows(run_table, '6')
    present = [row for row in rows if row.exists]
    code = run_table.main(args)
    assert code == (1 if len(present) < len(rows) else 0)  # missing configs are reported
    assert '(went ahead anyway (--force))' in capsys.readouterr().err
    submitted = submissions(fake_slurm)
    assert [s['args'] for s in submitted] == [[str(work / row.name / 'run_table_job.sh')]
                                              for row in present]
    for submission, row in zip(submitted, present):
        script = submission['script']
        assert {k: v for k, v in directives(script).items() if k != 'job-name'} == {
            'partition': 'gpu', 'nodes': '4', 'ntasks': '16', 'ntasks-per-node': '4',
            'gres': 'gpu:4', 'cpus-per-task': '6', 'output': str(work / row.name /
                                                                  'slurm-%j.out'),
            'open-mode': 'append', 'requeue': '', 'signal': 'B:USR1@300'}
        assert script.rstrip().endswith('--cfg-options train_dataloader.batch_size=4 &\n'
                                        'wait $!\ncode=$?\necho "$code" > '
                                        f'{work / row.name / "run_table_exit_code"}\n'
                                        'exit "$code"')
        record = json.loads((work / row.name / 'run_table.json').read_text())
        assert record['job_id'] == submission['job_id'] and record['table'] == '6'

    # queued jobs are not submitted twice
    (fake_slurm / 'queue').write_text(''.join(f'{s["job_id"]} PENDING\n' for s in submitted))
    capsys.readouterr()
    run_table.main(args)
    assert len(submissions(fake_slurm)) == len(present)
    out = capsys.readouterr().out
    assert out.count('skipped, running (slurm job') == len(present)
    assert 'pending' in out

    # jobs gone from the queue without an exit code (cancelled, node failure) are resumed
    (fake_slurm / 'queue').write_text('')
    run_table.main(args)
    assert len(submissions(fake_slurm)) == 2 * len(present)
    out = capsys.readouterr().out
    assert out.count('(resumes from its last checkpoint)') == len(present)


@pytest.mark.slow
def test_jobs_record_their_exit_code_and_finished_rows_are_skipped(run_table, fake_slurm,
                                                                   tmp_path, monkeypatch,
                                                                   capsys):
    """The fake sbatch runs each job script at once, with the fake srun: the script calls
    srun with tools/train.py and writes srun's exit code where run_table looks."""
    work = tmp_path / 'work'
    rows = [row.name for row in table_rows(run_table, '8') if row.exists][:3]
    monkeypatch.setenv('FAKE_SBATCH_RUN', '1')
    monkeypatch.setenv('GPUS', '4')  # the environment defaults of tools/slurm_train.sh
    monkeypatch.setenv('CPUS_PER_TASK', '2')
    monkeypatch.setenv('FAKE_SRUN_EXIT', '3')
    args = ['--table', '8', '--launcher', 'slurm', '--partition', 'p', '--work-dir',
            str(work), '--force', '--rows', *rows]
    assert run_table.main(args) == 0
    srun_calls = [args for _, args in _recorded(fake_slurm, 'srun')]
    assert len(srun_calls) == 3
    for call, name in zip(srun_calls, rows):
        assert call[0] == '--kill-on-bad-exit=1' and call[2:4] == ['-u', osp.join(
            REPO, 'tools', 'train.py')]
        assert call[call.index('--work-dir') + 1] == str(work / name)
    for submission in submissions(fake_slurm):
        assert directives(submission['script'])['ntasks'] == '4'
        assert directives(submission['script'])['cpus-per-task'] == '2'
    paper_tables = load_tool('paper_tables')
    for name in rows:
        status = paper_tables.run_status(str(work / name))
        assert (status.status, status.note) == ('failed', 'exit code 3; rerun to resume')

    monkeypatch.setenv('FAKE_SRUN_EXIT', '0')
    run_table.main(args)  # failed rows again, now successfully
    assert len(submissions(fake_slurm)) == 6
    assert all(paper_tables.run_status(str(work / n)).status == 'finished' for n in rows)
    capsys.readouterr()
    run_table.main(args)
    assert len(submissions(fake_slurm)) == 6  # finished rows are not submitted again
    assert capsys.readouterr().out.count('skipped, finished') == 3


@pytest.mark.parametrize('args, message', [
    (['--table', '42', '--launcher', 'local'], "--table must be one of ['1', '2'"),
    (['--table', '6', '--launcher', 'slurm'], '--partition is required'),
    (['--table', '6', '--launcher', 'local', '--gpus', '0'], '--gpus must be >= 1, got 0'),
    (['--table', '6', '--launcher', 'slurm', '--partition', 'p', '--gpus', '12'],
     '--gpus (12) must be a multiple of --gpus-per-node (8)'),
    (['--table', '6', '--launcher', 'local', '--rows', 'nope'], "--rows: ['nope'] not in "
     'table 6'),
    (['--table', '6', '--launcher', 'local', '--weights-mirror', 'http://m'],
     '--weights-mirror is used with --fetch-weights'),
    (['--table', '6', '--launcher', 'local', '--fetch-weights', '--weights-mirror', 'ftp://m'],
     "--weights-mirror: weights mirror must be a URL with one of the schemes ['http', "
     "'https', 'file']"),
])
def test_bad_arguments_are_named(run_table, fake_slurm, capsys, args, message):
    with pytest.raises(SystemExit):
        run_table.main(args)
    assert message in capsys.readouterr().err


def test_smoke_schedule_turns_an_epoch_based_config_into_iterations(run_table, tmp_path):
    """--iters on mmdet's epoch-based recipes: the options replace the loop (no max_epochs
    left over), checkpoint at the end, log by iteration."""
    from mmengine.config import Config, DictAction
    import argparse
    config = tmp_path / 'epoch_based.py'
    config.write_text(
        "train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=12, val_interval=1)\n"
        "default_hooks = dict(checkpoint=dict(type='CheckpointHook', interval=1))\n"
        "log_processor = dict(type='LogProcessor', window_size=50, by_epoch=True)\n")
    cfg = Config.fromfile(str(config))
    parser = argparse.ArgumentParser()
    parser.add_argument('--cfg-options', nargs='+', action=DictAction)
    cfg.merge_from_dict(parser.parse_args(
        ['--cfg-options', *run_table.smoke_schedule_options(7)]).cfg_options)
    assert cfg.train_cfg == dict(type='IterBasedTrainLoop', max_iters=7, val_interval=7)
    assert cfg.default_hooks.checkpoint == dict(type='CheckpointHook', interval=7,
                                                by_epoch=False)
    assert cfg.log_processor.by_epoch is False


# ------------------------------------------- before submitting: schedule, data, weights
R50, R101 = 'faster-rcnn_r50_fpn-nearest_1x_coco', 'faster-rcnn_r101_fpn-nearest_1x_coco'
R50_URL = 'https://download.pytorch.org/models/resnet50-0676ba61.pth'
R101_URL = 'https://download.pytorch.org/models/resnet101-63fe2227.pth'
SCHEDULE_1X = ('schedule: 12 epochs, 2 images/GPU x 8 GPUs = 16 images/iteration (the '
               "recipe's 16); validation every epoch, checkpoint every epoch")
COCO_FILES = ('annotations/instances_train2017.json', 'train2017/',
              'annotations/instances_val2017.json', 'val2017/')


def coco_options(data_root):
    """--cfg-options pointing mmdet's COCO configs at ``data_root``/coco (tools/demo.py's)."""
    return load_tool('demo').data_root_options('coco', str(data_root))


def make_coco(data_root):
    for name in COCO_FILES:
        path = data_root / 'coco' / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.mkdir() if name.endswith('/') else path.write_text('{}')


def row_block(out, name):
    """The lines printed under a row's head (its needs), up to its job script."""
    block = out[out.index(f': {name}: '):]
    return [line.strip() for line in block.split('#!/usr/bin/env bash')[0].splitlines()[1:]
            if line.startswith('    ')]


def test_dry_run_lists_each_rows_schedule_data_and_weights(run_table, fake_slurm, torch_home,
                                                            tmp_path, capsys):
    data = tmp_path / 'data'
    args = ['--table', '6', '--launcher', 'slurm', '--partition', 'P', '--gpus', '8',
            '--dry-run', '--rows', R50, R101, '--cfg-options', *coco_options(data)]
    cache = torch_home / 'hub' / 'checkpoints'
    assert run_table.main(args) == 0
    out, err = capsys.readouterr()
    for name, weights in ((R50, 'resnet50-0676ba61.pth'), (R101, 'resnet101-63fe2227.pth')):
        assert row_block(out, name) == [SCHEDULE_1X] + [
            f'data ({phase}): {data}/coco/{file}  missing'
            for phase, file in zip(('train', 'train', 'val', 'val'), COCO_FILES)] + [
            f'weights: torchvision://{weights.split("-")[0]} -> {cache / weights}  missing']
    assert f'the jobs start in {REPO}' in out and f'weights from {cache}' in out
    # one message at the end: each missing path once, where to get it
    assert err.count('missing, and needed by the rows above: 4 data path(s) and 2 '
                     'pretrained checkpoint(s)\n') == 1
    for file in COCO_FILES:
        assert err.count(f'{data}/coco/{file} (') == 1
    assert f'{cache}/resnet50-0676ba61.pth (torchvision://resnet50, from {R50_URL})' in err
    assert f'{cache}/resnet101-63fe2227.pth (torchvision://resnet101, from {R101_URL})' in err
    assert 'download COCO 2017' in err and 'add --fetch-weights to this command' in err
    assert '(a real run stops here; --force submits anyway)' in err

    make_coco(data)
    cache.mkdir(parents=True)
    (cache / 'resnet50-0676ba61.pth').write_bytes(b'')
    assert run_table.main(args) == 0
    out, err = capsys.readouterr()
    assert row_block(out, R50)[-1].endswith('resnet50-0676ba61.pth  present')
    assert all(line.endswith('  present') for line in row_block(out, R50)[1:])
    assert row_block(out, R101)[-1].endswith('resnet101-63fe2227.pth  missing')
    assert 'missing, and needed by the rows above: 1 pretrained checkpoint(s)\n' in err

    # with 4 GPUs: the recipe's batch is named
    run_table.main(args[:7] + ['4'] + args[8:])
    assert row_block(capsys.readouterr().out, R50)[0] == (
        'schedule: 12 epochs, 2 images/GPU x 4 GPUs = 8 images/iteration (the recipe trains '
        'with 16 = 8 GPUs x 2: scale the batch or the learning rate with --cfg-options); '
        'validation every epoch, checkpoint every epoch')


def test_submission_stops_before_sbatch_while_anything_is_missing(run_table, fake_slurm,
                                                                  torch_home, tmp_path,
                                                                  capsys):
    data, work = tmp_path / 'data', tmp_path / 'work'
    args = ['--table', '6', '--launcher', 'slurm', '--partition', 'P', '--work-dir', str(work),
            '--rows', R50, '--cfg-options', *coco_options(data)]
    make_coco(data)
    (data / 'coco' / 'val2017').rmdir()
    assert run_table.main(args) == run_table.EXIT_MISSING
    out, err = capsys.readouterr()
    assert not submissions(fake_slurm) and not work.exists()  # nothing submitted or written
    assert f'{R50}: not submitted' in out
    assert f'{data}/coco/val2017/ (val data)' in err and 'resnet50-0676ba61.pth' in err
    assert '(nothing was submitted or run; --force goes ahead anyway)' in err

    (data / 'coco' / 'val2017').mkdir()
    cache = torch_home / 'hub' / 'checkpoints'
    cache.mkdir(parents=True)
    (cache / 'resnet50-0676ba61.pth').write_bytes(b'')
    assert run_table.main(args) == 0
    out, err = capsys.readouterr()
    assert len(submissions(fake_slurm)) == 1 and 'missing' not in out + err


class MirrorServer(http.server.ThreadingHTTPServer):
    """Serves a folder on 127.0.0.1 and records the paths asked for."""

    def __init__(self, root):
        self.requested = []
        server = self

        class Handler(http.server.SimpleHTTPRequestHandler):

            def log_request(self, *args):  # once per answer, with its status
                server.requested.append(self.path)

            def log_message(self, *args):
                pass

        super().__init__(('127.0.0.1', 0), functools.partial(Handler, directory=str(root)))
        self.url = f'http://127.0.0.1:{self.server_address[1]}'


@pytest.fixture
def mirror(tmp_path):
    root = tmp_path / 'mirror'
    root.mkdir()
    server = MirrorServer(root)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server, root
    server.shutdown()
    server.server_close()
    thread.join()


def test_fetch_weights_downloads_from_a_mirror_into_the_jobs_cache(run_table, fake_slurm,
                                                                   torch_home, mirror,
                                                                   tmp_path, capsys):
    import torch
    server, root = mirror
    weights = {'conv1.weight': torch.randn(64, 3, 7, 7), 'fc.bias': torch.randn(1000)}
    buffer = tmp_path / 'weights.pth'
    torch.save(weights, buffer)
    digest = hashlib.sha256(buffer.read_bytes()).hexdigest()
    # a name carrying the SHA-256 prefix, as torchvision's and OpenMMLab's files do
    name = f'backbone-{digest[:8]}.pth'
    (root / 'mirror-of' / 'pretrain').mkdir(parents=True)
    (root / 'mirror-of' / 'pretrain' / name).write_bytes(buffer.read_bytes())
    data = tmp_path / 'data'
    make_coco(data)
    args = ['--table', '6', '--launcher', 'slurm', '--partition', 'P', '--rows', R50,
            '--work-dir', str(tmp_path / 'work'), '--fetch-weights', '--weights-mirror',
            f'{server.url}/mirror-of/', '--cfg-options', *coco_options(data),
            f'model.backbone.init_cfg.checkpoint=https://weights.example.org/pretrain/{name}']
    assert run_table.main(args) == 0
    out = capsys.readouterr().out
    cached = torch_home / 'hub' / 'checkpoints' / name
    assert server.requested == [f'/mirror-of/pretrain/{name}']
    assert (f'fetching https://weights.example.org/pretrain/{name}: {server.url}/mirror-of/'
            f'pretrain/{name} -> {cached}') in out
    assert cached.read_bytes() == buffer.read_bytes()
    assert [p.name for p in cached.parent.iterdir()] == [name]  # no temporary file left
    loaded = torch.load(cached, weights_only=True)
    assert all(torch.equal(loaded[k], v) for k, v in weights.items())
    assert row_block(out, R50)[-1] == f'weights: https://weights.example.org/pretrain/{name} ' \
        f'-> {cached}  present'
    assert len(submissions(fake_slurm)) == 1
    # the job reads the cache that was filled
    assert f'export TORCH_HOME={torch_home}  #' in submissions(fake_slurm)[0]['script']

    # present: not fetched again (--dry-run fetches too, and prints)
    assert run_table.main(args + ['--dry-run']) == 0
    assert server.requested == [f'/mirror-of/pretrain/{name}']


def test_fetch_weights_failures_leave_nothing_and_stop(run_table, fake_slurm, torch_home,
                                                       mirror, tmp_path, capsys):
    """A mirror that serves another file under resnet50-0676ba61.pth (the name's SHA-256
    prefix does not match), and none for resnet101: both named, nothing cached, nothing
    submitted, even with --force."""
    server, root = mirror
    (root / 'models').mkdir()
    (root / 'models' / 'resnet50-0676ba61.pth').write_bytes(b'not the weights')
    args = ['--table', '6', '--launcher', 'slurm', '--partition', 'P', '--rows', R50, R101,
            '--force', '--fetch-weights', '--weights-mirror', server.url]
    assert run_table.main(args) == run_table.EXIT_MISSING
    err = capsys.readouterr().err
    assert sorted(server.requested) == ['/models/resnet101-63fe2227.pth',
                                        '/models/resnet50-0676ba61.pth']
    assert f'downloading {server.url}/models/resnet50-0676ba61.pth' in err
    assert 'invalid hash value (expected "0676ba61", got "' + \
        hashlib.sha256(b'not the weights').hexdigest() in err
    assert f'downloading {server.url}/models/resnet101-63fe2227.pth' in err
    assert 'HTTP Error 404' in err
    assert '2 checkpoint(s) could not be fetched (above); nothing was submitted or run' in err
    cache = torch_home / 'hub' / 'checkpoints'
    assert not cache.exists() or not list(cache.iterdir())
    assert not submissions(fake_slurm)


@pytest.mark.slow
def test_each_tables_schedule_is_its_metafiles(run_table):
    """The schedule the tool reads from each folder's first paper-table config (its other
    configs only change the upsampler: tests/configs) against the metafile's Epochs /
    Iterations and Batch Size (all GPUs): the recipe's GPUs are a whole number."""
    import yaml
    seen = {}
    for table_id in ('1', '4', '5', '6', '7', '8', '9'):
        for row in table_rows(run_table, table_id):
            seen.setdefault(row.folder, row)
    assert sorted(seen) == ['depth', 'faster_rcnn', 'mask_rcnn', 'maskformer', 'panoptic_fpn',
                            'segformer']
    for folder, row in seen.items():
        with open(osp.join(REPO, 'configs', folder, 'metafile.yml')) as f:
            (meta, ) = [m['Metadata'] for m in yaml.safe_load(f)['Models']
                        if m['Config'] == row.config]
        job = run_table.Job(row, '/w', ['--work-dir', '/w'])
        schedule = run_table.row_needs(job).schedule
        unit = 'epochs' if 'Epochs' in meta else 'iterations'
        assert (schedule.unit, schedule.length) == (unit, meta.get('Epochs',
                                                                   meta.get('Iterations'))), row
        recipe = meta.get('Batch Size', 16)  # mmdet's metafiles: auto_scale_lr's 16
        assert schedule.recipe_batch == recipe, row
        assert recipe % schedule.batch_per_gpu == 0, row


# ------------------------------------------------------------------ local, end to end
def _tool_env():
    env = dict(os.environ)
    env['PYTHONPATH'] = REPO + (os.pathsep + env['PYTHONPATH'] if env.get('PYTHONPATH')
                                else '')
    env.update(OMP_NUM_THREADS='1', MKL_NUM_THREADS='1', PYTHONUNBUFFERED='1')
    return env


def _tool(name, *args):
    return [sys.executable, osp.join(REPO, 'tools', f'{name}.py'), *args]


ROW = 'segformer_mit-w16_bilinear_demo_synthetic-ade20k'


@pytest.mark.slow
def test_demo_table_locally_a_killed_row_resumes_and_is_collected(tmp_path, capsys):
    """run_table --launcher local on a demo row at a tiny setting: killed (with run_table
    itself, as a preemption would) after its first checkpoints, rerun: it resumes from the
    latest checkpoint, finishes and validates with mmseg's IoUMetric; collect_results reads
    that real validation; a third run skips it."""
    from mmdysample.datasets import generate_synthetic_dataset
    data = tmp_path / 'data'
    generate_synthetic_dataset(str(data), seed=0, num_train=8, num_val=4)
    work = tmp_path / 'work'
    iters = 12
    command = _tool('run_table', '--table', 'demo', '--launcher', 'local', '--rows', ROW,
                    '--iters', str(iters), '--work-dir', str(work), '--data-root', str(data),
                    '--cfg-options', 'train_dataloader.batch_size=2',
                    'val_dataloader.batch_size=4', 'default_hooks.checkpoint.interval=1',
                    'default_hooks.logger.interval=1', 'log_processor.window_size=1')
    row_dir = work / ROW
    first = subprocess.Popen(command, cwd=REPO, env=_tool_env(), stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True, start_new_session=True)
    deadline = time.time() + 300
    while not (row_dir / 'last_checkpoint').exists():
        assert first.poll() is None, first.stdout.read()
        assert time.time() < deadline
        time.sleep(0.05)
    os.killpg(first.pid, signal.SIGKILL)  # run_table, the job script and tools/train.py
    first.wait()
    killed_at = int(re.search(r'iter_(\d+)\.pth',
                              (row_dir / 'last_checkpoint').read_text()).group(1))
    assert 1 <= killed_at < iters
    assert not (row_dir / 'run_table_exit_code').exists()
    paper_tables = load_tool('paper_tables')
    assert paper_tables.run_status(str(row_dir)).status == 'failed'

    second = subprocess.run(command, cwd=REPO, env=_tool_env(), capture_output=True,
                            text=True, timeout=600)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    assert 'running (resumes from its last checkpoint)' in second.stdout
    log = (row_dir / 'run_table.log').read_text()
    assert re.search(rf'resumed epoch: \d+, iter: {killed_at}', log), log[-3000:]
    # the second start trained only the remaining iterations
    runs = sorted(p for p in row_dir.iterdir() if re.fullmatch(r'\d{8}_\d{6}', p.name))
    assert len(runs) == 2
    records = [json.loads(line) for line in
               (runs[1] / 'vis_data' / 'scalars.json').read_text().splitlines()]
    train_steps = [r['step'] for r in records if 'loss' in r]
    assert train_steps == list(range(killed_at + 1, iters + 1))
    (validation, ) = [r for r in records if 'mIoU' in r]
    assert validation['step'] == iters

    # the collector and a third run in this process (no training: cheap)
    assert load_tool('collect_results').main(['--table', 'demo', '--work-dir',
                                               str(work)]) == 0
    out = capsys.readouterr().out
    (line, ) = [line for line in out.splitlines() if f'{ROW}.py' in line]
    cells = [c.strip() for c in line.strip('|').split('|')]
    assert cells[0] == 'SegFormer MiT-w16, bilinear'
    assert cells[-3] == f'{validation["mIoU"]:.2f} mIoU' and cells[-2] == ''
    assert cells[-1] == 'finished'
    others = len(paper_tables.get_table('demo').rows) - 1
    assert out.count('| missing |') == others and f'1 finished, {others} missing' in out

    assert load_tool('run_table').main(command[2:]) == 0
    assert f'{ROW}: skipped, finished' in capsys.readouterr().out
    assert len([p for p in row_dir.iterdir() if re.fullmatch(r'\d{8}_\d{6}', p.name)]) == 2
