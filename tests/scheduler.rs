//! The job scheduler: several workers (one per device; here CPU backends and fake ones) give the same bytes
//! as one, whatever order their batches finish in; out-of-memory splits a batch and retries it, and a
//! trajectory too long for the device even alone fails the run naming it; a failing or panicking worker
//! stops the run with its error instead of hanging it; progress comes from the caller's thread.

mod common;

use common::student::student;
use lark::backend::{Backend, SeqRequest};
use lark::error::{LarkError, Result};
use lark::io::{read_pool, Pool, ReadOptions};
use lark::run::{score_pool_on, JobControl, JobOutput, Progress, ScoreSettings};
use lark::score::{parse_scorers, BrierMode};
use lark::stats::{StatsOptions, TokenStats};
use lark::text::{SpanMode, TextPipeline};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn lark(args: &[&str]) -> Output {
    let o = Command::new(env!("CARGO_BIN_EXE_lark")).args(args).output().expect("lark runs");
    assert!(o.status.success(), "lark {args:?}: {}", String::from_utf8_lossy(&o.stderr));
    o
}

fn bytes(p: &Path) -> Vec<u8> {
    std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn assert_same(a: &Path, b: &Path, names: &[&str]) {
    for n in names {
        assert!(bytes(&a.join(n)) == bytes(&b.join(n)), "{n} differs between {} and {}", a.display(), b.display());
    }
}

/// A fake device: per-token numbers that depend only on the sequence (so any batching gives the same
/// numbers), out of memory above `limit` tokens per call, a pseudo-random delay per call so that several
/// workers finish out of order, and optionally a failure or a panic at call `fail_at`.
struct Fake {
    limit: usize,
    delay_ms: u64,
    /// Calls of all the fakes sharing it, and the longest sequence they saw.
    calls: Arc<(AtomicUsize, AtomicUsize)>,
    fail_at: Option<(usize, bool)>,
    n: usize,
}

type Calls = Arc<(AtomicUsize, AtomicUsize)>;

impl Fake {
    fn new(limit: usize, delay_ms: u64, calls: &Calls) -> Fake {
        Fake { limit, delay_ms, calls: calls.clone(), fail_at: None, n: 0 }
    }
}

impl Backend for Fake {
    fn describe(&self) -> String {
        "fake".into()
    }
    fn score(&mut self, batch: &[SeqRequest<'_>], opts: &StatsOptions) -> Result<Vec<Vec<TokenStats>>> {
        self.n += 1;
        self.calls.0.fetch_add(1, Ordering::SeqCst);
        self.calls.1.fetch_max(batch.iter().map(|s| s.ids.len()).max().unwrap_or(0), Ordering::SeqCst);
        if let Some((at, panic)) = self.fail_at {
            if self.n == at {
                assert!(!panic, "fake device exploded");
                return Err(LarkError::Backend("fake device failed".into()));
            }
        }
        let tokens: usize = batch.iter().map(|s| s.ids.len()).sum();
        if self.delay_ms > 0 {
            let h = batch.iter().flat_map(|s| s.ids.iter()).fold(tokens as u64, |h, &x| h.wrapping_mul(31) ^ x as u64);
            std::thread::sleep(Duration::from_millis(h % self.delay_ms));
        }
        if tokens > self.limit {
            return Err(LarkError::OutOfMemory { device: "fake".into(), bytes: tokens * 4096 });
        }
        Ok(batch
            .iter()
            .map(|s| {
                (s.score_from..s.ids.len())
                    .map(|t| {
                        let (g, prev) = (s.ids[t], s.ids[t - 1]);
                        TokenStats {
                            logprob: -((g % 97) as f32) / 13.0 - (prev % 5) as f32 / 7.0 - 0.01,
                            lse: 1.5,
                            sum_p2: 0.05 + (g % 11) as f32 / 20.0,
                            entropy: (t % 9) as f32 / 3.0,
                            rank: (g ^ prev) % 50,
                            topk_brier: if opts.topk_brier.is_some() { (g % 7) as f32 / 7.0 } else { f32::NAN },
                        }
                    })
                    .collect()
            })
            .collect())
    }
    fn batch_token_budget(&self) -> usize {
        8000
    }
}

struct Setup {
    _model: tempfile::TempDir,
    pool: Pool,
    text: TextPipeline,
    settings: ScoreSettings,
}

fn setup(scorers: &str) -> Setup {
    let model = student();
    let pool = read_pool(repo().join("examples/pool.jsonl"), &ReadOptions::default()).unwrap();
    let text = TextPipeline::open(model.path()).unwrap();
    let settings = ScoreSettings {
        span: SpanMode::Turn,
        turns: lark::text::Turns::All,
        max_len: 32768,
        brier: BrierMode::TopK(5),
        rank_clip: 100,
        scorers: parse_scorers(scorers).unwrap(),
        local_m: 2,
        seed: 42,
    };
    Setup { _model: model, pool, text, settings }
}

/// Score on `backends` with up to `max_seqs` sequences per batch; every progress report checked.
fn run(st: &Setup, backends: &mut [Box<dyn Backend>], max_seqs: usize) -> Result<(JobOutput, Vec<Progress>)> {
    let mut workers: Vec<&mut dyn Backend> = backends.iter_mut().map(|b| b.as_mut() as &mut dyn Backend).collect();
    let caller = std::thread::current().id();
    let mut seen: Vec<Progress> = Vec::new();
    let ctl = JobControl { max_seqs: Some(max_seqs), ..Default::default() };
    let out = score_pool_on(&st.pool, &st.text, &mut workers, &st.settings, None, ctl, |p: &Progress| {
        assert_eq!(std::thread::current().id(), caller, "progress comes from the caller's thread");
        seen.push(*p);
    })?;
    Ok((out, seen))
}

/// Everything a job computed, exactly (finite numbers in shortest round-trip form, NaN as a string).
fn fingerprint(o: &JobOutput) -> String {
    let cands: Vec<String> = o.candidates.iter().map(|c| c.to_value().to_string()).collect();
    let rows: Vec<String> = o.rows.iter().map(|r| format!("{r:?}")).collect();
    format!("{}\n{}\n{} {}", cands.join("\n"), rows.join("\n"), o.tokens_forward, o.tokens_scored)
}

fn fakes(n: usize, limit: usize, delay_ms: u64, calls: &Calls) -> Vec<Box<dyn Backend>> {
    (0..n).map(|_| Box::new(Fake::new(limit, delay_ms, calls)) as Box<dyn Backend>).collect()
}

#[test]
fn workers_finishing_out_of_order_give_the_same_results_and_sane_progress() {
    for scorers in ["default", "all"] {
        let st = setup(scorers);
        let calls = Calls::default();
        let (one, _) = run(&st, &mut fakes(1, usize::MAX, 0, &calls), 64).unwrap();
        for n in [2, 3] {
            let (many, progress) = run(&st, &mut fakes(n, usize::MAX, 7, &calls), 64).unwrap();
            assert_eq!(fingerprint(&many), fingerprint(&one), "{n} workers, scorers {scorers}");
            let last = progress.last().unwrap();
            assert!(last.totals_exact);
            assert_eq!(last.problems_done, last.problems_total);
            assert_eq!(last.problems_total, st.pool.n_problems());
            assert_eq!((last.tokens_done, last.tokens_total), (one.tokens_forward, one.tokens_forward));
            assert_eq!(last.trajectories_done, last.trajectories_total);
            for w in progress.windows(2) {
                let (a, b) = (w[0], w[1]);
                assert!(b.tokens_done >= a.tokens_done && b.problems_done >= a.problems_done);
                assert!(b.trajectories_done >= a.trajectories_done);
                assert!(!a.totals_exact || b.totals_exact);
            }
            assert!(progress
                .iter()
                .all(|p| p.tokens_done <= p.tokens_total && p.trajectories_done <= p.trajectories_total));
        }
    }
}

#[test]
fn out_of_memory_splits_and_retries_to_the_same_results() {
    let st = setup("all");
    let calls = Calls::default();
    let (free, _) = run(&st, &mut fakes(1, usize::MAX, 0, &calls), 64).unwrap();
    let unconstrained = calls.0.swap(0, Ordering::SeqCst);
    let longest = calls.1.load(Ordering::SeqCst);
    // Room for the longest sequence alone, not for its batch companions.
    let (tight, _) = run(&st, &mut fakes(2, longest, 3, &calls), 64).unwrap();
    assert_eq!(fingerprint(&tight), fingerprint(&free));
    let split = calls.0.load(Ordering::SeqCst);
    assert!(
        split > unconstrained,
        "no batch was split: {split} calls, {unconstrained} without a limit, longest {longest}"
    );
}

#[test]
fn a_trajectory_that_never_fits_fails_the_run_naming_it() {
    let st = setup("default");
    let calls = Calls::default();
    let err = run(&st, &mut fakes(2, 120, 0, &calls), 64).err().expect("the run fails").to_string();
    assert!(err.contains("problem") && err.contains("candidate"), "{err}");
    assert!(err.contains("do not fit in device memory even alone") && err.contains("--max-len"), "{err}");
    assert!(err.contains("pool.jsonl"), "{err}");
}

#[test]
fn a_failing_or_panicking_worker_stops_the_run_with_its_error() {
    let st = setup("default");
    for panic in [false, true] {
        let calls = Calls::default();
        // Every worker fails at its second batch: with more batches than workers, one of them does.
        let mut b: Vec<Box<dyn Backend>> = (0..3)
            .map(|_| {
                Box::new(Fake { fail_at: Some((2, panic)), ..Fake::new(usize::MAX, 5, &calls) }) as Box<dyn Backend>
            })
            .collect();
        let t0 = Instant::now();
        let err = run(&st, &mut b, 4).err().expect("the run fails").to_string();
        let want = if panic { "fake device exploded" } else { "fake device failed" };
        assert!(err.contains(want), "{err}");
        assert!(t0.elapsed() < Duration::from_secs(60));
    }
}

#[test]
fn a_panicking_progress_callback_does_not_hang_the_threads() {
    let st = setup("default");
    let calls = Calls::default();
    let mut b = fakes(2, usize::MAX, 5, &calls);
    let mut workers: Vec<&mut dyn Backend> = b.iter_mut().map(|b| b.as_mut() as &mut dyn Backend).collect();
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let ctl = JobControl { max_seqs: Some(1), ..Default::default() };
        score_pool_on(&st.pool, &st.text, &mut workers, &st.settings, None, ctl, |_: &Progress| panic!("observer"))
    }));
    assert!(r.is_err(), "the panic reaches the caller (after the threads stopped)");
    assert!(calls.0.load(Ordering::SeqCst) < st.pool.records.len(), "queued batches were left alone");
}

