// Causal grouped-query attention over a packed batch of variable-length sequences (flash-attention-2 style).
//
// Layout (row-major bf16, all device pointers 16-byte aligned):
//   q, out [T_total, num_heads,    head_dim]
//   k, v   [T_total, num_kv_heads, head_dim]
//   cu_seqlens int32[num_seqs + 1]: sequence s owns tokens cu_seqlens[s] .. cu_seqlens[s+1]-1.
// Query position i of a sequence attends to keys 0..=i of the same sequence; head h reads kv head
// h / (num_heads / num_kv_heads).
//
// The math, for one query row q_i and its keys k_0..k_i (c = softmax_scale):
//   out_i = Σ_j p_j v_j / Σ_j p_j,   p_j = exp(c q_i·k_j − M)   for any constant M.
// Keys are visited in tiles of 64. A running maximum m (of c q·k, kept in log2 units: everything is multiplied by
// log2 e so that exp becomes exp2), a running denominator l and an unnormalised accumulator o are kept per row;
// when a new tile raises the maximum from m to m', the old l and o are multiplied by 2^(m − m') before the tile's
// terms 2^(s − m') are added. At the end out = o / l. Scores, l and o are fp32; P is rounded to bf16 only as the
// operand of the P·V product (as flash-attention does). No score matrix is ever stored outside registers.
//
// Tensor cores: mma.sync m16n8k16 (bf16 in, fp32 accumulate), operands fetched from shared memory with ldmatrix.
// Each block: BR query rows (64 or 128) of one (sequence, head), BR/16 warps of 16 rows each. Its query tile starts
// at a multiple of BR within its sequence and key tiles of 64 start at multiples of 64, so only the key tiles that
// overlap the query tile need the causal mask; key tiles past its last row are never loaded, and a warp whose 16
// rows all precede a key tile skips that tile's math (it still takes part in the loads and barriers). BR = 128
// halves the K/V traffic per query row at the same registers per thread.
//
// Work list: the host builds a tile table (tile_seq[t], tile_start[t]) = (sequence, first query position within it)
// for every 64-row query tile of every non-empty sequence, heaviest (largest start) first. Block b handles tile
// b / num_heads, head b % num_heads: heads sharing a kv head run side by side (K/V reuse in L2) and the longest
// tiles are scheduled first (less tail imbalance). Grid = num_tiles * num_heads blocks of 2·BR threads.
//
// attention_varlen_generic is the slow, simple fallback for any head_dim ≤ 256: one warp per (query row, head),
// scalar fp32 online softmax over the keys.

#include "common.cuh"

namespace {

constexpr int ATT_BC = 64;       // keys per iteration
constexpr float LOG2E = 1.4426950408889634f;

// The PTX helpers. Under LARK_EMULATE (the host-side warp emulator in kernels/emu/) the same functions come from
// kernels/emu/emu.h instead, which implements them from the PTX ISA's definitions of the fragment layouts.
#ifndef LARK_EMULATE
__device__ __forceinline__ uint32_t smem_u32(const void* p) {
    return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

// 16-byte global -> shared copy that bypasses L1 (cp.async.cg only exists for 16 bytes).
__device__ __forceinline__ void cp_async16(void* smem, const void* gmem) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(smem_u32(smem)),
                 "l"(__cvta_generic_to_global(gmem))
                 : "memory");
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
// Wait until at most N of this thread's committed groups are still pending.
template <int N>
__device__ __forceinline__ void cp_async_wait() {
    asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}

// Four 8x8 b16 matrices; lane L supplies the address of row (L % 8) of matrix (L / 8). Register j of lane L receives
// row L/4, columns 2(L%4), 2(L%4)+1 of matrix j (with .trans: column L/4, rows 2(L%4), 2(L%4)+1).
__device__ __forceinline__ void ldmatrix_x4(uint32_t& r0, uint32_t& r1, uint32_t& r2, uint32_t& r3, const void* p) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r0), "=r"(r1), "=r"(r2), "=r"(r3)
                 : "r"(smem_u32(p))
                 : "memory");
}
__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t& r0, uint32_t& r1, uint32_t& r2, uint32_t& r3,
                                                  const void* p) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r0), "=r"(r1), "=r"(r2), "=r"(r3)
                 : "r"(smem_u32(p))
                 : "memory");
}

