// Shared device helpers for lark's kernels: bf16 packing, warp reductions, and the order-preserving float key.
// Every kernels/*.cu file is compiled on its own into the one fatbin, so everything here is `static` /
// `__forceinline__` (no duplicate symbols) and header-only. Owners append; nothing here is renamed in place.
#pragma once

#include <cuda_bf16.h>
#include <stdint.h>

typedef __nv_bfloat16 bf16;

#ifndef LARK_NEG_INF
#define LARK_NEG_INF (__int_as_float(0xff800000))
#endif

// ---------------------------------------------------------------------------------------------------------------
// bf16 packing: a 32-bit register holding two bf16, the element with the lower index in the low half (the layout
// the tensor-core fragments and bf16x2 loads/stores use).
// ---------------------------------------------------------------------------------------------------------------
static __device__ __forceinline__ uint32_t lark_pack_bf16x2(float lo, float hi) {
    __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);  // .x = lo (low 16 bits), .y = hi
    return *reinterpret_cast<uint32_t*>(&v);
}

// ---------------------------------------------------------------------------------------------------------------
// Warp reductions over all 32 lanes (every lane must call them; every lane gets the result).
// ---------------------------------------------------------------------------------------------------------------
static __device__ __forceinline__ float lark_warp_sum(float x) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) x += __shfl_xor_sync(0xffffffffu, x, o);
    return x;
}

static __device__ __forceinline__ float lark_warp_max(float x) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, o));
    return x;
}

// ---------------------------------------------------------------------------------------------------------------
// Order-preserving map float -> uint32: a < b (as floats, NaN aside) iff key(a) < key(b). Positive floats get the
// sign bit set; negative floats are bit-inverted. -0.0 is folded onto +0.0 first so that equal floats have equal
// keys (the CPU reference compares with partial_cmp, which treats them as equal).
// ---------------------------------------------------------------------------------------------------------------
static __device__ __forceinline__ uint32_t lark_float_key(float f) {
    uint32_t b = __float_as_uint(f);
    if (b == 0x80000000u) b = 0u;
    return (b & 0x80000000u) ? ~b : (b | 0x80000000u);
}

static __device__ __forceinline__ float lark_key_float(uint32_t k) {
    uint32_t b = (k & 0x80000000u) ? (k & 0x7fffffffu) : ~k;
    return __uint_as_float(b);
}

// ---------------------------------------------------------------------------------------------------------------
// Activation element access for kernels instantiated for both activation types (bf16, the fast path; fp32, the
// `--precision fp32` path): math is always fp32, and a store rounds once to the buffer's type.
// ---------------------------------------------------------------------------------------------------------------
static __device__ __forceinline__ float lark_ld(const bf16* p) { return __bfloat162float(*p); }
static __device__ __forceinline__ float lark_ld(const float* p) { return *p; }
static __device__ __forceinline__ void lark_st(bf16* p, float v) { *p = __float2bfloat16(v); }
static __device__ __forceinline__ void lark_st(float* p, float v) { *p = v; }
