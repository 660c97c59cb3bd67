/*
 * threads: liblark's C ABI under concurrency. Every result a thread gets must be the serial one, bit for bit.
 *
 *   threads MODEL_DIR DEVICE INPUT MAX_LEN N_THREADS ROUNDS [race]
 *
 * INPUT is score_pool's ("problem_id<TAB>candidate_id<TAB>messages JSON array" per line). The program opens one
 * handle and computes, serially on the main thread, the reference for every call a worker will make:
 *   - lark_tokenize_chat of each chat (span and ids);
 *   - lark_score_ids of each chat's ids with per-token statistics (trajectory and per-token structs);
 *   - lark_score_chats of each chat alone;
 *   - lark_score_chats of all chats at once, in each worker's own order (batching depends on the order, so each
 *     permutation gets its own reference and the check stays exact on a GPU too).
 * Then, twice with N_THREADS pthreads started together at a barrier:
 *   (a) every thread on the one shared handle (scoring calls on it are serialised by its lock; tokenisation
 *       takes none, so it really runs concurrently with the other threads' scoring);
 *   (b) every thread on a handle of its own, opened and freed concurrently by the threads themselves.
 * Each thread first checks that lark_last_error is per thread (even threads make a failing call with a message
 * of their own, odd threads a successful one; after a barrier each sees exactly its own message or ""), then
 * makes every call above ROUNDS times, in an order of its own, comparing each output with the reference with
 * memcmp (the structs have no padding, so NaNs and skip reasons are compared too).
 *
 * Prints one summary line on stdout and exits 0 when every check held; 1 (with the first failures on stderr)
 * otherwise. Everything is freed, so it also runs clean under valgrind's memcheck, helgrind and drd.
 *
 * With `race` it does something else: one thread keeps rewriting the first chat's ids (with the same values)
 * while N_THREADS - 1 others score them, with no synchronisation: a real data race between the C program and
 * lark_score_ids, which reads the ids. It exists to show that a race detector run with tests/c/helgrind.supp
 * still reports a race that involves lark's own code.
 */
#define _POSIX_C_SOURCE 200809L
#include "lark.h"

#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_THREADS 64

/* Failures are counted across threads; only the first few are printed. */
static pthread_mutex_t fail_lock = PTHREAD_MUTEX_INITIALIZER;
static int failures = 0;

