// Per-row statistics of a block of fp32 logits, one pass over the vocabulary (see src/stats/mod.rs, whose
// `vocab_stats_row` is the reference these kernels are checked against).
//
// For a row z_0..z_{V-1} with gold token y:
//   lse = log Σ e^{z}, logprob = z_y − lse, sum_p2 = Σ π², entropy = −Σ π log π, rank = 1 + #{v : z_v > z_y}.
// Each thread keeps an online state over its strided share of the row: m = max z seen, and relative to it
//   s = Σ e^{z−m},  s2 = Σ e^{2(z−m)},  e = Σ e^{z−m}(z−m).
// When the max grows from m to z (Δ = z − m > 0) the sums are rescaled: s·e^{−Δ}, s2·e^{−2Δ}, e^{−Δ}(e − Δ s).
// Two states merge at m = max(m1, m2) with r_i = e^{m_i − m}:
//   s = r1 s1 + r2 s2,  s2 = r1² s2_1 + r2² s2_2,  e = r1 (e1 + (m1 − m) s1) + r2 (e2 + (m2 − m) s2).
// Then lse = m + ln s, Σπ² = s2 / s², H = ln s − e / s.
// Precision: each term e^{z−m} is an fp32 expf (≤ 2 ulp), summed in fp32 over groups of ≤ 16 elements, the group
// sums and every rescale/merge in fp64, so the results match the fp64 CPU reference to ~1e-6 relative at worst
// (~1e-7 typically), for any vocabulary size; the rank count is exact. Do not build this file with fast-math. −inf logits contribute nothing
// (the CPU reference would give NaN entropy for them); NaN logits make the row's outputs NaN.
//
// Layout: logits row r starts at logits + r * row_stride (elements); row_stride ≥ vocab, any value: rows need not be
// 16-byte aligned. Each row is read with float4 loads from its first 16-byte boundary on, with a scalar prologue
// (≤ 3 elements) before it and a scalar tail (≤ 3) after. gold[r] outside [0, vocab) gives NaN statistics and
// rank 0 (the host validates tokens before launching; this only keeps a bad id from reading out of bounds).
//
// Launch: grid = rows blocks (one per row), block = VS_THREADS (256) threads, no dynamic shared memory.

#include "common.cuh"

#define VS_THREADS 256

