#!/usr/bin/env bash
# Score a pool in N shards on Slurm: one job array (a task per shard), then one merge job that runs once, after
# every task has ended, whatever retries and requeues happened on the way.
#
#   MODEL=/models/qwen2.5-1.5b POOL=/data/pool.jsonl OUT=/scratch/run1 N=8 examples/cluster/slurm-submit.sh
#
# Required: MODEL, POOL, OUT (a directory every node sees), N (the number of shards: explicit, so that
# resubmitting one task later still scores shard I of the same N).
# Optional (defaults in brackets):
#   PARTITION [the cluster's default]  TIME [12:00:00]  the shard tasks' partition and time limit
#   GRES [gpu:1]        the shard tasks' generic resources; on CPU-only nodes set GRES=none (and LARK_ARGS="--device cpu")
#   CPUS [8]  MEM [64G] each shard task's CPUs and memory
#   MERGE_PARTITION [PARTITION]  MERGE_TIME [1:00:00]  MERGE_CPUS [2]  MERGE_MEM [8G]   the merge job's, set to
#                       what your smallest node offers (a request no node can meet stays PENDING forever)
#   TRIES [3]           attempts per task: a failed `lark score` (a crash, a kill, an out-of-memory kill) is rerun
#                       in the same allocation with --resume, continuing from its journal
#   LARK [lark]         the lark binary;  LARK_ARGS  extra `lark score` flags, the same for every shard
#   SBATCH_ARGS         extra sbatch flags for both jobs (--account=..., --qos=...)
# Prints the two job ids. Logs: OUT/logs/lark-shard-<array>_<task>.log (appended across requeues and attempts)
# and OUT/logs/lark-merge-<job>.log.
set -euo pipefail
: "${MODEL:?set MODEL}" "${POOL:?set POOL}" "${OUT:?set OUT}" "${N:?set N, the number of shards}"
[[ "$N" =~ ^[1-9][0-9]*$ ]] || { echo "slurm-submit: N must be a positive integer, got '$N'" >&2; exit 2; }
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
mkdir -p "$OUT/logs"
common=(--parsable ${PARTITION:+--partition="$PARTITION"} ${SBATCH_ARGS:-})
export MODEL POOL OUT N TRIES="${TRIES:-3}" LARK="${LARK:-lark}" LARK_ARGS="${LARK_ARGS:-}"

array=$(sbatch "${common[@]}" --array="0-$((N - 1))" --time="${TIME:-12:00:00}" --gres="${GRES:-gpu:1}" \
    --cpus-per-task="${CPUS:-8}" --mem="${MEM:-64G}" --output="$OUT/logs/%x-%A_%a.log" --export=ALL \
    "$here/slurm-shards.sbatch")
array=${array%%;*}

# afterany: the merge waits until every task has ended (a requeued task is pending again, not ended) and runs
# exactly once; if a task failed for good, `lark merge` names the missing shard instead of merging less.
merge_partition=${MERGE_PARTITION:-${PARTITION:-}}
merge=$(sbatch --parsable ${merge_partition:+--partition="$merge_partition"} ${SBATCH_ARGS:-} \
    --dependency="afterany:$array" --kill-on-invalid-dep=no --time="${MERGE_TIME:-1:00:00}" \
    --cpus-per-task="${MERGE_CPUS:-2}" --mem="${MERGE_MEM:-8G}" --output="$OUT/logs/%x-%j.log" --export=ALL \
    "$here/slurm-merge.sbatch")
merge=${merge%%;*}
echo "shards: job array $array (N=$N)"
echo "merge:  job $merge (after every shard has ended)"
