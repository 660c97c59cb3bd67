//! Crashes at random moments and clean stops on signals, each followed by `--resume`:
//!
//! - `lark score` is SIGKILLed at 10 seeded random moments of one run — mid-run after a random delay, inside the
//!   journal append (half a line written; a line written but not fsync'ed), before a final file's rename, before
//!   the journal's removal — resuming each time; the final files equal the uninterrupted run's byte for byte,
//!   and `run.json` tells resumed from computed work. The moments inside writes are reached with the test-only
//!   crash points of `lark::crashpoint` (`LARK_TEST_PAUSE_AT`): the process stops there and is killed.
//!   The seed is printed on failure; `LARK_CRASH_SEED=N` replays one.
//! - SIGTERM and SIGINT: the journal keeps the finished chunks, the process exits 128 + N with a one-line message
//!   naming the journal and `--resume`, nothing final is written, and `--resume` finishes byte-identically.
//!
//! The model is the random-weight Llama with SmolLM2's tokenizer (tests/common/student.rs); `--batch-tokens`
//! (hidden) makes batches, hence journal chunks, small: every problem of the example pool is a chunk of its own.

mod common;

use common::student::student;
use lark::model::random::SplitMix;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const FILES: [&str; 2] = ["scores.jsonl", "scores.json"];

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// The example pool cut to its first two candidates per problem (12 problems, so 12 chunks, in a few seconds).
fn small_pool(dir: &Path) -> PathBuf {
    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/pool.jsonl")).unwrap();
    let keep: Vec<&str> = text
        .lines()
        .filter(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["candidate_id"].as_i64().unwrap() < 2)
        .collect();
    let p = dir.join("pool.jsonl");
    std::fs::write(&p, keep.join("\n") + "\n").unwrap();
    p
}

/// `lark score` of the small pool beside `out` into `out`, sequences cut at 384 tokens.
fn args(pool: &Path, model: &Path, out: &Path) -> Vec<String> {
    let a = ["score", "--model", s(model), "--pool", s(pool), "--out", s(out), "--device", "cpu"];
    a.iter().chain(&["--batch-tokens", "64", "--max-len", "384"]).map(|x| x.to_string()).collect()
}

/// A running `lark`, its stderr lines forwarded to a channel.
struct Running {
    child: Child,
    lines: mpsc::Receiver<String>,
    log: Vec<String>,
}

fn start(argv: &[String], pause_at: Option<&str>) -> Running {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_lark"));
    cmd.args(argv).stdout(Stdio::null()).stderr(Stdio::piped()).env_remove("LARK_TEST_PAUSE_AT");
    if let Some(p) = pause_at {
        cmd.env("LARK_TEST_PAUSE_AT", p);
    }
    let mut child = cmd.spawn().expect("lark starts");
    let err = child.stderr.take().unwrap();
    let (tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for l in BufReader::new(err).lines().map_while(|l| l.ok()) {
            if tx.send(l).is_err() {
                break;
            }
        }
    });
    Running { child, lines, log: Vec::new() }
}

