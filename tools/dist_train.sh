#!/usr/bin/env bash
# Distributed training on one or more nodes with torchrun (torch.distributed.run).
#   tools/dist_train.sh CONFIG GPUS [train.py options...]
# GPUS is the number of processes on this node (one per GPU; on a machine without CUDA,
# CPU processes talking over gloo). Multi-node: run it on every node with
#   NNODES=<nodes> NODE_RANK=<0..NNODES-1> MASTER_ADDR=<node 0 address> PORT=<free port>
# PYTHON selects the interpreter (default: python on PATH), e.g. PYTHON=.venv/bin/python.
set -euo pipefail

if [ "$#" -lt 2 ]; then
    echo "usage: $0 CONFIG GPUS [train.py options...]" >&2
    exit 2
fi
CONFIG=$1
GPUS=$2
NNODES=${NNODES:-1}
NODE_RANK=${NODE_RANK:-0}
PORT=${PORT:-29500}
MASTER_ADDR=${MASTER_ADDR:-"127.0.0.1"}
TOOLS_DIR=$(cd "$(dirname "$0")" && pwd)

PYTHONPATH="$TOOLS_DIR/..${PYTHONPATH:+:$PYTHONPATH}" \
"${PYTHON:-python}" -m torch.distributed.run \
    --nnodes="$NNODES" \
    --node_rank="$NODE_RANK" \
    --master_addr="$MASTER_ADDR" \
    --nproc_per_node="$GPUS" \
    --master_port="$PORT" \
    "$TOOLS_DIR/train.py" \
    "$CONFIG" \
    --launcher pytorch "${@:3}"
