//! lark's C ABI (`include/lark.h`): opaque model handles, `int` status codes with a thread-local message,
//! caller-owned result structs, and no panic across the boundary (every entry point runs in
//! [`status::guard`]). The crate builds as `cdylib` and `staticlib` for C, Python (ctypes) and others.
//!
//! - [`status`]: status codes, `lark_last_error`, the unwind guard;
//! - [`types`]: the `#[repr(C)]` structs and constants;
//! - [`model`]: the model handle and scoring (`lark_score_chats`, `lark_score_ids`, ...);
//! - [`weights`]: ĝ and selection weights for one problem;
//! - [`job`]: a whole scoring job over a pool (`lark_score_pool`), as `lark score` runs it;
//! - [`abi`]: the exported surface described in C, which `tests/c_abi.rs` checks the header against.

pub mod abi;
pub mod job;
pub mod model;
pub mod status;
pub mod types;
pub mod weights;

use std::ffi::c_char;

/// The crate version, NUL-terminated (static storage).
const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), "\0");

/// The library version, e.g. "0.1.0". Static string: never freed, valid forever, any thread.
///
/// # Safety
/// None required; `unsafe` only for a uniform entry-point type.
#[no_mangle]
pub unsafe extern "C" fn lark_version() -> *const c_char {
    VERSION.as_ptr() as *const c_char
}

/// This thread's last error message ("" when the last call succeeded). Never NULL.
///
/// # Safety
/// The pointer is valid until the next lark call on the same thread.
#[no_mangle]
pub unsafe extern "C" fn lark_last_error() -> *const c_char {
    status::last_error_ptr()
}

pub use model::LarkModel;
pub use types::{LarkOptions, LarkProgress, LarkProgressFn, LarkRange, LarkSpan, LarkTokenStats, LarkTrajectoryStats};

#[cfg(test)]
mod tests {
    use super::status::*;
    use super::types::*;
    use super::weights::lark_problem_weights;
    use super::*;
    use crate::score::lark::g_hat_exact;
    use crate::score::BrierMode;
    use crate::stats::TrajectoryStats;
    use std::ffi::CStr;

    fn last() -> String {
        unsafe { CStr::from_ptr(lark_last_error()) }.to_str().unwrap().to_string()
    }

    /// One-token trajectory with gold probability p and Σπ² = q.
    fn one(p: f64, q: f64) -> LarkTrajectoryStats {
        let t = TrajectoryStats {
            n_tokens: 1,
            nll_sum: -p.ln(),
            brier_sum: q - 2.0 * p + 1.0,
            sum_p2_sum: q,
            p_gold_sum: p,
            rank_clip_sum: 1.0,
            rank_sum: 1.0,
            ..Default::default()
        };
        LarkTrajectoryStats::scored(&t, false, BrierMode::Exact)
    }

    #[test]
    fn version_and_errors_are_reported_per_thread() {
        let v = unsafe { CStr::from_ptr(lark_version()) }.to_str().unwrap();
        assert_eq!(v, env!("CARGO_PKG_VERSION"));
        let rc = unsafe { model::lark_options_default(std::ptr::null_mut()) };
        assert_eq!(rc, LARK_ERR_NULL_ARG);
        assert_eq!(last(), "lark_options_default: opts is NULL");
        // Another thread has its own (empty) message.
        assert_eq!(std::thread::spawn(last).join().unwrap(), "");
        let mut o = LarkOptions { max_len: 1, span_mode: 9, brier_topk: 3, rank_clip: 1, reserved: 1 };
        assert_eq!(unsafe { model::lark_options_default(&mut o) }, LARK_OK);
        assert_eq!(o, LarkOptions::default());
        assert_eq!(last(), "", "a successful call clears the message");
    }

    #[test]
    fn panics_become_a_status() {
        let rc = guard("lark_test", || panic!("boom"));
        assert_eq!(rc, LARK_ERR_PANIC);
        assert!(last().contains("boom") && last().starts_with("lark_test: internal error"), "{}", last());
    }

    #[test]
    fn open_reports_bad_arguments() {
        let mut m: *mut LarkModel = std::ptr::NonNull::dangling().as_ptr();
        let dir = c"/nonexistent/model";
        assert_eq!(
            unsafe { model::lark_model_open(dir.as_ptr(), c"cpu".as_ptr(), std::ptr::null(), &mut m) },
            LARK_ERR_INPUT
        );
        assert!(m.is_null(), "*out is NULL after a failure");
        assert!(last().contains("/nonexistent/model"), "{}", last());
        let bad = LarkOptions { reserved: 5, ..Default::default() };
        assert_eq!(
            unsafe { model::lark_model_open(dir.as_ptr(), std::ptr::null(), &bad, &mut m) },
            LARK_ERR_INVALID_ARG
        );
        assert_eq!(unsafe { model::lark_model_free(std::ptr::null_mut()) }, LARK_OK);
    }

    #[test]
    fn problem_weights_by_hand() {
        let (pa, pb) = ((-1f64).exp(), (-3f64).exp());
        let skipped = LarkTrajectoryStats::skipped("prompt_not_shorter: x", true, BrierMode::Exact);
        let stats = [one(pa, 0.2), skipped, one(pb, 0.5)];
        let (mut g, mut w) = ([0.0; 3], [0.0; 3]);
        let rc = unsafe {
            lark_problem_weights(stats.as_ptr(), 3, 1, LARK_WEIGHT_CHI2, 0.0, g.as_mut_ptr(), w.as_mut_ptr())
        };
        assert_eq!(rc, LARK_OK, "{}", last());
        let want = g_hat_exact(&[stats[0].L, stats[2].L], &[stats[0].brier_mean, stats[2].brier_mean]);
        assert_eq!((g[0], g[2]), (want[0], want[1]));
        assert!(g[1].is_nan());
        // B = 1 with two valid candidates: the better one takes everything.
        let best = if g[0] > g[2] { 0 } else { 2 };
        assert_eq!(w[best], 1.0);
        assert_eq!(w.iter().sum::<f64>(), 1.0);
        // Mixed Brier modes are refused; the skip reason is NUL-terminated.
        let topk = LarkTrajectoryStats { brier_topk: 50, ..one(pa, 0.2) };
        let rc =
            unsafe { lark_problem_weights([topk, stats[0]].as_ptr(), 2, 1, 0, 0.0, g.as_mut_ptr(), w.as_mut_ptr()) };
        assert_eq!(rc, LARK_ERR_INVALID_ARG);
        let reason = unsafe { CStr::from_ptr(stats[1].skip_reason.as_ptr()) };
        assert_eq!(reason.to_str().unwrap(), "prompt_not_shorter: x");
        assert!(stats[1].L.is_nan() && stats[1].n_tokens == 0 && stats[1].truncated == 1);
        // A long reason is cut at a character boundary and stays terminated.
        let long = LarkTrajectoryStats::skipped(&"é".repeat(100), false, BrierMode::Exact);
        let cut = unsafe { CStr::from_ptr(long.skip_reason.as_ptr()) }.to_str().unwrap();
        assert_eq!(cut, "é".repeat(63));
    }
}
