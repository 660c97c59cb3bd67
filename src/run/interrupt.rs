//! Stopping a scoring job cleanly on SIGINT or SIGTERM (Ctrl-C; Slurm and Kubernetes send SIGTERM before they
//! kill a task). The handler only records the signal; the job's coordinator sees it within
//! [`POLL`], stops queuing work, and returns [`LarkError::Interrupted`]. Every chunk finished before that is
//! already in the journal (each append is fsync'ed), nothing final is written, and `--resume` continues. A
//! batch already on a device finishes first (seconds); what it computed is not journaled (only whole chunks are).

use crate::error::{LarkError, Result};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// How often a waiting job looks at the flag.
pub const POLL: Duration = Duration::from_millis(100);

/// Set to the number of the signal received (0: none).
#[derive(Clone, Debug, Default)]
pub struct Interrupt(Arc<AtomicUsize>);

impl Interrupt {
    /// A flag set by SIGINT and SIGTERM from now on. A second signal ends the process at once (exit 128 + N),
    /// as the default action would have: an impatient Ctrl-C Ctrl-C still works, and loses only the chunk in
    /// flight (the journal is consistent at every moment).
    pub fn on_signals() -> Result<Interrupt> {
        let flag = Interrupt::default();
        let seen = Arc::new(std::sync::atomic::AtomicBool::new(false));
        for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
            let err = |e: std::io::Error| LarkError::Other(format!("installing the handler of signal {sig}: {e}"));
            // Registered first, so that it looks at `seen` before this signal sets it.
            signal_hook::flag::register_conditional_shutdown(sig, 128 + sig, seen.clone()).map_err(err)?;
            signal_hook::flag::register(sig, seen.clone()).map_err(err)?;
            signal_hook::flag::register_usize(sig, flag.0.clone(), sig as usize).map_err(err)?;
        }
        Ok(flag)
    }

    /// Stop the job as if `signal` had arrived: a caller's own cancel (Python's KeyboardInterrupt, a C
    /// progress callback asking to stop).
    pub fn raise(&self, signal: i32) {
        self.0.store(signal.max(1) as usize, Ordering::SeqCst);
    }

    /// The signal received, if any.
    pub fn signal(&self) -> Option<i32> {
        match self.0.load(Ordering::SeqCst) {
            0 => None,
            s => Some(s as i32),
        }
    }

    /// `Err(Interrupted)` once a signal has arrived.
    pub fn check(&self) -> Result<()> {
        match self.signal() {
            None => Ok(()),
            Some(signal) => Err(LarkError::Interrupted { signal, journal: None }),
        }
    }
}

/// The usual name of a signal number.
pub fn signal_name(signal: i32) -> String {
    match signal {
        2 => "SIGINT".into(),
        15 => "SIGTERM".into(),
        s => format!("signal {s}"),
    }
}

/// "; the chunks finished so far are journaled in DIR: rerun with --resume to continue" (when there is a journal).
pub fn resume_hint(journal: Option<&std::path::Path>) -> String {
    match journal {
        Some(d) => {
            format!("; the chunks finished so far are journaled in {}: rerun with --resume to continue", d.display())
        }
        None => String::new(),
    }
}
