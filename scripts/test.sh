#!/usr/bin/env bash
# The README's test command: install what the build and the tests need (the pinned CUDA compiler, so that the
# kernels always compile; the real-model fixtures, fetched by pinned version and checksum), then run every test.
# No GPU is needed: GPU checks live in `lark selftest`, which says plainly when it cannot run.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/install-cuda-toolchain.sh >/dev/null
export LARK_REQUIRE_KERNELS=1
cargo build --release --bin lark
LARK_BIN="$PWD/target/release/lark" bash scripts/fetch-fixtures.sh
# The C ABI tests link against target/debug/liblark.{so,a}; `cargo test` builds only the rlib.
cargo build --lib
cargo test --all-targets "$@"
