//! The C ABI (`include/lark.h`, `src/ffi`) from the outside: the header cannot drift from the Rust side; a C
//! program compiled with the system compiler against the header and `liblark.so` scores records of the
//! example pool and gets the numbers of `lark run` (scores.jsonl and the χ²-B selection); the same program
//! runs clean under valgrind; the Python ctypes example gets the same numbers too; tests/c/threads.c gets the
//! serial results bit for bit from 8 threads on one handle and on 8 handles, and runs clean under helgrind.
//!
//! The model is a random-weight Llama with SmolLM2's real tokenizer and chat template (as in tests/cli.rs).
//! `cargo test` builds the cdylib with the crate (`crate-type` lists it), next to the `lark` binary.

mod common;

use serde_json::Value;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// target/debug (or whichever profile): where cargo puts both the `lark` binary and `liblark.so`.
fn target_dir() -> PathBuf {
    Path::new(env!("CARGO_BIN_EXE_lark")).parent().unwrap().to_path_buf()
}

fn cdylib() -> PathBuf {
    let p = target_dir().join("liblark.so");
    assert!(p.exists(), "{} is missing: run `cargo build --lib` first (scripts/test.sh does); Cargo.toml's [lib] crate-type must list cdylib", p.display());
    p
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn ok(o: &Output, what: &str) -> String {
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{what} failed ({}):\n{err}", o.status);
    String::from_utf8(o.stdout.clone()).unwrap()
}

/// This binary's scratch directory under target/ (so the shared fixture can live in a static), emptied once
/// per run.
fn scratch() -> PathBuf {
    static D: OnceLock<PathBuf> = OnceLock::new();
    D.get_or_init(|| {
        let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join("c_abi");
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    })
    .clone()
}

/// Everything the end-to-end tests share: the model, a pool of the first problems, the C program's input,
/// and what `lark run` made of that pool.
struct Fixture {
    model: PathBuf,
    pool: PathBuf,
    c_input: PathBuf,
    scores: Vec<Value>,
    selection: Vec<Value>,
}

const BUDGET: &str = "2";

/// Write `records` as a LARK pool and as the C program's input ("pid<TAB>cid<TAB>messages").
fn write_inputs(dir: &Path, name: &str, records: &[Value]) -> (PathBuf, PathBuf) {
    let pool = dir.join(format!("{name}.jsonl"));
    let c_input = dir.join(format!("{name}.tsv"));
    let mut p = String::new();
    let mut c = String::new();
    for r in records {
        p += &format!("{r}\n");
        c += &format!("{}\t{}\t{}\n", r["problem_id"], r["candidate_id"], r["messages"]);
    }
    std::fs::write(&pool, p).unwrap();
    std::fs::write(&c_input, c).unwrap();
    (pool, c_input)
}

fn pool_records(pids: &[i64]) -> Vec<Value> {
    let text = std::fs::read_to_string(repo().join("examples/pool.jsonl")).unwrap();
    text.lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|r| pids.contains(&r["problem_id"].as_i64().unwrap()))
        .collect()
}

fn read_jsonl(p: &Path) -> Vec<Value> {
    std::fs::read_to_string(p).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

fn lark_run(model: &Path, pool: &Path, out: &Path, extra: &[&str]) -> (Vec<Value>, Vec<Value>) {
    let mut args = vec!["run", "--model", s(model), "--pool", s(pool), "--out", s(out), "--device", "cpu"];
    args.extend_from_slice(&["--budget", BUDGET]);
    args.extend_from_slice(extra);
    let o = Command::new(env!("CARGO_BIN_EXE_lark")).args(&args).output().unwrap();
    ok(&o, "lark run");
    (read_jsonl(&out.join("scores.jsonl")), read_jsonl(&out.join("selection.jsonl")))
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let dir = scratch();
        let model = dir.join("model");
        common::student::write_student(&model);
        let (pool, c_input) = write_inputs(&dir, "pool3", &pool_records(&[0, 1, 2]));
        let (scores, selection) = lark_run(&model, &pool, &dir.join("run"), &[]);
        Fixture { model, pool, c_input, scores, selection }
    })
}

