/*
 * lark.h: the C ABI of lark (liblark.so / liblark.a), which scores teacher reasoning trajectories with a
 * student language model and weights them with LARK's χ²-B rule, in-process.
 *
 * Hand-written. tests/c_abi.rs fails when this file drifts from the Rust side (src/ffi): every function's
 * type, every struct's size and field offsets, and every constant are checked by compiling a generated C
 * file against this header.
 *
 * Conventions
 * - Every function returns an int status: LARK_OK (0) or one of LARK_ERR_* (lark_version and
 *   lark_last_error, which return strings, are the exceptions). On failure, lark_last_error() describes it.
 * - Errors, not crashes: a NULL where a pointer is required gives LARK_ERR_NULL_ARG, an out-of-range size or
 *   enum value LARK_ERR_INVALID_ARG, and no panic crosses the boundary (an internal error gives
 *   LARK_ERR_PANIC). Output memory is written only when a call succeeds, unless a function says otherwise.
 * - Ownership: the library owns lark_model handles (lark_model_open / lark_model_free) and the strings it
 *   returns; the caller owns every other buffer and struct it passes, and they are only used during the call.
 * - Threads: functions may be called from any thread. A lark_model may be shared between threads; calls that
 *   score on the same handle are serialised by a lock inside it (use one handle per thread to run in
 *   parallel). lark_model_free must not race with any other call on that handle. CPU scoring itself uses a
 *   process-wide thread pool with one thread per core.
 * - Numbers: a quantity that cannot be computed (a skipped trajectory, a degenerate problem) is NaN, never a
 *   made-up value.
 */
#ifndef LARK_H
#define LARK_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#ifndef LARK_API
#define LARK_API
#endif

/* ---- Status codes ---------------------------------------------------------------------------------- */

#define LARK_OK 0
/* A required pointer argument was NULL. */
#define LARK_ERR_NULL_ARG 1
/* An argument is out of range: a size, an enum value, a string that is not UTF-8. */
#define LARK_ERR_INVALID_ARG 2
/* A caller buffer is too small; the message gives the size needed. */
#define LARK_ERR_BUFFER_TOO_SMALL 3
/* Bad input data: a model directory, a chat's JSON, a file that cannot be read. */
#define LARK_ERR_INPUT 4
/* Something the engine does not support: an architecture, a chat template for LARK_SPAN_CONTENT, ... */
#define LARK_ERR_UNSUPPORTED 5
/* The backend (CPU or CUDA) failed or is unavailable (e.g. device "cuda" without a usable GPU). */
#define LARK_ERR_BACKEND 6
/* An internal error (a bug): a panic was caught at the boundary. A model handle that reports it should be freed. */
#define LARK_ERR_PANIC 7
/* A job stopped before it finished because its progress callback asked it to (lark_score_pool): the chunks
 * finished so far are journaled in its output directory; the same job with "resume": true continues. */
#define LARK_ERR_INTERRUPTED 8

/* ---- Options ----------------------------------------------------------------------------------------- */

/* Scored span (lark_options.span_mode), as the CLI's --span. */
#define LARK_SPAN_TURN 0    /* the whole assistant turn (LARK authors; default) */
#define LARK_SPAN_CONTENT 1 /* the assistant content only (RSR authors; ChatML or Llama 3 templates) */

/* Weighting rules (lark_problem_weights), as `lark select --weighting`. */
#define LARK_WEIGHT_CHI2 0         /* closed-form χ²-B: q_k ∝ ĝ_k − ĝ_(B+1) over the top B (LARK) */
#define LARK_WEIGHT_UNIFORM 1      /* top B, 1/B each */
#define LARK_WEIGHT_PROPORTIONAL 2 /* top B, q_k ∝ max(ĝ_k, 0) */
#define LARK_WEIGHT_SOFTMAX 3      /* top B, q_k ∝ exp((ĝ_k − ĝ_1)/T) */