namespace {

// The merged state: m stays fp32 (it is always one of the logits, so exact); the sums are fp64.
struct Online {
    float m;
    double s, s2, e;
};

__device__ __forceinline__ Online online_empty() { return Online{LARK_NEG_INF, 0.0, 0.0, 0.0}; }

// A thread's running state: the fp64 sums plus fp32 partial sums of the current group of at most 16 elements,
// folded into the fp64 sums after each group (flush). Each term is ≤ 1, so a partial sum of ≤ 16 terms carries a
// relative error ≤ 16 · 2^-24 ≈ 1e-6 however long the row; the hot path stays in fp32 (no fp64 conversions per
// element), which keeps the kernel at memory speed.
struct Acc {
    float m;
    float ps, ps2, pe;  // partial sums of the current group, relative to m
    double s, s2, e;    // completed groups, relative to m
};

__device__ __forceinline__ Acc acc_empty() { return Acc{LARK_NEG_INF, 0.f, 0.f, 0.f, 0.0, 0.0, 0.0}; }

__device__ __forceinline__ void acc_flush(Acc& a) {
    a.s += a.ps;
    a.s2 += a.ps2;
    a.e += a.pe;
    a.ps = a.ps2 = a.pe = 0.f;
}

__device__ __forceinline__ void acc_push(Acc& a, float z) {
    if (z == LARK_NEG_INF) return;  // e^{−inf} = 0: adds nothing to any sum (and avoids 0·inf = NaN in e)
    if (z > a.m) {                  // a new maximum (rare after the first few elements)
        if (a.m != LARK_NEG_INF) {
            acc_flush(a);
            const double d = static_cast<double>(z) - static_cast<double>(a.m);  // > 0, exact
            const double r = exp(-d);
            a.e = r * (a.e - d * a.s);
            a.s *= r;
            a.s2 *= r * r;
        }
        a.m = z;
    }
    const float x = z - a.m;  // ≤ 0; exact where it matters (z within a factor 2 of m, else e^x is negligible)
    const float p = expf(x);  // accurate expf (≤ 2 ulp), not __expf: no fast-math for this file
    a.ps += p;
    a.ps2 = fmaf(p, p, a.ps2);
    a.pe = fmaf(p, x, a.pe);
}

__device__ __forceinline__ Online acc_finish(Acc& a) {
    acc_flush(a);
    return Online{a.m, a.s, a.s2, a.e};
}

__device__ __forceinline__ Online online_merge(const Online& a, const Online& b) {
    if (b.m == LARK_NEG_INF) return a;  // an empty state (m is never NaN: it only ever takes a z with z > m)
    if (a.m == LARK_NEG_INF) return b;
    const float m = fmaxf(a.m, b.m);
    const double da = static_cast<double>(a.m) - m, db = static_cast<double>(b.m) - m;  // ≤ 0
    const double ra = exp(da), rb = exp(db);
    Online r;
    r.m = m;
    r.s = a.s * ra + b.s * rb;
    r.s2 = a.s2 * ra * ra + b.s2 * rb * rb;
    r.e = ra * (a.e + da * a.s) + rb * (b.e + db * b.s);
    return r;
}

__device__ __forceinline__ Online online_shfl_xor(const Online& a, int o) {
    Online r;
    r.m = __shfl_xor_sync(0xffffffffu, a.m, o);
    r.s = __shfl_xor_sync(0xffffffffu, a.s, o);
    r.s2 = __shfl_xor_sync(0xffffffffu, a.s2, o);
    r.e = __shfl_xor_sync(0xffffffffu, a.e, o);
    return r;
}

// Merge every thread's (state, count) into thread 0's. All NT threads must call it.
template <int NT>
__device__ __forceinline__ void block_merge(Online& st, unsigned& cnt) {
    constexpr int NW = NT / 32;
    __shared__ Online s_st[NW];
    __shared__ unsigned s_cnt[NW];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
        st = online_merge(st, online_shfl_xor(st, o));
        cnt += __shfl_xor_sync(0xffffffffu, cnt, o);
    }
    if (lane == 0) {
        s_st[warp] = st;
        s_cnt[warp] = cnt;
    }
    __syncthreads();
    if (warp == 0) {
        st = (lane < NW) ? s_st[lane] : online_empty();
        cnt = (lane < NW) ? s_cnt[lane] : 0u;
#pragma unroll
        for (int o = 16; o > 0; o >>= 1) {
            st = online_merge(st, online_shfl_xor(st, o));
            cnt += __shfl_xor_sync(0xffffffffu, cnt, o);
        }
    }
    __syncthreads();  // s_st / s_cnt may be reused by a later call
}

// Calls f(z, index) once for every element of the row, spread over the NT threads of the block: a scalar prologue
// up to the first 16-byte boundary, float4 loads (four in flight per thread) for the body, a scalar tail.
// group_end() is called after every ≤ 16 elements a thread has handled (the fp32 partial sums' flush points).
template <int NT, class F, class G>
__device__ __forceinline__ void row_foreach(const float* __restrict__ row, int vocab, F&& f, G&& group_end) {
    const int tid = threadIdx.x;
    const unsigned mis = static_cast<unsigned>(reinterpret_cast<uintptr_t>(row) & 15u);  // a multiple of 4
    int head = static_cast<int>(((16u - mis) & 15u) >> 2);
    if (head > vocab) head = vocab;
    if (tid < head) f(row[tid], tid);
    const float4* body = reinterpret_cast<const float4*>(row + head);
    const int nvec = (vocab - head) >> 2;
    int i = tid;
    for (; i + 3 * NT < nvec; i += 4 * NT) {
        const float4 a = __ldg(body + i);
        const float4 b = __ldg(body + i + NT);
        const float4 c = __ldg(body + i + 2 * NT);
        const float4 d = __ldg(body + i + 3 * NT);
        int x = head + 4 * i;
        f(a.x, x), f(a.y, x + 1), f(a.z, x + 2), f(a.w, x + 3);
        x += 4 * NT;
        f(b.x, x), f(b.y, x + 1), f(b.z, x + 2), f(b.w, x + 3);
        x += 4 * NT;
        f(c.x, x), f(c.y, x + 1), f(c.z, x + 2), f(c.w, x + 3);
        x += 4 * NT;
        f(d.x, x), f(d.y, x + 1), f(d.z, x + 2), f(d.w, x + 3);
        group_end();  // 16 elements (+ ≤ 1 from the prologue on the first pass)
    }
    for (; i < nvec; i += NT) {
        const float4 a = __ldg(body + i);
        const int x = head + 4 * i;
        f(a.x, x), f(a.y, x + 1), f(a.z, x + 2), f(a.w, x + 3);
        group_end();
    }
    const int tail = head + 4 * nvec + tid;  // fewer than 4 elements remain
    if (tail < vocab) f(row[tail], tail);
    group_end();
}

}  // namespace

