// Host-side checks of kernels/{embedding,norm,rope,activation}.cu under the warp emulator (emu.h, see KERNELS.md),
// against fp64 references written here from the definitions. Run by `cargo test --test cuda_build` when g++ is
// present (tests/cuda_build.rs), or by hand:
//   g++ -std=c++17 -O2 -fno-strict-aliasing -DLARK_EMULATE -I kernels/emu/fake -I kernels
//       -include kernels/emu/emu.h -o /tmp/test_layers kernels/emu/test_layers.cpp && /tmp/test_layers
// Inputs live in guarded pages (an out-of-bounds read faults) and outputs start as 0xFF bytes (NaN), so an element
// a kernel does not write fails the comparison. Covers the vectorised and the scalar paths of each kernel.

#include <cmath>
#include <cuda_bf16.h>

// Vector types and intrinsics these kernels use beyond what emu.h provides.
#ifndef LARK_EMU_HAS_VEC2
#define LARK_EMU_HAS_VEC2
struct uint2 { unsigned x, y; };
struct float2 { float x, y; };
inline float4 make_float4(float a, float b, float c, float d) { return float4{a, b, c, d}; }
inline float2 make_float2(float a, float b) { return float2{a, b}; }
inline float2 __bfloat1622float2(__nv_bfloat162 v) { return float2{__bfloat162float(v.x), __bfloat162float(v.y)}; }
inline float rsqrtf(float x) { return 1.0f / std::sqrt(x); }
#endif

#include <sys/mman.h>
#include <unistd.h>
#include <random>
#include <vector>
#include <type_traits>
#include "../common.cuh"
#include "../embedding.cu"
#include "../norm.cu"
#include "../rope.cu"
#include "../activation.cu"

static int fails = 0;
#define CHECK(c, ...) do { if (!(c)) { fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__); fprintf(stderr, __VA_ARGS__); fprintf(stderr, "\n"); ++fails; } } while (0)