/* Bytes of lark_trajectory_stats.skip_reason, the terminating NUL included. */
#define LARK_SKIP_REASON_LEN 128

/* What changes the numbers. Start from lark_options_default() and change fields. */
typedef struct lark_options {
    size_t max_len;      /* truncate token sequences from the right at this length; 0: 32768 (--max-len) */
    int32_t span_mode;   /* LARK_SPAN_TURN or LARK_SPAN_CONTENT (--span) */
    uint32_t brier_topk; /* 0: exact Brier, Σπ² over the full vocabulary; K >= 1: the LARK authors'
                            top-K renormalised Brier (--brier topk:K) */
    uint32_t rank_clip;  /* RSR rank clip r_max; 0: 100 (--rank-clip) */
    uint32_t reserved;   /* must be 0 */
} lark_options;

/* ---- Results ----------------------------------------------------------------------------------------- */

/* One trajectory: the fields of a scores.jsonl row that the model pass yields (ĝ depends on the whole
 * problem: see lark_problem_weights). A skipped trajectory (nothing to score, e.g. the prompt fills max_len)
 * has skipped = 1, its reason in skip_reason, n_tokens = 0 and NaN in every double. */
typedef struct lark_trajectory_stats {
    int32_t skipped;     /* 1: not scored (see skip_reason), 0: scored */
    int32_t truncated;   /* 1: the sequence was cut at max_len */
    uint32_t brier_topk; /* the Brier mode the numbers were computed under (0: exact, K: top-K) */
    uint32_t reserved;
    uint64_t n_tokens;   /* scored tokens */
    double nll_sum;      /* Σ_t −log π_t(y_t) */
    double L;            /* ℓ: mean NLL */
    double brier_sum;    /* Σ_t Brier (exact or top-K) */
    double brier_mean;
    double rho_hat;      /* ρ̂ = brier_sum / nll_sum (top-K mode: the authors' guarded Brier/L) */
    double grape;        /* −ℓ */
    double inverse_loss; /* 1/ℓ */
    double rsr;          /* Σ_t min(rank_t, r_max) / max(Σ_t NLL, 1e-12) */
    double mean_rank_clip;
    double mean_p_gold;
    double wrong_conc;   /* mean over tokens of Σ_{v≠y} π(v)² */
    double entropy_mean;
    char skip_reason[LARK_SKIP_REASON_LEN]; /* NUL-terminated; "" unless skipped */
} lark_trajectory_stats;

/* One scored position. */
typedef struct lark_token_stats {
    float logprob;    /* log π(y) */
    float sum_p2;     /* Σ_v π(v)² */
    float entropy;    /* H(π) */
    uint32_t rank;    /* 1 + #{v : z_v > z_y} */
    float lse;        /* log Σ_v exp z_v */
    float topk_brier; /* top-K Brier when opened with brier_topk = K, else NaN */
} lark_token_stats;

/* A tokenised chat and its scored span (lark_tokenize_chat). */
typedef struct lark_span {
    size_t len;        /* ids in the (truncated) sequence; 0 when skipped */
    size_t score_from; /* positions score_from..score_to-1 are scored */
    size_t score_to;
    int32_t skipped;   /* 1: nothing to score under the options (len = score_from = score_to = 0) */
    int32_t truncated; /* 1: cut at max_len */
} lark_span;

/* Positions from..to-1: one scored assistant turn (lark_tokenize_chat_turns). */
typedef struct lark_range {
    size_t from;
    size_t to;
} lark_range;

/* How far a lark_score_pool job is. Counts include work resumed from a journal; the two totals are estimates
 * while the pool is still being tokenised (totals_exact = 0). */
typedef struct lark_progress {
    size_t trajectories_done;
    size_t trajectories_total;
    size_t problems_done;
    size_t problems_total;
    size_t tokens_done;
    size_t tokens_total;
    int32_t totals_exact;
    int32_t reserved;
    double tokens_per_s; /* tokens through the model in this call (not resumed) per second */
    double elapsed_s;
} lark_progress;

