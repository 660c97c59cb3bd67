// A host-side emulator for lark's CUDA kernels: compiles kernels/*.cu as plain C++ (g++ -include emu.h) and runs
// every CUDA thread of a block as a fiber (ucontext) on one OS thread, switching only at barriers and warp
// collectives. It exists because the CPU machines have no GPU: it checks the kernels' index arithmetic, masking,
// pipelining order and reductions against fp64 references before the one GPU run.
//
// What it models:
// - __syncthreads: all threads of the block (strict: an error if any thread of the block has already exited).
// - warp collectives (__shfl_xor_sync, __any_sync, ldmatrix, mma.sync m16n8k16): all 32 lanes must arrive; each lane deposits
//   its operands, then computes its own result from everyone's deposits, using the PTX ISA's fragment layouts:
//     A (16x16 bf16, row): reg0 (row g, k 2t,2t+1), reg1 (row g+8, k 2t..), reg2 (row g, k 2t+8..),
//                          reg3 (row g+8, k 2t+8..);     B (16x8, col): reg0 (k 2t,2t+1; n g), reg1 (k 2t+8..; n g)
//     C/D (16x8 f32): c0,c1 (row g, n 2t,2t+1), c2,c3 (row g+8, n 2t,2t+1)          with g = lane/4, t = lane%4
//     ldmatrix .x4: lanes 8j..8j+7 give the row addresses of matrix j; reg j of lane L = row L/4, columns
//                   2(L%4), 2(L%4)+1 of matrix j (.trans: column L/4, rows 2(L%4), 2(L%4)+1).
// - cp.async: the 16 source bytes are read at issue (so an out-of-bounds source faults there), but they land in
//   shared memory only when the issuing thread's cp.async.wait_group retires their commit group, the latest moment
//   the hardware allows. A read of a tile before the wait that covers it therefore sees the previous tile (or the
//   previous block's data) and fails the check; a copy issued into a tile other warps still read lands while they
//   read it. Copies still pending when a thread exits are an error (the kernel left a group in flight).
// - __shared__ becomes `static`: blocks run one after another, so per-block shared memory is one static array.
//   Dynamic shared memory (`lark_dynamic_smem`) is a guarded buffer of exactly the launch's size
//   (launch_dyn), NaN-poisoned before every block, so reading past the requested size faults.
// Out-of-bounds global reads are caught by the test's guarded allocations (a PROT_NONE page after each buffer).
#pragma once

#include <sys/mman.h>
#include <ucontext.h>
#include <unistd.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <functional>
#include <vector>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __shared__ static
#define __align__(n) __attribute__((aligned(n)))
#define __launch_bounds__(...)

struct dim3 {
    unsigned x = 1, y = 1, z = 1;
};
struct float4 {
    float x, y, z, w;
};
struct uint4 {
    unsigned x, y, z, w;
};
inline uint4 make_uint4(unsigned a, unsigned b, unsigned c, unsigned d) { return uint4{a, b, c, d}; }

