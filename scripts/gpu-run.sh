#!/usr/bin/env bash
# The whole device call of a session: scripts/gpu-check.sh (doctor, selftest, benchmarks, HF baseline), then the
# example pool scored on the GPU and on the GPU machine's CPU with the trimmed real SmolLM2 and the two top-3
# LARK selections compared. Prints a short table last.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
OUT="${OUT:-/tmp/lark-gpu-check}"; export OUT; mkdir -p "$OUT"
bash scripts/gpu-check.sh; rc=$?
bin=target/gpu-check/lark
smol=/tmp/lark-smollm2
if [[ -f $smol/config.json ]]; then
    echo "== example pool: GPU vs CPU"
    timeout 120 $bin run --model $smol --pool examples/pool.jsonl --out /tmp/pool-gpu --device cuda > "$OUT/pool-gpu.txt" 2>&1
    timeout 200 $bin run --model $smol --pool examples/pool.jsonl --out /tmp/pool-cpu --device cpu > "$OUT/pool-cpu.txt" 2>&1
    tail -n 3 "$OUT/pool-gpu.txt"; tail -n 2 "$OUT/pool-cpu.txt"
    python3 scripts/gpu-pool-check.py /tmp/pool-cpu /tmp/pool-gpu | tee "$OUT/pool-check.txt" || rc=1
fi
for extra in ${GPU_EXTRA_BENCH:-}; do
    echo "== bench $extra"
    timeout 200 $bin bench --preset "$extra" --random-weights --device cuda --lengths rsr --tokens 150000 --repeats 2 --json \
        | tee -a "$OUT/bench-extra.jsonl"
    timeout 200 python3 bench/compare_hf.py --preset "$extra" --lengths rsr --tokens 150000 | tee -a "$OUT/bench-extra.jsonl"
done
exit $rc
