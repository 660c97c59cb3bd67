//! Production runs end to end: resume after `kill -9` (byte-identical final files), sharding + `lark merge`
//! (byte-identical to an unsharded run), CPU determinism (run to run and across batch budgets), and the
//! HTML report. The model is the random-weight Llama with SmolLM2's tokenizer of tests/cli.rs, and
//! `--batch-tokens` (hidden) makes batches, hence journal chunks, small so that kills land mid-run.

mod common;

use common::student::student;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn lark(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_lark")).args(args).output().expect("lark runs")
}

fn ok(args: &[&str]) -> Output {
    let o = lark(args);
    assert!(o.status.success(), "lark {args:?}: {}", String::from_utf8_lossy(&o.stderr));
    o
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn bytes(p: &Path) -> Vec<u8> {
    std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// The files that must be byte-identical between two runs of the same job (run.json has timings).
fn assert_same_files(a: &Path, b: &Path, names: &[&str]) {
    for n in names {
        let (x, y) = (bytes(&a.join(n)), bytes(&b.join(n)));
        if x != y {
            let (x, y) = (String::from_utf8_lossy(&x), String::from_utf8_lossy(&y));
            let first = x.lines().zip(y.lines()).find(|(p, q)| p != q);
            panic!("{n} differs between {} and {}: first differing lines {first:?}", a.display(), b.display());
        }
    }
}

fn lines(p: &Path) -> usize {
    std::fs::read_to_string(p).map(|t| t.lines().count()).unwrap_or(0)
}

/// Start `lark ARGS`, SIGKILL it once its journal holds at least `after` chunks (or it has finished).
/// Returns whether the kill landed before the run completed.
fn kill_after(args: &[&str], out: &Path, after: usize) -> bool {
    let mut child = Command::new(env!("CARGO_BIN_EXE_lark"))
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let journal = out.join("partial/journal.jsonl");
    let t0 = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success());
            return false;
        }
        if lines(&journal) >= after || t0.elapsed() > Duration::from_secs(300) {
            child.kill().unwrap(); // SIGKILL on Unix
            child.wait().unwrap();
            return !out.join("run.json").exists();
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

const SCORE_FILES: [&str; 2] = ["scores.jsonl", "scores.json"];

#[test]
fn resume_after_kill_is_byte_identical() {
    let model = student();
    let pool = repo().join("examples/pool.jsonl");
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("base");
    let args = |out: &Path| -> Vec<String> {
        ["score", "--model", s(model.path()), "--pool", s(&pool), "--out", s(out), "--device", "cpu"]
            .iter()
            .map(|x| x.to_string())
            .chain(["--batch-tokens".into(), "300".into()])
            .collect()
    };
    let argv = |out: &Path| args(out);
    let b = argv(&base);
    ok(&b.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(!base.join("partial").exists(), "the journal is removed after success");
    let total_chunks_hint = 12; // 12 problems: at most 12 chunks

    let mut landed = 0;
    for (n, after) in [1usize, 3, total_chunks_hint / 2 + 2].into_iter().enumerate() {
        let out = dir.path().join(format!("killed{n}"));
        let a = argv(&out);
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        if kill_after(&a, &out, after) {
            landed += 1;
            assert!(!out.join("run.json").exists(), "a killed run must not look complete");
            let done = lines(&out.join("partial/journal.jsonl"));
            // Different settings: refused, naming them.
            let mut other = a.clone();
            other.extend(["--resume", "--seed", "7"]);
            let o = lark(&other);
            assert!(!o.status.success());
            assert!(String::from_utf8_lossy(&o.stderr).contains("settings"), "{}", String::from_utf8_lossy(&o.stderr));
            // Another precision (the CPU's opt-in bf16 linear layers): refused, naming it.
            let mut other = a.clone();
            other.extend(["--resume", "--precision", "bf16"]);
            let o = lark(&other);
            assert!(!o.status.success());
            assert!(String::from_utf8_lossy(&o.stderr).contains("precision"), "{}", String::from_utf8_lossy(&o.stderr));
            let mut r = a.clone();
            r.push("--resume");
            let o = ok(&r);
            let err = String::from_utf8_lossy(&o.stderr);
            if done > 0 {
                assert!(err.contains(&format!("resuming: {done} finished chunks")), "{err}");
            }
        } else {
            ok(&a);
        }
        assert!(out.join("run.json").exists() && !out.join("partial").exists());
        assert_same_files(&base, &out, &SCORE_FILES);
    }
    assert!(landed >= 1, "no kill landed mid-run: the run is too fast for this test");
}

#[test]
fn run_resume_and_determinism_across_batch_budgets() {
    let model = student();
    let pool = repo().join("examples/pool.jsonl");
    let dir = tempfile::tempdir().unwrap();
    let run = |out: &Path, extra: &[&str]| {
        let mut a = vec!["run", "--model", s(model.path()), "--pool", s(&pool), "--out", s(out), "--device", "cpu"];
        a.extend_from_slice(extra);
        a.iter().map(|x| x.to_string()).collect::<Vec<_>>()
    };
    let (a, b, c) = (dir.path().join("a"), dir.path().join("b"), dir.path().join("c"));
    let all = ["scores.jsonl", "scores.json", "selection.jsonl", "train.jsonl"];
    // Same inputs → same bytes; batch budget (which trajectories share a batch) → same bytes on the CPU.
    let ra = run(&a, &[]);
    ok(&ra.iter().map(String::as_str).collect::<Vec<_>>());
    let rb = run(&b, &["--batch-tokens", "200"]);
    ok(&rb.iter().map(String::as_str).collect::<Vec<_>>());
    assert_same_files(&a, &b, &all);
    // `lark run` killed mid-run and resumed.
    let rc = run(&c, &["--batch-tokens", "250"]);
    let rc: Vec<&str> = rc.iter().map(String::as_str).collect();
    kill_after(&rc, &c, 2);
    let mut r = rc.clone();
    r.push("--resume");
    ok(&r);
    assert_same_files(&a, &c, &all);
    assert!(c.join("report.html").exists(), "lark run writes the report");
    check_report(&std::fs::read_to_string(a.join("report.html")).unwrap(), &a);
    let rep = dir.path().join("r.html");
    ok(&["report", "--run", s(&a), "--out", s(&rep)]);
    check_report(&std::fs::read_to_string(&rep).unwrap(), &a);
    // A second identical run into the same directory: same bytes.
    ok(&ra.iter().map(String::as_str).collect::<Vec<_>>());
    assert_same_files(&b, &a, &all);
}

#[test]
fn shards_merge_to_the_unsharded_run() {
    let model = student();
    let pool = repo().join("examples/pool.jsonl");
    let dir = tempfile::tempdir().unwrap();
    let full = dir.path().join("full");
    let base = ["score", "--model", s(model.path()), "--pool", s(&pool), "--device", "cpu"];
    let with = |out: &Path, extra: &[&str]| {
        let mut a: Vec<String> = base.iter().map(|x| x.to_string()).collect();
        a.extend(["--out".to_string(), s(out).to_string()]);
        a.extend(extra.iter().map(|x| x.to_string()));
        a
    };
    ok(&with(&full, &[]).iter().map(String::as_str).collect::<Vec<_>>());
    let shards: Vec<PathBuf> = (0..3).map(|i| dir.path().join(format!("shard{i}"))).collect();
    let mut sizes = Vec::new();
    for (i, d) in shards.iter().enumerate() {
        let spec = format!("{i}/3");
        ok(&with(d, &["--shard", &spec]).iter().map(String::as_str).collect::<Vec<_>>());
        sizes.push(lines(&d.join("scores.jsonl")));
    }
    assert_eq!(sizes.iter().sum::<usize>(), 70);
    assert!(sizes.iter().all(|&n| n > 0 && n < 70), "{sizes:?}");
    let merged = dir.path().join("merged");
    let mut m = vec!["merge"];
    m.extend(shards.iter().map(|p| s(p)));
    m.extend(["--out", s(&merged)]);
    ok(&m);
    assert_same_files(&full, &merged, &SCORE_FILES);
    assert!(merged.join("run.json").exists());

    // Incomplete, duplicated, or mixed with other settings: refused.
    let o = lark(&["merge", s(&shards[0]), s(&shards[1]), "--out", s(&dir.path().join("x"))]);
    assert!(
        !o.status.success() && String::from_utf8_lossy(&o.stderr).contains("shard 2/3"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let o =
        lark(&["merge", s(&shards[0]), s(&shards[0]), s(&shards[1]), s(&shards[2]), "--out", s(&dir.path().join("x"))]);
    assert!(
        !o.status.success() && String::from_utf8_lossy(&o.stderr).contains("twice"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let other = dir.path().join("other1");
    ok(&with(&other, &["--shard", "1/3", "--seed", "9"]).iter().map(String::as_str).collect::<Vec<_>>());
    let o = lark(&["merge", s(&shards[0]), s(&other), s(&shards[2]), "--out", s(&dir.path().join("x"))]);
    assert!(
        !o.status.success() && String::from_utf8_lossy(&o.stderr).contains("settings"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(!dir.path().join("x/scores.jsonl").exists());
}

/// The report's structure: self-contained, every section, one panel per problem, one ring per selection.
fn check_report(html: &str, run: &Path) {
    assert!(html.starts_with("<!DOCTYPE html>") && html.trim_end().ends_with("</html>"));
    for bad in ["<script", "http://", "https://", "<link", "<img", "url("] {
        assert!(!html.contains(bad), "the report must be self-contained: found {bad}");
    }
    for id in ["id=\"problems\"", "id=\"teachers\"", "id=\"selected\"", "id=\"weights\""] {
        assert!(html.contains(id), "missing section {id}");
    }
    assert_eq!(html.matches("aria-label=\"problem ").count(), 12);
    let sel: usize = std::fs::read_to_string(run.join("selection.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["selected"].as_array().unwrap().len())
        .sum();
    assert_eq!(html.matches("class=\"sel\"").count(), sel);
    assert!(html.contains("mean gold-token probability") && html.contains("wrong-token concentration"));
    assert_eq!(html.matches("<svg").count(), html.matches("</svg>").count());
    assert!(!html.contains("NaN") && !html.contains("inf\""));
}

/// `LARK_KEEP_STUDENT=DIR cargo test --test production -- --ignored keep_student`: the test student, kept
/// (for trying the commands by hand).
#[test]
#[ignore]
fn keep_student() {
    let d = student();
    let to = PathBuf::from(std::env::var("LARK_KEEP_STUDENT").expect("LARK_KEEP_STUDENT=DIR"));
    std::fs::create_dir_all(&to).unwrap();
    for e in std::fs::read_dir(d.path()).unwrap() {
        let p = e.unwrap().path();
        std::fs::copy(&p, to.join(p.file_name().unwrap())).unwrap();
    }
}

/// Headless Chromium's console lines (`--enable-logging=stderr`), and its screenshot at `png`.
fn chromium_render(chromium: &Path, page: &Path, png: &Path) -> Vec<String> {
    let profile = tempfile::tempdir().unwrap();
    let o = Command::new(chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--hide-scrollbars",
            "--no-first-run",
            "--enable-logging=stderr",
            "--v=0",
            "--window-size=1280,1600",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(format!("--screenshot={}", png.display()))
        .arg(format!("file://{}", page.display()))
        .output()
        .expect("chromium runs");
    assert!(o.status.success(), "chromium failed: {}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stderr)
        .lines()
        // Chromium logs every console message at INFO level, whatever its kind: the report has no script,
        // so any console message (a blocked resource, a parse error) counts.
        .filter(|l| l.contains(":CONSOLE") || l.contains("Uncaught") || l.contains("net::ERR"))
        .map(str::to_string)
        .collect()
}

#[test]
fn report_renders_in_headless_chromium() {
    let Some(chromium) = ["chromium", "chromium-browser"].iter().find_map(|b| {
        std::env::var_os("PATH")?.to_str()?.split(':').map(|d| Path::new(d).join(b)).find(|p| p.exists())
    }) else {
        // Never `ok` for a check that did not run: scripts/test.sh installs it.
        panic!("chromium is not installed: `apt-get install chromium` (scripts/test.sh installs it)");
    };
    let dir = tempfile::tempdir().unwrap();
    // The detector works: a page that logs an error is caught.
    let probe = dir.path().join("probe.html");
    std::fs::write(&probe, "<!DOCTYPE html><html><body><script>console.error('lark-probe')</script></body></html>")
        .unwrap();
    let errs = chromium_render(&chromium, &probe, &dir.path().join("probe.png"));
    assert!(errs.iter().any(|l| l.contains("lark-probe")), "console messages are not visible to the test: {errs:?}");

    // A small real run: the first two problems of the example pool.
    let model = student();
    let pool = dir.path().join("pool.jsonl");
    let text = std::fs::read_to_string(repo().join("examples/pool.jsonl")).unwrap();
    let keep: Vec<&str> = text
        .lines()
        .filter(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["problem_id"].as_i64().unwrap() < 2)
        .collect();
    std::fs::write(&pool, keep.join("\n")).unwrap();
    let out = dir.path().join("run");
    ok(&["run", "--model", s(model.path()), "--pool", s(&pool), "--out", s(&out), "--device", "cpu"]);
    let png = dir.path().join("report.png");
    let errs = chromium_render(&chromium, &out.join("report.html"), &png);
    assert!(errs.is_empty(), "console errors: {errs:?}");
    let o = Command::new("python3").arg(repo().join("tests/support/png_stats.py")).arg(&png).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let stats: Vec<f64> = String::from_utf8_lossy(&o.stdout).split_whitespace().map(|x| x.parse().unwrap()).collect();
    // Not blank: many colours (teachers' palette, text) and a real share of non-white pixels.
    assert!(stats[0] >= 1000.0 && stats[2] >= 8.0 && stats[3] > 0.01, "screenshot looks blank: {stats:?}");
}
