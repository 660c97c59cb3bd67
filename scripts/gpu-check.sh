#!/usr/bin/env bash
# The one GPU call (see ../shared/GPU.md): runs on the lent GPU machine, in the repository root, with
# target/gpu-check/ carried (made by scripts/gpu-prep.sh on the CPU machine: the stripped release binary and a
# trimmed SmolLM2 GGUF). No cargo, no network there. Steps, each with its own time limit so that one hang cannot eat
# the lease (about 5 minutes in all):
#   1. nvidia-smi and `lark doctor --kernels`
#   2. convert the trimmed SmolLM2 GGUF (`lark convert-gguf --dtype bf16`: the CPU reference and the GPU then use
#      identical weights, so the comparison measures the engines, not the bf16 rounding of the weights)
#   3. `lark selftest --device cuda --model <SmolLM2> --ids <golden text>`: every kernel vs the CPU reference, then
#      whole models (random-weight ones, and SmolLM2 on real text)
#   4. the benchmark hooks: `lark bench` (when the binary has it) and bench/compare_hf.py (when present)
# Logs go to $OUT (the device tool brings back up to 8 files); a short table is printed last.
# Exit status: the selftest's (non-zero on any failure or when no GPU is usable).
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
OUT="${OUT:-/tmp/lark-gpu-check}"
mkdir -p "$OUT"
bin="target/gpu-check/lark"
[[ -x "$bin" ]] || bin="target/release/lark"
if [[ ! -x "$bin" ]]; then
    echo "gpu-check: no lark binary (carry target/gpu-check made by scripts/gpu-prep.sh)" >&2
    exit 2
fi
t_start=$(date +%s)
# The whole check must end inside the device call's limit (run it with timeout_s=420): each step gets at most
# its own cap and what is left of GPU_CHECK_BUDGET, and a step with under 30 s left is skipped.
budget="${GPU_CHECK_BUDGET:-390}"
step() { echo "== $* ($(( $(date +%s) - t_start ))s)"; }
left() { echo $(( budget - ($(date +%s) - t_start) )); }
cap() { local c="$1" l; l=$(left); (( l < c )) && c=$l; echo "$c"; }
summary=()

step "device"
{ nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,temperature.gpu --format=csv 2>&1; date -u; } \
    | tee "$OUT/device.txt"
timeout 60 "$bin" doctor --kernels 2>&1 | tee "$OUT/doctor.txt"
summary+=("doctor     $(grep '^backend' "$OUT/doctor.txt" | head -1)")

models=()
if [[ -f target/gpu-check/smollm2.gguf ]]; then
    step "convert SmolLM2 (trimmed)"
    smol=/tmp/lark-smollm2
    rm -rf "$smol"
    if timeout 120 "$bin" convert-gguf target/gpu-check/smollm2.gguf "$smol" --dtype bf16 >"$OUT/convert.txt" 2>&1; then
        models+=(--model "$smol")
        [[ -f tests/fixtures/golden_smollm2.json ]] && models+=(--ids tests/fixtures/golden_smollm2.json)
        summary+=("smollm2    $(head -c 160 "$OUT/convert.txt")")
    else
        summary+=("smollm2    CONVERSION FAILED (see convert.txt)")
    fi
    cat "$OUT/convert.txt"
else
    summary+=("smollm2    not carried: random-weight models only")
fi

step "selftest"
st_cap=$(( $(left) - 60 ))   # leave a minute for the benchmark hooks
(( st_cap > 300 )) && st_cap=300
timeout "$st_cap" "$bin" selftest --device cuda "${models[@]}" --out "$OUT/selftest.txt" 2>"$OUT/selftest.log"
selftest_rc=$?
[[ -f "$OUT/selftest.txt" ]] && cat "$OUT/selftest.txt"
if (( selftest_rc == 124 )); then
    summary+=("selftest   TIMED OUT after $st_cap s (progress in selftest.log)")
    tail -n 5 "$OUT/selftest.log"
elif [[ -f "$OUT/selftest.txt" ]]; then
    summary+=("selftest   $(grep '^SELFTEST' "$OUT/selftest.txt")")
    while IFS= read -r l; do summary+=("           $l"); done < <(grep ' FAIL ' "$OUT/selftest.txt" | cut -c1-160 | head -12)
else
    summary+=("selftest   rc=$selftest_rc, no table: $(tail -n 1 "$OUT/selftest.log")")
    tail -n 20 "$OUT/selftest.log"
fi

# Benchmark hooks (issue 5): they report, they never fail the check.
if "$bin" bench --help >/dev/null 2>&1; then
    step "bench"
    for preset in smollm2 qwen2.5-1.5b; do
        c=$(cap 90)
        if (( c < 30 )); then summary+=("bench      $preset: skipped (time budget)"); continue; fi
        if timeout "$c" "$bin" bench --preset "$preset" --random-weights --device cuda --lengths fixed:2048 \
            --tokens 32768 --repeats 3 >"$OUT/bench-$preset.txt" 2>&1; then
            summary+=("bench      $preset: $(grep -i 'tokens/s' "$OUT/bench-$preset.txt" | head -1 | cut -c1-140)")
        else
            summary+=("bench      $preset: failed or timed out (bench-$preset.txt)")
        fi
        tail -n 5 "$OUT/bench-$preset.txt"
    done
fi
c=$(cap 120)
if [[ -f bench/compare_hf.py ]] && (( c < 30 )); then
    summary+=("hf         skipped (time budget)")
elif [[ -f bench/compare_hf.py && -n "${GPU_CHECK_SKIP_HF:-}" ]]; then
    summary+=("hf         skipped (GPU_CHECK_SKIP_HF)")
elif [[ -f bench/compare_hf.py ]]; then
    step "HF baseline"
    if PYTHONUNBUFFERED=1 timeout "$c" python3 bench/compare_hf.py ${HF_COMPARE_ARGS:---preset qwen2.5-1.5b --lengths fixed:2048 --tokens 32768} >"$OUT/compare_hf.txt" 2>&1; then
        summary+=("hf         $(tail -n 1 "$OUT/compare_hf.txt" | cut -c1-140)")
    else
        summary+=("hf         compare_hf.py failed or timed out (compare_hf.txt)")
    fi
    tail -n 10 "$OUT/compare_hf.txt"
fi

step "done"
echo
echo "==== gpu-check summary ($(head -n 2 "$OUT/device.txt" | tail -n 1 | cut -d, -f1,2), $(( $(date +%s) - t_start ))s)"
printf '%s\n' "${summary[@]}"
exit "$selftest_rc"
