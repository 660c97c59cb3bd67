// Host-side checks of kernels/attention.cu and kernels/vocab_stats.cu under the warp emulator (emu.h), against
// fp64 references written here from the definitions (the same formulas as src/stats/mod.rs and the CPU backend).
// Build and run: kernels/emu/run.sh. Exits non-zero on the first failure.

#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cinttypes>
#include <random>
#include <string>
#include <utility>

#include "../attention.cu"
#include "../vocab_stats.cu"

static int g_failures = 0;
#define CHECK(cond, ...)                                       \
    do {                                                       \
        if (!(cond)) {                                         \
            std::fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__); \
            std::fprintf(stderr, __VA_ARGS__);                 \
            std::fprintf(stderr, "\n");                        \
            ++g_failures;                                      \
        }                                                      \
    } while (0)

// A buffer that ends exactly at a PROT_NONE page (rounded to 16 bytes), so reading past it faults.
template <class T>
static T* guarded(size_t n) {
    const size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
    const size_t bytes = ((n * sizeof(T) + 15) / 16) * 16;
    const size_t pages = (bytes + page - 1) / page + 1;
    void* base = mmap(nullptr, pages * page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (base == MAP_FAILED) emu::fail("mmap");
    char* guard = static_cast<char*>(base) + (pages - 1) * page;
    if (mprotect(guard, page, PROT_NONE) != 0) emu::fail("mprotect");
    return reinterpret_cast<T*>(guard - bytes);
}

// ------------------------------------------------------------------------------------------------------------------
// attention
// ------------------------------------------------------------------------------------------------------------------

struct AttnCase {
    std::vector<int> lens;
    int H, Hkv, D;
    bool generic;
    float qscale;
    int br = 64;  // query tile of the tensor-core kernel: 64 or 128 rows
    int mt = 1;   // 16-row m-tiles per warp: 1, or 2 (the _w32 kernels: 32 rows per warp, dynamic shared memory)
};

static bf16 to_bf16(float f) { return __float2bfloat16(f); }
static float from_bf16(bf16 h) { return __bfloat162float(h); }

// The tile table the Rust side builds (src/backend/cuda/attention.rs, TileTable::build): every br-row query tile
// of every non-empty sequence, largest start first (ties in sequence order).
static void build_tiles(const std::vector<int>& cu, int br, std::vector<int>& tseq, std::vector<int>& tstart) {
    std::vector<std::pair<int, int>> t;
    for (size_t s = 0; s + 1 < cu.size(); ++s)
        for (int st = 0; st < cu[s + 1] - cu[s]; st += br) t.push_back({static_cast<int>(s), st});
    std::stable_sort(t.begin(), t.end(), [](auto& a, auto& b) { return a.second > b.second; });
    tseq.clear();
    tstart.clear();
    for (auto& p : t) tseq.push_back(p.first), tstart.push_back(p.second);
}

// cu_seqlens of a pack: S + 1 prefix sums of the sequence lengths.
static std::vector<int> prefix_sums(const std::vector<int>& lens) {
    std::vector<int> cu(lens.size() + 1, 0);
    for (size_t s = 0; s < lens.size(); ++s) cu[s + 1] = cu[s] + lens[s];
    return cu;
}

static double as_double(bf16 h) { return from_bf16(h); }
static double as_double(float f) { return f; }

struct AttnError {
    double rel, maxerr;  // relative L2 error and largest absolute error over the written elements
    size_t unwritten;    // output elements still NaN (the poison)
};

// Causal grouped-query attention in fp64 on the kernel's own inputs (E = bf16 or float, as the kernel read them),
// compared with its output `out`.
template <class E>
static AttnError attention_error(const E* q, const E* k, const E* v, const E* out, const std::vector<int>& cu, int H,
                                 int Hkv, int D, float scale) {
    double err2 = 0, ref2 = 0, maxerr = 0;
    size_t unwritten = 0;
    const int group = H / Hkv;
    std::vector<double> sc, acc(D);
    for (size_t s = 0; s + 1 < cu.size(); ++s) {
        for (int i = 0; i < cu[s + 1] - cu[s]; ++i) {
            const int row = cu[s] + i;
            for (int h = 0; h < H; ++h) {
                const int kh = h / group;
                const E* qr = q + (static_cast<size_t>(row) * H + h) * D;
                sc.assign(i + 1, 0.0);
                double m = -INFINITY;
                for (int j = 0; j <= i; ++j) {
                    const E* kr = k + (static_cast<size_t>(cu[s] + j) * Hkv + kh) * D;
                    double d = 0;
                    for (int x = 0; x < D; ++x) d += as_double(qr[x]) * as_double(kr[x]);
                    sc[j] = d * scale;
                    m = std::max(m, sc[j]);
                }
                double l = 0;
                std::fill(acc.begin(), acc.end(), 0.0);
                for (int j = 0; j <= i; ++j) {
                    const double p = std::exp(sc[j] - m);
                    l += p;
                    const E* vr = v + (static_cast<size_t>(cu[s] + j) * Hkv + kh) * D;
                    for (int x = 0; x < D; ++x) acc[x] += p * as_double(vr[x]);
                }
                const E* orow = out + (static_cast<size_t>(row) * H + h) * D;
                for (int x = 0; x < D; ++x) {
                    const double ref = acc[x] / l;
                    const double got = as_double(orow[x]);
                    if (!std::isfinite(got)) {
                        ++unwritten;
                        continue;
                    }
                    err2 += (got - ref) * (got - ref);
                    ref2 += ref * ref;
                    maxerr = std::max(maxerr, std::fabs(got - ref));
                }
            }
        }
    }
    return AttnError{std::sqrt(err2 / std::max(ref2, 1e-300)), maxerr, unwritten};
}

static void run_attention_case(const AttnCase& c, std::mt19937& rng) {
    const int S = static_cast<int>(c.lens.size());
    const std::vector<int> cu = prefix_sums(c.lens);
    const int T = cu[S];
    const size_t nq = static_cast<size_t>(T) * c.H * c.D, nkv = static_cast<size_t>(T) * c.Hkv * c.D;
    bf16* q = guarded<bf16>(nq);
    bf16* k = guarded<bf16>(nkv);
    bf16* v = guarded<bf16>(nkv);
    bf16* out = guarded<bf16>(nq);
    int* d_cu = guarded<int>(S + 1);
    std::normal_distribution<float> nd(0.f, 1.f);
    for (size_t i = 0; i < nq; ++i) q[i] = to_bf16(nd(rng) * c.qscale);
    for (size_t i = 0; i < nkv; ++i) k[i] = to_bf16(nd(rng));
    for (size_t i = 0; i < nkv; ++i) v[i] = to_bf16(nd(rng));
    for (size_t i = 0; i < nq; ++i) out[i].__x = 0xffffu;  // NaN poison: every element must be written
    std::copy(cu.begin(), cu.end(), d_cu);
    const float scale = 1.f / std::sqrt(static_cast<float>(c.D));

    if (c.generic) {
        const long long warps = static_cast<long long>(T) * c.H;
        const unsigned blocks = static_cast<unsigned>((warps * 32 + 127) / 128);
        emu::launch(dim3{blocks, 1, 1}, dim3{128, 1, 1}, [&] {
            attention_varlen_generic(q, k, v, out, d_cu, S, c.H, c.Hkv, c.D, scale);
        });
    } else {
        std::vector<int> tseq, tstart;
        build_tiles(cu, c.br, tseq, tstart);
        const int nt = static_cast<int>(tseq.size());
        int* d_tiles = guarded<int>(2 * static_cast<size_t>(nt));
        std::copy(tseq.begin(), tseq.end(), d_tiles);
        std::copy(tstart.begin(), tstart.end(), d_tiles + nt);
        const unsigned blocks = static_cast<unsigned>(nt * c.H);
        const unsigned threads = static_cast<unsigned>(2 * c.br / c.mt);
        // The _w32 kernels' dynamic shared memory, exactly what the Rust wrapper passes
        // (AttentionKernel::dynamic_smem_bytes); the kernel traps if it is less than its layout needs.
        const size_t dyn = c.mt == 1 ? 0 : (c.D == 64 ? attn_dynamic_smem_bytes<64, 128, 2>()
                                                      : attn_dynamic_smem_bytes<128, 128, 2>());
        emu::launch_dyn(dim3{blocks, 1, 1}, dim3{threads, 1, 1}, dyn, [&] {
            if (c.mt == 2 && c.D == 64 && c.br == 128)
                attention_varlen_bf16_hd64_br128_w32(q, k, v, out, d_cu, S, d_tiles, d_tiles + nt, nt, c.H, c.Hkv,
                                                     scale);
            else if (c.mt == 2 && c.D == 128 && c.br == 128)
                attention_varlen_bf16_hd128_br128_w32(q, k, v, out, d_cu, S, d_tiles, d_tiles + nt, nt, c.H, c.Hkv,
                                                      scale);
            else if (c.mt != 1)
                emu::fail("32-row warps only with 128-row query tiles");
            else if (c.D == 64 && c.br == 64)
                attention_varlen_bf16_hd64(q, k, v, out, d_cu, S, d_tiles, d_tiles + nt, nt, c.H, c.Hkv, scale);
            else if (c.D == 128 && c.br == 64)
                attention_varlen_bf16_hd128(q, k, v, out, d_cu, S, d_tiles, d_tiles + nt, nt, c.H, c.Hkv, scale);
            else if (c.D == 64 && c.br == 128)
                attention_varlen_bf16_hd64_br128(q, k, v, out, d_cu, S, d_tiles, d_tiles + nt, nt, c.H, c.Hkv, scale);
            else if (c.D == 128 && c.br == 128)
                attention_varlen_bf16_hd128_br128(q, k, v, out, d_cu, S, d_tiles, d_tiles + nt, nt, c.H, c.Hkv, scale);
            else
                emu::fail("tensor-core path only for head_dim 64/128, query tiles 64/128");
        });
    }

    const AttnError e = attention_error(q, k, v, out, cu, c.H, c.Hkv, c.D, scale);
    std::string lens;
    for (size_t i = 0; i < c.lens.size() && i < 8; ++i) lens += std::to_string(c.lens[i]) + " ";
    if (c.lens.size() > 8) lens += "... (" + std::to_string(c.lens.size()) + " seqs)";
    std::printf("attention %-8s D=%-3d H=%d Hkv=%d qscale=%.1f T=%-5d lens [%s]: rel %.2e, max |err| %.2e, unwritten %zu\n",
                c.generic ? "generic" : (c.mt == 2 ? "tc-w32" : (c.br == 128 ? "tc-br128" : "tensor")), c.D, c.H, c.Hkv, c.qscale, T, lens.c_str(), e.rel, e.maxerr, e.unwritten);
    CHECK(e.unwritten == 0, "attention: %zu output elements not written", e.unwritten);
    CHECK(e.rel < 1e-2, "attention: relative error %.3e", e.rel);
    CHECK(e.maxerr < 3e-2, "attention: max abs error %.3e", e.maxerr);
}

// ------------------------------------------------------------------------------------------------------------------
// vocabulary statistics
// ------------------------------------------------------------------------------------------------------------------

struct RefStats {
    double lse, logprob, sum_p2, entropy;
    unsigned rank;
};

// src/stats/mod.rs `vocab_stats_row`, in C++ (f64 online pass), except that −inf logits are skipped (the Rust
// reference turns them into NaN entropy; the kernel documents that they contribute nothing).
static RefStats ref_stats(const float* z, int V, int gold) {
    double m = -INFINITY, s = 0, s2 = 0, e = 0;
    unsigned greater = 0;
    const float zg = z[gold];
    for (int i = 0; i < V; ++i) {
        greater += z[i] > zg;
        const double x0 = z[i];
        if (z[i] == -INFINITY) continue;
        if (x0 > m) {
            if (m == -INFINITY) {
                m = x0, s = 1, s2 = 1, e = 0;
                continue;
            }
            const double d = x0 - m, r = std::exp(-d);
            e = r * (e - d * s);
            s *= r;
            s2 *= r * r;
            m = x0;
        }
        const double x = x0 - m, p = std::exp(x);
        s += p, s2 += p * p, e += p * x;
    }
    const double ln_s = std::log(s), lse = m + ln_s;
    return RefStats{lse, zg - lse, s2 / (s * s), ln_s - e / s, 1 + greater};
}

// src/stats/mod.rs `topk_brier`: the K largest by (value desc, index asc), softmax over them.
static double ref_topk(const float* z, int V, int gold, int K) {
    K = std::max(1, std::min(K, V));
    std::vector<int> idx(V);
    for (int i = 0; i < V; ++i) idx[i] = i;
    std::stable_sort(idx.begin(), idx.end(), [&](int a, int b) { return z[a] > z[b]; });
    idx.resize(K);
    double m = -INFINITY;
    for (int i : idx) m = std::max(m, static_cast<double>(z[i]));
    double s = 0;
    for (int i : idx) s += std::exp(z[i] - m);
    double sp2 = 0, pg = 0;
    for (int i : idx) {
        const double p = std::exp(z[i] - m) / s;
        sp2 += p * p;
        if (i == gold) pg = p;
    }
    return sp2 - 2 * pg + 1;
}

enum class Gen { Normal, Huge, Tiny, Ties, Peaked, NegInf, Ascending };
static const char* gen_name(Gen g) {
    switch (g) {
        case Gen::Normal: return "normal";
        case Gen::Huge: return "huge";
        case Gen::Tiny: return "tiny";
        case Gen::Ties: return "ties";
        case Gen::Peaked: return "peaked";
        case Gen::NegInf: return "-inf";
        case Gen::Ascending: return "ascending";
    }
    return "?";
}

static bool close_rel(double got, double ref, double rel, double abs_floor) {
    if (std::isnan(got) || std::isnan(ref)) return std::isnan(got) && std::isnan(ref);
    return std::fabs(got - ref) <= rel * std::fabs(ref) + abs_floor;
}

static void run_vocab_case(int V, int pad, int base_off, Gen gen, std::mt19937& rng, const std::vector<int>& ks) {
    const int rows = 5;
    const long long stride = V + pad;
    float* buf = guarded<float>(static_cast<size_t>(rows) * stride + base_off);
    float* logits = buf + base_off;
    int* gold = guarded<int>(rows);
    std::normal_distribution<float> nd(0.f, 1.f);
    std::uniform_int_distribution<int> ui(0, V - 1);
    for (int r = 0; r < rows; ++r) {
        float* z = logits + r * stride;
        for (int i = 0; i < V; ++i) {
            float x = nd(rng);
            switch (gen) {
                case Gen::Normal: x *= 3.f; break;
                case Gen::Huge: x = x * 30.f + (r % 2 ? 1e4f : -1e4f); break;
                case Gen::Tiny: x *= 1e-3f; break;
                case Gen::Ties: x = std::round(x * 2.f); break;
                case Gen::Peaked: x = x * 2.f; break;
                case Gen::NegInf: x = (i % 3 == 1) ? -INFINITY : x * 3.f; break;
                case Gen::Ascending: x = static_cast<float>(i) * 1e-3f; break;
            }
            z[i] = x;
        }
        for (int i = V; i < stride; ++i) z[i] = 1e30f;  // padding must never be read as logits
        int g = ui(rng);
        if (gen == Gen::Peaked) z[ui(rng)] = 40.f;
        if (gen == Gen::Ties && r == 0) {  // gold at the row maximum, tied with others
            float mx = -INFINITY;
            for (int i = 0; i < V; ++i) mx = std::max(mx, z[i]);
            for (int i = 0; i < V; ++i)
                if (z[i] == mx) g = i;
        }
        if (gen == Gen::NegInf && z[g] == -INFINITY) g = (g + 1) % V;
        if (gen == Gen::NegInf && z[g] == -INFINITY) g = (g + 1) % V;
        gold[r] = g;
    }
    if (V > 3) gold[rows - 1] = -1;  // an invalid id: NaN stats, rank 0

    float *lse = guarded<float>(rows), *lp = guarded<float>(rows), *sp2 = guarded<float>(rows),
          *ent = guarded<float>(rows), *tb = guarded<float>(rows);
    unsigned* rank = guarded<unsigned>(rows);
    for (int r = 0; r < rows; ++r) lse[r] = lp[r] = sp2[r] = ent[r] = tb[r] = -12345.f, rank[r] = 0xdeadbeefu;
    emu::launch(dim3{static_cast<unsigned>(rows), 1, 1}, dim3{VS_THREADS, 1, 1}, [&] {
        vocab_stats_f32(logits, gold, rows, V, stride, lse, lp, sp2, ent, rank);
    });
    double worst = 0;
    for (int r = 0; r < rows; ++r) {
        if (gold[r] < 0) {
            CHECK(std::isnan(lp[r]) && std::isnan(sp2[r]) && std::isnan(ent[r]) && rank[r] == 0,
                  "invalid gold: expected NaN / rank 0");
            continue;
        }
        const RefStats e = ref_stats(logits + r * stride, V, gold[r]);
        const bool ok = close_rel(lse[r], e.lse, 1e-6, 1e-6) && close_rel(lp[r], e.logprob, 1e-6, 1e-6) &&
                        close_rel(sp2[r], e.sum_p2, 1e-5, 1e-12) && close_rel(ent[r], e.entropy, 1e-5, 1e-7) &&
                        rank[r] == e.rank;
        worst = std::max({worst, std::fabs(lse[r] - e.lse) / std::max(1.0, std::fabs(e.lse)),
                          std::fabs(sp2[r] - e.sum_p2) / std::max(1e-30, e.sum_p2),
                          std::fabs(ent[r] - e.entropy) / std::max(1e-2, std::fabs(e.entropy))});
        CHECK(ok, "stats V=%d pad=%d off=%d %s row %d: lse %.9g/%.9g lp %.9g/%.9g sp2 %.9g/%.9g ent %.9g/%.9g rank %u/%u",
              V, pad, base_off, gen_name(gen), r, lse[r], e.lse, lp[r], e.logprob, sp2[r], e.sum_p2, ent[r],
              e.entropy, rank[r], e.rank);
    }
    double worst_tb = 0;
    for (int K : ks) {
        for (int r = 0; r < rows; ++r) tb[r] = -12345.f;
        emu::launch(dim3{static_cast<unsigned>(rows), 1, 1}, dim3{VS_THREADS, 1, 1},
                    [&] { vocab_topk_brier_f32(logits, gold, rows, V, stride, K, tb); });
        for (int r = 0; r < rows; ++r) {
            if (gold[r] < 0) {
                CHECK(std::isnan(tb[r]), "invalid gold: expected NaN top-K Brier");
                continue;
            }
            const double e = ref_topk(logits + r * stride, V, gold[r], K);
            worst_tb = std::max(worst_tb, std::fabs(tb[r] - e));
            CHECK(close_rel(tb[r], e, 1e-6, 1e-6), "topk V=%d pad=%d %s K=%d row %d: %.9g vs %.9g", V, pad,
                  gen_name(gen), K, r, tb[r], e);
        }
    }
    std::printf("vocab V=%-6d pad=%d off=%d %-9s: worst rel %.2e, worst top-K |err| %.2e\n", V, pad, base_off,
                gen_name(gen), worst, worst_tb);
}

// The fp32 generic kernel (`--precision fp32`): fp32 inputs, fp64 reference; the bound is fp32 rounding.
static void run_attention_f32_case(const std::vector<int>& lens, int H, int Hkv, int D, std::mt19937& rng) {
    const int S = static_cast<int>(lens.size());
    const std::vector<int> cu = prefix_sums(lens);
    const int T = cu[S];
    const size_t nq = static_cast<size_t>(T) * H * D, nkv = static_cast<size_t>(T) * Hkv * D;
    float* q = guarded<float>(nq);
    float* k = guarded<float>(nkv);
    float* v = guarded<float>(nkv);
    float* out = guarded<float>(nq);
    int* d_cu = guarded<int>(S + 1);
    std::normal_distribution<float> nd(0.f, 1.f);
    for (size_t i = 0; i < nq; ++i) q[i] = nd(rng) * 3.f;
    for (size_t i = 0; i < nkv; ++i) k[i] = nd(rng);
    for (size_t i = 0; i < nkv; ++i) v[i] = nd(rng);
    for (size_t i = 0; i < nq; ++i) out[i] = NAN;
    std::copy(cu.begin(), cu.end(), d_cu);
    const float scale = 1.f / std::sqrt(static_cast<float>(D));
    const unsigned blocks = static_cast<unsigned>((static_cast<long long>(T) * H * 32 + 127) / 128);
    emu::launch(dim3{blocks, 1, 1}, dim3{128, 1, 1},
                [&] { attention_varlen_generic_f32(q, k, v, out, d_cu, S, H, Hkv, D, scale); });
    const AttnError e = attention_error(q, k, v, out, cu, H, Hkv, D, scale);
    std::printf("attention generic_f32 D=%-3d H=%d Hkv=%d T=%d: rel %.2e, unwritten %zu\n", D, H, Hkv, T, e.rel, e.unwritten);
    CHECK(e.unwritten == 0, "attention f32: %zu output elements not written", e.unwritten);
    CHECK(e.rel < 2e-6, "attention f32: relative error %.3e", e.rel);
}

int main(int argc, char** argv) {
    bool quick = false, attention = true, vocab = true;
    for (int i = 1; i < argc; ++i) {
        const std::string a = argv[i];
        if (a == "--quick") quick = true;
        else if (a == "--attention") vocab = false;
        else if (a == "--vocab") attention = false;
        else {
            std::fprintf(stderr, "usage: test_kernels [--quick] [--attention | --vocab]\n");
            return 2;
        }
    }
    std::mt19937 rng(1234);

    // Attention: 1-token sequences, exact tile multiples, ragged tails, many short + one long, GQA groups 1/2/3.
    std::vector<AttnCase> ac = {
        {{1}, 2, 1, 64, false, 1.f},
        {{1, 64, 65, 3, 130}, 4, 2, 128, false, 3.f},
        {{200, 1, 64}, 3, 1, 64, false, 4.f},
        {{129, 7}, 2, 2, 128, false, 1.f},
        {{1, 5, 66}, 4, 2, 40, true, 3.f},
        {{70, 1}, 2, 1, 256, true, 2.f},
        {{1, 9, 65}, 2, 1, 128, true, 1.f},
        {{1, 64, 65, 3, 130, 128, 129, 200}, 4, 2, 64, false, 3.f, 128},
        {{129, 7, 1, 255}, 2, 2, 128, false, 1.f, 128},
        {{1, 64, 65, 3, 130, 128, 129, 200}, 4, 2, 64, false, 3.f, 128, 2},
        {{129, 7, 1, 255, 32, 33}, 3, 1, 128, false, 1.f, 128, 2},
    };
    if (!quick) {
        std::vector<int> many(24, 0);
        for (int i = 0; i < 24; ++i) many[i] = 1 + (i * 7) % 23;
        many.push_back(700);
        ac.push_back({many, 2, 1, 64, false, 3.f});
        ac.push_back({{300, 2, 257}, 2, 1, 128, false, 5.f});
        ac.push_back({many, 2, 1, 64, false, 3.f, 128, 2});
        ac.push_back({{300, 2, 257, 96}, 2, 1, 128, false, 5.f, 128, 2});
    }
    if (attention)
        for (const auto& c : ac) run_attention_case(c, rng);
    if (attention) {
        run_attention_f32_case({1, 5, 66}, 4, 2, 40, rng);
        run_attention_f32_case({70, 1}, 2, 1, 128, rng);
    }

    // Vocabulary statistics: sizes around the float4 width and the block size, unaligned rows, odd strides.
    const std::vector<int> ks = {1, 2, 3, 50, 1024, 100000};
    const std::vector<int> vs = quick ? std::vector<int>{1, 3, 7, 33, 1030, 5003}
                                      : std::vector<int>{1, 2, 3, 4, 5, 7, 8, 33, 255, 1030, 5003, 32003};
    for (int V : vs) {
        if (!vocab) break;
        for (int pad : {0, 1, 3}) {
            for (Gen g : {Gen::Normal, Gen::Huge, Gen::Tiny, Gen::Ties, Gen::Peaked, Gen::NegInf, Gen::Ascending}) {
                if (pad != 0 && g != Gen::Normal && g != Gen::Ties) continue;
                run_vocab_case(V, pad, (pad == 3) ? 1 : 0, g, rng, ks);
            }
        }
    }
    if (g_failures) {
        std::printf("%d FAILURES\n", g_failures);
        return 1;
    }
    std::printf("all emulated kernel checks passed\n");
    return 0;
}