// D = A(16x16, row) * B(16x8, col) + D, bf16 inputs, fp32 accumulators. With g = lane/4, t = lane%4:
//   a0: (row g,   k 2t..2t+1)   a1: (row g+8, k 2t..2t+1)   a2: (row g, k 2t+8..)   a3: (row g+8, k 2t+8..)
//   b0: (k 2t..2t+1, col g)     b1: (k 2t+8..2t+9, col g)
//   d0,d1: (row g, col 2t, 2t+1)                           d2,d3: (row g+8, col 2t, 2t+1)
__device__ __forceinline__ void mma_16816(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
    asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
// The block's dynamic shared memory and the size the launch gave it (%dynamic_smem_size).
__device__ __forceinline__ unsigned char* lark_dynamic_smem() {
    extern __shared__ __align__(16) unsigned char lark_dynamic_smem_bytes_[];
    return lark_dynamic_smem_bytes_;
}
__device__ __forceinline__ unsigned lark_dynamic_smem_bytes() {
    unsigned n;
    asm volatile("mov.u32 %0, %%dynamic_smem_size;\n" : "=r"(n));
    return n;
}
#endif  // LARK_EMULATE

// Shared memory of one block of attention_tile<HD, BR, MT>. MT = 1: two static 64-row tiles (K, V; Q is staged
// through them into registers). MT = 2: dynamic shared memory holding K, V and, when the warp's Q fragments would
// take more than 32 registers (HD = 128), the whole Q tile, read with ldmatrix at every k-step instead.
template <int HD>
__host__ __device__ constexpr int attn_smem_row() { return HD + 8; }  // padded shared row (elements): 16-byte aligned, rows 4 banks apart
template <int HD, int MT>
__host__ __device__ constexpr bool attn_q_in_smem() { return MT * (HD / 16) * 4 > 32; }
template <int HD, int BR, int MT>
__host__ __device__ constexpr unsigned attn_dynamic_smem_bytes() {
    return MT == 1 ? 0u : (2u * ATT_BC + (attn_q_in_smem<HD, MT>() ? BR : 0)) * attn_smem_row<HD>() * 2u;
}

template <int HD, int BR, int MT, bool LEAN_SOFTMAX>
__device__ __forceinline__ void attention_tile(const bf16* __restrict__ q, const bf16* __restrict__ k,
                                               const bf16* __restrict__ v, bf16* __restrict__ out,
                                               const int* __restrict__ cu_seqlens, int num_seqs,
                                               const int* __restrict__ tile_seq, const int* __restrict__ tile_start,
                                               int num_tiles, int num_heads, int num_kv_heads, float softmax_scale) {
    static_assert(HD % 16 == 0 && HD >= 16 && HD <= 256, "head_dim must be a multiple of 16, at most 256");
    static_assert(BR == 64 || BR == 128, "query tile of 64 or 128 rows");
    static_assert(MT == 1 || MT == 2, "one or two 16-row m-tiles per warp");
    // LEAN_SOFTMAX: fewer non-MMA instructions per key tile (the loop is issue-bound: ~8 per HMMA with 16-row warps).
    // The softmax scale is folded into exp2's argument (one FFMA per score instead of a separate scaling FMUL;
    // needs softmax_scale > 0, checked by the host, so the raw and scaled maxima are the same element), and the
    // accumulator rescale by 2^(m − m') is skipped for the whole warp when no row's maximum grew (its factor is
    // then exactly 1: skipping it changes no bit).
    constexpr int WROWS = 16 * MT;         // query rows per warp
    static_assert(BR % WROWS == 0, "whole warps per query tile");
    constexpr int THREADS = BR / WROWS * 32;
    constexpr int SROW = attn_smem_row<HD>();
    constexpr bool Q_IN_SMEM = attn_q_in_smem<HD, MT>();
    constexpr int CHUNKS = HD / 8;     // 16-byte chunks per row
    constexpr int KSTEPS = HD / 16;    // k-steps of Q·K^T
    constexpr int DTILES = HD / 8;     // 8-column tiles of the output
    constexpr int STILES = ATT_BC / 8; // 8-key tiles of the scores

    // MT = 1: two static tiles of 64 rows, 18 KB (HD 64) or 34 KB (HD 128). MT = 2: the same two tiles (and the Q
    // tile) in dynamic shared memory, whose size the host passes at launch (AttentionKernel::dynamic_smem_bytes).
    bf16* sK;
    bf16* sV;  // MT = 1, or MT = 2 with Q in registers: also holds (part of) the Q tile before the key loop
    bf16* sQ = nullptr;
    if constexpr (MT == 1) {
        __shared__ __align__(16) bf16 sK_static[ATT_BC * SROW];
        __shared__ __align__(16) bf16 sV_static[ATT_BC * SROW];
        sK = sK_static;
        sV = sV_static;
    } else {
        // A host/kernel disagreement on the layout is a bug: fail the launch loudly rather than overrun.
        if (lark_dynamic_smem_bytes() < attn_dynamic_smem_bytes<HD, BR, MT>()) __trap();
        bf16* dyn = reinterpret_cast<bf16*>(lark_dynamic_smem());
        sK = dyn;
        sV = dyn + ATT_BC * SROW;
        if constexpr (Q_IN_SMEM) sQ = dyn + 2 * ATT_BC * SROW;
    }

    // Everything below up to the first barrier depends only on blockIdx and the arguments: the early returns
    // are uniform over the block.
    if (blockDim.x != THREADS || num_heads <= 0 || num_kv_heads <= 0 || num_heads % num_kv_heads != 0) return;
    const int tile = static_cast<int>(blockIdx.x / static_cast<unsigned>(num_heads));
    const int head = static_cast<int>(blockIdx.x % static_cast<unsigned>(num_heads));
    if (tile >= num_tiles) return;
    const int seq = tile_seq[tile];
    if (seq < 0 || seq >= num_seqs) return;
    const int seq_begin = cu_seqlens[seq];
    const int seq_len = cu_seqlens[seq + 1] - seq_begin;
    const int q0 = tile_start[tile];
    if (q0 < 0 || q0 >= seq_len || q0 % BR != 0) return;

    const int tid = threadIdx.x;
    const int warp = tid >> 5, lane = tid & 31;
    const int g = lane >> 2, t = lane & 3;
    const int kv_head = head / (num_heads / num_kv_heads);
    const long long q_stride = static_cast<long long>(num_heads) * HD;
    const long long kv_stride = static_cast<long long>(num_kv_heads) * HD;
    const bf16* qbase = q + static_cast<long long>(seq_begin) * q_stride + static_cast<long long>(head) * HD;
    const bf16* kbase = k + static_cast<long long>(seq_begin) * kv_stride + static_cast<long long>(kv_head) * HD;
    const bf16* vbase = v + static_cast<long long>(seq_begin) * kv_stride + static_cast<long long>(kv_head) * HD;
    const int wrow0 = warp * WROWS;  // this warp's first row within the query tile

    // Rows r0 .. r0+nrows-1 of a [seq_len, stride] matrix into a padded shared tile. Rows at or past the end of the
    // sequence are zero-filled, never read: they belong to the next sequence or lie past the buffer.
    auto load_chunk = [&](bf16* dst, const bf16* base, long long stride, int r0, int c) {
        const int r = c / CHUNKS, cc = c % CHUNKS;
        bf16* d = dst + r * SROW + cc * 8;
        if (r0 + r < seq_len) {
            cp_async16(d, base + static_cast<long long>(r0 + r) * stride + cc * 8);
        } else {
            *reinterpret_cast<uint4*>(d) = make_uint4(0u, 0u, 0u, 0u);
        }
    };
    auto load_tile = [&](bf16* dst, const bf16* base, long long stride, int r0, int nrows) {
        if constexpr (MT == 2) {
            // Unrolled only twice: the 4-warp blocks issue 8 chunks per thread per tile, and fully unrolled address
            // arithmetic pushed hd128_w32 past 255 registers (spills).
#pragma unroll 2
            for (int c = tid; c < nrows * CHUNKS; c += THREADS) load_chunk(dst, base, stride, r0, c);
        } else {
            for (int c = tid; c < nrows * CHUNKS; c += THREADS) load_chunk(dst, base, stride, r0, c);
        }
    };

    // Q as A fragments: m-tile mt of warp w covers query rows wrow0 + 16mt .. +15 of the tile. Kept in registers
    // (qf) when they fit in 32; the Q tile is then staged through sV (rows 0-63) and sK (rows 64-127). Otherwise the
    // Q tile stays in sQ for the whole block and is re-read at every k-step; its load is the first commit group.
    uint32_t qf[Q_IN_SMEM ? 1 : MT][Q_IN_SMEM ? 1 : KSTEPS][4];
    if constexpr (Q_IN_SMEM) {
        load_tile(sQ, qbase, q_stride, q0, BR);
        cp_async_commit();
    } else {
        load_tile(sV, qbase, q_stride, q0, ATT_BC);
        if (BR > ATT_BC) load_tile(sK, qbase, q_stride, q0 + ATT_BC, ATT_BC);
        cp_async_commit();
        cp_async_wait<0>();
        __syncthreads();
#pragma unroll
        for (int mt = 0; mt < MT; ++mt) {
            const int row = wrow0 + 16 * mt;
            const bf16* qtile = (row < ATT_BC) ? sV : sK;
#pragma unroll
            for (int kk = 0; kk < KSTEPS; ++kk) {
                // matrices 0..3 = (rows 0-7, k 0-7), (rows 8-15, k 0-7), (rows 0-7, k 8-15), (rows 8-15, k 8-15)
                const bf16* p = qtile + (row % ATT_BC + (lane & 15)) * SROW + kk * 16 + (lane >> 4) * 8;
                ldmatrix_x4(qf[mt][kk][0], qf[mt][kk][1], qf[mt][kk][2], qf[mt][kk][3], p);
            }
        }
        __syncthreads();  // sK and sV are about to receive K and V tiles
    }

    const int last_row = (q0 + BR < seq_len ? q0 + BR : seq_len) - 1;  // the block's last query position
    const int n_ktiles = last_row / ATT_BC + 1;      // key tiles 0 .. the one holding last_row
    const int warp_last = q0 + wrow0 + WROWS - 1;    // this warp's last query position
    const float sl2 = softmax_scale * LOG2E;

    float o[MT][DTILES][4];
#pragma unroll
    for (int mt = 0; mt < MT; ++mt)
#pragma unroll
        for (int dt = 0; dt < DTILES; ++dt) o[mt][dt][0] = o[mt][dt][1] = o[mt][dt][2] = o[mt][dt][3] = 0.f;
    // Per m-tile, rows g (r = 0) and g+8 (r = 1): running max (log2 units) and this thread's share of the row sum.
    float m_run[MT][2], l_run[MT][2];
#pragma unroll
    for (int mt = 0; mt < MT; ++mt) {
        m_run[mt][0] = m_run[mt][1] = LARK_NEG_INF;
        l_run[mt][0] = l_run[mt][1] = 0.f;
    }

    // Pipeline: K_{j+1} streams in while softmax and P·V of tile j run; V_{j+1} while the next Q·K^T runs.
    // One commit group per tile load (possibly empty), so wait_group 1 always means "all but the newest"
    // (with Q in shared memory its group is older than K_0's, so the first wait covers it too).
    load_tile(sK, kbase, kv_stride, 0, ATT_BC);
    cp_async_commit();
    load_tile(sV, vbase, kv_stride, 0, ATT_BC);
    cp_async_commit();

    for (int j = 0; j < n_ktiles; ++j) {
        cp_async_wait<1>();  // K_j has landed (V_j may still be in flight)
        __syncthreads();
        // Every key of tile j lies after every row of this warp: nothing to add (warp-uniform). With MT = 2 a
        // warp's rows start at a multiple of 32 and key tiles at multiples of 64, so an active warp's first m-tile
        // always sees some key of the tile: no per-m-tile skip is needed.
        const bool active = j * ATT_BC <= warp_last;

        // S = Q K_j^T for this warp's 16·MT rows x 64 keys. Each K fragment read from shared memory feeds MT MMAs.
        float s[MT][STILES][4];
#pragma unroll
        for (int mt = 0; mt < MT; ++mt)
#pragma unroll
            for (int nt = 0; nt < STILES; ++nt) s[mt][nt][0] = s[mt][nt][1] = s[mt][nt][2] = s[mt][nt][3] = 0.f;
#pragma unroll
        for (int kk = 0; kk < (active ? KSTEPS : 0); ++kk) {
            uint32_t a[MT][4];
#pragma unroll
            for (int mt = 0; mt < MT; ++mt) {
                if constexpr (Q_IN_SMEM) {
                    const bf16* p = sQ + (wrow0 + 16 * mt + (lane & 15)) * SROW + kk * 16 + (lane >> 4) * 8;
                    ldmatrix_x4(a[mt][0], a[mt][1], a[mt][2], a[mt][3], p);
                } else {
                    a[mt][0] = qf[mt][kk][0], a[mt][1] = qf[mt][kk][1], a[mt][2] = qf[mt][kk][2],
                    a[mt][3] = qf[mt][kk][3];
                }
            }
#pragma unroll
            for (int np = 0; np < STILES / 2; ++np) {
                // B = K^T: b0/b1 of key tile n are K[keys 8n..8n+7][dims 16kk..+7 / 16kk+8..+15], rows of sK as
                // stored. Matrices 0..3 = (keys 16np+0-7, k lo), (keys 16np+0-7, k hi), (+8-15, k lo), (+8-15, k hi).
                const int key = np * 16 + ((lane >> 4) << 3) + (lane & 7);
                const int dim = kk * 16 + ((lane >> 3) & 1) * 8;
                uint32_t b0, b1, b2, b3;
                ldmatrix_x4(b0, b1, b2, b3, sK + key * SROW + dim);
#pragma unroll
                for (int mt = 0; mt < MT; ++mt) {
                    mma_16816(s[mt][2 * np], a[mt], b0, b1);
                    mma_16816(s[mt][2 * np + 1], a[mt], b2, b3);
                }
            }
        }
        __syncthreads();  // every warp is done with sK
        if (j + 1 < n_ktiles) load_tile(sK, kbase, kv_stride, (j + 1) * ATT_BC, ATT_BC);
        cp_async_commit();

        // Scale into log2 units (LEAN_SOFTMAX: later, inside exp2's FFMA); on tiles reaching past the block's first
        // row, mask keys after the query (and past the sequence end).
        const bool diag = (j * ATT_BC + ATT_BC - 1 > q0);
#pragma unroll
        for (int mt = 0; mt < MT; ++mt) {
#pragma unroll
            for (int nt = 0; nt < STILES; ++nt) {
#pragma unroll
                for (int c = 0; c < 4; ++c) {
                    float x = s[mt][nt][c];
                    if constexpr (!LEAN_SOFTMAX) x *= sl2;
                    if (diag) {
                        const int qpos = q0 + wrow0 + 16 * mt + g + ((c >> 1) << 3);
                        const int kpos = j * ATT_BC + nt * 8 + 2 * t + (c & 1);
                        if (kpos > qpos || kpos >= seq_len) x = LARK_NEG_INF;
                    }
                    s[mt][nt][c] = x;
                }
            }
        }

        // Online softmax, per m-tile rows g (r = 0: accumulator slots 0,1) and g+8 (r = 1: slots 2,3). A row's 64
        // scores sit in the 4 lanes of a quad (same g), so the row maximum is a quad reduction.
#pragma unroll
        for (int mt = 0; mt < MT; ++mt) {
#pragma unroll
            for (int r = 0; r < (active ? 2 : 0); ++r) {
                float mx = LARK_NEG_INF;
#pragma unroll
                for (int nt = 0; nt < STILES; ++nt) mx = fmaxf(mx, fmaxf(s[mt][nt][2 * r], s[mt][nt][2 * r + 1]));
                mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
                mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
                if constexpr (LEAN_SOFTMAX) mx *= sl2;  // raw → log2 units (sl2 > 0; −inf stays −inf)
                const float m_new = fmaxf(m_run[mt][r], mx);
                // Every row sees at least key 0 in tile 0, so m_new is finite; the guard keeps a fully masked row
                // at zeros instead of NaN (−inf − −inf) should that ever change.
                const float m_use = (m_new == LARK_NEG_INF) ? 0.f : m_new;
                const float alpha = exp2f(m_run[mt][r] - m_use);  // 0 on the row's first keys (m_run = −inf)
                m_run[mt][r] = m_new;
                l_run[mt][r] *= alpha;
                // LEAN_SOFTMAX: after a row's first tiles its maximum rarely grows, and when no row of the warp's
                // row set grew (alpha exactly 1) the 2·DTILES multiplies are skipped (warp-uniform vote).
                if (!LEAN_SOFTMAX || __any_sync(0xffffffffu, alpha != 1.f)) {
#pragma unroll
                    for (int dt = 0; dt < DTILES; ++dt) {
                        o[mt][dt][2 * r] *= alpha;
                        o[mt][dt][2 * r + 1] *= alpha;
                    }
                }
                float rs = 0.f;
#pragma unroll
                for (int nt = 0; nt < STILES; ++nt) {
#pragma unroll
                    for (int c = 2 * r; c < 2 * r + 2; ++c) {
                        // masked: exp2(−inf) = 0
                        s[mt][nt][c] = LEAN_SOFTMAX ? exp2f(fmaf(s[mt][nt][c], sl2, -m_use)) : exp2f(s[mt][nt][c] - m_use);
                        rs += s[mt][nt][c];
                    }
                }
                l_run[mt][r] += rs;
            }
        }

        // P as bf16 A fragments (as flash-attention does), packed here so the fp32 scores are dead before P·V.
        uint32_t pf[MT][ATT_BC / 16][4];
#pragma unroll
        for (int mt = 0; mt < MT; ++mt) {
#pragma unroll
            for (int kk = 0; kk < ATT_BC / 16; ++kk) {
                pf[mt][kk][0] = lark_pack_bf16x2(s[mt][2 * kk][0], s[mt][2 * kk][1]);
                pf[mt][kk][1] = lark_pack_bf16x2(s[mt][2 * kk][2], s[mt][2 * kk][3]);
                pf[mt][kk][2] = lark_pack_bf16x2(s[mt][2 * kk + 1][0], s[mt][2 * kk + 1][1]);
                pf[mt][kk][3] = lark_pack_bf16x2(s[mt][2 * kk + 1][2], s[mt][2 * kk + 1][3]);
            }
        }

        cp_async_wait<1>();  // V_j has landed (K_{j+1} may still be in flight)
        __syncthreads();

        // O += P V_j. The score accumulators of key tiles 2kk, 2kk+1 are exactly the A fragment of k-step kk. Each
        // V fragment read from shared memory feeds MT MMAs.
#pragma unroll
        for (int kk = 0; kk < (active ? ATT_BC / 16 : 0); ++kk) {
            uint32_t a[MT][4];
#pragma unroll
            for (int mt = 0; mt < MT; ++mt)
#pragma unroll
                for (int i = 0; i < 4; ++i) a[mt][i] = pf[mt][kk][i];
#pragma unroll
            for (int dp = 0; dp < DTILES / 2; ++dp) {
                // B = V: b0/b1 of dim tile n are V[keys 16kk+0..7 / +8..15][dims 8n..8n+7], loaded transposed.
                // Matrices 0..3 = (keys lo, dims 16dp+0-7), (keys hi, same), (keys lo, dims +8-15), (keys hi, same).
                const int key = kk * 16 + ((lane >> 3) & 1) * 8 + (lane & 7);
                const int dim = dp * 16 + (lane >> 4) * 8;
                uint32_t b0, b1, b2, b3;
                ldmatrix_x4_trans(b0, b1, b2, b3, sV + key * SROW + dim);
#pragma unroll
                for (int mt = 0; mt < MT; ++mt) {
                    mma_16816(o[mt][2 * dp], a[mt], b0, b1);
                    mma_16816(o[mt][2 * dp + 1], a[mt], b2, b3);
                }
            }
        }
        __syncthreads();  // every warp is done with sV
        if (j + 1 < n_ktiles) load_tile(sV, vbase, kv_stride, (j + 1) * ATT_BC, ATT_BC);
        cp_async_commit();
    }
    cp_async_wait<0>();  // only empty groups remain; leave nothing in flight

    // out = o / l, rows past the end of the sequence are not written.
#pragma unroll
    for (int mt = 0; mt < MT; ++mt) {
#pragma unroll
        for (int r = 0; r < 2; ++r) {
            float l = l_run[mt][r];
            l += __shfl_xor_sync(0xffffffffu, l, 1);
            l += __shfl_xor_sync(0xffffffffu, l, 2);
            const float inv = (l > 0.f) ? 1.f / l : 0.f;
            const int qpos = q0 + wrow0 + 16 * mt + g + 8 * r;
            if (qpos < seq_len) {
                bf16* orow =
                    out + static_cast<long long>(seq_begin + qpos) * q_stride + static_cast<long long>(head) * HD;
#pragma unroll
                for (int dt = 0; dt < DTILES; ++dt) {
                    *reinterpret_cast<uint32_t*>(orow + dt * 8 + 2 * t) =
                        lark_pack_bf16x2(o[mt][dt][2 * r] * inv, o[mt][dt][2 * r + 1] * inv);
                }
            }
        }
    }
}

}  // namespace

