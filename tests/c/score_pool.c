/*
 * score_pool: score chats through liblark's C ABI and print one tab-separated row per trajectory.
 *
 *   score_pool MODEL_DIR DEVICE INPUT BUDGET MAX_LEN
 *
 * INPUT has one trajectory per line: "problem_id<TAB>candidate_id<TAB>messages JSON array", problems
 * contiguous. Output rows (stdout):
 *   pid cid skipped truncated n_tokens nll_sum L brier_sum brier_mean rho_hat grape inverse_loss rsr
 *   mean_rank_clip mean_p_gold wrong_conc entropy_mean g_hat weight skip_reason
 * with ĝ and the χ²-B weights at BUDGET from lark_problem_weights. MAX_LEN 0 means the default.
 *
 * Along the way it checks the ABI's contracts (error codes and messages for NULLs, bad sizes and bad JSON;
 * lark_tokenize_chat + lark_score_ids giving the numbers of lark_score_chats; per-token arrays summing to
 * the trajectory totals) and exits 1 on the first violation. Everything it allocates is freed, so it runs
 * clean under valgrind --leak-check=full.
 */
#include "lark.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int failures = 0;

#define CHECK(cond, ...)                                                             \
    do {                                                                             \
        if (!(cond)) {                                                               \
            fprintf(stderr, "score_pool.c:%d: check failed: %s: ", __LINE__, #cond); \
            fprintf(stderr, __VA_ARGS__);                                            \
            fprintf(stderr, " (last error: %s)\n", lark_last_error());               \
            failures++;                                                              \
        }                                                                            \
    } while (0)

/* The call fails with `code` and a message that mentions `needle`. */
#define EXPECT_ERR(call, code, needle)                                                                  \
    do {                                                                                                \
        int rc_ = (call);                                                                               \
        CHECK(rc_ == (code), "%s returned %d, expected %d", #call, rc_, (code));                        \
        CHECK(strstr(lark_last_error(), (needle)) != NULL, "message of %s lacks \"%s\"", #call, needle); \
    } while (0)

static int close_rel(double a, double b, double tol) {
    if (isnan(a) || isnan(b)) return isnan(a) && isnan(b);
    return fabs(a - b) <= tol * (fabs(a) + fabs(b)) + 1e-12;
}

typedef struct {
    long pid, cid;
    char* json;
} record;

/* Read every line of path (getline-free, C11 only). */
static record* read_input(const char* path, size_t* n_out) {
    FILE* f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    fseek(f, 0, SEEK_SET);
    char* text = malloc((size_t)size + 1);
    size_t got = fread(text, 1, (size_t)size, f);
    fclose(f);
    text[got] = 0;
    size_t cap = 16, n = 0;
    record* recs = malloc(cap * sizeof *recs);
    char* line = text;
    while (*line) {
        char* end = strchr(line, '\n');
        if (end) *end = 0;
        if (*line) {
            if (n == cap) recs = realloc(recs, (cap *= 2) * sizeof *recs);
            char* p = line;
            recs[n].pid = strtol(p, &p, 10);
            recs[n].cid = strtol(p + 1, &p, 10);
            recs[n].json = malloc(strlen(p + 1) + 1);
            strcpy(recs[n].json, p + 1);
            n++;
        }
        if (!end) break;
        line = end + 1;
    }
    free(text);
    *n_out = n;
    return recs;
}

/* lark_tokenize_chat + lark_score_ids on one chat must give the numbers of lark_score_chats. */
static void check_ids_path(const lark_model* m, const record* r, const lark_trajectory_stats* want) {
    lark_span span;
    int rc = lark_tokenize_chat(m, r->json, NULL, 0, &span);
    if (want->skipped) {
        CHECK(rc == LARK_OK && span.skipped == 1, "tokenize of a skipped chat: rc %d skipped %d", rc, span.skipped);
        return;
    }
    CHECK(rc == LARK_ERR_BUFFER_TOO_SMALL && span.len > 0, "sizing call: rc %d len %zu", rc, span.len);
    uint32_t* ids = malloc(span.len * sizeof *ids);
    rc = lark_tokenize_chat(m, r->json, ids, span.len, &span);
    CHECK(rc == LARK_OK, "tokenize rc %d", rc);
    CHECK(span.score_to - span.score_from == want->n_tokens, "span %zu..%zu vs n_tokens %llu", span.score_from,
          span.score_to, (unsigned long long)want->n_tokens);
    size_t n = span.score_to - span.score_from;
    lark_token_stats* per = malloc(n * sizeof *per);
    lark_trajectory_stats got;
    EXPECT_ERR(lark_score_ids(m, ids, span.score_to, span.score_from, &got, per, n - 1), LARK_ERR_BUFFER_TOO_SMALL,
               "per_token");
    EXPECT_ERR(lark_score_ids(m, ids, span.score_to, 0, &got, per, n), LARK_ERR_INVALID_ARG, "score_from");
    EXPECT_ERR(lark_score_ids(m, ids, span.score_to, span.score_to, &got, per, n), LARK_ERR_INVALID_ARG,
               "score_from");
    rc = lark_score_ids(m, ids, span.score_to, span.score_from, &got, per, n);
    CHECK(rc == LARK_OK, "score_ids rc %d", rc);
    CHECK(got.skipped == 0 && got.n_tokens == want->n_tokens, "score_ids n_tokens %llu",
          (unsigned long long)got.n_tokens);
    /* Same numbers (on the CPU bit for bit); batches of other sizes may round differently on a GPU. */
    const double tol = 1e-5;
    CHECK(close_rel(got.nll_sum, want->nll_sum, tol), "nll_sum %.17g vs %.17g", got.nll_sum, want->nll_sum);
    CHECK(close_rel(got.brier_sum, want->brier_sum, tol), "brier_sum %.17g vs %.17g", got.brier_sum, want->brier_sum);
    CHECK(close_rel(got.rsr, want->rsr, tol), "rsr %.17g vs %.17g", got.rsr, want->rsr);
    CHECK(close_rel(got.entropy_mean, want->entropy_mean, tol), "entropy_mean %.17g vs %.17g", got.entropy_mean,
          want->entropy_mean);
    /* The per-token arrays add up to this call's totals. */
    double nll = 0, p2 = 0, ent = 0, rank = 0;
    for (size_t t = 0; t < n; t++) {
        nll -= per[t].logprob;
        p2 += per[t].sum_p2;
        ent += per[t].entropy;
        rank += per[t].rank < 100 ? per[t].rank : 100;
        CHECK(per[t].rank >= 1 && per[t].sum_p2 > 0 && per[t].sum_p2 <= 1.0001f && isnan(per[t].topk_brier),
              "token %zu: rank %u sum_p2 %g topk %g", t, per[t].rank, per[t].sum_p2, per[t].topk_brier);
    }
    CHECK(close_rel(nll, got.nll_sum, 1e-12), "Σ −logprob %.17g vs nll_sum %.17g", nll, got.nll_sum);
    CHECK(close_rel(ent / (double)n, got.entropy_mean, 1e-12), "mean entropy %.17g vs %.17g", ent / (double)n,
          got.entropy_mean);
    CHECK(close_rel(rank / (double)n, got.mean_rank_clip, 1e-12), "mean clipped rank %.17g vs %.17g",
          rank / (double)n, got.mean_rank_clip);
    (void)p2;
    free(per);
    free(ids);
}

static void check_argument_errors(const lark_model* m) {
    lark_trajectory_stats st;
    double g[1], w[1];
    const char* bad[1] = {"[{\"role\": \"user\", \"content\": \"hi\"}"};
    memset(&st, 0x5a, sizeof st);
    EXPECT_ERR(lark_score_chats(m, bad, 1, &st), LARK_ERR_INPUT, "messages_json[0]");
    CHECK(st.skipped == 0x5a5a5a5a, "out written on failure");
    const char* no_assistant[1] = {"[{\"role\": \"user\", \"content\": \"hi\"}]"};
    EXPECT_ERR(lark_score_chats(m, no_assistant, 1, &st), LARK_ERR_INPUT, "assistant");
    const char* with_null[1] = {NULL};
    EXPECT_ERR(lark_score_chats(m, with_null, 1, &st), LARK_ERR_NULL_ARG, "messages_json[0]");
    EXPECT_ERR(lark_score_chats(NULL, bad, 1, &st), LARK_ERR_NULL_ARG, "model");
    EXPECT_ERR(lark_score_chats(m, bad, 1, NULL), LARK_ERR_NULL_ARG, "out");
    CHECK(lark_score_chats(m, bad, 0, &st) == LARK_OK && lark_last_error()[0] == 0, "n = 0 is a no-op");
    uint32_t ids[3] = {1, 2, 4000000000u};
    EXPECT_ERR(lark_score_ids(m, ids, 3, 1, &st, NULL, 0), LARK_ERR_INVALID_ARG, "ids[2]");
    EXPECT_ERR(lark_score_ids(m, NULL, 3, 1, &st, NULL, 0), LARK_ERR_NULL_ARG, "ids");
    EXPECT_ERR(lark_problem_weights(&st, 1, 0, LARK_WEIGHT_CHI2, 0, g, w), LARK_ERR_INVALID_ARG, "budget");
    EXPECT_ERR(lark_problem_weights(&st, 1, 1, 42, 0, g, w), LARK_ERR_INVALID_ARG, "weighting");
    EXPECT_ERR(lark_problem_weights(&st, 1, 1, LARK_WEIGHT_SOFTMAX, 0.0, g, w), LARK_ERR_INVALID_ARG, "temperature");
    EXPECT_ERR(lark_problem_weights(NULL, 1, 1, LARK_WEIGHT_CHI2, 0, g, w), LARK_ERR_NULL_ARG, "stats");
    const char* dev = NULL;
    EXPECT_ERR(lark_model_device(m, NULL), LARK_ERR_NULL_ARG, "out");
    CHECK(lark_model_device(m, &dev) == LARK_OK && dev && strncmp(dev, "cpu", 3) == 0, "device %s", dev);
}

int main(int argc, char** argv) {
    if (argc != 6) {
        fprintf(stderr, "usage: %s MODEL_DIR DEVICE INPUT BUDGET MAX_LEN\n", argv[0]);
        return 2;
    }
    const char* version = lark_version();
    CHECK(version && version[0], "version");
    fprintf(stderr, "liblark %s\n", version);

    lark_options opts;
    EXPECT_ERR(lark_options_default(NULL), LARK_ERR_NULL_ARG, "opts");
    CHECK(lark_options_default(&opts) == LARK_OK, "defaults");
    CHECK(opts.max_len == 32768 && opts.span_mode == LARK_SPAN_TURN && opts.brier_topk == 0 && opts.rank_clip == 100,
          "default values");
    opts.max_len = (size_t)strtoull(argv[5], NULL, 10);

    lark_model* m = (lark_model*)&opts; /* must be reset to NULL on failure */
    EXPECT_ERR(lark_model_open(NULL, "cpu", &opts, &m), LARK_ERR_NULL_ARG, "dir");
    CHECK(m == NULL, "*out not reset");
    EXPECT_ERR(lark_model_open(argv[1], "cpu", &opts, NULL), LARK_ERR_NULL_ARG, "out");
    EXPECT_ERR(lark_model_open("/nonexistent/model", "cpu", &opts, &m), LARK_ERR_INPUT, "/nonexistent/model");
    EXPECT_ERR(lark_model_open(argv[1], "tpu", &opts, &m), LARK_ERR_INVALID_ARG, "tpu");
    lark_options bad_opts = opts;
    bad_opts.span_mode = 7;
    EXPECT_ERR(lark_model_open(argv[1], "cpu", &bad_opts, &m), LARK_ERR_INVALID_ARG, "span_mode");
    CHECK(lark_model_free(NULL) == LARK_OK, "free(NULL)");

    int rc = lark_model_open(argv[1], argv[2], &opts, &m);
    if (rc != LARK_OK) {
        fprintf(stderr, "lark_model_open: %d: %s\n", rc, lark_last_error());
        return 1;
    }
    check_argument_errors(m);

    size_t n = 0;
    record* recs = read_input(argv[3], &n);
    if (!recs) {
        fprintf(stderr, "cannot read %s\n", argv[3]);
        lark_model_free(m);
        return 1;
    }
    const char** jsons = malloc(n * sizeof *jsons);
    for (size_t i = 0; i < n; i++) jsons[i] = recs[i].json;
    lark_trajectory_stats* stats = malloc(n * sizeof *stats);
    rc = lark_score_chats(m, jsons, n, stats);
    CHECK(rc == LARK_OK, "score_chats rc %d", rc);
    for (size_t i = 0; rc == LARK_OK && i < n; i++) check_ids_path(m, &recs[i], &stats[i]);

    double* g_hat = malloc(n * sizeof *g_hat);
    double* weights = malloc(n * sizeof *weights);
    size_t budget = (size_t)strtoull(argv[4], NULL, 10);
    for (size_t lo = 0; rc == LARK_OK && lo < n;) {
        size_t hi = lo;
        while (hi < n && recs[hi].pid == recs[lo].pid) hi++;
        int wrc = lark_problem_weights(stats + lo, hi - lo, budget, LARK_WEIGHT_CHI2, 0.0, g_hat + lo, weights + lo);
        CHECK(wrc == LARK_OK, "problem_weights rc %d", wrc);
        double total = 0;
        for (size_t i = lo; i < hi; i++) total += weights[i];
        CHECK(fabs(total - 1.0) < 1e-12, "weights of problem %ld sum to %.17g", recs[lo].pid, total);
        lo = hi;
    }
    for (size_t i = 0; rc == LARK_OK && i < n; i++) {
        const lark_trajectory_stats* s = &stats[i];
        printf("%ld\t%ld\t%d\t%d\t%llu", recs[i].pid, recs[i].cid, s->skipped, s->truncated,
               (unsigned long long)s->n_tokens);
        const double v[] = {s->nll_sum,      s->L,           s->brier_sum,   s->brier_mean, s->rho_hat,
                            s->grape,        s->inverse_loss, s->rsr,        s->mean_rank_clip, s->mean_p_gold,
                            s->wrong_conc,   s->entropy_mean, g_hat[i],      weights[i]};
        for (size_t k = 0; k < sizeof v / sizeof v[0]; k++) printf("\t%.17g", v[k]);
        printf("\t%s\n", s->skip_reason);
    }

    free(weights);
    free(g_hat);
    free(stats);
    free(jsons);
    for (size_t i = 0; i < n; i++) free(recs[i].json);
    free(recs);
    CHECK(lark_model_free(m) == LARK_OK, "free");
    if (failures) {
        fprintf(stderr, "score_pool: %d check(s) failed\n", failures);
        return 1;
    }
    return 0;
}
