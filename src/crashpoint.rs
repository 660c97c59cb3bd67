//! Test-only crash points: moments where a kill is hardest to survive (half a journal line written, a final
//! file written but not renamed into place, ...), named so that a test can stop the process exactly there and
//! SIGKILL it (tests/crash_resume.rs). `LARK_TEST_PAUSE_AT=NAME[:N]` makes the process stop the Nth time
//! (default 1) it reaches crash point NAME: it prints `lark: test pause at NAME` on stderr and sleeps until it
//! is killed. Without that variable (always, outside those tests) a crash point costs a relaxed atomic load.
//!
//! Names: `journal-mid-line` (half of a chunk's line written and flushed), `journal-before-sync` (a whole line
//! written, not yet fsync'ed), `before-rename:FILE` (FILE's temporary copy complete and fsync'ed, not yet renamed
//! over FILE: `scores.jsonl`, `scores.json`, `run.json`, `manifest.json`, ...), `before-journal-removal` (every
//! final file and `run.json` in place, the journal not yet removed).

use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

fn armed() -> Option<&'static (String, usize)> {
    static ARMED: OnceLock<Option<(String, usize)>> = OnceLock::new();
    ARMED
        .get_or_init(|| {
            let v = std::env::var("LARK_TEST_PAUSE_AT").ok()?;
            // NAME may itself hold a colon (`before-rename:FILE`): only a numeric last part is the count.
            match v.rsplit_once(':').map(|(name, n)| (name, n.parse::<usize>())) {
                Some((name, Ok(n))) => Some((name.to_string(), n)),
                _ => Some((v, 1)),
            }
        })
        .as_ref()
}

/// Whether some crash point is armed (a writer may then split a write to make its crash point reachable).
pub fn any_armed() -> bool {
    armed().is_some()
}

/// Crash point `name` (see the module comment).
pub fn reach(name: &str) {
    static HITS: AtomicUsize = AtomicUsize::new(0);
    let Some((want, n)) = armed() else { return };
    if want != name || HITS.fetch_add(1, Ordering::SeqCst) + 1 != *n {
        return;
    }
    eprintln!("lark: test pause at {name}");
    let _ = std::io::stderr().flush();
    loop {
        std::thread::sleep(std::time::Duration::from_secs(3600));
    }
}
