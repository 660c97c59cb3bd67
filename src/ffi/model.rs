//! The model handle and the scoring entry points: `lark_model_open/free/device`, `lark_tokenize_chat`,
//! `lark_score_chats`, `lark_score_ids`. Scoring follows `run::job::score_pool` step for step (same span
//! rules, same length-packed batches, same per-trajectory sums), so the numbers are those of `lark score`.

use super::status::{
    c_str, guard, non_null, non_null_mut, FfiError, FfiResult, LARK_ERR_BUFFER_TOO_SMALL, LARK_ERR_UNSUPPORTED,
};
use super::types::{
    LarkOptions, LarkRange, LarkSpan, LarkTokenStats, LarkTrajectoryStats, LARK_SPAN_CONTENT, LARK_SPAN_TURN,
};
use crate::backend::{open_backend, Backend, DeviceChoice, SeqRequest};
use crate::error::LarkError;
use crate::model::Model;
use crate::run::schedule::pack_by_length;
use crate::score::BrierMode;
use crate::stats::{StatsOptions, TokenStats, TrajectoryStats};
use crate::text::{parse_messages, Prepared, SpanMode, TextPipeline, Trajectory, Turns};
use std::ffi::{c_char, c_int, CString};
use std::sync::Mutex;

/// The settings a handle scores under (from `lark_options`).
#[derive(Debug, Clone, Copy)]
struct Settings {
    span: SpanMode,
    max_len: usize,
    brier: BrierMode,
    rank_clip: u32,
}

/// `lark_model`: a student model on a backend with its text pipeline. Scoring needs the backend mutably, so
/// it sits behind a mutex: calls on one handle from several threads are safe and run one at a time.
pub struct LarkModel {
    text: TextPipeline,
    backend: Mutex<Box<dyn Backend>>,
    device: CString,
    vocab_size: usize,
    settings: Settings,
    /// Sequences per packed batch: 1 on the CPU, as `lark score` does there (the CPU GEMM's blocking depends
    /// on a batch's row count, so one sequence per batch keeps every trajectory's numbers independent of its
    /// companions and equal to the CLI's), else the job's default.
    max_seqs: usize,
}

// The header promises that a handle may be shared between threads, but C hands it around as a raw pointer, which
// the compiler cannot follow; this makes it check the promise: `&LarkModel` may be used from several threads at
// once (`Sync`: no unsynchronised interior mutability anywhere inside) and a handle may be freed on another
// thread than the one that opened it (`Send`). tests/c/threads.c checks the behaviour under concurrency.
const _: () = {
    const fn shared_between_threads<T: Send + Sync>() {}
    shared_between_threads::<LarkModel>();
};

fn settings(o: &LarkOptions) -> FfiResult<Settings> {
    let span = match o.span_mode {
        LARK_SPAN_TURN => SpanMode::Turn,
        LARK_SPAN_CONTENT => SpanMode::Content,
        m => return Err(FfiError::invalid(format!("opts->span_mode = {m} (LARK_SPAN_TURN or LARK_SPAN_CONTENT)"))),
    };
    if o.reserved != 0 {
        return Err(FfiError::invalid("opts->reserved must be 0 (start from lark_options_default)"));
    }
    Ok(Settings {
        span,
        max_len: if o.max_len == 0 { crate::text::DEFAULT_MAX_LEN } else { o.max_len },
        brier: if o.brier_topk == 0 { BrierMode::Exact } else { BrierMode::TopK(o.brier_topk as usize) },
        rank_clip: if o.rank_clip == 0 { 100 } else { o.rank_clip },
    })
}

