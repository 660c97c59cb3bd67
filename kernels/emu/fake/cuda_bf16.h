// Host stand-in for <cuda_bf16.h> used only by the kernel emulator (kernels/emu): the few bf16 types and
// conversions lark's kernels use, with the device semantics (round to nearest even, NaN kept NaN).
#pragma once
#include <cstdint>
#include <cstring>

struct __nv_bfloat16 {
    uint16_t __x;
};
struct __nv_bfloat162 {
    __nv_bfloat16 x, y;  // x at the lower address: the low 16 bits of the 32-bit word
};

inline __nv_bfloat16 __float2bfloat16(float f) {
    uint32_t u;
    std::memcpy(&u, &f, 4);
    __nv_bfloat16 h;
    if ((u & 0x7fffffffu) > 0x7f800000u) {
        h.__x = static_cast<uint16_t>((u >> 16) | 0x40u);  // quiet NaN
        return h;
    }
    u += 0x7fffu + ((u >> 16) & 1u);
    h.__x = static_cast<uint16_t>(u >> 16);
    return h;
}
inline float __bfloat162float(__nv_bfloat16 h) {
    uint32_t u = static_cast<uint32_t>(h.__x) << 16;
    float f;
    std::memcpy(&f, &u, 4);
    return f;
}
inline __nv_bfloat162 __floats2bfloat162_rn(float a, float b) {
    return __nv_bfloat162{__float2bfloat16(a), __float2bfloat16(b)};
}