/// `tests/c/NAME.c` compiled with warnings as errors against the header and `liblark.so`.
fn compile_c(name: &str, extra: &[&str]) -> PathBuf {
    let exe = scratch().join(name);
    let lib = cdylib();
    let o = Command::new("cc")
        .args(["-std=c11", "-Wall", "-Wextra", "-Werror", "-pedantic", "-g", "-O1"])
        .arg(format!("-I{}", repo().join("include").display()))
        .arg(repo().join(format!("tests/c/{name}.c")))
        .arg(&lib)
        .arg(format!("-Wl,-rpath,{}", lib.parent().unwrap().display()))
        .args(extra)
        .args(["-lm", "-o"])
        .arg(&exe)
        .output()
        .expect("the system C compiler `cc` runs");
    ok(&o, &format!("compiling tests/c/{name}.c"));
    exe
}

/// The C program, compiled once.
fn c_program() -> &'static Path {
    static P: OnceLock<PathBuf> = OnceLock::new();
    P.get_or_init(|| compile_c("score_pool", &[]))
}

/// The C program's rows by (problem, candidate).
type CRows = HashMap<(i64, i64), Vec<String>>;

const C_NUMBERS: [&str; 14] = [
    "nll_sum",
    "L",
    "brier_sum",
    "brier_mean",
    "rho_hat",
    "grape",
    "inverse_loss",
    "rsr",
    "mean_rank_clip",
    "mean_p_gold",
    "wrong_conc",
    "entropy_mean",
    "g_hat",
    "weight",
];

fn parse_c_rows(stdout: &str) -> CRows {
    stdout
        .lines()
        .map(|l| {
            let f: Vec<String> = l.split('\t').map(str::to_string).collect();
            assert_eq!(f.len(), 5 + C_NUMBERS.len() + 1, "row: {l}");
            ((f[0].parse().unwrap(), f[1].parse().unwrap()), f)
        })
        .collect()
}

/// Selected weights by (problem, candidate) from selection.jsonl; absent means 0.
fn weights(selection: &[Value]) -> HashMap<(i64, i64), f64> {
    let mut w = HashMap::new();
    for p in selection {
        let pid = p["problem_id"].as_i64().unwrap();
        for c in p["selected"].as_array().unwrap() {
            w.insert((pid, c["candidate_id"].as_i64().unwrap()), c["weight"].as_f64().unwrap());
        }
    }
    w
}

/// Same number: both NaN/null, or equal to `tol` relative.
fn same(a: f64, b: f64, tol: f64) -> bool {
    (a.is_nan() && b.is_nan()) || (a - b).abs() <= tol * a.abs().max(b.abs()) + 1e-300
}

fn num(v: &Value) -> f64 {
    v.as_f64().unwrap_or(f64::NAN)
}

/// Every scores.jsonl row has a C row with the same numbers, and the same χ²-B weight as selection.jsonl.
fn assert_rows_match(scores: &[Value], selection: &[Value], c: &CRows, tol: f64) {
    assert_eq!(c.len(), scores.len());
    let w = weights(selection);
    for r in scores {
        let key = (r["problem_id"].as_i64().unwrap(), r["candidate_id"].as_i64().unwrap());
        let f = &c[&key];
        let skipped = !r["skipped"].is_null();
        assert_eq!(f[2], if skipped { "1" } else { "0" }, "{key:?} skipped");
        assert_eq!(f[3], if r["truncated"].as_bool().unwrap() { "1" } else { "0" }, "{key:?} truncated");
        assert_eq!(f[4], r["n_tokens"].as_u64().unwrap_or(0).to_string(), "{key:?} n_tokens");
        if skipped {
            assert_eq!(f[f.len() - 1], r["skipped"].as_str().unwrap(), "{key:?} skip reason");
        }
        for (i, name) in C_NUMBERS.iter().enumerate() {
            let got: f64 = f[5 + i].parse().unwrap();
            let want = if *name == "weight" { w.get(&key).copied().unwrap_or(0.0) } else { num(&r[*name]) };
            assert!(same(got, want, tol), "{key:?} {name}: C {got:e} vs lark run {want:e}");
        }
    }
}

/// C source without its `/* ... */` comments.
fn strip_comments(c: &str) -> String {
    let mut out = String::new();
    let mut rest = c;
    while let Some(i) = rest.find("/*") {
        out += &rest[..i];
        rest = &rest[i + 2..];
        rest = &rest[rest.find("*/").map_or(rest.len(), |j| j + 2)..];
    }
    out + rest
}

