//! What a scoring job tells its caller while it runs: progress after every batch, and notes (the device,
//! a resume, a `--max-len` beyond the model's context). The CLI draws them on stderr ([`StderrHooks`]);
//! Python and C callers pass their own.

use super::job::Progress;

/// The caller's side of a running job. Both methods are called on the thread that runs the job.
pub trait JobHooks {
    /// After every batch and every finished chunk.
    fn progress(&mut self, _p: &Progress) {}
    /// One line of information (no trailing newline), e.g. "lark: scoring 120 trajectories of 40 problems on cpu".
    fn note(&mut self, line: &str) {
        eprintln!("{line}");
    }
    /// The job's scoring pass has ended, finished or not (a progress bar ends its line here).
    fn done(&mut self) {}
}

/// No progress, notes on stderr.
pub struct QuietHooks;
impl JobHooks for QuietHooks {}

/// Progress on stderr: a redrawn bar (problems done, tokens/s, ETA) when stderr is a terminal, a plain log
/// line every few seconds otherwise (logs, CI, cluster jobs). Notes go to stderr.
pub struct StderrHooks {
    tty: bool,
    last: Option<std::time::Instant>,
    drawn: bool,
}

impl Default for StderrHooks {
    fn default() -> Self {
        use std::io::IsTerminal;
        StderrHooks { tty: std::io::stderr().is_terminal(), last: None, drawn: false }
    }
}

impl JobHooks for StderrHooks {
    fn progress(&mut self, p: &Progress) {
        let finished = p.trajectories_done == p.trajectories_total && p.problems_done == p.problems_total;
        let every = if self.tty { 0.1 } else { 2.0 };
        if !finished && self.last.is_some_and(|t| t.elapsed().as_secs_f64() < every) {
            return;
        }
        self.last = Some(std::time::Instant::now());
        let rate = p.tokens_this_run as f64 / p.elapsed_s.max(1e-9);
        let left = p.tokens_total.saturating_sub(p.tokens_done) as f64;
        // Totals are estimates while the pool is still being tokenised: say so.
        let about = if p.totals_exact { "" } else { "~" };
        let eta = if rate > 0.0 { format!("{about}{}", fmt_secs(left / rate)) } else { "?".into() };
        if self.tty {
            const W: usize = 30;
            let frac = if p.tokens_total > 0 { p.tokens_done as f64 / p.tokens_total as f64 } else { 1.0 };
            let fill = ((frac * W as f64) as usize).min(W);
            eprint!(
                "\r\x1b[2K[{}{}] {}/{} problems  {}/{about}{} trajectories  {:.0} tokens/s  ETA {eta}",
                "#".repeat(fill),
                "-".repeat(W - fill),
                p.problems_done,
                p.problems_total,
                p.trajectories_done,
                p.trajectories_total,
                rate
            );
            self.drawn = true;
        } else {
            eprintln!(
                "lark: {}/{} problems, {}/{about}{} trajectories, {:.0} tokens/s, ETA {eta}",
                p.problems_done, p.problems_total, p.trajectories_done, p.trajectories_total, rate
            );
        }
    }

    fn note(&mut self, line: &str) {
        if self.drawn {
            eprintln!();
            self.drawn = false;
        }
        eprintln!("{line}");
    }

    fn done(&mut self) {
        if self.drawn {
            eprintln!();
            self.drawn = false;
        }
    }
}

fn fmt_secs(s: f64) -> String {
    let s = s.max(0.0).round() as u64;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, s / 60 % 60),
    }
}
