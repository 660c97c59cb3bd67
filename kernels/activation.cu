// SwiGLU on the fused gate/up projection output.
//
//   out[t, j] = bf16( silu(g) · u ),  g = gu[t, j] + bias[j],  u = gu[t, I + j] + bias[I + j],  silu(g) = g / (1 + e^−g)
//
// Layout: gu A [T, 2·I] (each row = gate | up, the output of the stacked [gate; up] weight); bias fp32 [2·I] or
// null (mlp_bias); out A [T, I]; A = bf16 (swiglu_bf16) or fp32 (swiglu_f32). Math in fp32 (expf), one rounding.
// Launch: grid-stride over T·I elements: block = 256 threads, grid = min(ceil(T·I / 256), 65535·8) blocks; two
// elements per step (bf16x2) when I is even and the pointers are 4-byte aligned (bf16 only).
//
// split_bf16_f32 (the `--precision fp32` path): x fp32 [n] → hi = bf16(x), lo = bf16(x − hi), so that a GEMM of
// bf16 weights with hi plus one with lo (accumulated in fp32) equals the fp32-input GEMM to ~2^-16 relative.
// Grid-stride, block = 256 threads.

#include "common.cuh"

namespace {
__device__ __forceinline__ float silu_mul(float g, float u) { return g / (1.0f + expf(-g)) * u; }
}  // namespace

namespace {
// The scalar path, for either activation type.
template <typename A>
__device__ __forceinline__ void swiglu_scalar(const A* __restrict__ gu, const float* __restrict__ bias,
                                              A* __restrict__ out, int T, int I, long long first, long long stride) {
    const long long n = static_cast<long long>(T) * I;
    for (long long e = first; e < n; e += stride) {
        const long long t = e / I;
        const int j = static_cast<int>(e - t * I);
        const A* row = gu + t * 2 * I;
        float g = lark_ld(row + j), u = lark_ld(row + I + j);
        if (bias) {
            g += bias[j];
            u += bias[I + j];
        }
        lark_st(out + e, silu_mul(g, u));
    }
}
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
        swiglu_scalar<bf16>(gu, bias, out, T, I, first, stride);
    }
}

extern "C" __global__ void __launch_bounds__(256)
    swiglu_f32(const float* __restrict__ gu, const float* __restrict__ bias, float* __restrict__ out, int T, int I) {
    const long long stride = static_cast<long long>(gridDim.x) * blockDim.x;
    const long long first = static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x;
    swiglu_scalar<float>(gu, bias, out, T, I, first, stride);
}

extern "C" __global__ void __launch_bounds__(256)
    split_bf16_f32(const float* __restrict__ x, bf16* __restrict__ hi, bf16* __restrict__ lo, long long n) {
    const long long stride = static_cast<long long>(gridDim.x) * blockDim.x;
    for (long long e = static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x; e < n; e += stride) {
        const float v = x[e];
        const bf16 h = __float2bfloat16(v);
        hi[e] = h;
        lo[e] = __float2bfloat16(v - __bfloat162float(h));
    }
}