impl LarkModel {
    fn open(dir: &str, device: &str, opts: &LarkOptions) -> FfiResult<Self> {
        let settings = settings(opts)?;
        let choice: DeviceChoice = device.parse().map_err(|e: String| FfiError::invalid(format!("device: {e}")))?;
        let dir = std::path::Path::new(dir);
        let model = Model::open(dir)?;
        let text = TextPipeline::open(dir)?;
        let tok_vocab = text.tokenizer().vocab_size();
        if tok_vocab > model.config.vocab_size {
            return Err(LarkError::input(
                dir.join("tokenizer.json").display().to_string(),
                format!(
                    "tokenizer ids go up to {} but the model's vocabulary has {} entries",
                    tok_vocab.saturating_sub(1),
                    model.config.vocab_size
                ),
            )
            .into());
        }
        if settings.span == SpanMode::Content {
            // Fail at open rather than on every chat when the template has no known assistant markers.
            text.family()?;
        }
        let (backend, device) = open_backend(&model, &choice, crate::backend::cuda::Precision::Bf16)?;
        let max_seqs = if device.starts_with("cpu") { 1 } else { 4096 };
        Ok(LarkModel {
            max_seqs,
            text,
            backend: Mutex::new(backend),
            device: CString::new(device.replace('\0', " ")).unwrap_or_default(),
            vocab_size: model.config.vocab_size,
            settings,
        })
    }

    fn stats_options(&self) -> StatsOptions {
        StatsOptions {
            topk_brier: match self.settings.brier {
                BrierMode::TopK(k) => Some(k),
                BrierMode::Exact => None,
            },
        }
    }

