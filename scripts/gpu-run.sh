#!/usr/bin/env bash
# The whole device call of a session: scripts/gpu-check.sh (doctor, selftest — which also compares the example
# pool's top-3 LARK selection GPU vs CPU —, benchmarks, HF baseline), then the example pool with the trimmed real
# SmolLM2 on one worker (cuda:0), two workers sharing the GPU (cuda:0,0: the multi-worker path must give
# byte-identical files) and with --precision fp32, compared. Prints a short table last.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
OUT="${OUT:-/tmp/lark-gpu-check}"; export OUT; mkdir -p "$OUT"
bash scripts/gpu-check.sh; rc=$?
bin=target/gpu-check/lark
smol=/tmp/lark-smollm2
if [[ -f $smol/config.json ]]; then
    echo "== example pool: one worker, two workers on one GPU, fp32 activations"
    run() { timeout 120 $bin run --model $smol --pool examples/pool.jsonl --no-report "$@" > "$OUT/pool-$(basename "${@: -1}").txt" 2>&1; }
    run --device cuda:0 --out /tmp/pool-one
    run --device cuda:0,0 --out /tmp/pool-two
    run --device cuda:0 --precision fp32 --out /tmp/pool-fp32
    tail -n 2 "$OUT/pool-pool-one.txt" "$OUT/pool-pool-two.txt" "$OUT/pool-pool-fp32.txt"
    for f in scores.jsonl scores.json selection.jsonl train.jsonl; do
        if cmp -s /tmp/pool-one/$f /tmp/pool-two/$f; then echo "workers: $f identical (cuda:0 vs cuda:0,0)"
        else echo "workers: $f DIFFERS (cuda:0 vs cuda:0,0)"; rc=1; fi
    done | tee "$OUT/pool-workers.txt"
    python3 scripts/gpu-pool-check.py /tmp/pool-fp32 /tmp/pool-one | tee "$OUT/pool-fp32-vs-bf16.txt" || true
fi
for extra in ${GPU_EXTRA_BENCH:-}; do
    echo "== bench $extra"
    timeout 200 $bin bench --preset "$extra" --random-weights --device cuda --lengths rsr --tokens 150000 --repeats 2 --json \
        | tee -a "$OUT/bench-extra.jsonl"
    timeout 200 python3 bench/compare_hf.py --preset "$extra" --lengths rsr --tokens 150000 | tee -a "$OUT/bench-extra.jsonl"
done
exit $rc