#[test]
fn header_matches_rust_side() {
    let dir = scratch().join("abi");
    std::fs::create_dir_all(&dir).unwrap();
    let check = dir.join("abi_check.c");
    std::fs::write(&check, lark::ffi::abi::c_checks()).unwrap();
    let compile = |include: &Path| {
        Command::new("cc")
            .args(["-std=c11", "-fsyntax-only", "-Wall", "-Wextra", "-Werror", "-pedantic"])
            .arg(format!("-I{}", include.display()))
            .arg(&check)
            .output()
            .expect("the system C compiler `cc` runs")
    };
    // Function types, struct layouts and constants as the compiler sees them.
    ok(&compile(&repo().join("include")), "compiling the generated ABI checks against include/lark.h");

    // Names both ways: every LARK_API declaration is exported by Rust and vice versa; struct fields in order.
    let header = std::fs::read_to_string(repo().join("include/lark.h")).unwrap();
    let mut declared: Vec<String> = header
        .lines()
        .filter(|l| l.starts_with("LARK_API "))
        .map(|l| {
            let name = l[..l.find('(').unwrap()].rsplit([' ', '*']).next().unwrap();
            name.to_string()
        })
        .collect();
    let mut exported: Vec<String> = lark::ffi::abi::functions().into_iter().map(|(n, _)| n.to_string()).collect();
    declared.sort();
    exported.sort();
    assert_eq!(declared, exported, "functions declared in lark.h vs exported by src/ffi");
    for st in lark::ffi::abi::structs() {
        let start = header.find(&format!("typedef struct {} {{", st.c_name)).unwrap();
        let end = start + header[start..].find(&format!("}} {};", st.c_name)).unwrap();
        let body = strip_comments(&header[start..end]);
        let body = &body[body.find('{').unwrap() + 1..];
        let fields: Vec<&str> = body
            .split(';')
            .filter(|d| !d.trim().is_empty())
            .map(|d| d.split('[').next().unwrap().split_whitespace().last().unwrap())
            .collect();
        let rust: Vec<&str> = st.fields.iter().map(|f| f.0).collect();
        assert_eq!(fields, rust, "fields of {}", st.c_name);
    }
    let defines: Vec<&str> = header
        .lines()
        .filter_map(|l| l.strip_prefix("#define LARK_"))
        .filter(|l| l.split_whitespace().nth(1).is_some_and(|v| v.parse::<i64>().is_ok()))
        .map(|l| l.split_whitespace().next().unwrap())
        .collect();
    let consts = lark::ffi::abi::constants();
    assert_eq!(defines.len(), consts.len(), "numeric #defines in lark.h: {defines:?}");

    // The check does catch drift: a header whose struct field changed type no longer compiles.
    let drifted = dir.join("drifted");
    std::fs::create_dir_all(&drifted).unwrap();
    let bad = header.replacen("    uint32_t rank;", "    uint64_t rank;", 1);
    assert_ne!(bad, header);
    std::fs::write(drifted.join("lark.h"), bad).unwrap();
    assert!(!compile(&drifted).status.success(), "a drifted lark_token_stats was not caught");
    let bad = header.replacen("size_t per_token_cap);", "int per_token_cap);", 1);
    assert_ne!(bad, header);
    std::fs::write(drifted.join("lark.h"), bad).unwrap();
    assert!(!compile(&drifted).status.success(), "a drifted lark_score_ids prototype was not caught");
}

#[test]
fn c_program_matches_lark_run() {
    let f = fixture();
    let o = Command::new(c_program()).args([s(&f.model), "cpu", s(&f.c_input), BUDGET, "0"]).output().unwrap();
    let rows = parse_c_rows(&ok(&o, "score_pool"));
    assert_eq!(rows.len(), 18);
    // Same batches through the same backend: the numbers are identical, not merely close.
    assert_rows_match(&f.scores, &f.selection, &rows, 0.0);
}

#[test]
fn c_program_matches_lark_run_when_truncating() {
    // A short max_len truncates every trajectory (and could leave nothing to score): both sides must agree.
    let f = fixture();
    let dir = scratch().join("short");
    std::fs::create_dir_all(&dir).unwrap();
    let (scores, selection) = lark_run(&f.model, &f.pool, &dir, &["--max-len", "160"]);
    let o = Command::new(c_program()).args([s(&f.model), "cpu", s(&f.c_input), BUDGET, "160"]).output().unwrap();
    let rows = parse_c_rows(&ok(&o, "score_pool"));
    assert!(rows.values().filter(|r| r[3] == "1").count() >= 12, "most rows are cut at 160 tokens");
    assert_rows_match(&scores, &selection, &rows, 0.0);
}