namespace emu {

[[noreturn]] inline void fail(const char* what) {
    std::fprintf(stderr, "emu: %s\n", what);
    std::abort();
}

struct Fiber {
    ucontext_t ctx;
    std::vector<char> stack;
    bool done = false;
    dim3 tid;
};

struct Barrier {
    unsigned count = 0, gen = 0;
};

// One cp.async: its destination and the 16 bytes read at issue.
struct AsyncCopy {
    void* dst;
    unsigned char bytes[16];
};
// A thread's copies not yet in shared memory: the open (uncommitted) group and the committed groups, oldest first.
struct AsyncQueue {
    std::vector<AsyncCopy> open;
    std::deque<std::vector<AsyncCopy>> committed;
};

struct State {
    std::vector<Fiber> fibers;
    std::vector<AsyncQueue> async;  // per thread
    ucontext_t sched;
    int cur = -1;
    unsigned nthreads = 0, exited = 0;
    unsigned long long progress = 0;  // barrier arrivals and exits, for deadlock detection
    Barrier block_bar;
    std::vector<Barrier> warp_bar;
    std::vector<unsigned> warp_exited;
    std::vector<std::vector<unsigned char>> slots;  // per thread: 64 bytes of deposited operands
    std::function<void()> body;
    dim3 block_idx, block_dim, grid_dim;
    unsigned char* dyn_smem = nullptr;  // the guarded dynamic shared memory of the current launch
    size_t dyn_bytes = 0;
};
inline State& st() {
    static State s;
    return s;
}

inline dim3 thread_idx() { return st().fibers[st().cur].tid; }

inline void yield() {
    State& S = st();
    Fiber& f = S.fibers[S.cur];
    if (swapcontext(&f.ctx, &S.sched) != 0) fail("swapcontext");
}

inline void arrive_and_wait(Barrier& b, unsigned expected) {
    State& S = st();
    ++S.progress;
    const unsigned gen = b.gen;
    if (++b.count == expected) {
        b.count = 0;
        ++b.gen;
        return;
    }
    while (b.gen == gen) yield();
}

inline void syncthreads() {
    State& S = st();
    if (S.exited != 0) fail("__syncthreads reached after some threads of the block exited");
    arrive_and_wait(S.block_bar, S.nthreads);
}

inline int lane() { return static_cast<int>(thread_idx().x & 31u); }
inline int warp() { return static_cast<int>(thread_idx().x >> 5); }

inline void warp_sync() {
    State& S = st();
    const int w = warp();
    if (S.warp_exited[w] != 0) fail("warp collective with exited lanes");
    arrive_and_wait(S.warp_bar[w], 32);
}

inline unsigned char* slot(int l) {
    State& S = st();
    return S.slots[static_cast<size_t>(warp()) * 32 + l].data();
}

inline void trampoline() {
    State& S = st();
    S.body();
    const AsyncQueue& q = S.async[S.cur];
    if (!q.open.empty() || !q.committed.empty()) fail("a thread exited with cp.async copies still in flight");
    S.fibers[S.cur].done = true;
    ++S.exited;
    ++S.progress;
    const int w = static_cast<int>(S.fibers[S.cur].tid.x >> 5);
    ++S.warp_exited[w];
    // returning resumes uc_link = the scheduler
}

inline void run_block(unsigned bx, dim3 block) {
    State& S = st();
    const unsigned n = block.x;
    if (n == 0 || n % 32 != 0 || block.y != 1 || block.z != 1) fail("emulator supports 1-D blocks of whole warps");
    S.nthreads = n;
    S.exited = 0;
    S.block_bar = Barrier{};
    S.warp_bar.assign(n / 32, Barrier{});
    S.warp_exited.assign(n / 32, 0);
    S.slots.assign(n, std::vector<unsigned char>(64));
    S.async.assign(n, AsyncQueue{});
    if (S.dyn_smem != nullptr) std::memset(S.dyn_smem, 0xff, S.dyn_bytes);  // NaN in bf16 and fp32
    S.block_idx = dim3{bx, 0, 0};
    S.block_dim = block;
    S.fibers.resize(n);
    for (unsigned i = 0; i < n; ++i) {
        Fiber& f = S.fibers[i];
        f.done = false;
        f.tid = dim3{i, 0, 0};
        if (f.stack.empty()) f.stack.resize(256 * 1024);
        if (getcontext(&f.ctx) != 0) fail("getcontext");
        f.ctx.uc_stack.ss_sp = f.stack.data();
        f.ctx.uc_stack.ss_size = f.stack.size();
        f.ctx.uc_link = &S.sched;
        makecontext(&f.ctx, trampoline, 0);
    }
    unsigned finished = 0;
    while (finished < n) {
        const unsigned long long before = S.progress;
        for (unsigned i = 0; i < n; ++i) {
            if (S.fibers[i].done) continue;
            S.cur = static_cast<int>(i);
            if (swapcontext(&S.sched, &S.fibers[i].ctx) != 0) fail("swapcontext");
            if (S.fibers[i].done) ++finished;
        }
        if (finished < n && S.progress == before) fail("deadlock: every live thread waits at a barrier");
    }
    S.cur = -1;
}

// A buffer of `bytes` (a multiple of 16) that ends exactly at a PROT_NONE page. Never freed (test processes).
inline unsigned char* guarded_bytes(size_t bytes) {
    const size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
    const size_t pages = (bytes + page - 1) / page + 1;
    void* base = mmap(nullptr, pages * page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (base == MAP_FAILED) fail("mmap");
    char* guard = static_cast<char*>(base) + (pages - 1) * page;
    if (mprotect(guard, page, PROT_NONE) != 0) fail("mprotect");
    return reinterpret_cast<unsigned char*>(guard - bytes);
}

// Runs grid.x blocks one after another with `dyn_bytes` of dynamic shared memory per block. `body` is the kernel
// call (a lambda capturing the arguments).
inline void launch_dyn(dim3 grid, dim3 block, size_t dyn_bytes, std::function<void()> body) {
    State& S = st();
    if (dyn_bytes % 16 != 0) fail("dynamic shared memory size must be a multiple of 16");
    S.dyn_bytes = dyn_bytes;
    S.dyn_smem = dyn_bytes > 0 ? guarded_bytes(dyn_bytes) : nullptr;
    S.body = std::move(body);
    S.grid_dim = grid;
    if (grid.y != 1 || grid.z != 1) fail("emulator supports 1-D grids");
    for (unsigned b = 0; b < grid.x; ++b) run_block(b, block);
    S.dyn_smem = nullptr;
    S.dyn_bytes = 0;
}
inline void launch(dim3 grid, dim3 block, std::function<void()> body) { launch_dyn(grid, block, 0, std::move(body)); }

template <class T>
inline T shfl_xor(T v, int o) {
    static_assert(sizeof(T) <= 64, "slot size");
    std::memcpy(slot(lane()), &v, sizeof(T));
    warp_sync();
    T r;
    std::memcpy(&r, slot(lane() ^ (o & 31)), sizeof(T));
    warp_sync();
    return r;
}

inline float bf16_lo(uint32_t w) {
    uint32_t u = w << 16;
    float f;
    std::memcpy(&f, &u, 4);
    return f;
}
inline float bf16_hi(uint32_t w) {
    uint32_t u = w & 0xffff0000u;
    float f;
    std::memcpy(&f, &u, 4);
    return f;
}

}  // namespace emu

#define threadIdx (emu::thread_idx())
#define blockIdx (emu::st().block_idx)
#define blockDim (emu::st().block_dim)
#define gridDim (emu::st().grid_dim)

inline void __syncthreads() { emu::syncthreads(); }
template <class T>
inline T __shfl_xor_sync(unsigned mask, T v, int o) {
    if (mask != 0xffffffffu) emu::fail("only full-warp shuffles are emulated");
    return emu::shfl_xor(v, o);
}
inline int __any_sync(unsigned mask, int pred) {
    if (mask != 0xffffffffu) emu::fail("only full-warp votes are emulated");
    const int mine = pred != 0;
    std::memcpy(emu::slot(emu::lane()), &mine, sizeof(int));
    emu::warp_sync();
    int any = 0;
    for (int l = 0; l < 32; ++l) {
        int x;
        std::memcpy(&x, emu::slot(l), sizeof(int));
        any |= x;
    }
    emu::warp_sync();
    return any;
}
template <class T>
inline T __ldg(const T* p) {
    if (reinterpret_cast<uintptr_t>(p) % alignof(T) != 0) emu::fail("misaligned __ldg");
    return *p;
}
inline unsigned atomicAdd(unsigned* p, unsigned v) {  // fibers never interleave between barriers
    const unsigned old = *p;
    *p = old + v;
    return old;
}
inline float __int_as_float(int i) {
    float f;
    std::memcpy(&f, &i, 4);
    return f;
}
inline float __uint_as_float(unsigned i) {
    float f;
    std::memcpy(&f, &i, 4);
    return f;
}
inline unsigned __float_as_uint(float f) {
    unsigned i;
    std::memcpy(&i, &f, 4);
    return i;
}
inline double __longlong_as_double(long long i) {
    double d;
    std::memcpy(&d, &i, 8);
    return d;
}

// ----- the PTX helpers of kernels/attention.cu -----

inline void cp_async16(void* smem, const void* gmem) {
    if (reinterpret_cast<uintptr_t>(smem) % 16 || reinterpret_cast<uintptr_t>(gmem) % 16)
        emu::fail("misaligned cp.async");
    emu::AsyncCopy c;
    c.dst = smem;
    std::memcpy(c.bytes, gmem, 16);
    emu::st().async[emu::st().cur].open.push_back(c);
}
inline void cp_async_commit() {
    emu::AsyncQueue& q = emu::st().async[emu::st().cur];
    q.committed.push_back(std::move(q.open));
    q.open.clear();
}
// Retire (land) every committed group but the newest N.
template <int N>
inline void cp_async_wait() {
    emu::AsyncQueue& q = emu::st().async[emu::st().cur];
    while (q.committed.size() > static_cast<size_t>(N)) {
        for (const emu::AsyncCopy& c : q.committed.front()) std::memcpy(c.dst, c.bytes, 16);
        q.committed.pop_front();
    }
}
// The block's dynamic shared memory and its size (launch_dyn).
inline unsigned char* lark_dynamic_smem() {
    if (emu::st().dyn_smem == nullptr) emu::fail("dynamic shared memory used by a launch that requested none");
    return emu::st().dyn_smem;
}
inline unsigned lark_dynamic_smem_bytes() { return static_cast<unsigned>(emu::st().dyn_bytes); }
inline void __trap() { emu::fail("__trap()"); }

inline void ldmatrix_impl(uint32_t& r0, uint32_t& r1, uint32_t& r2, uint32_t& r3, const void* p, bool trans) {
    if (reinterpret_cast<uintptr_t>(p) % 16) emu::fail("misaligned ldmatrix row");
    std::memcpy(emu::slot(emu::lane()), &p, sizeof(p));
    emu::warp_sync();
    const int L = emu::lane();
    uint32_t r[4];
    for (int j = 0; j < 4; ++j) {
        auto row_ptr = [&](int i) {
            const void* q;
            std::memcpy(&q, emu::slot(8 * j + i), sizeof(q));
            return static_cast<const uint16_t*>(q);
        };
        uint16_t lo, hi;
        if (!trans) {
            const uint16_t* row = row_ptr(L / 4);
            lo = row[2 * (L % 4)];
            hi = row[2 * (L % 4) + 1];
        } else {
            lo = row_ptr(2 * (L % 4))[L / 4];
            hi = row_ptr(2 * (L % 4) + 1)[L / 4];
        }
        r[j] = static_cast<uint32_t>(lo) | (static_cast<uint32_t>(hi) << 16);
    }
    emu::warp_sync();
    r0 = r[0], r1 = r[1], r2 = r[2], r3 = r[3];
}
inline void ldmatrix_x4(uint32_t& r0, uint32_t& r1, uint32_t& r2, uint32_t& r3, const void* p) {
    ldmatrix_impl(r0, r1, r2, r3, p, false);
}
inline void ldmatrix_x4_trans(uint32_t& r0, uint32_t& r1, uint32_t& r2, uint32_t& r3, const void* p) {
    ldmatrix_impl(r0, r1, r2, r3, p, true);
}

inline void mma_16816(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
    struct Dep {
        uint32_t a[4], b[2];
        float c[4];
    } mine{{a[0], a[1], a[2], a[3]}, {b0, b1}, {d[0], d[1], d[2], d[3]}};
    std::memcpy(emu::slot(emu::lane()), &mine, sizeof(Dep));
    emu::warp_sync();
    float A[16][16], B[16][8], C[16][8];
    for (int l = 0; l < 32; ++l) {
        Dep x;
        std::memcpy(&x, emu::slot(l), sizeof(Dep));
        const int g = l / 4, t = l % 4;
        A[g][2 * t] = emu::bf16_lo(x.a[0]), A[g][2 * t + 1] = emu::bf16_hi(x.a[0]);
        A[g + 8][2 * t] = emu::bf16_lo(x.a[1]), A[g + 8][2 * t + 1] = emu::bf16_hi(x.a[1]);
        A[g][2 * t + 8] = emu::bf16_lo(x.a[2]), A[g][2 * t + 9] = emu::bf16_hi(x.a[2]);
        A[g + 8][2 * t + 8] = emu::bf16_lo(x.a[3]), A[g + 8][2 * t + 9] = emu::bf16_hi(x.a[3]);
        B[2 * t][g] = emu::bf16_lo(x.b[0]), B[2 * t + 1][g] = emu::bf16_hi(x.b[0]);
        B[2 * t + 8][g] = emu::bf16_lo(x.b[1]), B[2 * t + 9][g] = emu::bf16_hi(x.b[1]);
        C[g][2 * t] = x.c[0], C[g][2 * t + 1] = x.c[1];
        C[g + 8][2 * t] = x.c[2], C[g + 8][2 * t + 1] = x.c[3];
    }
    emu::warp_sync();
    const int L = emu::lane(), g = L / 4, t = L % 4;
    const int rows[4] = {g, g, g + 8, g + 8}, cols[4] = {2 * t, 2 * t + 1, 2 * t, 2 * t + 1};
    for (int i = 0; i < 4; ++i) {
        double acc = C[rows[i]][cols[i]];
        for (int kk = 0; kk < 16; ++kk) acc += static_cast<double>(A[rows[i]][kk]) * B[kk][cols[i]];
        d[i] = static_cast<float>(acc);
    }
}
