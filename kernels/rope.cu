// Rotary position embedding fused with the q/k/v bias and the split of the fused QKV projection output.
//
// For token t at position p = positions[t] (restarting at 0 for every sequence of the packed batch), with
// a = qkv[t, :] + bias (fp32):
//   q[t, h, :] = rope(a[h·D : (h+1)·D], p)                   h < H
//   k[t, g, :] = rope(a[(H+g)·D : (H+g+1)·D], p)             g < Hkv
//   v[t, g, :] = a[(H+Hkv+g)·D : (H+Hkv+g+1)·D]              (no rotation)
// rope(x, p)[i]       = x[i]·cos(θ_i) − x[i+D/2]·sin(θ_i)
// rope(x, p)[i + D/2] = x[i+D/2]·cos(θ_i) + x[i]·sin(θ_i),      i < D/2   (HF's rotate_half convention)
// θ_i = (float)p · inv_freq[i], an fp32 product exactly as the CPU reference (src/backend/cpu/ops.rs) and HF form
// it; cos and sin of that fp32 angle are taken in fp64 and rounded to fp32, as the CPU reference does, so the two
// agree to the last bit of the angle even at position 32K. inv_freq (llama3 scaling folded in) comes from the host.
//
// Layout: qkv A [T, (H + 2·Hkv)·D]; bias fp32 [(H + 2·Hkv)·D] or null; positions int32 [T]; inv_freq fp32 [D/2];
// q A [T, H, D]; k, v A [T, Hkv, D], with A = bf16 (rope_qkv_split_bf16) or fp32 (rope_qkv_split_f32).
// D must be even and ≤ 1024 (else nothing is written).
// Launch: grid = T blocks (one token each), block = 128 threads; cos and sin of the token's D/2 angles are computed
// once per block into shared memory and used by all heads. D ≤ ROPE_MAX_D.
//
// rope_norm_qkv_split_{bf16,f32}: the same, with Qwen3's per-head RMSNorm of q and k between the bias and the
// rotation, and cos/sin multiplied by an attention factor (YaRN's; 1 otherwise), as the CPU reference
// (src/backend/cpu/mod.rs) orders them:
//   a = qkv[t, head·D : (head+1)·D] + bias                    (fp32)
//   n = a · (1 / sqrt(Σ a² / D + eps)) · w                    w = q_norm (head < H) or k_norm, [D] fp32; skipped
//                                                              when the norm pointers are null
//   q/k = rope(n, p) with cos, sin = fp32(cos θ)·f, fp32(sin θ)·f
// One pass over q and k: each warp loads one head into shared memory while summing its squares (fp32, a warp
// reduction), then rotates pairs from shared memory; 4 heads per round, one round per 4 heads. The original
// entry points above are separate instantiations and compute exactly what they did before this variant existed.

#include "common.cuh"

#define ROPE_MAX_D 1024
#define ROPE_WARPS 4  // block = 128 threads

