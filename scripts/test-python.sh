#!/usr/bin/env bash
# The Python package's check (scripts/test.sh runs it after `cargo test`): build the wheel with maturin (the
# same crate build as `cargo`, CUDA kernels embedded), install it into a fresh virtualenv with the pinned test
# requirements (python/requirements-dev.txt: maturin, pytest, numpy, HF datasets), and run python/tests against
# the installed wheel, never the source tree. LARK_BIN (the CLI the numbers are compared with) and LARK_LIB
# (the C library the per-token arrays are compared with) default to the builds scripts/test.sh made.
#
#   bash scripts/test-python.sh [pytest arguments]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
REPO="$PWD"
command -v python3 >/dev/null || { echo "test-python.sh: python3 not found (apt-get install python3 python3-venv)" >&2; exit 1; }
export LARK_BIN="${LARK_BIN:-$REPO/target/release/lark}"
export LARK_LIB="${LARK_LIB:-$REPO/target/debug/liblark.so}"
for f in "$LARK_BIN" "$LARK_LIB"; do
    [[ -e "$f" ]] || { echo "test-python.sh: $f is missing (scripts/test.sh builds it first)" >&2; exit 1; }
done
work="$(mktemp -d "${TMPDIR:-/tmp}/lark-python.XXXXXX")"
trap 'rm -rf "$work"' EXIT
python3 -m venv "$work/venv" || { echo "test-python.sh: python3 -m venv failed (apt-get install python3-venv)" >&2; exit 1; }
"$work/venv/bin/pip" install --quiet --disable-pip-version-check -r python/requirements-dev.txt
# A dev-profile wheel: it shares cargo's target/ with the tests (no second optimised build of every crate);
# `pip install ./python` (the README's install) builds the release wheel.
(cd python && "$work/venv/bin/maturin" build --quiet --out "$work/wheels" >&2)
"$work/venv/bin/pip" install --quiet --disable-pip-version-check --no-deps "$work"/wheels/lark_select-*.whl
# From a directory outside the repository, so `import lark_select` can only find the installed wheel.
cd "$work"
"$work/venv/bin/python" -m pytest -q -p no:cacheprovider "$REPO/python/tests" "$@"
