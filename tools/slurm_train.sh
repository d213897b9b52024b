#!/usr/bin/env bash
# Training on a Slurm cluster, one task per GPU; the same command starts or continues a run.
#   tools/slurm_train.sh PARTITION JOB_NAME CONFIG WORK_DIR [train.py options...]
# Environment: GPUS (total tasks, default 8), GPUS_PER_NODE (default 8),
# CPUS_PER_TASK (default 5), SRUN_ARGS (extra srun options, e.g. "--requeue"),
# PY_ARGS (extra train.py options, appended after the command-line ones),
# SIGNAL_LEAD (seconds: srun sends SIGUSR1 that long before the time limit; the training
# checkpoints and exits with 138, and inside a batch job the script requeues the job).
# PYTHON selects the interpreter (default: python on PATH).
# train.py gets --resume first (a later --resume PATH wins): it resumes from the newest
# checkpoint of WORK_DIR that loads, or starts anew when there is none; SIGTERM (preemption)
# or SIGUSR1 make it write a checkpoint of the current iteration and exit with 128 + signal.
set -euo pipefail

if [ "$#" -lt 4 ]; then
    echo "usage: $0 PARTITION JOB_NAME CONFIG WORK_DIR [train.py options...]" >&2
    exit 2
fi
PARTITION=$1
JOB_NAME=$2
CONFIG=$3
WORK_DIR=$4
GPUS=${GPUS:-8}
GPUS_PER_NODE=${GPUS_PER_NODE:-8}
CPUS_PER_TASK=${CPUS_PER_TASK:-5}
SRUN_ARGS=${SRUN_ARGS:-""}
PY_ARGS=${PY_ARGS:-""}
SIGNAL_LEAD=${SIGNAL_LEAD:-""}
TOOLS_DIR=$(cd "$(dirname "$0")" && pwd)
SIGNAL_ARGS=()
if [ -n "$SIGNAL_LEAD" ]; then
    SIGNAL_ARGS=(--signal="USR1@$SIGNAL_LEAD")
fi

status=0
# SRUN_ARGS and PY_ARGS are word-split on purpose: they hold several options.
# shellcheck disable=SC2086
PYTHONPATH="$TOOLS_DIR/..${PYTHONPATH:+:$PYTHONPATH}" \
srun -p "$PARTITION" \
    --job-name="$JOB_NAME" \
    --gres=gpu:"$GPUS_PER_NODE" \
    --ntasks="$GPUS" \
    --ntasks-per-node="$GPUS_PER_NODE" \
    --cpus-per-task="$CPUS_PER_TASK" \
    --kill-on-bad-exit=1 \
    ${SIGNAL_ARGS[@]+"${SIGNAL_ARGS[@]}"} \
    $SRUN_ARGS \
    "${PYTHON:-python}" -u "$TOOLS_DIR/train.py" "$CONFIG" --work-dir="$WORK_DIR" --launcher slurm \
    --resume "${@:5}" $PY_ARGS || status=$?

# 138 = 128 + SIGUSR1: stopped ahead of the time limit with a checkpoint written.
if [ "$status" -eq 138 ] && [ -n "${SLURM_JOB_ID:-}" ]; then
    echo "checkpoint written ahead of the time limit: requeueing job $SLURM_JOB_ID" >&2
    scontrol requeue "$SLURM_JOB_ID"
fi
exit "$status"
