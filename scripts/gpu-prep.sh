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

# What travels: tracked and untracked-not-ignored files, plus the carried folder.
python3 - "$out" <<'PY' || exit 1
import os, subprocess, sys
files = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                       capture_output=True, check=True).stdout.split(b"\0")
tree = sum(os.path.getsize(f) for f in files if f and os.path.isfile(f))
carry = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(sys.argv[1]) for f in fs)
limit = 64 * 1024 * 1024
print(f"travels: working tree {tree / 1e6:.1f} MB + target/gpu-check {carry / 1e6:.1f} MB = "
      f"{(tree + carry) / 1e6:.1f} MB (limit 64 MiB = {limit / 1e6:.1f} MB)")
if tree + carry > limit:
    sys.exit("error: too large to carry; lower GPU_CHECK_LAYERS")
PY
cat <<MSG
ready. The one device call:
  run(command="bash scripts/gpu-check.sh", carry=["target/gpu-check"], timeout_s=420)
MSG