// NAME(HD, BR, MT, LEAN): BR query rows per block, MT 16-row m-tiles per warp, so BR / (16·MT) warps; LEAN: the
// lean softmax (see attention_tile). MT = 2 needs attn_dynamic_smem_bytes<HD, BR, 2>() of dynamic shared memory per
// block (the launch passes it; Gpu::open allows more than 48 KiB).
#define LARK_ATTENTION_ENTRY(NAME, HD, BR, MT, LEAN)                                                                \
    extern "C" __global__ void __launch_bounds__(BR * 2 / MT, MT)                                                   \
        NAME(const bf16* __restrict__ q, const bf16* __restrict__ k, const bf16* __restrict__ v,                   \
             bf16* __restrict__ out, const int* __restrict__ cu_seqlens, int num_seqs,                             \
             const int* __restrict__ tile_seq, const int* __restrict__ tile_start, int num_tiles, int num_heads,   \
             int num_kv_heads, float softmax_scale) {                                                              \
        attention_tile<HD, BR, MT, LEAN>(q, k, v, out, cu_seqlens, num_seqs, tile_seq, tile_start, num_tiles, num_heads,  \
                                   num_kv_heads, softmax_scale);                                                    \
    }

// The measured kernels (16 rows per warp) keep the plain softmax; the _w32 kernels, not yet measured, carry every
// step since (32 rows per warp and the lean softmax), so one device call compares old against new.
LARK_ATTENTION_ENTRY(attention_varlen_bf16_hd64, 64, 64, 1, false)
LARK_ATTENTION_ENTRY(attention_varlen_bf16_hd128, 128, 64, 1, false)
LARK_ATTENTION_ENTRY(attention_varlen_bf16_hd64_br128, 64, 128, 1, false)
LARK_ATTENTION_ENTRY(attention_varlen_bf16_hd128_br128, 128, 128, 1, false)
LARK_ATTENTION_ENTRY(attention_varlen_bf16_hd64_br128_w32, 64, 128, 2, true)
LARK_ATTENTION_ENTRY(attention_varlen_bf16_hd128_br128_w32, 128, 128, 2, true)