impl Running {
    /// Wait until a stderr line satisfies `want` (true), or the process ends first (false).
    fn wait_for(&mut self, want: impl Fn(&str) -> bool, limit: Duration) -> bool {
        let t0 = Instant::now();
        while t0.elapsed() < limit {
            match self.lines.recv_timeout(Duration::from_millis(20)) {
                Ok(l) => {
                    let hit = want(&l);
                    self.log.push(l);
                    if hit {
                        return true;
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => return false,
            }
        }
        panic!("lark neither reached the moment nor ended within {limit:?}: {:?}", self.log);
    }

    /// Let it run for `d` (its stderr collected); whether it is still running then.
    fn run_for(&mut self, d: Duration) -> bool {
        let t0 = Instant::now();
        while t0.elapsed() < d {
            match self.lines.recv_timeout(Duration::from_millis(5).min(d)) {
                Ok(l) => self.log.push(l),
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => std::thread::sleep(Duration::from_millis(1)),
            }
            if self.child.try_wait().unwrap().is_some() {
                return false;
            }
        }
        true
    }

    fn sigkill(&mut self) {
        self.child.kill().unwrap(); // SIGKILL on Unix
        self.child.wait().unwrap();
    }

    fn signal(&self, name: &str) {
        let st = Command::new("kill").args([&format!("-{name}"), &self.child.id().to_string()]).status().unwrap();
        assert!(st.success(), "kill -{name}");
    }

    /// Wait for the exit; the status and every stderr line.
    fn finish(mut self) -> (ExitStatus, Vec<String>) {
        let st = self.child.wait().unwrap();
        self.log.extend(self.lines.iter());
        (st, self.log)
    }
}

fn journal_lines(out: &Path) -> usize {
    std::fs::read_to_string(out.join("partial/journal.jsonl")).map(|t| t.lines().count()).unwrap_or(0)
}

fn assert_same_files(a: &Path, b: &Path, context: &str) {
    for n in FILES {
        let (x, y) = (std::fs::read(a.join(n)).unwrap(), std::fs::read(b.join(n)).unwrap());
        assert!(x == y, "{context}: {n} differs from the uninterrupted run's");
    }
}

fn run_json(out: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(out.join("run.json")).unwrap()).unwrap()
}

/// The uninterrupted run, and how long it took.
fn reference(pool: &Path, model: &Path, dir: &Path) -> (PathBuf, Duration) {
    let base = dir.join("base");
    let t0 = Instant::now();
    let (st, log) = start(&args(pool, model, &base), None).finish();
    assert!(st.success(), "{log:?}");
    let chunks = run_json(&base)["resume"]["chunks"].as_u64().unwrap();
    assert!(chunks >= 10, "the test needs many chunks: {chunks}");
    assert_eq!(run_json(&base)["counts"]["skipped"], 0, "--max-len leaves every trajectory something to score");
    (base, t0.elapsed())
}

/// Where one kill lands.
#[derive(Debug, Clone)]
enum Moment {
    /// After a delay from the start (anywhere: loading, tokenising, scoring, writing).
    After(Duration),
    /// At the Nth time the process reaches a crash point.
    Pause(String, usize),
}

/// 10 moments: 7 while chunks are still being computed (delays and journal-append points), then 3 at the end of
/// the run (final renames, the journal's removal), each group in a seeded order.
fn moments(seed: u64, base_time: Duration) -> Vec<Moment> {
    let mut rng = SplitMix(seed);
    let mut pick = |n: usize| (rng.next_u64() % n as u64) as usize;
    let mut mid: Vec<Moment> = Vec::new();
    for _ in 0..3 {
        // Delays within the first part of a run: later ones may land in the final writes, too.
        let ms = 50 + pick(base_time.as_millis().max(100) as usize * 2 / 3);
        mid.push(Moment::After(Duration::from_millis(ms as u64)));
    }
    for point in ["journal-mid-line", "journal-mid-line", "journal-before-sync", "journal-before-sync"] {
        mid.push(Moment::Pause(point.into(), 1 + pick(2)));
    }
    let ends =
        ["before-rename:scores.jsonl", "before-rename:scores.json", "before-rename:run.json", "before-journal-removal"];
    let mut end: Vec<Moment> = Vec::new();
    let skip = pick(ends.len());
    for (i, p) in ends.iter().enumerate() {
        if i != skip {
            end.push(Moment::Pause(p.to_string(), 1));
        }
    }
    for v in [&mut mid, &mut end] {
        for i in (1..v.len()).rev() {
            v.swap(i, pick(i + 1));
        }
    }
    mid.into_iter().chain(end).collect()
}

#[test]
fn sigkill_at_random_moments_then_resume_is_byte_identical() {
    let seed = std::env::var("LARK_CRASH_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64
    });
    let model = student();
    let dir = tempfile::tempdir().unwrap();
    let pool = small_pool(dir.path());
    let (base, base_time) = reference(&pool, model.path(), dir.path());
    let out = dir.path().join("killed");
    let argv: Vec<String> = args(&pool, model.path(), &out).into_iter().chain(["--resume".into()]).collect();
    let plan = moments(seed, base_time);
    let ctx = |i: usize, m: &Moment| format!("seed {seed} (LARK_CRASH_SEED={seed} replays it), kill {i} at {m:?}");
    let mut landed = 0;
    let mut finished_early = 0;
    for (i, m) in plan.iter().enumerate() {
        let before = journal_lines(&out);
        let mut r = match m {
            Moment::After(_) => start(&argv, None),
            Moment::Pause(p, n) => start(&argv, Some(&format!("{p}:{n}"))),
        };
        let reached = match m {
            Moment::After(d) => r.run_for(*d),
            Moment::Pause(p, _) => r.wait_for(|l| l == format!("lark: test pause at {p}"), Duration::from_secs(120)),
        };
        if reached && r.child.try_wait().unwrap().is_none() {
            r.sigkill();
            landed += 1;
            let (_, log) = r.finish();
            // A killed run never looks complete, unless it was killed after run.json (then it is complete).
            let complete = out.join("run.json").exists();
            let after_run_json = matches!(m, Moment::Pause(p, _) if p == "before-journal-removal");
            assert!(!complete || after_run_json, "{}: run.json after a kill; {log:?}", ctx(i, m));
            if let Moment::Pause(p, _) = m {
                if p.starts_with("journal") {
                    assert!(out.join("partial/manifest.json").exists(), "{}", ctx(i, m));
                    assert!(journal_lines(&out) >= before, "{}: the journal lost lines", ctx(i, m));
                }
            }
        } else {
            let (st, log) = r.finish();
            assert!(st.success(), "{}: {log:?}", ctx(i, m));
            finished_early += 1;
            assert_same_files(&base, &out, &ctx(i, m));
        }
    }
    // The last resume finishes the run.
    let (st, log) = start(&argv, None).finish();
    assert!(st.success(), "seed {seed}: final resume: {log:?}");
    assert!(!out.join("partial").exists(), "seed {seed}: the journal is removed after success");
    assert_same_files(&base, &out, &format!("seed {seed}: after {landed} kills"));
    assert!(
        landed >= 8,
        "seed {seed}: only {landed} of 10 kills landed mid-run ({finished_early} runs finished first)"
    );
}