/* Called on the calling thread after every batch of a lark_score_pool job; return 0 to go on, anything else
 * to stop the job cleanly (LARK_ERR_INTERRUPTED). */
typedef int (*lark_progress_fn)(const lark_progress* progress, void* user);

/* A student model on a device with its tokenizer and chat template. Opaque. */
typedef struct lark_model lark_model;

/* ---- Functions --------------------------------------------------------------------------------------- */

/* The library version, e.g. "0.1.0". Static storage: never free it. Any thread. */
LARK_API const char* lark_version(void);

/* The message of this thread's last failed call, "" if the last call succeeded. Never NULL. Owned by the
 * library; valid until the next lark call on the same thread (copy it to keep it). Thread-local. */
LARK_API const char* lark_last_error(void);

/* Write the default options (max_len 32768, LARK_SPAN_TURN, exact Brier, rank clip 100) to *opts.
 * opts: caller-owned, required. Any thread. */
LARK_API int lark_options_default(lark_options* opts);

/* Open the model directory dir (config.json, *.safetensors, tokenizer.json, chat template) on device
 * "auto" (CUDA when usable, else CPU), "cpu", "cuda" or "cuda:N"; device NULL means "auto".
 * opts NULL means the defaults. On success *out is a new handle the caller owns and must release with
 * lark_model_free; on failure *out is NULL. dir, device and opts are only read during the call.
 * Any thread; handles are independent. */
LARK_API int lark_model_open(const char* dir, const char* device, const lark_options* opts, lark_model** out);

/* Release a handle and everything it holds. NULL is fine (LARK_OK). The handle must not be used afterwards,
 * and no other call on it may be in flight. */
LARK_API int lark_model_free(lark_model* model);

/* *out = a description of the device the model runs on, e.g. "cpu (16 threads)". The string is owned by
 * the handle and valid until lark_model_free. Thread-safe. */
LARK_API int lark_model_device(const lark_model* model, const char** out);

/* Tokenise one chat and find the span the model's options score, without running the model.
 * messages_json: a JSON array of {"role", "content"} objects, [system?, user..., assistant] (as the
 * "messages" field of a pool record). On success *span_out describes the sequence and ids[0..span_out->len)
 * holds its token ids; pass ids, span_out->score_to and span_out->score_from to lark_score_ids to get the
 * numbers of lark_score_chats. A chat with nothing to score gives LARK_OK with span_out->skipped = 1.
 * If cap < span_out->len the call returns LARK_ERR_BUFFER_TOO_SMALL with *span_out filled (and ids
 * untouched), so the caller can allocate and call again. ids may be NULL when cap is 0. A chat with several
 * scored assistant turns gives LARK_ERR_UNSUPPORTED (one span cannot describe them): use
 * lark_tokenize_chat_turns. All buffers caller-owned. Thread-safe (no lock taken). */
LARK_API int lark_tokenize_chat(const lark_model* model, const char* messages_json, uint32_t* ids, size_t cap,
                                lark_span* span_out);

/* lark_tokenize_chat for a chat with any number of assistant turns (tool calls and results between them):
 * each assistant turn is scored with the whole conversation before it as context, as lark_score_chats and
 * `lark score --turns all` do. *span_out as in lark_tokenize_chat, its score_from..score_to covering every
 * turn (the first turn's start to the last turn's end); turns[0..*n_turns) the scored range of each turn, in
 * order, disjoint. lark_score_ids(ids, span.score_to, span.score_from, ...) returns per-token statistics of
 * the whole covering range; those at positions inside the turns are the ones lark_score_chats sums (the
 * positions between turns are context: user and tool messages, headers). With one turn, turns[0] equals the
 * span. If cap < span_out->len or turns_cap < *n_turns the call returns LARK_ERR_BUFFER_TOO_SMALL with
 * *span_out and *n_turns filled and nothing else written, so one sizing call (cap = turns_cap = 0, ids and
 * turns NULL) sizes both. A chat with nothing to score: LARK_OK, span_out->skipped = 1, *n_turns = 0.
 * All buffers caller-owned. Thread-safe (no lock taken). */