    /// Run `reqs` through the backend in the CLI's length-packed batches (a batch that runs out of device memory
    /// is split and retried, as in a scoring job); statistics come back in `reqs` order.
    fn score(&self, reqs: &[SeqRequest<'_>]) -> FfiResult<Vec<Vec<TokenStats>>> {
        let mut backend = self.backend.lock().map_err(|_| {
            FfiError::new(super::status::LARK_ERR_PANIC, "the model is unusable after an internal error; free it")
        })?;
        let opts = self.stats_options();
        let lengths: Vec<usize> = reqs.iter().map(|r| r.ids.len()).collect();
        let mut out: Vec<Vec<TokenStats>> = vec![Vec::new(); reqs.len()];
        for batch in pack_by_length(&lengths, backend.batch_token_budget(), self.max_seqs) {
            let sub: Vec<SeqRequest<'_>> = batch.iter().map(|&i| reqs[i]).collect();
            let toks =
                crate::run::schedule::score_splitting(&mut **backend, &sub, &opts).map_err(|f| match f.error {
                    e @ LarkError::OutOfMemory { .. } => LarkError::Backend(format!(
                        "sequence {} ({} tokens) does not fit in device memory even alone: {e}",
                        batch[f.seq],
                        sub[f.seq].ids.len()
                    )),
                    e => e,
                })?;
            for (&i, t) in batch.iter().zip(toks) {
                if t.len() != reqs[i].n_scored() {
                    return Err(LarkError::Backend(format!(
                        "backend returned {} statistics for {} scored tokens",
                        t.len(),
                        reqs[i].n_scored()
                    ))
                    .into());
                }
                out[i] = t;
            }
        }
        Ok(out)
    }

    fn prepare(&self, json: &str, at: &str) -> FfiResult<Prepared> {
        let value: serde_json::Value =
            serde_json::from_str(json).map_err(|e| LarkError::input(at.to_string(), format!("invalid JSON: {e}")))?;
        // A messages array, or a record object: `messages` or ShareGPT `conversations`, and `tools`.
        let (messages, tools) = match &value {
            serde_json::Value::Object(obj) => {
                let bad = |inv: crate::io::Invalid| LarkError::input(format!("{at}: {}", inv.field), inv.reason);
                let messages = crate::io::validate::conversation_field(obj, false).map_err(bad)?;
                (messages, crate::io::validate::tools_field(obj).map_err(bad)?)
            }
            _ => (parse_messages(&value, at)?, None),
        };
        self.text
            .conversation(&messages, tools.as_deref(), self.settings.span, Turns::All, self.settings.max_len)
            .map_err(|e| FfiError::from(LarkError::input(at.to_string(), e.to_string())))
    }
}

/// Fill `*opts` with the defaults (max_len 32768, turn span, exact Brier, rank clip 100).
///
/// # Safety
/// `opts` must be NULL or point to writable memory for one `lark_options`.
#[no_mangle]
pub unsafe extern "C" fn lark_options_default(opts: *mut LarkOptions) -> c_int {
    guard("lark_options_default", || {
        let p = non_null_mut(opts, "opts")?;
        p.write(LarkOptions::default());
        Ok(())
    })
}

/// Open a model directory on a device. See `include/lark.h`.
///
/// # Safety
/// Pointer arguments must be NULL (where allowed) or valid as the header describes.
#[no_mangle]
pub unsafe extern "C" fn lark_model_open(
    dir: *const c_char,
    device: *const c_char,
    opts: *const LarkOptions,
    out: *mut *mut LarkModel,
) -> c_int {
    guard("lark_model_open", || {
        let out = non_null_mut(out, "out")?;
        out.write(std::ptr::null_mut());
        let dir = c_str(dir, "dir")?;
        let device = if device.is_null() { "auto" } else { c_str(device, "device")? };
        let opts = if opts.is_null() { LarkOptions::default() } else { opts.read() };
        let m = LarkModel::open(dir, device, &opts)?;
        out.write(Box::into_raw(Box::new(m)));
        Ok(())
    })
}

/// Free a model handle (NULL is fine).
///
/// # Safety
/// `model` must be NULL or a handle from `lark_model_open` not freed yet, with no call on it in flight.
#[no_mangle]
pub unsafe extern "C" fn lark_model_free(model: *mut LarkModel) -> c_int {
    guard("lark_model_free", || {
        if !model.is_null() {
            drop(Box::from_raw(model));
        }
        Ok(())
    })
}

/// The device the model runs on, e.g. "cpu (2 threads)".
///
/// # Safety
/// `model` must be a live handle; `*out` is valid until the model is freed.
#[no_mangle]
pub unsafe extern "C" fn lark_model_device(model: *const LarkModel, out: *mut *const c_char) -> c_int {
    guard("lark_model_device", || {
        let out = non_null_mut(out, "out")?;
        let m = &*non_null(model, "model")?;
        out.write(m.device.as_ptr());
        Ok(())
    })
}

/// Tokenise one chat and find its scored span. See `include/lark.h`.
///
/// # Safety
/// Pointer arguments must be valid as the header describes; `ids` must have room for `cap` ids.
#[no_mangle]
pub unsafe extern "C" fn lark_tokenize_chat(
    model: *const LarkModel,
    messages_json: *const c_char,
    ids: *mut u32,
    cap: usize,
    span_out: *mut LarkSpan,
) -> c_int {
    guard("lark_tokenize_chat", || {
        let m = &*non_null(model, "model")?;
        let json = c_str(messages_json, "messages_json")?;
        let span_out = non_null_mut(span_out, "span_out")?;
        let Some(t) = tokenize_into(m, json, span_out, ids, cap, |t| {
            // One span cannot describe several turns: lark_score_ids over it would score the context between them.
            if t.n_turns() > 1 {
                return Err(FfiError::new(
                    LARK_ERR_UNSUPPORTED,
                    format!(
                        "messages_json: {} assistant turns are scored; lark_span holds one range (use \
                         lark_tokenize_chat_turns for each turn's range, or lark_score_chats, which sums over \
                         every turn)",
                        t.n_turns()
                    ),
                ));
            }
            Ok(())
        })?
        else {
            return Ok(());
        };
        copy_ids(&t, ids, cap)
    })
}

/// Tokenise one chat with any number of assistant turns: its covering span and each turn's range. See
/// `include/lark.h`.
///
/// # Safety
/// Pointer arguments must be valid as the header describes; `ids` must have room for `cap` ids and `turns`
/// for `turns_cap` ranges.
#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn lark_tokenize_chat_turns(
    model: *const LarkModel,
    messages_json: *const c_char,
    ids: *mut u32,
    cap: usize,
    span_out: *mut LarkSpan,
    turns: *mut LarkRange,
    turns_cap: usize,
    n_turns: *mut usize,
) -> c_int {
    guard("lark_tokenize_chat_turns", || {
        let m = &*non_null(model, "model")?;
        let json = c_str(messages_json, "messages_json")?;
        let span_out = non_null_mut(span_out, "span_out")?;
        let n_turns = non_null_mut(n_turns, "n_turns")?;
        if turns.is_null() && turns_cap > 0 {
            return Err(FfiError::null("turns (with turns_cap > 0)"));
        }
        n_turns.write(0);
        let Some(t) = tokenize_into(m, json, span_out, ids, cap, |_| Ok(()))? else {
            return Ok(());
        };
        // Both counts are reported before either buffer is checked, so one sizing call sizes both.
        n_turns.write(t.n_turns());
        if turns_cap < t.n_turns() {
            return Err(FfiError::new(
                LARK_ERR_BUFFER_TOO_SMALL,
                format!("turns holds {turns_cap} ranges, the chat has {} scored turns (see *n_turns)", t.n_turns()),
            ));
        }
        copy_ids(&t, ids, cap)?;
        for (i, &(from, to)) in t.turns.iter().enumerate() {
            turns.add(i).write(LarkRange { from, to });
        }
        Ok(())
    })
}