namespace {

// cos and sin of the token's D/2 angles into cs (cos[half] then sin[half]), each multiplied by `factor` when
// kScaled (rope_norm_qkv_split; the original kernel instantiates kScaled = false and computes what it always did).
template <bool kScaled>
__device__ __forceinline__ void rope_angles(const float* __restrict__ inv_freq, float pos, int half, float factor,
                                            float* cs) {
    for (int i = threadIdx.x; i < half; i += blockDim.x) {
        const float angle = pos * inv_freq[i];  // fp32 product, as the reference
        double s, c;
        sincos(static_cast<double>(angle), &s, &c);
        cs[i] = kScaled ? static_cast<float>(c) * factor : static_cast<float>(c);
        cs[half + i] = kScaled ? static_cast<float>(s) * factor : static_cast<float>(s);
    }
}

// Values: copied from the row with their bias (no rotation).
template <typename A>
__device__ __forceinline__ void copy_values(const A* __restrict__ row, const float* __restrict__ bias,
                                            A* __restrict__ v, int t, int H, int Hkv, int D) {
    const int v_off = (H + Hkv) * D;
    const int n_v = Hkv * D;
    A* vdst = v + static_cast<long long>(t) * n_v;
    for (int j = threadIdx.x; j < n_v; j += blockDim.x) {
        float a = lark_ld(row + v_off + j);
        if (bias) a += bias[v_off + j];
        lark_st(vdst + j, a);
    }
}

template <typename A>
__device__ __forceinline__ void rope_qkv_split(const A* __restrict__ qkv, const float* __restrict__ bias,
                                               const int* __restrict__ positions, const float* __restrict__ inv_freq,
                                               A* __restrict__ q, A* __restrict__ k, A* __restrict__ v, int T, int H,
                                               int Hkv, int D, float* cs) {
    const int t = blockIdx.x;
    if (t >= T || D > ROPE_MAX_D || (D & 1)) return;  // uniform over the block
    const int half = D / 2;
    rope_angles<false>(inv_freq, static_cast<float>(positions[t]), half, 1.0f, cs);
    __syncthreads();

    const int width = (H + 2 * Hkv) * D;
    const A* row = qkv + static_cast<long long>(t) * width;
    // Rotated heads: H query heads then Hkv key heads, D/2 pairs each.
    const int n_pairs = (H + Hkv) * half;
    for (int job = threadIdx.x; job < n_pairs; job += blockDim.x) {
        const int head = job / half, i = job - head * half;
        const int c0 = head * D + i, c1 = c0 + half;
        float a = lark_ld(row + c0), b = lark_ld(row + c1);
        if (bias) {
            a += bias[c0];
            b += bias[c1];
        }
        const float c = cs[i], s = cs[half + i];
        const float ra = a * c - b * s;
        const float rb = b * c + a * s;
        A* dst = head < H ? q + (static_cast<long long>(t) * H + head) * D
                             : k + (static_cast<long long>(t) * Hkv + (head - H)) * D;
        lark_st(dst + i, ra);
        lark_st(dst + i + half, rb);
    }
    copy_values(row, bias, v, t, H, Hkv, D);
}

// Bias, per-head q/k RMSNorm (optional) and RoPE with scaled cos/sin, then the split (see the file comment).
template <typename A>
__device__ __forceinline__ void rope_norm_qkv_split(const A* __restrict__ qkv, const float* __restrict__ bias,
                                                    const int* __restrict__ positions,
                                                    const float* __restrict__ inv_freq,
                                                    const float* __restrict__ q_norm, const float* __restrict__ k_norm,
                                                    float eps, float attention_factor, A* __restrict__ q,
                                                    A* __restrict__ k, A* __restrict__ v, int T, int H, int Hkv, int D,
                                                    float* cs, float* xs) {
    const int t = blockIdx.x;
    if (t >= T || D > ROPE_MAX_D || (D & 1) || blockDim.x != 32 * ROPE_WARPS) return;  // uniform over the block
    const int half = D / 2;
    rope_angles<true>(inv_freq, static_cast<float>(positions[t]), half, attention_factor, cs);
    const int width = (H + 2 * Hkv) * D;
    const A* row = qkv + static_cast<long long>(t) * width;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int n_heads = H + Hkv;
    float* x = xs + warp * ROPE_MAX_D;  // this warp's head, after the bias
    for (int base = 0; base < n_heads; base += ROPE_WARPS) {  // block-uniform trip count
        const int head = base + warp;
        const float* w = head < H ? q_norm : k_norm;
        float inv_rms = 1.0f;
        if (head < n_heads) {  // warp-uniform
            float ss = 0.0f;
            for (int j = lane; j < D; j += 32) {
                float a = lark_ld(row + head * D + j);
                if (bias) a += bias[head * D + j];
                x[j] = a;
                ss += a * a;
            }
            ss = lark_warp_sum(ss);
            if (w) inv_rms = 1.0f / sqrtf(ss / static_cast<float>(D) + eps);
        }
        __syncthreads();  // x complete (and, in the first round, cs)
        if (head < n_heads) {
            A* dst = head < H ? q + (static_cast<long long>(t) * H + head) * D
                              : k + (static_cast<long long>(t) * Hkv + (head - H)) * D;
            for (int i = lane; i < half; i += 32) {
                float a = x[i], b = x[i + half];
                if (w) {
                    a = a * inv_rms * w[i];
                    b = b * inv_rms * w[i + half];
                }
                const float c = cs[i], s = cs[half + i];
                lark_st(dst + i, a * c - b * s);
                lark_st(dst + i + half, b * c + a * s);
            }
        }
        __syncthreads();  // before the next round overwrites x
    }
    copy_values(row, bias, v, t, H, Hkv, D);
}

}  // namespace

extern "C" __global__ void __launch_bounds__(128)
    rope_qkv_split_bf16(const bf16* __restrict__ qkv, const float* __restrict__ bias, const int* __restrict__ positions,
                        const float* __restrict__ inv_freq, bf16* __restrict__ q, bf16* __restrict__ k,
                        bf16* __restrict__ v, int T, int H, int Hkv, int D) {
    __shared__ float cs[ROPE_MAX_D];  // cos[D/2] then sin[D/2]
    rope_qkv_split<bf16>(qkv, bias, positions, inv_freq, q, k, v, T, H, Hkv, D, cs);
}

extern "C" __global__ void __launch_bounds__(128)
    rope_qkv_split_f32(const float* __restrict__ qkv, const float* __restrict__ bias, const int* __restrict__ positions,
                       const float* __restrict__ inv_freq, float* __restrict__ q, float* __restrict__ k,
                       float* __restrict__ v, int T, int H, int Hkv, int D) {
    __shared__ float cs[ROPE_MAX_D];  // cos[D/2] then sin[D/2]
    rope_qkv_split<float>(qkv, bias, positions, inv_freq, q, k, v, T, H, Hkv, D, cs);
}

extern "C" __global__ void __launch_bounds__(128)
    rope_norm_qkv_split_bf16(const bf16* __restrict__ qkv, const float* __restrict__ bias,
                             const int* __restrict__ positions, const float* __restrict__ inv_freq,
                             const float* __restrict__ q_norm, const float* __restrict__ k_norm, float eps,
                             float attention_factor, bf16* __restrict__ q, bf16* __restrict__ k, bf16* __restrict__ v,
                             int T, int H, int Hkv, int D) {
    __shared__ float cs[ROPE_MAX_D];               // cos[D/2] then sin[D/2]
    __shared__ float xs[ROPE_WARPS * ROPE_MAX_D];  // one head per warp
    rope_norm_qkv_split<bf16>(qkv, bias, positions, inv_freq, q_norm, k_norm, eps, attention_factor, q, k, v, T, H,
                              Hkv, D, cs, xs);
}

extern "C" __global__ void __launch_bounds__(128)
    rope_norm_qkv_split_f32(const float* __restrict__ qkv, const float* __restrict__ bias,
                            const int* __restrict__ positions, const float* __restrict__ inv_freq,
                            const float* __restrict__ q_norm, const float* __restrict__ k_norm, float eps,
                            float attention_factor, float* __restrict__ q, float* __restrict__ k,
                            float* __restrict__ v, int T, int H, int Hkv, int D) {
    __shared__ float cs[ROPE_MAX_D];
    __shared__ float xs[ROPE_WARPS * ROPE_MAX_D];
    rope_norm_qkv_split<float>(qkv, bias, positions, inv_freq, q_norm, k_norm, eps, attention_factor, q, k, v, T, H,
                               Hkv, D, cs, xs);
}