template <class T> static T* guarded(size_t n) {
    const size_t page = sysconf(_SC_PAGESIZE);
    const size_t bytes = ((n * sizeof(T) + 15) / 16) * 16;
    const size_t pages = (bytes + page - 1) / page + 1;
    void* base = mmap(nullptr, pages * page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    char* guard = (char*)base + (pages - 1) * page;
    mprotect(guard, page, PROT_NONE);
    T* p = reinterpret_cast<T*>(guard - bytes);
    memset((void*)p, 0xFF, bytes);
    return p;
}
static std::mt19937_64 rng(42);
static float U(float s) { return s * (std::uniform_real_distribution<float>(-1, 1)(rng)); }
static float bfr(float x) { return __bfloat162float(__float2bfloat16(x)); }
static double relerr(const std::vector<double>& got, const std::vector<double>& want) {
    double n = 0, d = 0;
    for (size_t i = 0; i < got.size(); ++i) {
        if (!std::isfinite(got[i])) return INFINITY;
        n += (got[i] - want[i]) * (got[i] - want[i]);
        d += want[i] * want[i];
    }
    return std::sqrt(n) / std::max(std::sqrt(d), 1e-30);
}

static void test_embedding(int T, int H, int V) {
    bf16* table = guarded<bf16>((size_t)V * H);
    int* ids = guarded<int>(T);
    float* out = guarded<float>((size_t)T * H);
    std::vector<double> want((size_t)T * H), got((size_t)T * H);
    for (size_t i = 0; i < (size_t)V * H; ++i) table[i] = __float2bfloat16(U(1));
    for (int t = 0; t < T; ++t) ids[t] = t == 0 ? V - 1 : rng() % V;
    if (T > 2) ids[1] = V;  // out of range -> NaN row
    emu::launch(dim3{(unsigned)T}, dim3{128}, [&] { embedding_gather_bf16(ids, table, out, T, H, V); });
    for (int t = 0; t < T; ++t)
        for (int j = 0; j < H; ++j) {
            if (T > 2 && t == 1) { CHECK(std::isnan(out[(size_t)t * H + j]), "embedding bad id not NaN"); continue; }
            CHECK(out[(size_t)t * H + j] == __bfloat162float(table[(size_t)ids[t] * H + j]), "embedding T=%d H=%d t=%d j=%d", T, H, t, j);
        }
    printf("embedding T=%d H=%d V=%d ok\n", T, H, V);
}

// Activation element access for the two instantiations of each kernel (bf16: the fast path; float: --precision fp32).
static float tof(bf16 v) { return __bfloat162float(v); }
static float tof(float v) { return v; }
template <class A> static A act(float v);
template <> bf16 act<bf16>(float v) { return __float2bfloat16(v); }
template <> float act<float>(float v) { return v; }
// Bound and label per activation type: one bf16 rounding of the output, or fp32 arithmetic only.
template <class A> static double tol() { return std::is_same<A, bf16>::value ? 4e-3 : 1e-6; }
template <class A> static const char* tag() { return std::is_same<A, bf16>::value ? "" : "_f32"; }

template <class Y>
static void test_norm(int T, int H, bool delta_on, bool bias_on, int gather, float eps) {
    float* x = guarded<float>((size_t)T * H);
    bf16* delta = guarded<bf16>((size_t)T * H);
    float* bias = guarded<float>(H);
    float* w = guarded<float>(H);
    int n = gather ? gather : T;
    int* rows = guarded<int>(n);
    Y* y = guarded<Y>((size_t)n * H);
    std::vector<float> x0((size_t)T * H);
    for (size_t i = 0; i < (size_t)T * H; ++i) { x[i] = x0[i] = U(4); delta[i] = __float2bfloat16(U(2)); }
    for (int j = 0; j < H; ++j) { bias[j] = U(0.5); w[j] = 1 + U(0.3); }
    for (int r = 0; r < n; ++r) rows[r] = gather ? (int)(rng() % T) : r;
    int write_x = gather ? 0 : 1;
    emu::launch(dim3{(unsigned)n}, dim3{256}, [&] {
        const bf16* d = delta_on ? delta : nullptr;
        const float* b = bias_on ? bias : nullptr;
        const int* rw = gather ? rows : nullptr;
        if constexpr (std::is_same<Y, bf16>::value) rmsnorm_residual_bf16(x, d, b, w, y, rw, n, H, eps, write_x);
        else rmsnorm_residual_f32(x, d, b, w, y, rw, n, H, eps, write_x);
    });
    std::vector<double> gy, wy;
    for (int r = 0; r < n; ++r) {
        int i = rows[r];
        std::vector<double> v(H);
        double ss = 0;
        for (int j = 0; j < H; ++j) {
            float a = x0[(size_t)i * H + j];
            if (delta_on) a += __bfloat162float(delta[(size_t)i * H + j]);
            if (bias_on) a += bias[j];
            v[j] = a; ss += (double)a * a;
            if (write_x) CHECK(x[(size_t)i * H + j] == a, "norm x update T=%d H=%d", T, H);
            else CHECK(x[(size_t)i * H + j] == x0[(size_t)i * H + j], "norm x touched");
        }
        double inv = 1 / std::sqrt(ss / H + eps);
        for (int j = 0; j < H; ++j) { wy.push_back(v[j] * inv * w[j]); gy.push_back(tof(y[(size_t)r * H + j])); }
    }
    double e = relerr(gy, wy);
    CHECK(e < tol<Y>(), "norm%s T=%d H=%d rel %g", tag<Y>(), T, H, e);
    printf("rmsnorm%s T=%d H=%d delta=%d bias=%d gather=%d rel=%.2e\n", tag<Y>(), T, H, delta_on, bias_on, gather, e);
}

template <class A>
static void test_rope(std::vector<int> pos, int H, int Hkv, int D, bool bias_on, double theta) {
    int T = pos.size(), W = (H + 2 * Hkv) * D, half = D / 2;
    A* qkv = guarded<A>((size_t)T * W);
    float* bias = guarded<float>(W);
    int* p = guarded<int>(T);
    float* inv = guarded<float>(half);
    A* q = guarded<A>((size_t)T * H * D);
    A* k = guarded<A>((size_t)T * Hkv * D);
    A* v = guarded<A>((size_t)T * Hkv * D);
    for (size_t i = 0; i < (size_t)T * W; ++i) qkv[i] = act<A>(U(3));
    for (int j = 0; j < W; ++j) bias[j] = U(0.5);
    for (int t = 0; t < T; ++t) p[t] = pos[t];
    for (int i = 0; i < half; ++i) inv[i] = (float)(1.0 / std::pow(theta, 2.0 * i / D));
    emu::launch(dim3{(unsigned)T}, dim3{128}, [&] {
        const float* b = bias_on ? bias : nullptr;
        if constexpr (std::is_same<A, bf16>::value) rope_qkv_split_bf16(qkv, b, p, inv, q, k, v, T, H, Hkv, D);
        else rope_qkv_split_f32(qkv, b, p, inv, q, k, v, T, H, Hkv, D);
    });
    std::vector<double> got, want;
    for (int t = 0; t < T; ++t) {
        // The kernel adds the bias in fp32: the reference rounds that sum to fp32 too.
        auto a = [&](int c) { return (double)(tof(qkv[(size_t)t * W + c]) + (bias_on ? bias[c] : 0.0f)); };
        for (int h = 0; h < H + Hkv; ++h)
            for (int i = 0; i < half; ++i) {
                double ang = (double)((float)pos[t] * inv[i]);
                double x0 = a(h * D + i), x1 = a(h * D + i + half);
                A* dst = h < H ? q + ((size_t)t * H + h) * D : k + ((size_t)t * Hkv + h - H) * D;
                want.push_back(x0 * std::cos(ang) - x1 * std::sin(ang)); got.push_back(tof(dst[i]));
                want.push_back(x1 * std::cos(ang) + x0 * std::sin(ang)); got.push_back(tof(dst[i + half]));
            }
        for (int j = 0; j < Hkv * D; ++j) { want.push_back(a((H + Hkv) * D + j)); got.push_back(tof(v[(size_t)t * Hkv * D + j])); }
    }
    double e = relerr(got, want);
    CHECK(e < tol<A>(), "rope%s rel %g", tag<A>(), e);
    printf("rope%s T=%d H=%d Hkv=%d D=%d bias=%d rel=%.2e\n", tag<A>(), T, H, Hkv, D, bias_on, e);
}

// rope_norm_qkv_split: bias, Qwen3's per-head q/k RMSNorm (when `norm_on`) and RoPE with cos/sin scaled by
// `factor`, against an fp64 reference of that definition. Blocks are 128 threads (4 warps, one head each per round),
// so head counts that are not multiples of 4 exercise the idle warps of the last round.
template <class A>
static void test_rope_norm(std::vector<int> pos, int H, int Hkv, int D, bool bias_on, bool norm_on, double theta,
                           float factor) {
    int T = pos.size(), W = (H + 2 * Hkv) * D, half = D / 2;
    const float eps = 1e-6f;
    A* qkv = guarded<A>((size_t)T * W);
    float* bias = guarded<float>(W);
    int* p = guarded<int>(T);
    float* inv = guarded<float>(half);
    float* qn = guarded<float>(D);
    float* kn = guarded<float>(D);
    A* q = guarded<A>((size_t)T * H * D);
    A* k = guarded<A>((size_t)T * Hkv * D);
    A* v = guarded<A>((size_t)T * Hkv * D);
    for (size_t i = 0; i < (size_t)T * W; ++i) qkv[i] = act<A>(U(3));
    for (int j = 0; j < W; ++j) bias[j] = U(0.5);
    for (int j = 0; j < D; ++j) { qn[j] = 1 + U(0.5); kn[j] = 1 + U(0.5); }
    for (int t = 0; t < T; ++t) p[t] = pos[t];
    for (int i = 0; i < half; ++i) inv[i] = (float)(1.0 / std::pow(theta, 2.0 * i / D));
    emu::launch(dim3{(unsigned)T}, dim3{128}, [&] {
        const float* b = bias_on ? bias : nullptr;
        const float* wq = norm_on ? qn : nullptr;
        const float* wk = norm_on ? kn : nullptr;
        if constexpr (std::is_same<A, bf16>::value)
            rope_norm_qkv_split_bf16(qkv, b, p, inv, wq, wk, eps, factor, q, k, v, T, H, Hkv, D);
        else rope_norm_qkv_split_f32(qkv, b, p, inv, wq, wk, eps, factor, q, k, v, T, H, Hkv, D);
    });
    std::vector<double> got, want;
    for (int t = 0; t < T; ++t) {
        auto a = [&](int c) { return (double)(tof(qkv[(size_t)t * W + c]) + (bias_on ? bias[c] : 0.0f)); };
        for (int h = 0; h < H + Hkv; ++h) {
            std::vector<double> n(D);
            double ss = 0;
            for (int j = 0; j < D; ++j) ss += a(h * D + j) * a(h * D + j);
            const double r = norm_on ? 1 / std::sqrt(ss / D + eps) : 1.0;
            const float* w = h < H ? qn : kn;
            for (int j = 0; j < D; ++j) n[j] = a(h * D + j) * r * (norm_on ? w[j] : 1.0f);
            for (int i = 0; i < half; ++i) {
                double ang = (double)((float)pos[t] * inv[i]);
                double c = factor * std::cos(ang), s = factor * std::sin(ang);
                A* dst = h < H ? q + ((size_t)t * H + h) * D : k + ((size_t)t * Hkv + h - H) * D;
                want.push_back(n[i] * c - n[i + half] * s); got.push_back(tof(dst[i]));
                want.push_back(n[i + half] * c + n[i] * s); got.push_back(tof(dst[i + half]));
            }
        }
        for (int j = 0; j < Hkv * D; ++j) { want.push_back(a((H + Hkv) * D + j)); got.push_back(tof(v[(size_t)t * Hkv * D + j])); }
    }
    double e = relerr(got, want);
    CHECK(e < tol<A>(), "rope_norm%s rel %g", tag<A>(), e);
    printf("rope_norm%s T=%d H=%d Hkv=%d D=%d bias=%d norm=%d factor=%g rel=%.2e\n", tag<A>(), T, H, Hkv, D, bias_on,
           norm_on, factor, e);
}

template <class A>
static void test_swiglu(int T, int I, bool bias_on, int blocks) {
    A* gu = guarded<A>((size_t)T * 2 * I);
    float* bias = guarded<float>(2 * I);
    A* out = guarded<A>((size_t)T * I);
    for (size_t i = 0; i < (size_t)T * 2 * I; ++i) gu[i] = act<A>(U(6));
    for (int j = 0; j < 2 * I; ++j) bias[j] = U(0.5);
    emu::launch(dim3{(unsigned)blocks}, dim3{256}, [&] {
        const float* b = bias_on ? bias : nullptr;
        if constexpr (std::is_same<A, bf16>::value) swiglu_bf16(gu, b, out, T, I);
        else swiglu_f32(gu, b, out, T, I);
    });
    std::vector<double> got, want;
    for (int t = 0; t < T; ++t)
        for (int j = 0; j < I; ++j) {
            double g = (float)(tof(gu[(size_t)t * 2 * I + j]) + (bias_on ? bias[j] : 0.0f));
            double u = (float)(tof(gu[(size_t)t * 2 * I + I + j]) + (bias_on ? bias[I + j] : 0.0f));
            want.push_back(g / (1 + std::exp(-g)) * u); got.push_back(tof(out[(size_t)t * I + j]));
        }
    double e = relerr(got, want);
    CHECK(e < tol<A>(), "swiglu%s rel %g", tag<A>(), e);
    printf("swiglu%s T=%d I=%d bias=%d blocks=%d rel=%.2e\n", tag<A>(), T, I, bias_on, blocks, e);
}

// hi + lo reproduces x to ~2^-16 relative, and hi is x rounded to bf16.
static void test_split(long long n, int blocks) {
    float* x = guarded<float>(n);
    bf16* hi = guarded<bf16>(n);
    bf16* lo = guarded<bf16>(n);
    for (long long i = 0; i < n; ++i) x[i] = U(100) * std::exp(U(8));
    emu::launch(dim3{(unsigned)blocks}, dim3{256}, [&] { split_bf16_f32(x, hi, lo, n); });
    double worst = 0;
    for (long long i = 0; i < n; ++i) {
        CHECK(__bfloat162float(hi[i]) == bfr(x[i]), "split hi %lld", i);
        double r = std::fabs((double)__bfloat162float(hi[i]) + __bfloat162float(lo[i]) - x[i]) / std::fabs(x[i]);
        worst = std::max(worst, r);
    }
    CHECK(worst < 1.6e-5, "split rel %g", worst);
    printf("split n=%lld blocks=%d max rel=%.2e\n", n, blocks, worst);
}

int main() {
    test_embedding(1, 48, 301);
    test_embedding(7, 37, 301);
    test_embedding(20, 576, 1000);
    test_norm<bf16>(1, 576, true, false, 0, 1e-5f);
    test_norm<bf16>(5, 37, true, true, 0, 1e-6f);
    test_norm<bf16>(3, 4096, true, true, 0, 1e-6f);
    test_norm<bf16>(4, 3584, false, false, 0, 1e-6f);
    test_norm<bf16>(20, 576, true, true, 9, 1e-5f);
    test_norm<bf16>(6, 18, true, false, 6, 1e-6f);
    test_rope<bf16>({0, 1, 2, 0, 5, 32767, 30000}, 9, 3, 64, true, 1e6);
    test_rope<bf16>({0, 1, 2, 3}, 12, 2, 128, false, 1e6);
    test_rope<bf16>({0, 1, 7, 40000}, 3, 1, 10, true, 1e4);
    test_rope_norm<bf16>({0, 1, 2, 0, 5, 32767, 30000}, 16, 8, 128, false, true, 1e6, 1.0f);  // Qwen3-0.6B heads
    test_rope_norm<bf16>({0, 1, 2, 3, 131071}, 9, 3, 64, true, true, 1e6, 1.0648f);        // + bias, YaRN factor
    test_rope_norm<bf16>({0, 1, 7, 40000}, 3, 1, 10, true, true, 1e4, 1.0f);               // odd shapes
    test_rope_norm<bf16>({0, 3, 9}, 5, 1, 256, false, false, 1e6, 1.2f);                   // no norm: YaRN only
    test_swiglu<bf16>(1, 83, true, 1);
    test_swiglu<bf16>(3, 1, false, 1);
    test_swiglu<bf16>(5, 300, false, 2);
    test_swiglu<bf16>(4, 301, true, 3);
    test_norm<float>(1, 576, false, false, 0, 1e-5f);
    test_norm<float>(5, 37, true, true, 0, 1e-6f);
    test_norm<float>(20, 576, true, true, 9, 1e-5f);
    test_rope<float>({0, 1, 2, 0, 5, 32767, 30000}, 9, 3, 64, true, 1e6);
    test_rope<float>({0, 1, 7, 40000}, 3, 1, 10, false, 1e4);
    test_rope_norm<float>({0, 1, 2, 0, 5, 32767, 30000}, 32, 8, 128, false, true, 1e6, 1.0f);  // Qwen3-8B heads
    test_rope_norm<float>({0, 1, 7, 40000, 100000}, 3, 1, 10, true, true, 1e4, 1.0648f);
    test_rope_norm<float>({0, 2}, 1, 1, 1024, true, true, 1e6, 1.0f);                          // widest head
    test_swiglu<float>(1, 83, true, 1);
    test_swiglu<float>(4, 301, false, 3);
    test_split(1, 1);
    test_split(1000, 2);
    printf(fails ? "FAILED %d\n" : "all ok\n", fails);
    return fails != 0;
}
