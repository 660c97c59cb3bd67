#!/usr/bin/env bash
# Builds and runs the host-side warp emulator checks of the attention and vocabulary-statistics kernels
# (no GPU needed: see emu.h). Usage: kernels/emu/run.sh [--quick] [--attention | --vocab]
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
out="${TMPDIR:-/tmp}/lark-kernel-emu"
mkdir -p "$out"
${CXX:-g++} -std=c++17 -O2 -g -fno-strict-aliasing -Wall -Wno-unknown-pragmas -Wno-unused-function \
    -DLARK_EMULATE -I "$here/fake" -include "$here/emu.h" -o "$out/test_kernels" "$here/test_kernels.cpp"
exec "$out/test_kernels" "$@"