#[test]
fn c_program_runs_clean_under_valgrind() {
    let f = fixture();
    let dir = scratch().join("valgrind");
    std::fs::create_dir_all(&dir).unwrap();
    // Two candidates of one problem, cut at 140 tokens: memcheck is ~50x slower than native. Any memory error fails, and so does
    // a leak (definitely or indirectly lost). "Possibly lost" blocks are not counted: they are process-lifetime
    // statics of dependencies (minijinja's builtin filter table, rayon's global pool threads), reachable only
    // through interior pointers, which the library never frees by design.
    let two: Vec<Value> = pool_records(&[11]).into_iter().take(2).collect();
    let (_, input) = write_inputs(&dir, "one", &two);
    let o = Command::new("valgrind")
        .args(["--error-exitcode=1", "--leak-check=full", "--errors-for-leak-kinds=definite,indirect", "--quiet"])
        .arg(c_program())
        .args([s(&f.model), "cpu", s(&input), BUDGET, "140"])
        .env("RAYON_NUM_THREADS", "2")
        .output()
        .expect("valgrind runs");
    let stdout = ok(&o, "score_pool under valgrind");
    assert_eq!(stdout.lines().count(), 2);
}

#[test]
fn python_ctypes_example_matches_lark_run() {
    let python = ["python3", "python"].into_iter().find(|p| Command::new(p).arg("--version").output().is_ok());
    let python = python.expect("no python3 on PATH: `apt-get install python3` (scripts/test.sh installs it)");
    let f = fixture();
    let o = Command::new(python)
        .arg(repo().join("examples/python/lark_ctypes.py"))
        .args(["--lib", s(&cdylib()), "--model", s(&f.model), "--pool", s(&f.pool), "--device", "cpu"])
        .args(["--budget", BUDGET, "--tokens", "3"])
        .output()
        .unwrap();
    let stdout = ok(&o, "examples/python/lark_ctypes.py");
    let rows: Vec<Value> = stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(rows.len(), f.scores.len());
    let w = weights(&f.selection);
    for (py, want) in rows.iter().zip(&f.scores) {
        let key = (want["problem_id"].as_i64().unwrap(), want["candidate_id"].as_i64().unwrap());
        assert_eq!((py["problem_id"].as_i64().unwrap(), py["candidate_id"].as_i64().unwrap()), key);
        assert_eq!(py["n_tokens"], want["n_tokens"]);
        assert_eq!(py["truncated"], want["truncated"]);
        assert_eq!(py["skipped"], want["skipped"]);
        for name in &C_NUMBERS[..13] {
            assert!(same(num(&py[*name]), num(&want[*name]), 0.0), "{key:?} {name}: {} vs {}", py[*name], want[*name]);
        }
        assert_eq!(num(&py["weight"]), w.get(&key).copied().unwrap_or(0.0), "{key:?} weight");
    }
    // --tokens prints per-token statistics of the first chat on stderr.
    let err = String::from_utf8_lossy(&o.stderr);
    let toks: Vec<Value> = err.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
    assert_eq!(toks.len(), 3, "{err}");
    assert!(toks.iter().all(|t| t["rank"].as_u64().unwrap() >= 1 && t["logprob"].as_f64().unwrap() <= 0.0));
}

#[test]
fn readme_snippet_links_statically() {
    // The README's C example, against liblark.a this time (the staticlib crate type).
    let f = fixture();
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    let section = &readme[readme.find("\n## C ABI").expect("README has a C ABI section")..];
    let start = section.find("```c\n").unwrap() + 5;
    let code = &section[start..start + section[start..].find("```").unwrap()];
    let dir = scratch().join("readme");
    std::fs::create_dir_all(&dir).unwrap();
    let src = dir.join("demo.c");
    std::fs::write(&src, code.replace("models/student", s(&f.model))).unwrap();
    let exe = dir.join("demo");
    let lib = target_dir().join("liblark.a");
    assert!(lib.exists(), "{} is missing: run `cargo build --lib` first (scripts/test.sh does); Cargo.toml's [lib] crate-type must list staticlib", lib.display());
    let o = Command::new("cc")
        .args(["-std=c11", "-Wall", "-Wextra", "-Werror"])
        .arg(format!("-I{}", repo().join("include").display()))
        .arg(&src)
        .arg(&lib)
        .args(["-lpthread", "-ldl", "-lm", "-o"])
        .arg(&exe)
        .output()
        .unwrap();
    ok(&o, "compiling the README snippet against liblark.a");
    let out = ok(&Command::new(&exe).output().unwrap(), "the README snippet");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    assert!(lines.iter().all(|l| l.starts_with("L=") && l.contains("weight=")), "{out}");
}