extern "C" __global__ void __launch_bounds__(VS_THREADS)
    vocab_stats_f32(const float* __restrict__ logits, const int* __restrict__ gold, int rows, int vocab,
                    long long row_stride, float* __restrict__ out_lse, float* __restrict__ out_logprob,
                    float* __restrict__ out_sum_p2, float* __restrict__ out_entropy, unsigned* __restrict__ out_rank) {
    const int row = blockIdx.x;
    if (row >= rows || vocab <= 0 || blockDim.x != VS_THREADS) return;  // uniform over the block
    const float* rowp = logits + static_cast<long long>(row) * row_stride;
    const int gd = gold[row];
    const bool ok = gd >= 0 && gd < vocab;
    const float zg = ok ? rowp[gd] : __int_as_float(0x7fc00000);  // NaN: z > NaN is never true

    Acc acc = acc_empty();
    unsigned greater = 0;
    row_foreach<VS_THREADS>(
        rowp, vocab,
        [&](float z, int) {
            greater += (z > zg) ? 1u : 0u;
            acc_push(acc, z);
        },
        [&] { acc_flush(acc); });
    Online st = acc_finish(acc);
    block_merge<VS_THREADS>(st, greater);

    if (threadIdx.x == 0) {
        const double nan = __longlong_as_double(0x7ff8000000000000ll);
        const double ln_s = log(st.s);
        const double lse = static_cast<double>(st.m) + ln_s;
        out_lse[row] = static_cast<float>(lse);
        out_logprob[row] = static_cast<float>(ok ? static_cast<double>(zg) - lse : nan);
        out_sum_p2[row] = static_cast<float>(ok ? st.s2 / (st.s * st.s) : nan);
        out_entropy[row] = static_cast<float>(ok ? ln_s - st.e / st.s : nan);
        out_rank[row] = ok ? 1u + greater : 0u;
    }
}