#[test]
fn a_record_that_cannot_be_prepared_stops_the_run_early() {
    let mut st = setup("default");
    // The pool's last record breaks the chat's rules (the readers would have refused it; here it slips
    // through to the tokeniser).
    let last = st.pool.records.len() - 1;
    st.pool.records[last].messages[0].role = "narrator".into();
    let calls = Calls::default();
    let err = run(&st, &mut fakes(2, usize::MAX, 100, &calls), 1).err().expect("the run fails").to_string();
    assert!(err.contains("narrator"), "{err}");
    // The tokeniser runs far ahead of the devices: the error comes long before the last batch.
    let n = calls.0.load(Ordering::SeqCst);
    assert!(n < st.pool.records.len() / 3, "{n} batches ran before the error");
}

#[test]
fn cpu_workers_write_the_same_bytes_and_resume_across_worker_counts() {
    let model = student();
    let pool = repo().join("examples/pool.jsonl");
    let dir = tempfile::tempdir().unwrap();
    let args = |out: &Path, extra: &[&str]| -> Vec<String> {
        let mut a = vec!["score", "--model", s(model.path()), "--pool", s(&pool), "--out", s(out), "--device", "cpu"];
        a.extend_from_slice(&["--batch-tokens", "300"]);
        a.extend_from_slice(extra);
        a.iter().map(|x| x.to_string()).collect()
    };
    let go = |v: &[String]| lark(&v.iter().map(String::as_str).collect::<Vec<_>>());
    let one = dir.path().join("one");
    go(&args(&one, &[]));
    let three = dir.path().join("three");
    let o = go(&args(&three, &["--cpu-workers", "3"]));
    assert!(String::from_utf8_lossy(&o.stderr).contains("3 workers"), "{}", String::from_utf8_lossy(&o.stderr));
    assert_same(&one, &three, &["scores.jsonl", "scores.json"]);

    // Killed with two workers, resumed with one: the same bytes.
    let killed = dir.path().join("killed");
    let a = args(&killed, &["--cpu-workers", "2"]);
    let mut child =
        Command::new(env!("CARGO_BIN_EXE_lark")).args(&a).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    let journal = killed.join("partial/journal.jsonl");
    let t0 = Instant::now();
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        let lines = std::fs::read_to_string(&journal).map(|t| t.lines().count()).unwrap_or(0);
        if lines >= 2 || t0.elapsed() > Duration::from_secs(300) {
            child.kill().unwrap();
            child.wait().unwrap();
            break;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    go(&args(&killed, &["--resume"]));
    assert_same(&one, &killed, &["scores.jsonl", "scores.json"]);

    // --cpu-workers is for the CPU only.
    let o = Command::new(env!("CARGO_BIN_EXE_lark"))
        .args(args(&dir.path().join("x"), &["--cpu-workers", "2"]).iter().map(|x| if x == "cpu" { "cuda" } else { x }))
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("--cpu-workers"), "{}", String::from_utf8_lossy(&o.stderr));
}