/// `tests/c/threads.c`, compiled once.
fn threads_program() -> &'static Path {
    static P: OnceLock<PathBuf> = OnceLock::new();
    P.get_or_init(|| compile_c("threads", &["-pthread"]))
}

/// The threads program's input: the chats of `pids` (all candidates).
fn threads_input(name: &str, pids: &[i64], take: usize) -> PathBuf {
    let dir = scratch().join(name);
    std::fs::create_dir_all(&dir).unwrap();
    let records: Vec<Value> = pool_records(pids).into_iter().take(take).collect();
    write_inputs(&dir, "chats", &records).1
}

#[test]
fn c_threads_on_one_handle_and_on_many_give_the_serial_results() {
    // 12 chats of problems 0 and 1 cut at 96 tokens: problem 0's prompt fills that (skipped chats), problem 1's
    // are scored, one of them whole. 8 threads on the shared handle, then 8 threads on 8 handles, two rounds each.
    let f = fixture();
    let input = threads_input("threads_native", &[0, 1], 12);
    let o = Command::new(threads_program()).args([s(&f.model), "cpu", s(&input), "96", "8", "2"]).output().unwrap();
    let out = ok(&o, "tests/c/threads.c");
    assert!(out.contains("8 threads x 12 chats (6 skipped) x 2 rounds"), "{out}");
}

/// Run the threads program under valgrind's helgrind with tests/c/helgrind.supp; `args` after MODEL_DIR.
fn under_helgrind(args: &[&str]) -> Output {
    // RAYON_NUM_THREADS=1: one pool thread, so the work inside a call is not split between pool threads (whose
    // hand-offs helgrind cannot see: tests/c/helgrind.supp, class 1); the C threads' calls still run concurrently.
    // --check-stack-refs=no: rayon keeps each job and its latch on the waiting caller's stack, so the caller's
    // later reuse of that stack would be flagged wherever it happens, threads.c's frames included.
    Command::new("valgrind")
        .args(["--tool=helgrind", "--error-exitcode=1", "--check-stack-refs=no", "--num-callers=64", "-s"])
        .arg(format!("--suppressions={}", repo().join("tests/c/helgrind.supp").display()))
        .arg(threads_program())
        .arg(s(&fixture().model))
        .args(args)
        .env("RAYON_NUM_THREADS", "1")
        .output()
        .expect("valgrind runs: install it with `apt-get install -y valgrind` (scripts/install-test-tools.sh does)")
}

/// Two chats for the race-detector runs: a short one that is scored whole and problem 0's first, whose prompt
/// fills the 40 tokens (skipped).
fn helgrind_input() -> PathBuf {
    let dir = scratch().join("helgrind");
    std::fs::create_dir_all(&dir).unwrap();
    let short = serde_json::json!({"problem_id": 0, "candidate_id": 0, "messages": [
        {"role": "user", "content": "1+1?"}, {"role": "assistant", "content": "It is 2."}]});
    let long = pool_records(&[0]).remove(0);
    write_inputs(&dir, "chats", &[short, long]).1
}

#[test]
fn c_threads_run_clean_under_helgrind() {
    // 4 threads x 2 chats, one round, on the shared handle and on 4 handles: about 1.5 minutes on 2 cores.
    let input = helgrind_input();
    let o = under_helgrind(&["cpu", s(&input), "40", "4", "1"]);
    let err = String::from_utf8_lossy(&o.stderr);
    let tail: String = err.lines().rev().take(60).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join("\n");
    assert!(o.status.success(), "threads under helgrind failed ({}):\n{tail}", o.status);
    assert!(String::from_utf8_lossy(&o.stdout).contains("4 threads x 2 chats (1 skipped) x 1 rounds"));
    assert!(err.contains("ERROR SUMMARY: 0 errors"), "{tail}");
}

