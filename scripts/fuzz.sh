#!/usr/bin/env bash
# Short, bounded fuzzing of lark's input parsers (README "Hostile inputs"): builds every cargo-fuzz target in
# fuzz/ and runs each for SECONDS (default 10; or LARK_FUZZ_SECONDS). A crash fails the script; libFuzzer saves
# the input under fuzz/artifacts/<target>/ (the script also prints it in base64, for CI logs), and
# `cd fuzz && cargo fuzz run --dev -s none <target> artifacts/<target>/<file>` replays it.
#
#   bash scripts/fuzz.sh [SECONDS]
#
# Toolchain: cargo-fuzz passes unstable rustc flags, so it wants nightly. The nightly toolchain is used when rustup
# has one; otherwise (CI machines have only stable, and nothing else can be fetched) stable with RUSTC_BOOTSTRAP=1,
# which unlocks the same flags. LARK_FUZZ_TOOLCHAIN=stable forces the second path.
#
# Sanitizer: none. The code under test is safe Rust (the only `unsafe` on these paths is a read-only mmap), so
# AddressSanitizer would find nothing the Rust checks do not, while its build is slower and every input runs
# several times slower. Debug assertions and overflow checks stay on (cargo-fuzz's default).
#
# Build cache: the instrumented build of lark's dependencies is what costs time (minutes on two cores, cold), so
# it lives outside the checkout, beside the test fixtures: ${LARK_CACHE:-~/.cache/lark}/fuzz-target (or
# LARK_FUZZ_TARGET_DIR). A fresh clone then recompiles only lark itself (~20 s). New corpus entries go to
# <that dir>/corpus/<target>/, so coverage accumulates from run to run; fuzz/corpus/<target>/ holds the
# committed seeds and is only read.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

SECONDS_PER_TARGET="${1:-${LARK_FUZZ_SECONDS:-10}}"
CARGO_FUZZ_VERSION=0.13.1
TARGETS=(pool_jsonl pool_rsr safetensors model_config gguf chat_template)

if ! cargo fuzz --version 2>/dev/null | grep -qx "cargo-fuzz $CARGO_FUZZ_VERSION"; then
    echo "fuzz: installing cargo-fuzz $CARGO_FUZZ_VERSION" >&2
    cargo install cargo-fuzz --locked --version "$CARGO_FUZZ_VERSION" >&2
fi

if [[ "${LARK_FUZZ_TOOLCHAIN:-}" != stable ]] && cargo +nightly --version >/dev/null 2>&1; then
    CARGO=(cargo +nightly)
else
    CARGO=(cargo)
    [[ "${LARK_FUZZ_TOOLCHAIN:-}" == stable ]] && CARGO=(cargo +stable)
    export RUSTC_BOOTSTRAP=1
fi

# The CUDA kernels are irrelevant to parsers: skip nvcc (CI exports LARK_REQUIRE_KERNELS=1 for the main build).
unset LARK_REQUIRE_KERNELS
export LARK_SKIP_KERNELS=1
# Unoptimised (--dev) with the fuzz crate's profile (fuzz/Cargo.toml): on two cores a release build of lark and
# its dependencies with coverage instrumentation takes several minutes, a dev build a fraction of that, and
# parsers still run thousands of inputs a second.
CACHE="${LARK_FUZZ_TARGET_DIR:-${LARK_CACHE:-$HOME/.cache/lark}/fuzz-target}"
mkdir -p "$CACHE"
CACHE="$(cd "$CACHE" && pwd)"
BUILD=(fuzz build --dev --sanitizer none --target-dir "$CACHE")
# The built targets are run directly (what `cargo fuzz run` does after its own no-op build, which costs seconds).
BIN="$CACHE/$(rustc -vV | sed -n 's/^host: //p')/debug"

t0=$SECONDS
echo "fuzz: building ${#TARGETS[@]} targets with $("${CARGO[@]}" --version) ${RUSTC_BOOTSTRAP:+(RUSTC_BOOTSTRAP=1)}" >&2
(cd fuzz && "${CARGO[@]}" "${BUILD[@]}")
echo "fuzz: built in $((SECONDS - t0)) s" >&2

# The targets write their inputs to files under the temporary directory (the readers take paths): a directory
# of this run's, removed at the end.
TMPDIR="$(mktemp -d "$CACHE/tmp.XXXXXX")"
export TMPDIR
trap 'rm -rf "$TMPDIR"' EXIT

summary=()
for t in "${TARGETS[@]}"; do
    mkdir -p "$CACHE/corpus/$t"
    log="$CACHE/fuzz-$t.log"
    t1=$SECONDS
    touch "$CACHE/.start-$t"
    mkdir -p "fuzz/artifacts/$t"
    # -timeout: one input taking 20 s is a hang; -rss_limit_mb: a parser must not need 2 GB for a small input.
    if ! "$BIN/$t" -artifact_prefix="fuzz/artifacts/$t/" -max_total_time="$SECONDS_PER_TARGET" -timeout=20 \
        -rss_limit_mb=2048 -print_final_stats=1 "$CACHE/corpus/$t" "fuzz/corpus/$t" >"$log" 2>&1; then
        tail -n 60 "$log" >&2
        echo "fuzz: $t FAILED (log: $log)" >&2
        # The input, also in the CI log (a CI checkout is deleted afterwards).
        find "fuzz/artifacts/$t" -type f -newer "$CACHE/.start-$t" 2>/dev/null | while read -r a; do
            echo "fuzz: $a (base64): $(head -c 65536 "$a" | base64 -w0)" >&2
        done
        exit 1
    fi
    runs=$(grep -o '^stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo '?')
    summary+=("$t: $runs inputs in $((SECONDS - t1)) s")
done
printf 'fuzz: %s\n' "${summary[@]}" >&2
echo "fuzz: ${#TARGETS[@]} targets, no crash, $((SECONDS - t0)) s in all" >&2