LARK_API int lark_tokenize_chat_turns(const lark_model* model, const char* messages_json, uint32_t* ids,
                                      size_t cap, lark_span* span_out, lark_range* turns, size_t turns_cap,
                                      size_t* n_turns);

/* Score n chats: messages_json[i] is one JSON messages array (see lark_tokenize_chat), out[i] receives its
 * statistics. Chats are batched as `lark score` batches a pool, so the numbers are the same. A chat with
 * nothing to score gets out[i].skipped = 1 (not an error); invalid JSON or an invalid chat fails the whole
 * call with LARK_ERR_INPUT naming messages_json[i], and out is left untouched. n = 0 is a no-op.
 * out: caller-owned, room for n structs. Thread-safe; calls on one handle run one at a time. */
LARK_API int lark_score_chats(const lark_model* model, const char* const* messages_json, size_t n,
                              lark_trajectory_stats* out);

/* Score pre-tokenised ids: positions score_from..len-1 are scored (the statistics at position t are the
 * model's distribution after ids[0..t) with gold token ids[t]); 1 <= score_from < len, every id below the
 * model's vocabulary size. Sequences longer than the options' max_len are cut there (out->truncated = 1;
 * skipped if nothing is left to score). *out receives the statistics; if per_token is not NULL it must have
 * room for per_token_cap >= (scored positions) entries and receives one entry per scored position
 * (else LARK_ERR_BUFFER_TOO_SMALL, nothing written). All buffers caller-owned.
 * Thread-safe; calls on one handle run one at a time. */
LARK_API int lark_score_ids(const lark_model* model, const uint32_t* ids, size_t len, size_t score_from,
                            lark_trajectory_stats* out, lark_token_stats* per_token, size_t per_token_cap);

/* Run a whole `lark score` job: job_json is a JSON object of its options, named as the long flags with _ or -
 * ({"model": "DIR", "pool": "pool.jsonl" or ["a.parquet", "b.parquet"], "out": "DIR", "device": "cpu",
 * "resume": true, ...}; the CLI's defaults for the rest, and its checks and messages). It writes the same
 * files (scores.jsonl, scores.json, run.json last; rejects.jsonl, candidates.jsonl where they apply) with the
 * same bytes, journals finished chunks and resumes them. progress (NULL: none) is called with user after every
 * batch; a non-zero return stops the job (LARK_ERR_INTERRUPTED, nothing final written, resumable). Notes
 * ("scoring N trajectories ... on cpu") go to stderr. Blocks until the job ends. Any thread; one job per
 * output directory at a time. */
LARK_API int lark_score_pool(const char* job_json, lark_progress_fn progress, void* user);

/* One problem's LARK scores and weights. stats[0..k) are the problem's candidates (from lark_score_chats or
 * lark_score_ids, all under one Brier mode). g_hat_out[i] receives ĝ_i (paper Eq. 7 over the scored
 * candidates; NaN for skipped ones, and for all when Σℓ is 0), weights_out[i] the weight of candidate i
 * under the rule `weighting` with budget B >= 1 (0 for those not selected; the selected sum to 1; when no
 * candidate has a finite ĝ, all get 1/k). temperature is used by LARK_WEIGHT_SOFTMAX only (finite, > 0).
 * These are the numbers of `lark run` / `lark select --by g_hat`. All buffers caller-owned, k entries each.
 * Pure function: any thread. */
LARK_API int lark_problem_weights(const lark_trajectory_stats* stats, size_t k, size_t budget, int weighting,
                                  double temperature, double* g_hat_out, double* weights_out);

#ifdef __cplusplus
}
#endif

#endif /* LARK_H */