#[test]
fn helgrind_still_reports_a_race_through_lark() {
    // The suppressions do not hide a real race that goes through lark's C ABI: one thread rewriting the ids that
    // another is scoring (lark_score_ids reads them) must be reported, with both sides' frames.
    let input = helgrind_input();
    let o = under_helgrind(&["cpu", s(&input), "40", "2", "1", "race"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "helgrind did not report the deliberate race:\n{err}");
    assert!(String::from_utf8_lossy(&o.stdout).contains("race: one thread rewrote the ids"), "{err}");
    for frame in ["Possible data race", "lark_score_ids (model.rs", "race_reader (threads.c", "race_writer (threads.c"]
    {
        assert!(err.contains(frame), "helgrind's report lacks {frame}:\n{err}");
    }
}

/// `lark_score_pool` is `lark score`: the same files with the same bytes; a progress callback that returns
/// non-zero stops the job (LARK_ERR_INTERRUPTED, nothing final written) and the job with "resume": true
/// finishes it; bad job JSON is LARK_ERR_INPUT with the CLI's message.
#[test]
fn score_pool_through_the_c_abi_is_lark_score_and_stops_on_request() {
    use lark::ffi::job::lark_score_pool;
    use lark::ffi::status::{LARK_ERR_INPUT, LARK_ERR_INTERRUPTED, LARK_OK};
    use lark::ffi::LarkProgress;
    use std::ffi::{c_int, c_void, CStr, CString};

    let f = fixture();
    let dir = scratch().join("score_pool_job");
    let (cli, out) = (dir.join("cli"), dir.join("abi"));
    let small = ["--batch-tokens", "64", "--max-len", "384"];
    let mut args = vec!["score", "--model", s(&f.model), "--pool", s(&f.pool), "--out", s(&cli), "--device", "cpu"];
    args.extend_from_slice(&small);
    ok(&Command::new(env!("CARGO_BIN_EXE_lark")).args(&args).output().unwrap(), "lark score");

    struct Seen {
        calls: usize,
        stop_at: usize,
        last: LarkProgress,
    }
    unsafe extern "C" fn progress(p: *const LarkProgress, user: *mut c_void) -> c_int {
        let seen = &mut *(user as *mut Seen);
        seen.calls += 1;
        seen.last = *p;
        (seen.calls == seen.stop_at) as c_int
    }
    let last_error = || unsafe { CStr::from_ptr(lark::ffi::lark_last_error()) }.to_str().unwrap().to_string();
    let run = |job: &Value, seen: &mut Seen| {
        let text = CString::new(job.to_string()).unwrap();
        unsafe { lark_score_pool(text.as_ptr(), Some(progress), seen as *mut Seen as *mut c_void) }
    };
    let job = serde_json::json!({
        "model": f.model, "pool": f.pool, "out": out, "device": "cpu", "batch_tokens": 64, "max_len": 384,
    });
    let mut stop = Seen { calls: 0, stop_at: 2, last: LarkProgress::default() };
    assert_eq!(run(&job, &mut stop), LARK_ERR_INTERRUPTED, "{}", last_error());
    assert!(last_error().contains("stopped by the progress callback"), "{}", last_error());
    assert!(last_error().contains("\"resume\": true"), "{}", last_error());
    assert!(!out.join("run.json").exists() && !out.join("scores.jsonl").exists(), "nothing final after a stop");

    let mut resume = serde_json::json!({"resume": true});
    resume.as_object_mut().unwrap().extend(job.as_object().unwrap().clone());
    let mut go = Seen { calls: 0, stop_at: 0, last: LarkProgress::default() };
    assert_eq!(run(&resume, &mut go), LARK_OK, "{}", last_error());
    for file in ["scores.jsonl", "scores.json"] {
        assert_eq!(std::fs::read(out.join(file)).unwrap(), std::fs::read(cli.join(file)).unwrap(), "{file}");
    }
    assert!(go.calls > 0 && go.last.totals_exact == 1);
    assert_eq!((go.last.trajectories_done, go.last.trajectories_total), (f.scores.len(), f.scores.len()));

    let bad = CString::new("{not json").unwrap();
    assert_eq!(unsafe { lark_score_pool(bad.as_ptr(), None, std::ptr::null_mut()) }, LARK_ERR_INPUT);
    assert!(last_error().starts_with("lark_score_pool: job_json: invalid JSON"), "{}", last_error());
    let mut unknown = job.clone();
    unknown["colour"] = "red".into();
    let text = CString::new(unknown.to_string()).unwrap();
    assert_eq!(unsafe { lark_score_pool(text.as_ptr(), None, std::ptr::null_mut()) }, LARK_ERR_INPUT);
    assert!(last_error().contains("unexpected argument '--colour'"), "{}", last_error());
}
