#!/usr/bin/env bash
# Prepare, on the CPU machine, everything the one GPU call (scripts/gpu-check.sh) needs, in target/gpu-check/
# (ignored by git; name it in the device tool's `carry`):
#   target/gpu-check/lark            the release binary with the kernels compiled in (LARK_REQUIRE_KERNELS=1), stripped
#   target/gpu-check/smollm2.gguf    SmolLM2-135M-Instruct cut to its first $GPU_CHECK_LAYERS blocks (default 8), full
#                                    vocabulary and metadata: the whole 98 MB GGUF does not fit the 64 MiB a call
#                                    carries; gpu-check.sh converts it with `lark convert-gguf` on the GPU machine.
# Then prints the size of what travels and the call to make. Needs the toolchain (installed if missing) and the
# SmolLM2 GGUF ($LARK_CACHE/smollm2/… from scripts/fetch-fixtures.sh, or $SMOLLM2_GGUF).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
layers="${GPU_CHECK_LAYERS:-8}"
cache="${LARK_CACHE:-$HOME/.cache/lark}"
out="$root/target/gpu-check"
mkdir -p "$out"

nvcc="$(scripts/install-cuda-toolchain.sh)"
echo "nvcc: $nvcc" >&2
LARK_REQUIRE_KERNELS=1 cargo build --release --bin lark
cp target/release/lark "$out/lark"
strip "$out/lark" 2>/dev/null || true
"$out/lark" doctor | sed -n 1,3p

gguf="${SMOLLM2_GGUF:-$cache/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf}"
if [[ -f "$gguf" ]]; then
    python3 scripts/trim-gguf.py "$gguf" "$out/smollm2.gguf" "$layers"
else
    echo "warning: no SmolLM2 GGUF at $gguf (run scripts/fetch-fixtures.sh or set SMOLLM2_GGUF):" \
         "the GPU selftest will compare random-weight models only" >&2
    rm -f "$out/smollm2.gguf"
fi

tree_bytes=$( (git ls-files -z; git ls-files -z --others --exclude-standard) | xargs -0 du -cb 2>/dev/null | tail -n1 | cut -f1)
carry_bytes=$(du -cb "$out" | tail -n1 | cut -f1)
total=$((tree_bytes + carry_bytes))
printf 'travels: working tree %.1f MB + target/gpu-check %.1f MB = %.1f MB (limit 64 MiB = 67.1 MB)\n' \
    "$(echo "$tree_bytes/1e6" | bc -l)" "$(echo "$carry_bytes/1e6" | bc -l)" "$(echo "$total/1e6" | bc -l)"
if (( total > 64 * 1024 * 1024 )); then
    echo "error: too large to carry; lower GPU_CHECK_LAYERS" >&2
    exit 1
fi
cat <<MSG
ready. The one device call:
  run(command="bash scripts/gpu-check.sh", carry=["target/gpu-check"], timeout_s=420)
MSG
