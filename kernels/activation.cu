// SwiGLU on the fused gate/up projection output.
//
//   out[t, j] = bf16( silu(g) · u ),  g = gu[t, j] + bias[j],  u = gu[t, I + j] + bias[I + j],  silu(g) = g / (1 + e^−g)
//
// Layout: gu bf16 [T, 2·I] (each row = gate | up, the output of the stacked [gate; up] weight); bias fp32 [2·I] or
// null (mlp_bias); out bf16 [T, I]. Math in fp32 (expf), one bf16 rounding.
// Launch: grid-stride over T·I elements: block = 256 threads, grid = min(ceil(T·I / 256), 65535·8) blocks; two
// elements per step (bf16x2) when I is even and the pointers are 4-byte aligned.

#include "common.cuh"

namespace {
__device__ __forceinline__ float silu_mul(float g, float u) { return g / (1.0f + expf(-g)) * u; }
}  // namespace

extern "C" __global__ void __launch_bounds__(256)
    swiglu_bf16(const bf16* __restrict__ gu, const float* __restrict__ bias, bf16* __restrict__ out, int T, int I) {
    const long long stride = static_cast<long long>(gridDim.x) * blockDim.x;
    const long long first = static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x;
    const bool pairs = (I % 2 == 0) && ((reinterpret_cast<uintptr_t>(gu) & 3) == 0) &&
                       ((reinterpret_cast<uintptr_t>(out) & 3) == 0);
    if (pairs) {
        const int half_i = I / 2;
        const long long n = static_cast<long long>(T) * half_i;
        for (long long e = first; e < n; e += stride) {
            const long long t = e / half_i;
            const int j = static_cast<int>(e - t * half_i) * 2;
            const bf16* row = gu + t * 2 * I;
            float2 g = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(row + j));
            float2 u = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(row + I + j));
            if (bias) {
                g.x += bias[j];
                g.y += bias[j + 1];
                u.x += bias[I + j];
                u.y += bias[I + j + 1];
            }
            *reinterpret_cast<uint32_t*>(out + t * I + j) = lark_pack_bf16x2(silu_mul(g.x, u.x), silu_mul(g.y, u.y));
        }
    } else {
        const long long n = static_cast<long long>(T) * I;
        for (long long e = first; e < n; e += stride) {
            const long long t = e / I;
            const int j = static_cast<int>(e - t * I);
            const bf16* row = gu + t * 2 * I;
            float g = __bfloat162float(row[j]), u = __bfloat162float(row[I + j]);
            if (bias) {
                g += bias[j];
                u += bias[I + j];
            }
            out[e] = __float2bfloat16(silu_mul(g, u));
        }
    }
}
