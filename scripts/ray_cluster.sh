#!/usr/bin/env bash
# A real multi-node Ray cluster on one machine: each node its own `ray start` processes, all on
# loopback, token auth on. tests/test_scale_out.py runs exactly these commands.
#
#   export RAY_AUTH_TOKEN=$(openssl rand -hex 32)        # the same on every node and the API
#   scripts/ray_cluster.sh head 6380 &                   # head at 127.0.0.2, no CPUs: runs no job
#   scripts/ray_cluster.sh worker 127.0.0.2:6380 &       # a worker node at 127.0.0.3
#   RAY_ADDRESS=127.0.0.2:6380 make run                  # the API joins the cluster
#
# Each command blocks (`ray start --block`); stopping it (Ctrl-C, or killing its process group)
# stops that node alone. Ray rewrites 127.0.0.1 to the machine's outward address, so the nodes
# use other loopback addresses. Env: RAY (the ray CLI), RAY_TMPDIR (the head's temp dir),
# WORKER_IP, WORKER_CPUS.
set -euo pipefail

RAY=${RAY:-.venv/bin/ray}
: "${RAY_AUTH_TOKEN:?set RAY_AUTH_TOKEN, the same on every node and the API}"
export RAY_AUTH_MODE=token RAY_USAGE_STATS_ENABLED=0
# Idle workers import the job code before taking work (each job is a fresh actor process).
export RAY_preload_python_modules=${RAY_preload_python_modules:-app.jobs.worker,sklearn.datasets}
export PYTHONPATH="$(cd "$(dirname "$0")/.." && pwd)${PYTHONPATH:+:$PYTHONPATH}"

case "${1:-}" in
head)
    port=${2:?usage: $0 head PORT}
    exec "$RAY" start --head --block --disable-usage-stats \
        --node-ip-address=127.0.0.2 --port="$port" --num-cpus=0 --num-gpus=0 \
        --include-dashboard=false --dashboard-port=0 ${RAY_TMPDIR:+--temp-dir="$RAY_TMPDIR"}
    ;;
worker)
    address=${2:?usage: $0 worker HEAD_ADDRESS}
    exec "$RAY" start --address="$address" --block --disable-usage-stats \
        --node-ip-address="${WORKER_IP:-127.0.0.3}" --num-cpus="${WORKER_CPUS:-2}"
    ;;
*)
    echo "usage: $0 head PORT | worker HEAD_ADDRESS" >&2
    exit 2
    ;;
esac