#[test]
fn resumed_run_json_tells_resumed_from_computed_work() {
    let model = student();
    let dir = tempfile::tempdir().unwrap();
    let pool = small_pool(dir.path());
    let (base, _) = reference(&pool, model.path(), dir.path());
    let b = run_json(&base);
    assert_eq!(b["resume"]["chunks_resumed"], 0);
    assert_eq!(b["resume"]["tokens_computed"], b["tokens_forward"]);
    let out = dir.path().join("killed");
    let argv = args(&pool, model.path(), &out);
    let mut r = start(&argv, Some("journal-before-sync:4"));
    assert!(r.wait_for(|l| l.ends_with("test pause at journal-before-sync"), Duration::from_secs(120)));
    r.sigkill();
    r.finish();
    let mut again = argv.clone();
    again.push("--resume".into());
    let (st, log) = start(&again, None).finish();
    assert!(st.success(), "{log:?}");
    assert!(log.iter().any(|l| l.contains("resuming: 4 finished chunks")), "{log:?}");
    assert!(log.iter().any(|l| l.contains("4 of ") && l.contains("chunks") && l.contains("resumed")), "{log:?}");
    assert_same_files(&base, &out, "resumed once");
    let j = run_json(&out);
    let res = &j["resume"];
    assert_eq!(res["chunks_resumed"], 4, "{j}");
    assert_eq!(res["chunks"], b["resume"]["chunks"]);
    let (resumed, computed) = (res["tokens_resumed"].as_u64().unwrap(), res["tokens_computed"].as_u64().unwrap());
    assert!(resumed > 0 && computed > 0, "{j}");
    assert_eq!(resumed + computed, j["tokens_forward"].as_u64().unwrap());
    let rate = j["tokens_per_s"].as_f64().unwrap();
    assert!((rate - computed as f64 / j["wall_s"].as_f64().unwrap()).abs() <= 1e-6 * rate, "{j}");
    // The chunk bound is recorded (a resume must use the same one): tokens, and work on the CPU backend.
    assert_eq!(j["chunk_tokens"], 256);
    assert_eq!(j["chunk_flops"].as_f64(), Some(25e9 * lark::run::CHUNK_WORK_SECONDS));
}

/// Stop a run with `signal` once its journal holds a chunk; it must exit 128 + N with a one-line message and
/// leave a journal that `--resume` finishes from.
fn stop_with(signal: &str, number: i32) {
    let model = student();
    let dir = tempfile::tempdir().unwrap();
    let pool = small_pool(dir.path());
    let (base, _) = reference(&pool, model.path(), dir.path());
    let out = dir.path().join("stopped");
    let argv = args(&pool, model.path(), &out);
    // Signalled while it runs freely (a crash point would hold the coordinator, which is what notices the
    // signal), as soon as a chunk is journaled: a dozen chunks are still to come.
    let mut r = start(&argv, None);
    let t0 = Instant::now();
    while journal_lines(&out) == 0 {
        assert!(r.child.try_wait().unwrap().is_none(), "{signal}: the run ended before a chunk was journaled");
        assert!(t0.elapsed() < Duration::from_secs(120));
        std::thread::sleep(Duration::from_millis(1));
    }
    r.signal(signal);
    let (st, log) = r.finish();
    assert_eq!(st.code(), Some(128 + number), "{signal}: {log:?}");
    let last = log.last().cloned().unwrap_or_default();
    assert!(last.starts_with(&format!("error: interrupted by SIG{signal}")), "{signal}: {log:?}");
    assert!(last.contains("partial") && last.contains("--resume"), "{signal}: {last}");
    assert_eq!(log.iter().filter(|l| l.starts_with("error:")).count(), 1, "one line: {log:?}");
    assert!(!out.join("run.json").exists() && !out.join("scores.jsonl").exists(), "{signal}: nothing final");
    let kept = journal_lines(&out);
    assert!(kept >= 1, "{signal}: the journal keeps the finished chunks");
    let mut again = argv.clone();
    again.push("--resume".into());
    let (st, log) = start(&again, None).finish();
    assert!(st.success(), "{log:?}");
    assert!(log.iter().any(|l| l.contains(&format!("resuming: {kept} finished chunks"))), "{log:?}");
    assert_same_files(&base, &out, signal);
}

#[test]
fn sigterm_keeps_the_journal_and_resume_finishes() {
    stop_with("TERM", 15);
}

#[test]
fn sigint_keeps_the_journal_and_resume_finishes() {
    stop_with("INT", 2);
}