/// Tokenise `json` and fill `*span_out` (also when the ids buffer turns out short, so the caller can size it).
/// `None`: nothing to score (`span_out->skipped = 1`). `check` refuses a trajectory before anything is written.
unsafe fn tokenize_into(
    m: &LarkModel,
    json: &str,
    span_out: *mut LarkSpan,
    ids: *mut u32,
    cap: usize,
    check: impl FnOnce(&Trajectory) -> FfiResult<()>,
) -> FfiResult<Option<Trajectory>> {
    if ids.is_null() && cap > 0 {
        return Err(FfiError::null("ids (with cap > 0)"));
    }
    let t = match m.prepare(json, "messages_json")? {
        Prepared::Skipped(r) => {
            span_out.write(LarkSpan { skipped: 1, truncated: r.truncated() as i32, ..Default::default() });
            return Ok(None);
        }
        Prepared::Ready(t) => t,
    };
    check(&t)?;
    span_out.write(LarkSpan {
        len: t.ids.len(),
        score_from: t.score_from,
        score_to: t.score_to,
        skipped: 0,
        truncated: t.truncated as i32,
    });
    Ok(Some(t))
}

/// The ids of `t` into `ids[..cap]`, or LARK_ERR_BUFFER_TOO_SMALL (the span is already reported).
unsafe fn copy_ids(t: &Trajectory, ids: *mut u32, cap: usize) -> FfiResult<()> {
    if cap < t.ids.len() {
        return Err(FfiError::new(
            LARK_ERR_BUFFER_TOO_SMALL,
            format!("ids holds {cap} ids, the chat has {} (see span_out->len)", t.ids.len()),
        ));
    }
    if !t.ids.is_empty() {
        std::ptr::copy_nonoverlapping(t.ids.as_ptr(), ids, t.ids.len());
    }
    Ok(())
}

