//! The model handle and the scoring entry points: `lark_model_open/free/device`, `lark_tokenize_chat`,
//! `lark_score_chats`, `lark_score_ids`: argument checks and C structs over the library's
//! [`crate::student::Student`], whose numbers are those of `lark score`.

use super::status::{
    c_str, guard, non_null, non_null_mut, FfiError, FfiResult, LARK_ERR_BUFFER_TOO_SMALL, LARK_ERR_UNSUPPORTED,
};
use super::types::{
    LarkOptions, LarkRange, LarkSpan, LarkTokenStats, LarkTrajectoryStats, LARK_SPAN_CONTENT, LARK_SPAN_TURN,
};
use crate::backend::{DeviceChoice, SeqRequest};
use crate::score::BrierMode;
use crate::stats::{TokenStats, TrajectoryStats};
use crate::student::{ChatScore, Student, StudentSettings};
use crate::text::{Prepared, SpanMode, Trajectory, Turns};
use std::ffi::{c_char, c_int, CString};

/// `lark_model`: a [`Student`] with its device name as a C string.
pub struct LarkModel {
    student: Student,
    device: CString,
}

// The header promises that a handle may be shared between threads, but C hands it around as a raw pointer, which
// the compiler cannot follow; this makes it check the promise: `&LarkModel` may be used from several threads at
// once (`Sync`: no unsynchronised interior mutability anywhere inside) and a handle may be freed on another
// thread than the one that opened it (`Send`). tests/c/threads.c checks the behaviour under concurrency.
const _: () = {
    const fn shared_between_threads<T: Send + Sync>() {}
    shared_between_threads::<LarkModel>();
};

fn settings(o: &LarkOptions) -> FfiResult<StudentSettings> {
    let span = match o.span_mode {
        LARK_SPAN_TURN => SpanMode::Turn,
        LARK_SPAN_CONTENT => SpanMode::Content,
        m => return Err(FfiError::invalid(format!("opts->span_mode = {m} (LARK_SPAN_TURN or LARK_SPAN_CONTENT)"))),
    };
    if o.reserved != 0 {
        return Err(FfiError::invalid("opts->reserved must be 0 (start from lark_options_default)"));
    }
    Ok(StudentSettings {
        span,
        // Every assistant turn (what lark_score_chats sums over and lark_tokenize_chat_turns lists).
        turns: Turns::All,
        max_len: if o.max_len == 0 { crate::text::DEFAULT_MAX_LEN } else { o.max_len },
        brier: if o.brier_topk == 0 { BrierMode::Exact } else { BrierMode::TopK(o.brier_topk as usize) },
        rank_clip: if o.rank_clip == 0 { 100 } else { o.rank_clip },
        // Each device's default: bf16 activations on a GPU, the f32 reference on the CPU.
        precision: None,
    })
}

impl LarkModel {
    fn open(dir: &str, device: &str, opts: &LarkOptions) -> FfiResult<Self> {
        let settings = settings(opts)?;
        let choice: DeviceChoice = device.parse().map_err(|e: String| FfiError::invalid(format!("device: {e}")))?;
        let student = Student::open(std::path::Path::new(dir), &choice, settings)?;
        let device = CString::new(student.device().replace('\0', " ")).unwrap_or_default();
        Ok(LarkModel { student, device })
    }

    fn score(&self, reqs: &[SeqRequest<'_>]) -> FfiResult<Vec<Vec<TokenStats>>> {
        Ok(self.student.score_requests(reqs)?)
    }

    fn prepare(&self, json: &str, at: &str) -> FfiResult<Prepared> {
        Ok(self.student.prepare_json(json, at)?)
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
        let brier = m.student.settings().brier;
        let rows: Vec<LarkTrajectoryStats> = m
            .student
            .score_chat_texts(&texts, "messages_json")?
            .iter()
            .map(|c| match c {
                ChatScore::Skipped { reason, truncated } => LarkTrajectoryStats::skipped(reason, *truncated, brier),
                ChatScore::Scored { stats, truncated, .. } => LarkTrajectoryStats::scored(stats, *truncated, brier),
            })
            .collect();
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
        if let Some((i, &bad)) = ids.iter().enumerate().find(|(_, &id)| id as usize >= m.student.vocab_size()) {
            return Err(FfiError::invalid(format!(
                "ids[{i}] = {bad} is outside the vocabulary ({})",
                m.student.vocab_size()
            )));
        }
        // Truncated from the right at max_len, as chats are.
        let truncated = len > m.student.settings().max_len;
        let ids = &ids[..len.min(m.student.settings().max_len)];
        let n_scored = ids.len().saturating_sub(score_from);
        if !per_token.is_null() && per_token_cap < n_scored {
            return Err(FfiError::new(
                LARK_ERR_BUFFER_TOO_SMALL,
                format!("per_token holds {per_token_cap} entries, {n_scored} positions are scored"),
            ));
        }
        if n_scored == 0 {
            let why = format!(
                "prompt fills max_len: score_from = {score_from} >= max_len = {}",
                m.student.settings().max_len
            );
            out.write(LarkTrajectoryStats::skipped(&why, truncated, m.student.settings().brier));
            return Ok(());
        }
        let toks = m.score(&[SeqRequest { ids, score_from }])?.pop().unwrap_or_default();
        let stats = TrajectoryStats::from_tokens(&toks, m.student.settings().rank_clip);
        if !per_token.is_null() {
            for (k, t) in toks.iter().enumerate() {
                per_token.add(k).write(LarkTokenStats::from(t));
            }
        }
        out.write(LarkTrajectoryStats::scored(&stats, truncated, m.student.settings().brier));
        Ok(())
    })
}