// The LARK authors' top-K Brier (compat mode): p̃ = softmax over the K largest logits of the row, renormalised;
// p̃(y) = 0 when y is not among them; out = Σ p̃² − 2 p̃(y) + 1. Ties at the K-th largest value are broken by the
// lower index, as the CPU reference `topk_brier` does. K is clamped to [1, vocab]; any K works.
//
// Selection: the K-th largest value T is found exactly by a 4-pass 8-bit radix select on the order-preserving
// uint32 key of each float (lark_float_key): pass p histograms byte p (from the top) of the keys that agree with
// the bytes already chosen, then picks the byte where the count from the top reaches the remaining K. Afterwards
// `need` = how many elements equal to T belong to the top K. If more than `need` elements equal T, one extra
// pass over contiguous per-thread chunks finds the index of the need-th such element (ties taken in index
// order). The final pass folds the selected elements into the same online (m, s, s2) state as above.
// Launch: grid = rows blocks, block = VS_THREADS (256) threads. Reads the row 5–6 times (compat mode only).
extern "C" __global__ void __launch_bounds__(VS_THREADS)
    vocab_topk_brier_f32(const float* __restrict__ logits, const int* __restrict__ gold, int rows, int vocab,
                         long long row_stride, int k, float* __restrict__ out_topk_brier) {
    __shared__ unsigned hist[256];
    __shared__ unsigned s_pick[3];  // chosen byte, remaining count, elements equal to the prefix so far
    __shared__ unsigned s_scan[VS_THREADS];
    __shared__ int s_cut;

    const int row = blockIdx.x;
    if (row >= rows || vocab <= 0 || blockDim.x != VS_THREADS) return;  // uniform over the block
    const int tid = threadIdx.x;
    const float* rowp = logits + static_cast<long long>(row) * row_stride;
    const int gd = gold[row];
    const bool ok = gd >= 0 && gd < vocab;
    const unsigned kk = static_cast<unsigned>(k < 1 ? 1 : (k > vocab ? vocab : k));

    // Radix select of the K-th largest key. Invariant: at least `need` keys match `prefix` on the bytes chosen.
    uint32_t prefix = 0;
    unsigned need = kk, eq_count = 0;
    for (int pass = 0; pass < 4; ++pass) {
        const int shift = 24 - 8 * pass;
        const uint32_t hmask = (pass == 0) ? 0u : (0xffffffffu << (shift + 8));
        for (int i = tid; i < 256; i += VS_THREADS) hist[i] = 0u;
        __syncthreads();
        row_foreach<VS_THREADS>(
            rowp, vocab,
            [&](float z, int) {
                const uint32_t key = lark_float_key(z);
                if ((key & hmask) == prefix) atomicAdd(&hist[(key >> shift) & 255u], 1u);
            },
            [] {});
        __syncthreads();
        if (tid == 0) {
            unsigned above = 0;  // matching keys with a larger byte here
            int d = 255;
            for (; d > 0; --d) {
                if (above + hist[d] >= need) break;
                above += hist[d];
            }
            s_pick[0] = static_cast<unsigned>(d);
            s_pick[1] = need - above;
            s_pick[2] = hist[d];
        }
        __syncthreads();
        prefix |= s_pick[0] << shift;
        need = s_pick[1];
        eq_count = s_pick[2];
        __syncthreads();  // s_pick and hist are rewritten by the next pass
    }
    const uint32_t T = prefix;  // key of the K-th largest value; `need` of the eq_count elements equal to it count

    // Ties at T: keep the `need` lowest-indexed ones, i.e. those with index ≤ cutoff.
    int cutoff = vocab - 1;
    if (eq_count > need) {
        const int chunk = (vocab + VS_THREADS - 1) / VS_THREADS;
        const long long b0 = static_cast<long long>(tid) * chunk;
        const int b = static_cast<int>(b0 < vocab ? b0 : vocab);
        const int e = static_cast<int>(b0 + chunk < vocab ? b0 + chunk : vocab);
        unsigned c = 0;
        for (int i = b; i < e; ++i) c += (lark_float_key(rowp[i]) == T) ? 1u : 0u;
        s_scan[tid] = c;
        __syncthreads();
        if (tid == 0) {  // exclusive prefix sum over the threads' chunks, in index order
            unsigned run = 0;
            for (int i = 0; i < VS_THREADS; ++i) {
                const unsigned x = s_scan[i];
                s_scan[i] = run;
                run += x;
            }
        }
        __syncthreads();
        const unsigned before = s_scan[tid];
        if (before < need && before + c >= need) {  // exactly one thread: the need-th tie is in its chunk
            unsigned seen = before;
            for (int i = b; i < e; ++i) {
                if (lark_float_key(rowp[i]) == T && ++seen == need) {
                    s_cut = i;
                    break;
                }
            }
        }
        __syncthreads();
        cutoff = s_cut;
    }

    Acc acc = acc_empty();
    unsigned unused = 0;
    row_foreach<VS_THREADS>(
        rowp, vocab,
        [&](float z, int i) {
            const uint32_t key = lark_float_key(z);
            if (key > T || (key == T && i <= cutoff)) acc_push(acc, z);
        },
        [&] { acc_flush(acc); });
    Online st = acc_finish(acc);
    block_merge<VS_THREADS>(st, unused);

    if (tid == 0) {
        float result = __int_as_float(0x7fc00000);
        if (ok) {
            const float zg = rowp[gd];
            const uint32_t kg = lark_float_key(zg);
            const bool in_top = kg > T || (kg == T && gd <= cutoff);
            const double p_gold = in_top ? exp(static_cast<double>(zg) - static_cast<double>(st.m)) / st.s : 0.0;
            result = static_cast<float>(st.s2 / (st.s * st.s) - 2.0 * p_gold + 1.0);
        }
        out_topk_brier[row] = result;
    }
}