/// Score `n` chats (JSON messages arrays) into `out[0..n]`. See `include/lark.h`.
///
/// # Safety
/// `messages_json` must hold `n` valid C strings; `out` must have room for `n` structs.
#[no_mangle]
pub unsafe extern "C" fn lark_score_chats(
    model: *const LarkModel,
    messages_json: *const *const c_char,
    n: usize,
    out: *mut LarkTrajectoryStats,
) -> c_int {
    guard("lark_score_chats", || {
        let m = &*non_null(model, "model")?;
        let jsons = non_null(messages_json, "messages_json")?;
        let out = non_null_mut(out, "out")?;
        if n == 0 {
            return Ok(());
        }
        let jsons = std::slice::from_raw_parts(jsons, n);
        let texts: Vec<&str> = jsons
            .iter()
            .enumerate()
            .map(|(i, &p)| c_str(p, &format!("messages_json[{i}]")))
            .collect::<FfiResult<_>>()?;
        // Text first (in parallel, as the CLI does), then the model over the ready ones.
        let prepared: Vec<Prepared> = {
            use rayon::prelude::*;
            texts
                .par_iter()
                .enumerate()
                .map(|(i, j)| m.prepare(j, &format!("messages_json[{i}]")))
                .collect::<FfiResult<Vec<_>>>()?
        };
        let ready: Vec<(usize, SeqRequest<'_>)> =
            prepared.iter().enumerate().filter_map(|(i, p)| p.ready().map(|t| (i, t.request()))).collect();
        let reqs: Vec<SeqRequest<'_>> = ready.iter().map(|(_, r)| *r).collect();
        let toks = m.score(&reqs)?;
        let brier = m.settings.brier;
        let mut rows: Vec<LarkTrajectoryStats> = prepared
            .iter()
            .map(|p| match p {
                Prepared::Skipped(r) => LarkTrajectoryStats::skipped(&r.to_string(), r.truncated(), brier),
                Prepared::Ready(_) => LarkTrajectoryStats::skipped("not scored", false, brier),
            })
            .collect();
        for ((i, _), t) in ready.iter().zip(toks) {
            let tr = prepared[*i].ready().expect("`ready` lists only Ready chats");
            // The scored turns' positions of the covering range.
            let t = tr.keep_scored(t);
            rows[*i] = LarkTrajectoryStats::scored(
                &TrajectoryStats::from_tokens(&t, m.settings.rank_clip),
                tr.truncated,
                brier,
            );
        }
        std::ptr::copy_nonoverlapping(rows.as_ptr(), out, n);
        Ok(())
    })
}

/// Score pre-tokenised ids, positions `score_from..len`. See `include/lark.h`.
///
/// # Safety
/// `ids` must hold `len` ids, `out` one struct, `per_token` (if not NULL) `per_token_cap` structs.
#[no_mangle]
pub unsafe extern "C" fn lark_score_ids(
    model: *const LarkModel,
    ids: *const u32,
    len: usize,
    score_from: usize,
    out: *mut LarkTrajectoryStats,
    per_token: *mut LarkTokenStats,
    per_token_cap: usize,
) -> c_int {
    guard("lark_score_ids", || {
        let m = &*non_null(model, "model")?;
        let ids = non_null(ids, "ids")?;
        let out = non_null_mut(out, "out")?;
        if score_from == 0 || score_from >= len {
            return Err(FfiError::invalid(format!(
                "score_from = {score_from} with len = {len}: need 1 <= score_from < len (position 0 has no context)"
            )));
        }
        let ids = std::slice::from_raw_parts(ids, len);
        if let Some((i, &bad)) = ids.iter().enumerate().find(|(_, &id)| id as usize >= m.vocab_size) {
            return Err(FfiError::invalid(format!("ids[{i}] = {bad} is outside the vocabulary ({})", m.vocab_size)));
        }
        // Truncated from the right at max_len, as chats are.
        let truncated = len > m.settings.max_len;
        let ids = &ids[..len.min(m.settings.max_len)];
        let n_scored = ids.len().saturating_sub(score_from);
        if !per_token.is_null() && per_token_cap < n_scored {
            return Err(FfiError::new(
                LARK_ERR_BUFFER_TOO_SMALL,
                format!("per_token holds {per_token_cap} entries, {n_scored} positions are scored"),
            ));
        }
        if n_scored == 0 {
            let why = format!("prompt fills max_len: score_from = {score_from} >= max_len = {}", m.settings.max_len);
            out.write(LarkTrajectoryStats::skipped(&why, truncated, m.settings.brier));
            return Ok(());
        }
        let toks = m.score(&[SeqRequest { ids, score_from }])?.pop().unwrap_or_default();
        let stats = TrajectoryStats::from_tokens(&toks, m.settings.rank_clip);
        if !per_token.is_null() {
            for (k, t) in toks.iter().enumerate() {
                per_token.add(k).write(LarkTokenStats::from(t));
            }
        }
        out.write(LarkTrajectoryStats::scored(&stats, truncated, m.settings.brier));
        Ok(())
    })
}
