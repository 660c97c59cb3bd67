#!/usr/bin/env bash
# The cluster recipe on one machine: N shards one after another (or in parallel with `&`), then the merge.
# Useful to check a setup before submitting: the merged scores.jsonl equals an unsharded run's.
#   examples/cluster/run-local.sh MODEL POOL OUT [N]
set -euo pipefail
MODEL=$1 POOL=$2 OUT=$3 N=${4:-4}
LARK=${LARK:-lark}
for ((i = 0; i < N; i++)); do
    "$LARK" score --model "$MODEL" --pool "$POOL" --out "$OUT/shard-$i" --shard "$i/$N" --resume
done
"$LARK" merge $(for ((i = 0; i < N; i++)); do echo "$OUT/shard-$i"; done) --out "$OUT/merged"
"$LARK" select --scores "$OUT/merged/scores.jsonl" --pool "$POOL" --out "$OUT/merged"
"$LARK" report --run "$OUT/merged" --out "$OUT/merged/report.html"
