#!/usr/bin/env bash
# Install the CUDA 13.0 compiler (nvcc) from PyPI into the ignored .toolchain/cuda folder of the repository,
# pinned to the lent GPU machines' driver (see GPU.md: a newer nvcc emits PTX that driver 580 rejects; pin all
# five packages, since an unpinned nvidia-nvvm or nvidia-cuda-crt pulls a newer compiler front end).
# Idempotent: a second run with everything in place only prints the nvcc path. build.rs looks here first after $NVCC.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dest="$root/.toolchain/cuda"
cu="$dest/nvidia/cu13"
nvcc="$cu/bin/nvcc"
pins=(nvidia-cuda-nvcc==13.0.88 nvidia-cuda-runtime==13.0.96 nvidia-cuda-cccl==13.0.85 nvidia-cuda-crt==13.0.88
      nvidia-nvvm==13.0.88)
# Installed = nvcc present and every pinned wheel's dist-info there (whoever installed it: no reinstall, no rm).
installed() {
    [[ -x "$nvcc" ]] || return 1
    local p name ver
    for p in "${pins[@]}"; do
        name="${p%%==*}"; ver="${p##*==}"
        [[ -d "$dest/${name//-/_}-$ver.dist-info" ]] || return 1
    done
}

if ! installed; then
    echo "installing ${pins[*]} into $dest" >&2
    mkdir -p "$dest"
    # --upgrade replaces a different version already there; the pins keep the compiler front end at 13.0.88.
    python3 -m pip install --quiet --disable-pip-version-check --no-deps --upgrade --target "$dest" "${pins[@]}"
    installed || { echo "error: pip did not install ${pins[*]} into $dest" >&2; exit 1; }
fi

# The wheels lay nvcc, cicc, ptxas and fatbinary out under nvidia/cu13/{bin,nvvm}; nvcc.profile there points at
# $(TOP)/include and $(TOP)/lib64, where the runtime and cccl wheels put their headers (include/) and libraries
# (lib/). A lib64 link makes the profile's -L path exist (only host linking would use it; --fatbin does not).
if [[ -d "$cu/lib" && ! -e "$cu/lib64" ]]; then
    ln -s lib "$cu/lib64"
fi
chmod +x "$cu"/bin/* "$cu"/nvvm/bin/* 2>/dev/null || true

# Smoke test: a kernel that includes cuda_bf16.h (needs the runtime + crt + cccl headers) compiled to a fatbin.
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
cat > "$tmp/t.cu" <<'CU'
#include <cuda_bf16.h>
extern "C" __global__ void t(__nv_bfloat16 *x) { x[threadIdx.x] = __float2bfloat16(1.0f); }
CU
if ! "$nvcc" --fatbin -gencode=arch=compute_80,code=sm_80 -o "$tmp/t.fatbin" "$tmp/t.cu" 2> "$tmp/err"; then
    cat "$tmp/err" >&2
    echo "error: $nvcc is installed but cannot compile a test kernel" >&2
    exit 1
fi
"$nvcc" --version | tail -n 2 >&2
echo "$nvcc"