// Fallback for any head_dim in 1..=256: warp w of the grid handles query token w / num_heads, head w % num_heads.
// Lane l owns dims l, l+32, ...; each score is a warp sum; plain fp32 online softmax with expf.
// Grid: ceil(T_total * num_heads / 4) blocks of 128 threads (T_total = cu_seqlens[num_seqs]).
// Instantiated for bf16 (attention_varlen_generic) and fp32 (attention_varlen_generic_f32, the `--precision fp32`
// path, any head_dim) q/k/v/out.
namespace {
template <typename A>
__device__ __forceinline__ void attention_generic(const A* __restrict__ q, const A* __restrict__ k,
                                                  const A* __restrict__ v, A* __restrict__ out,
                                                  const int* __restrict__ cu_seqlens, int num_seqs, int num_heads,
                                                  int num_kv_heads, int head_dim, float softmax_scale) {
    constexpr int MAXD = 256, PER = MAXD / 32;
    if (head_dim < 1 || head_dim > MAXD || num_seqs < 1 || num_heads <= 0 || num_kv_heads <= 0 ||
        num_heads % num_kv_heads != 0)
        return;
    const int lane = threadIdx.x & 31;
    const long long gw = (static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x) >> 5;
    const long long total = cu_seqlens[num_seqs];
    const long long row = gw / num_heads;  // warp-uniform: the early return keeps whole warps
    const int head = static_cast<int>(gw % num_heads);
    if (row >= total) return;

    // The sequence holding `row`: the largest s with cu_seqlens[s] <= row (skips empty sequences).
    int lo = 0, hi = num_seqs - 1;
    while (lo < hi) {
        const int mid = (lo + hi + 1) >> 1;
        if (cu_seqlens[mid] <= row) lo = mid;
        else hi = mid - 1;
    }
    const long long begin = cu_seqlens[lo];
    const long long pos = row - begin;
    const int kv_head = head / (num_heads / num_kv_heads);
    const long long q_stride = static_cast<long long>(num_heads) * head_dim;
    const long long kv_stride = static_cast<long long>(num_kv_heads) * head_dim;

    const A* qrow = q + row * q_stride + static_cast<long long>(head) * head_dim;
    float qv[PER], acc[PER];
#pragma unroll
    for (int i = 0; i < PER; ++i) {
        const int d = lane + 32 * i;
        qv[i] = (d < head_dim) ? lark_ld(qrow + d) * softmax_scale : 0.f;
        acc[i] = 0.f;
    }
    float m = LARK_NEG_INF, l = 0.f;
    for (long long j = 0; j <= pos; ++j) {
        const long long kv_off = (begin + j) * kv_stride + static_cast<long long>(kv_head) * head_dim;
        const A* krow = k + kv_off;
        const A* vrow = v + kv_off;
        float dot = 0.f;
#pragma unroll
        for (int i = 0; i < PER; ++i) {
            const int d = lane + 32 * i;
            if (d < head_dim) dot += qv[i] * lark_ld(krow + d);
        }
        dot = lark_warp_sum(dot);
        const float m_new = fmaxf(m, dot);
        const float corr = expf(m - m_new);  // 0 for the first key (m = −inf)
        const float p = expf(dot - m_new);
        l = l * corr + p;
#pragma unroll
        for (int i = 0; i < PER; ++i) {
            const int d = lane + 32 * i;
            if (d < head_dim) acc[i] = acc[i] * corr + p * lark_ld(vrow + d);
        }
        m = m_new;
    }
    const float inv = (l > 0.f) ? 1.f / l : 0.f;
    A* orow = out + row * q_stride + static_cast<long long>(head) * head_dim;
#pragma unroll
    for (int i = 0; i < PER; ++i) {
        const int d = lane + 32 * i;
        if (d < head_dim) lark_st(orow + d, acc[i] * inv);
    }
}
}  // namespace

extern "C" __global__ void __launch_bounds__(128)
    attention_varlen_generic(const bf16* __restrict__ q, const bf16* __restrict__ k, const bf16* __restrict__ v,
                             bf16* __restrict__ out, const int* __restrict__ cu_seqlens, int num_seqs, int num_heads,
                             int num_kv_heads, int head_dim, float softmax_scale) {
    attention_generic<bf16>(q, k, v, out, cu_seqlens, num_seqs, num_heads, num_kv_heads, head_dim, softmax_scale);
}

// (128, 4): without the occupancy hint ptxas spills 4 bytes on sm_80.
extern "C" __global__ void __launch_bounds__(128, 4)
    attention_varlen_generic_f32(const float* __restrict__ q, const float* __restrict__ k, const float* __restrict__ v,
                                 float* __restrict__ out, const int* __restrict__ cu_seqlens, int num_seqs,
                                 int num_heads, int num_kv_heads, int head_dim, float softmax_scale) {
    attention_generic<float>(q, k, v, out, cu_seqlens, num_seqs, num_heads, num_kv_heads, head_dim, softmax_scale);
}
