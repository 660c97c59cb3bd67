#!/usr/bin/env bash
# Benchmarks for a device call (issue 5): `lark bench` at the RSR pool's lengths for each preset in $PRESETS, once
# per attention variant in $TILES, all in the same call on the same card, then an
# optional HF baseline ($HF_PRESETS, bench/compare_hf.py); before them the attention kernels alone. JSON lines go to
# $OUT/attention.jsonl and $OUT/bench.jsonl; tables are printed last.
# Carry target/gpu-check (scripts/gpu-prep.sh). Each step has its own time cap.
# $TILES: attention kernels to compare, each `64` or `128` (LARK_ATTENTION_QUERY_TILE, 16 rows per warp) or `128w32`
# (128-row tiles, 32 rows per warp: LARK_ATTENTION_WARP_ROWS=32, the _w32 kernels).
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
OUT="${OUT:-/tmp/lark-gpu-bench}"; mkdir -p "$OUT"
bin=target/gpu-check/lark
[[ -x $bin ]] || bin=target/release/lark
presets="${PRESETS:-qwen2.5-1.5b llama-3.2-3b qwen2.5-7b}"
tiles="${TILES:-128 128w32}"
tokens="${TOKENS:-150000}"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$OUT/device.txt"
# First the attention kernels alone (every tensor-core variant, same batch, a few seconds per preset):
# $OUT/attention.jsonl.
for p in $presets; do
    echo "== $p, attention kernels alone"
    timeout "${STEP_CAP:-150}" "$bin" bench --preset "$p" --attention-only --device cuda --lengths rsr \
        --tokens "$tokens" --repeats 3 --json 2>>"$OUT/bench.log" | tee -a "$OUT/attention.jsonl"
done
# Per preset: lark (each tile), then its HF baseline when the preset is in $HF_PRESETS, so that a call cut short
# still has matched pairs.
for p in $presets; do
    for tile in $tiles; do
        echo "== $p, attention $tile"
        warp_rows=16; [[ $tile == *w32 ]] && warp_rows=32
        LARK_ATTENTION_QUERY_TILE=${tile%w32} LARK_ATTENTION_WARP_ROWS=$warp_rows timeout "${STEP_CAP:-150}" "$bin" bench --preset "$p" --random-weights \
            --device cuda --lengths rsr --tokens "$tokens" --repeats 2 --json 2>>"$OUT/bench.log" | tee -a "$OUT/bench.jsonl"
    done
    if [[ " ${HF_PRESETS:-} " == *" $p "* ]]; then
        echo "== HF $p"
        PYTHONUNBUFFERED=1 timeout "${STEP_CAP:-150}" python3 bench/compare_hf.py --preset "$p" --lengths rsr \
            --tokens "$tokens" 2>>"$OUT/bench.log" | tee -a "$OUT/hf.txt"
    fi
done
python3 - "$OUT/attention.jsonl" "$OUT/bench.jsonl" <<'PY'
import json, sys
def rows(path):
    try:
        lines = open(path).read().splitlines()
    except OSError:
        return
    for line in lines:
        try:
            yield json.loads(line)
        except ValueError:
            pass
print(f"{'model':<14} {'attention kernel alone':<38} {'ms':>8} {'TFLOP/s':>8}")
for r in rows(sys.argv[1]):
    print(f"{r['model']:<14} {r['attention_kernel']:<38} {r['median_ms']:>8.2f} {r['attention_tflops']:>8.1f}")
print()
print(f"{'model':<14} {'attention':<38} {'tokens/s':>10} {'TFLOP/s':>8} {'of ceiling':>10} {'peak GiB':>8}")
for r in rows(sys.argv[2]):
    print(f"{r['model']:<14} {r.get('attention_kernel') or '?':<38} {r['tokens_per_s']:>10.0f} {r['tflops']:>8.1f} "
          f"{100 * (r.get('fraction_of_ceiling') or 0):>9.1f}% {(r.get('peak_device_bytes') or 0) / 2**30:>8.2f}")
PY
