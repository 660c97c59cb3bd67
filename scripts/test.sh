#!/usr/bin/env bash
# The README's test command, and exactly what CI checks (.ci/run runs this in fresh fixture and temp directories):
# install what the build and the tests need (the pinned CUDA compiler, so that the kernels always compile; the
# Debian tools the tests call; the real-model fixtures, fetched by pinned version and checksum), check formatting
# and lints, run every test, then the checks outside cargo: the Python package's tests against its built wheel,
# the Kubernetes manifests against the API schema, the Slurm recipe on a real one-node Slurm, and a short fuzzing
# of the input parsers.
# No check skips: a missing tool is installed here, or its check fails with the command that installs it.
# No GPU is needed: GPU checks live in `lark selftest`, which says plainly when it cannot run.
#
#   bash scripts/test.sh [cargo test arguments]      (arguments narrow the cargo tests only)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
step() { echo "test.sh: $* ($(date -u +%T))" >&2; }
bash scripts/install-cuda-toolchain.sh >/dev/null
bash scripts/install-test-tools.sh
export LARK_REQUIRE_KERNELS=1
step "formatting and lints"
cargo fmt --all --check
cargo clippy --all-targets -- -D warnings
cargo clippy -p lark-python --all-targets -- -D warnings
step "build and fixtures"
cargo build --release --bin lark
LARK_BIN="$PWD/target/release/lark" bash scripts/fetch-fixtures.sh >/dev/null
# The C ABI tests link against target/debug/liblark.{so,a}; `cargo test` builds only the rlib.
cargo build --lib
step "cargo test"
cargo test --all-targets "$@"
step "Python package (wheel, fresh virtualenv, pytest)"
LARK_BIN="$PWD/target/release/lark" bash scripts/test-python.sh
step "scripts/validate_example_pool.py"
python3 scripts/validate_example_pool.py >/dev/null
step "Kubernetes manifests"
bash scripts/validate-k8s.sh
step "Slurm recipe on a real Slurm"
if [[ "$(id -u)" == 0 ]]; then
    LARK_BIN="$PWD/target/release/lark" bash scripts/slurm-test.sh
else
    # slurmd must run as root; sudo keeps the fixture cache and the binary of this user.
    sudo --preserve-env=LARK_CACHE,TMPDIR LARK_BIN="$PWD/target/release/lark" bash scripts/slurm-test.sh
fi
step "fuzzing"
bash scripts/fuzz.sh
step "all checks passed"
