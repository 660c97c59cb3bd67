//! `lark_score_pool`: a whole `lark score` job from C, the library's [`ScoreJob`] built from a JSON object of
//! the CLI's options, with progress reported to (and cancellable by) a caller's callback.

use super::status::{c_str, guard, FfiError, LARK_ERR_INPUT};
use super::types::{LarkProgress, LarkProgressFn};
use crate::error::LarkError;
use crate::run::{Interrupt, JobHooks, Progress, ScoreJob};
use std::ffi::{c_char, c_int, c_void};

/// The signal number an interrupt from the callback is recorded as (SIGINT: what a user's cancel means).
const CALLBACK_STOP: i32 = 2;

struct Callback {
    f: LarkProgressFn,
    user: *mut c_void,
    interrupt: Interrupt,
}

impl JobHooks for Callback {
    fn progress(&mut self, p: &Progress) {
        if let Some(f) = self.f {
            let c = LarkProgress::from(p);
            // SAFETY: the caller promised a valid function and user pointer for the call's duration.
            if unsafe { f(&c, self.user) } != 0 {
                self.interrupt.raise(CALLBACK_STOP);
            }
        }
    }
}

/// Run a scoring job. See `include/lark.h`.
///
/// # Safety
/// `job_json` must be a valid C string; `progress`, if not NULL, a function safe to call with `user` on the
/// calling thread for the duration of the call.
#[no_mangle]
pub unsafe extern "C" fn lark_score_pool(
    job_json: *const c_char,
    progress: LarkProgressFn,
    user: *mut c_void,
) -> c_int {
    guard("lark_score_pool", || {
        let text = c_str(job_json, "job_json")?;
        let value: serde_json::Value = serde_json::from_str(text)
            .map_err(|e| FfiError::new(LARK_ERR_INPUT, format!("job_json: invalid JSON: {e}")))?;
        let job = ScoreJob::from_json(&value)?;
        let interrupt = Interrupt::default();
        let mut hooks = Callback { f: progress, user, interrupt: interrupt.clone() };
        job.run(&mut hooks, Some(interrupt)).map_err(|e| match e {
            e @ LarkError::Interrupted { .. } => FfiError::new(
                super::status::LARK_ERR_INTERRUPTED,
                e.to_string()
                    .replace("interrupted by SIGINT", "stopped by the progress callback")
                    .replace("rerun with --resume to continue", "run the same job with \"resume\": true to continue"),
            ),
            e => e.into(),
        })?;
        Ok(())
    })
}
