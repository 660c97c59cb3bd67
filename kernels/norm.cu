// RMSNorm fused with the residual add (and the bias of the projection that produced the delta).
//
// For each output row r < n_rows, with input row i = rows ? rows[r] : r:
//   v       = x[i, :] + (delta ? float(delta[i, :]) : 0) + (bias ? bias : 0)      (fp32)
//   x[i, :] = v                                                                  (only when write_x)
//   y[r, :] = Y( v * rsqrt(mean(v²) + eps) * w )       Y = bf16 (rmsnorm_residual_bf16) or fp32 (_f32)
// which is HF's `residual + o_proj(...)` followed by the next RMSNorm, in one pass. Layer 0 passes delta = null
// (x holds the embeddings). The final norm passes rows = the scored positions and write_x = 0: it gathers and
// normalises only the rows the LM head needs.
//
// Layout: x fp32 [*, H]; delta bf16 [*, H] (a GEMM output) or null; bias fp32 [H] or null (o_proj / down_proj
// bias); w fp32 [H] (the norm weight, kept in fp32); rows int32 [n_rows] or null; y Y [n_rows, H].
// Precision: v and Σv² in fp32 (per-thread partial sums, then a warp and a block reduction); one rounding to Y.
// Launch: grid = n_rows blocks (one row each), block = 256 threads; float4 / 4×bf16 accesses when H % 4 == 0 and
// the pointers are aligned, else scalar. The second pass re-reads the row (from L1/L2).

#include "common.cuh"

namespace {

constexpr int NORM_THREADS = 256;

// Sum over the block; every thread gets the result. `red` holds one float per warp.
__device__ __forceinline__ float block_sum(float v, float* red) {
    v = lark_warp_sum(v);
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    if (lane == 0) red[warp] = v;
    __syncthreads();
    float s = 0.f;
    const int nw = blockDim.x >> 5;
    for (int k = 0; k < nw; ++k) s += red[k];
    return s;
}

__device__ __forceinline__ float4 load_bf16x4(const bf16* p) {
    const uint2 u = *reinterpret_cast<const uint2*>(p);
    const float2 a = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&u.x));
    const float2 b = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&u.y));
    return make_float4(a.x, a.y, b.x, b.y);
}

__device__ __forceinline__ void store_bf16x4(bf16* p, float4 v) {
    uint2 u;
    u.x = lark_pack_bf16x2(v.x, v.y);
    u.y = lark_pack_bf16x2(v.z, v.w);
    *reinterpret_cast<uint2*>(p) = u;
}

__device__ __forceinline__ void store_x4(bf16* p, float4 v) { store_bf16x4(p, v); }
__device__ __forceinline__ void store_x4(float* p, float4 v) { *reinterpret_cast<float4*>(p) = v; }

__device__ __forceinline__ float4 add4(float4 a, float4 b) {
    return make_float4(a.x + b.x, a.y + b.y, a.z + b.z, a.w + b.w);
}

template <typename Y>
__device__ __forceinline__ void rmsnorm_residual(float* __restrict__ x, const bf16* __restrict__ delta,
                                                 const float* __restrict__ bias, const float* __restrict__ w,
                                                 Y* __restrict__ y, const int* __restrict__ rows, int n_rows, int H,
                                                 float eps, int write_x, float* red) {
    const int r = blockIdx.x;
    if (r >= n_rows) return;
    const long long i = rows ? rows[r] : r;
    float* xr = x + i * H;
    const bf16* dr = delta ? delta + i * H : nullptr;
    Y* yr = y + static_cast<long long>(r) * H;

    const bool vec = (H % 4 == 0) && ((reinterpret_cast<uintptr_t>(x) & 15) == 0) &&
                     ((reinterpret_cast<uintptr_t>(w) & 15) == 0) && (!bias || (reinterpret_cast<uintptr_t>(bias) & 15) == 0) &&
                     (!delta || (reinterpret_cast<uintptr_t>(delta) & 7) == 0) &&
                     ((reinterpret_cast<uintptr_t>(y) & (4 * sizeof(Y) - 1)) == 0);
    float ss = 0.f;
    if (vec) {
        for (int j = threadIdx.x * 4; j < H; j += blockDim.x * 4) {
            float4 v = *reinterpret_cast<const float4*>(xr + j);
            if (dr) v = add4(v, load_bf16x4(dr + j));
            if (bias) v = add4(v, *reinterpret_cast<const float4*>(bias + j));
            if (write_x) *reinterpret_cast<float4*>(xr + j) = v;
            ss += v.x * v.x + v.y * v.y + v.z * v.z + v.w * v.w;
        }
    } else {
        for (int j = threadIdx.x; j < H; j += blockDim.x) {
            float v = xr[j];
            if (dr) v += __bfloat162float(dr[j]);
            if (bias) v += bias[j];
            if (write_x) xr[j] = v;
            ss += v * v;
        }
    }
    const float inv = rsqrtf(block_sum(ss, red) / static_cast<float>(H) + eps);
    // Pass 2: each thread revisits exactly the elements it produced in pass 1 (its own writes are visible to it).
    if (vec) {
        for (int j = threadIdx.x * 4; j < H; j += blockDim.x * 4) {
            float4 v = *reinterpret_cast<const float4*>(xr + j);
            if (!write_x) {
                if (dr) v = add4(v, load_bf16x4(dr + j));
                if (bias) v = add4(v, *reinterpret_cast<const float4*>(bias + j));
            }
            const float4 g = *reinterpret_cast<const float4*>(w + j);
            store_x4(yr + j, make_float4(v.x * inv * g.x, v.y * inv * g.y, v.z * inv * g.z, v.w * inv * g.w));
        }
    } else {
        for (int j = threadIdx.x; j < H; j += blockDim.x) {
            float v = xr[j];
            if (!write_x) {
                if (dr) v += __bfloat162float(dr[j]);
                if (bias) v += bias[j];
            }
            lark_st(yr + j, v * inv * w[j]);
        }
    }
}

}  // namespace

extern "C" __global__ void __launch_bounds__(NORM_THREADS)
    rmsnorm_residual_bf16(float* __restrict__ x, const bf16* __restrict__ delta, const float* __restrict__ bias,
                          const float* __restrict__ w, bf16* __restrict__ y, const int* __restrict__ rows, int n_rows,
                          int H, float eps, int write_x) {
    __shared__ float red[NORM_THREADS / 32];
    rmsnorm_residual<bf16>(x, delta, bias, w, y, rows, n_rows, H, eps, write_x, red);
}

extern "C" __global__ void __launch_bounds__(NORM_THREADS)
    rmsnorm_residual_f32(float* __restrict__ x, const bf16* __restrict__ delta, const float* __restrict__ bias,
                         const float* __restrict__ w, float* __restrict__ y, const int* __restrict__ rows, int n_rows,
                         int H, float eps, int write_x) {
    __shared__ float red[NORM_THREADS / 32];
    rmsnorm_residual<float>(x, delta, bias, w, y, rows, n_rows, H, eps, write_x, red);
}
