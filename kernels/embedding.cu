// Embedding gather: the first step of the forward pass.
//
//   out[t, :] = float(table[ids[t], :])      t < T
//
// Layout: ids int32 [T]; table bf16 [V, H] row-major (the model's embed_tokens); out fp32 [T, H] (the residual
// stream is kept in fp32 for the whole forward pass). An id outside [0, V) writes a NaN row (the host validates
// ids before launching; this only keeps a bad id from reading out of bounds and makes it visible).
// Launch: grid = T blocks (one row each), block = 128 threads; 8 bf16 (16 bytes) per load when H % 8 == 0 and the
// table is 16-byte aligned, else one element per thread and step.

#include "common.cuh"

extern "C" __global__ void __launch_bounds__(128)
    embedding_gather_bf16(const int* __restrict__ ids, const bf16* __restrict__ table, float* __restrict__ out, int T,
                          int H, int V) {
    const int t = blockIdx.x;
    if (t >= T) return;
    const int id = ids[t];
    float* o = out + static_cast<long long>(t) * H;
    if (id < 0 || id >= V) {
        for (int j = threadIdx.x; j < H; j += blockDim.x) o[j] = __int_as_float(0x7fc00000);
        return;
    }
    const bf16* row = table + static_cast<long long>(id) * H;
    const bool vec = (H % 8 == 0) && ((reinterpret_cast<uintptr_t>(table) & 15) == 0) &&
                     ((reinterpret_cast<uintptr_t>(out) & 15) == 0);
    if (vec) {
        const uint4* src = reinterpret_cast<const uint4*>(row);
        float4* dst = reinterpret_cast<float4*>(o);
        for (int j = threadIdx.x; j < H / 8; j += blockDim.x) {
            const uint4 u = src[j];
            const __nv_bfloat162* p = reinterpret_cast<const __nv_bfloat162*>(&u);
            const float2 a = __bfloat1622float2(p[0]), b = __bfloat1622float2(p[1]);
            const float2 c = __bfloat1622float2(p[2]), d = __bfloat1622float2(p[3]);
            dst[2 * j] = make_float4(a.x, a.y, b.x, b.y);
            dst[2 * j + 1] = make_float4(c.x, c.y, d.x, d.y);
        }
    } else {
        for (int j = threadIdx.x; j < H; j += blockDim.x) o[j] = __bfloat162float(row[j]);
    }
}