#define CHECK(cond, ...)                                                                        \
    do {                                                                                        \
        if (!(cond)) {                                                                          \
            pthread_mutex_lock(&fail_lock);                                                     \
            if (failures++ < 20) {                                                              \
                fprintf(stderr, "threads.c:%d: check failed: %s: ", __LINE__, #cond);           \
                fprintf(stderr, __VA_ARGS__);                                                   \
                fprintf(stderr, " (last error: %s)\n", lark_last_error());                      \
            }                                                                                   \
            pthread_mutex_unlock(&fail_lock);                                                   \
        }                                                                                       \
    } while (0)

/* The serial reference for one chat. */
typedef struct {
    const char* json;
    lark_span span;
    uint32_t* ids;               /* span.len ids */
    lark_trajectory_stats by_ids; /* lark_score_ids (valid when !span.skipped) */
    lark_token_stats* per_token; /* span.score_to - span.score_from entries */
    lark_trajectory_stats alone; /* lark_score_chats of this chat alone */
} reference;

typedef struct {
    size_t n;
    reference* refs;
    size_t n_threads;
    size_t** order;                   /* order[t]: thread t's permutation of 0..n */
    const char*** order_json;         /* the chats in that order */
    lark_trajectory_stats** batch;    /* batch[t][k]: lark_score_chats(order_json[t])[k] */
    const char* model_dir;
    const char* device;
    lark_options opts;
    lark_model* shared;               /* NULL in case (b): each thread opens its own */
    size_t rounds;
    pthread_barrier_t start;          /* all threads start together */
    pthread_barrier_t errors_set;     /* every thread has made its error-isolation call */
} job;

typedef struct {
    job* job;
    size_t t;
} worker_arg;

/* One field-by-field account of a trajectory mismatch (memcmp says only that they differ). */
static void report_stats(const char* what, size_t t, size_t i, const lark_trajectory_stats* got,
                         const lark_trajectory_stats* want) {
    CHECK(0, "thread %zu, chat %zu, %s: got skipped %d n_tokens %llu nll_sum %a L %a brier_sum %a, serial %d %llu %a %a %a",
          t, i, what, got->skipped, (unsigned long long)got->n_tokens, got->nll_sum, got->L, got->brier_sum,
          want->skipped, (unsigned long long)want->n_tokens, want->nll_sum, want->L, want->brier_sum);
}

static void same_stats(const char* what, size_t t, size_t i, const lark_trajectory_stats* got,
                       const lark_trajectory_stats* want) {
    if (memcmp(got, want, sizeof *got) != 0) report_stats(what, t, i, got, want);
}

/* Serial reference for chat i on handle m. Returns 0 on success. */
static int make_reference(lark_model* m, reference* r) {
    int rc = lark_tokenize_chat(m, r->json, NULL, 0, &r->span);
    if (r->span.skipped) {
        CHECK(rc == LARK_OK, "sizing a skipped chat: rc %d", rc);
        return rc != LARK_OK;
    }
    CHECK(rc == LARK_ERR_BUFFER_TOO_SMALL, "sizing call: rc %d", rc);
    r->ids = malloc(r->span.len * sizeof *r->ids);
    rc = lark_tokenize_chat(m, r->json, r->ids, r->span.len, &r->span);
    CHECK(rc == LARK_OK, "tokenize: rc %d", rc);
    size_t n = r->span.score_to - r->span.score_from;
    r->per_token = malloc(n * sizeof *r->per_token);
    rc |= lark_score_ids(m, r->ids, r->span.score_to, r->span.score_from, &r->by_ids, r->per_token, n);
    CHECK(rc == LARK_OK, "score_ids: rc %d", rc);
    return rc != LARK_OK;
}

/* Thread t's order: a rotation by t, reversed for odd t. */
static void permutation(size_t n, size_t t, size_t* out) {
    for (size_t k = 0; k < n; k++) out[k] = (k + t) % n;
    if (t % 2)
        for (size_t k = 0; k < n / 2; k++) {
            size_t x = out[k];
            out[k] = out[n - 1 - k];
            out[n - 1 - k] = x;
        }
}

/* Every call of the reference on handle m, in thread t's order, `rounds` times. */
static void score_everything(const job* j, lark_model* m, size_t t) {
    size_t n = j->n;
    lark_trajectory_stats* batch = malloc(n * sizeof *batch);
    for (size_t round = 0; round < j->rounds; round++) {
        for (size_t k = 0; k < n; k++) {
            size_t i = j->order[t][k];
            const reference* r = &j->refs[i];
            lark_span span;
            memset(&span, 0xa5, sizeof span);
            int rc = lark_tokenize_chat(m, r->json, NULL, 0, &span);
            CHECK(rc == (r->span.skipped ? LARK_OK : LARK_ERR_BUFFER_TOO_SMALL), "thread %zu chat %zu: sizing rc %d", t,
                  i, rc);
            CHECK(memcmp(&span, &r->span, sizeof span) == 0, "thread %zu chat %zu: span %zu %zu..%zu vs %zu %zu..%zu",
                  t, i, span.len, span.score_from, span.score_to, r->span.len, r->span.score_from, r->span.score_to);
            if (!r->span.skipped) {
                uint32_t* ids = calloc(r->span.len, sizeof *ids);
                rc = lark_tokenize_chat(m, r->json, ids, r->span.len, &span);
                CHECK(rc == LARK_OK && memcmp(ids, r->ids, r->span.len * sizeof *ids) == 0,
                      "thread %zu chat %zu: tokenize rc %d or other ids", t, i, rc);
                size_t np = r->span.score_to - r->span.score_from;
                lark_token_stats* per = calloc(np, sizeof *per);
                lark_trajectory_stats got;
                rc = lark_score_ids(m, r->ids, r->span.score_to, r->span.score_from, &got, per, np);
                CHECK(rc == LARK_OK, "thread %zu chat %zu: score_ids rc %d", t, i, rc);
                if (rc == LARK_OK) {
                    same_stats("lark_score_ids", t, i, &got, &r->by_ids);
                    for (size_t p = 0; p < np; p++)
                        if (memcmp(&per[p], &r->per_token[p], sizeof per[p]) != 0) {
                            CHECK(0, "thread %zu chat %zu token %zu: logprob %a sum_p2 %a rank %u vs serial %a %a %u", t,
                                  i, p, per[p].logprob, per[p].sum_p2, per[p].rank, r->per_token[p].logprob,
                                  r->per_token[p].sum_p2, r->per_token[p].rank);
                            break;
                        }
                }
                free(per);
                free(ids);
            }
            lark_trajectory_stats alone;
            rc = lark_score_chats(m, &r->json, 1, &alone);
            CHECK(rc == LARK_OK, "thread %zu chat %zu: score_chats rc %d", t, i, rc);
            if (rc == LARK_OK) same_stats("lark_score_chats alone", t, i, &alone, &r->alone);
        }
        int rc = lark_score_chats(m, j->order_json[t], n, batch);
        CHECK(rc == LARK_OK, "thread %zu: score_chats of all rc %d", t, rc);
        for (size_t k = 0; rc == LARK_OK && k < n; k++)
            same_stats("lark_score_chats of all", t, j->order[t][k], &batch[k], &j->batch[t][k]);
    }
    free(batch);
}

static void* worker(void* p) {
    const worker_arg* a = p;
    job* j = a->job;
    size_t t = a->t;
    lark_model* m = j->shared;
    pthread_barrier_wait(&j->start);
    if (!m) {
        int rc = lark_model_open(j->model_dir, j->device, &j->opts, &m);
        CHECK(rc == LARK_OK && m != NULL, "thread %zu: lark_model_open rc %d", t, rc);
    }

    /* lark_last_error is per thread: even threads fail with a message naming their own bad id, odd ones succeed;
     * once every thread has made its call, each must still see exactly its own outcome. */
    uint32_t bad[3] = {1, 2, 4000000000u + (uint32_t)t};
    lark_trajectory_stats st;
    lark_options o;
    int rc = t % 2 == 0 ? lark_score_ids(m, bad, 3, 1, &st, NULL, 0) : lark_options_default(&o);
    CHECK(rc == (t % 2 == 0 ? LARK_ERR_INVALID_ARG : LARK_OK), "thread %zu: isolation call rc %d", t, rc);
    pthread_barrier_wait(&j->errors_set);
    char want[128] = "";
    if (t % 2 == 0) snprintf(want, sizeof want, "ids[2] = %u is outside the vocabulary", bad[2]);
    const char* got = lark_last_error();
    CHECK(t % 2 == 0 ? strstr(got, want) != NULL : got[0] == 0, "thread %zu: lark_last_error \"%s\", expected \"%s\"", t,
          got, want);

    if (m) score_everything(j, m, t);
    CHECK(lark_last_error()[0] == 0, "thread %zu: the last call succeeded but lark_last_error is \"%s\"", t,
          lark_last_error());
    if (!j->shared) CHECK(lark_model_free(m) == LARK_OK, "thread %zu: lark_model_free", t);
    return NULL;
}

/* Run n_threads workers on job j (shared handle or not). */
static void run_threads(job* j) {
    pthread_t tid[MAX_THREADS];
    worker_arg args[MAX_THREADS];
    pthread_barrier_init(&j->start, NULL, (unsigned)j->n_threads);
    pthread_barrier_init(&j->errors_set, NULL, (unsigned)j->n_threads);
    for (size_t t = 0; t < j->n_threads; t++) {
        args[t].job = j;
        args[t].t = t;
        int e = pthread_create(&tid[t], NULL, worker, &args[t]);
        if (e) {
            fprintf(stderr, "pthread_create: %s\n", strerror(e));
            exit(1);
        }
    }
    for (size_t t = 0; t < j->n_threads; t++) pthread_join(tid[t], NULL);
    pthread_barrier_destroy(&j->start);
    pthread_barrier_destroy(&j->errors_set);
}

/* INPUT's messages arrays, one per non-empty line (the third tab-separated field). */
static char** read_chats(const char* path, size_t* n_out) {
    FILE* f = fopen(path, "rb");
    if (!f) return NULL;
    size_t cap = 16, n = 0, len = 0, size = 1 << 16;
    char** chats = malloc(cap * sizeof *chats);
    char* line = malloc(size);
    int c;
    do {
        c = fgetc(f);
        if (c != '\n' && c != EOF) {
            if (len + 1 == size) line = realloc(line, size *= 2);
            line[len++] = (char)c;
            continue;
        }
        line[len] = 0;
        const char* tab = strchr(line, '\t');
        tab = tab ? strchr(tab + 1, '\t') : NULL;
        if (len && tab) {
            if (n == cap) chats = realloc(chats, (cap *= 2) * sizeof *chats);
            chats[n] = malloc(strlen(tab + 1) + 1);
            strcpy(chats[n++], tab + 1);
        }
        len = 0;
    } while (c != EOF);
    free(line);
    fclose(f);
    *n_out = n;
    return chats;
}

/* The deliberate race of `race` mode: one thread rewrites the ids (same values) while the others score them;
 * lark_score_ids reads ids (checking them against the vocabulary, then scoring) with no synchronisation between
 * the writer and the readers. */
typedef struct {
    lark_model* m;
    uint32_t* ids;
    size_t len, score_from;
} race_job;

static void* race_writer(void* p) {
    race_job* r = p;
    for (int k = 0; k < 1000; k++)
        for (size_t i = 0; i < r->len; i++) ((volatile uint32_t*)r->ids)[i] = r->ids[i];
    return NULL;
}

static void* race_reader(void* p) {
    const race_job* r = p;
    lark_trajectory_stats out;
    int rc = lark_score_ids(r->m, r->ids, r->len, r->score_from, &out, NULL, 0);
    CHECK(rc == LARK_OK, "race: score_ids rc %d", rc);
    return NULL;
}

static int race(lark_model* m, const char* json, size_t n_threads) {
    lark_span span;
    int rc = lark_tokenize_chat(m, json, NULL, 0, &span);
    if (span.skipped || rc != LARK_ERR_BUFFER_TOO_SMALL) {
        fprintf(stderr, "race: the first chat must be scored (rc %d)\n", rc);
        return 1;
    }
    uint32_t* ids = malloc(span.len * sizeof *ids);
    lark_tokenize_chat(m, json, ids, span.len, &span);
    race_job r = {m, ids, span.score_to, span.score_from};
    pthread_t tid[MAX_THREADS];
    for (size_t t = 0; t < n_threads; t++) pthread_create(&tid[t], NULL, t == 0 ? race_writer : race_reader, &r);
    for (size_t t = 0; t < n_threads; t++) pthread_join(tid[t], NULL);
    printf("race: one thread rewrote the ids while %zu other(s) scored them, unsynchronised\n", n_threads - 1);
    free(ids);
    return failures ? 1 : 0;
}

int main(int argc, char** argv) {
    if (argc != 7 && !(argc == 8 && strcmp(argv[7], "race") == 0)) {
        fprintf(stderr, "usage: %s MODEL_DIR DEVICE INPUT MAX_LEN N_THREADS ROUNDS [race]\n", argv[0]);
        return 2;
    }
    job j;
    memset(&j, 0, sizeof j);
    j.model_dir = argv[1];
    j.device = argv[2];
    j.n_threads = (size_t)strtoull(argv[5], NULL, 10);
    j.rounds = (size_t)strtoull(argv[6], NULL, 10);
    if (j.n_threads < 2 || j.n_threads > MAX_THREADS || j.rounds < 1) {
        fprintf(stderr, "N_THREADS must be 2..%d and ROUNDS at least 1\n", MAX_THREADS);
        return 2;
    }
    lark_options_default(&j.opts);
    j.opts.max_len = (size_t)strtoull(argv[4], NULL, 10);
    char** chats = read_chats(argv[3], &j.n);
    if (!chats || j.n == 0) {
        fprintf(stderr, "no chats in %s\n", argv[3]);
        return 1;
    }
    lark_model* m = NULL;
    if (lark_model_open(j.model_dir, j.device, &j.opts, &m) != LARK_OK) {
        fprintf(stderr, "lark_model_open: %s\n", lark_last_error());
        return 1;
    }
    if (argc == 8) {
        int rc = race(m, chats[0], j.n_threads);
        for (size_t i = 0; i < j.n; i++) free(chats[i]);
        free(chats);
        lark_model_free(m);
        return rc;
    }

    /* The serial reference, on the main thread. */
    j.refs = calloc(j.n, sizeof *j.refs);
    size_t skipped = 0;
    for (size_t i = 0; i < j.n; i++) {
        j.refs[i].json = chats[i];
        if (make_reference(m, &j.refs[i])) goto done;
        skipped += (size_t)j.refs[i].span.skipped;
        int rc = lark_score_chats(m, &j.refs[i].json, 1, &j.refs[i].alone);
        CHECK(rc == LARK_OK, "serial score_chats of chat %zu: rc %d", i, rc);
        if (rc != LARK_OK) goto done;
    }
    j.order = calloc(j.n_threads, sizeof *j.order);
    j.order_json = calloc(j.n_threads, sizeof *j.order_json);
    j.batch = calloc(j.n_threads, sizeof *j.batch);
    for (size_t t = 0; t < j.n_threads; t++) {
        j.order[t] = malloc(j.n * sizeof *j.order[t]);
        j.order_json[t] = malloc(j.n * sizeof *j.order_json[t]);
        j.batch[t] = malloc(j.n * sizeof *j.batch[t]);
        permutation(j.n, t, j.order[t]);
        for (size_t k = 0; k < j.n; k++) j.order_json[t][k] = chats[j.order[t][k]];
        int rc = lark_score_chats(m, j.order_json[t], j.n, j.batch[t]);
        CHECK(rc == LARK_OK, "serial score_chats of all, order %zu: rc %d", t, rc);
        if (rc != LARK_OK) goto done;
    }

    j.shared = m; /* (a) one handle, shared */
    run_threads(&j);
    int failed_shared = failures;
    j.shared = NULL; /* (b) a handle per thread */
    run_threads(&j);
    if (!failures)
        printf("threads: %zu threads x %zu chats (%zu skipped) x %zu rounds, on one shared handle and on %zu handles: "
               "every result equals the serial one bit for bit; lark_last_error is per thread\n",
               j.n_threads, j.n, skipped, j.rounds, j.n_threads);
    else
        fprintf(stderr, "threads: %d check(s) failed (%d with the shared handle)\n", failures, failed_shared);

done:
    for (size_t t = 0; j.order && t < j.n_threads; t++) {
        free(j.order[t]);
        free(j.order_json[t]);
        free(j.batch[t]);
    }
    free(j.order);
    free(j.order_json);
    free(j.batch);
    for (size_t i = 0; i < j.n; i++) {
        free(j.refs[i].ids);
        free(j.refs[i].per_token);
        free(chats[i]);
    }
    free(j.refs);
    free(chats);
    CHECK(lark_model_free(m) == LARK_OK, "free");
    return failures ? 1 : 0;
}
