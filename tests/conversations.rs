//! Multi-turn and agentic pools end to end (README "Multi-turn and agentic trajectories"): the example agentic
//! pool through `lark run` (every turn scored, `n_turns`, train.jsonl with the whole conversation and its tools,
//! the report), `--turns last` against `--turns all`, ShareGPT records. The student is the random-weight model of
//! tests/common/student.rs (SmolLM2's tokenizer) with the Qwen3 tool-calling chat template, which SmolLM2's
//! ChatML tokens render; HF parity of rendering, spans and numbers is tests/conv_parity.rs.

mod common;

use common::student::{student, tool_student};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn lark(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_lark")).args(args).env_remove("RUST_BACKTRACE").output().expect("lark runs")
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read_jsonl(p: &Path) -> Vec<Value> {
    std::fs::read_to_string(p).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

#[track_caller]
fn ok(o: &Output) -> String {
    let err = String::from_utf8_lossy(&o.stderr).to_string();
    assert!(o.status.success(), "{err}");
    err
}

fn row(rows: &[Value], pid: i64, cid: i64) -> &Value {
    rows.iter().find(|r| r["problem_id"] == pid && r["candidate_id"] == cid).unwrap()
}

fn score(model: &Path, pool: &Path, out: &Path, extra: &[&str]) -> Vec<Value> {
    let mut args = vec!["score", "--model", s(model), "--pool", s(pool), "--out", s(out), "--device", "cpu"];
    args.extend(extra);
    ok(&lark(&args));
    read_jsonl(&out.join("scores.jsonl"))
}

#[test]
fn agentic_example_pool_scores_every_turn_and_exports_the_conversation() {
    let model = tool_student();
    let out = tempfile::tempdir().unwrap();
    let pool = repo().join("examples/agentic_pool.jsonl");
    ok(&lark(&["run", "--model", s(model.path()), "--pool", s(&pool), "--out", s(out.path()), "--device", "cpu"]));
    let rows = read_jsonl(&out.path().join("scores.jsonl"));
    assert_eq!(rows.len(), 8);
    // Scored assistant turns per record (absent = 1).
    for (pid, cid, turns) in [(0, 0, 2), (0, 1, 3), (0, 2, 1), (1, 0, 2), (1, 1, 3), (1, 2, 1), (2, 0, 2), (2, 1, 2)] {
        let r = row(&rows, pid, cid);
        assert!(r["skipped"].is_null(), "{r}");
        assert_eq!(r["n_turns"].as_u64().unwrap_or(1), turns, "{r}");
        assert_eq!(r.get("n_turns").is_some(), turns != 1, "n_turns is written only when it is not 1: {r}");
        assert!(r["L"].as_f64().unwrap() > 0.0 && r["g_hat"].as_f64().is_some(), "{r}");
    }
    // --turns last: the final turn only; its numbers are a part of --turns all's.
    let last_out = tempfile::tempdir().unwrap();
    let last = score(model.path(), &pool, last_out.path(), &["--turns", "last"]);
    for r in &last {
        assert!(r.get("n_turns").is_none(), "{r}");
        let all = row(&rows, r["problem_id"].as_i64().unwrap(), r["candidate_id"].as_i64().unwrap());
        let (n_all, n_last) = (all["n_tokens"].as_u64().unwrap(), r["n_tokens"].as_u64().unwrap());
        if all.get("n_turns").is_some() {
            assert!(n_last < n_all, "{r} vs {all}");
            assert!(r["nll_sum"].as_f64().unwrap() < all["nll_sum"].as_f64().unwrap(), "{r} vs {all}");
        } else {
            assert_eq!(r["nll_sum"], all["nll_sum"], "a single-turn record is scored the same: {r} vs {all}");
        }
    }
    // train.jsonl: the whole scored conversation and its tools; the trailing message after the last assistant
    // turn (problem 2, candidate 1) is not part of it.
    let train = read_jsonl(&out.path().join("train.jsonl"));
    assert!(!train.is_empty());
    for t in &train {
        let (pid, cid) = (t["meta"]["problem_id"].as_i64().unwrap(), t["meta"]["candidate_id"].as_i64().unwrap());
        let msgs = t["messages"].as_array().unwrap();
        assert_eq!(msgs.last().unwrap()["role"], "assistant", "{t}");
        assert_eq!(t.get("tools").is_some(), pid != 2, "{t}");
        if (pid, cid) == (0, 1) {
            assert_eq!(msgs.len(), 7);
            assert_eq!(msgs[2]["tool_calls"][0]["function"]["arguments"]["date"], "tomorrow");
            assert_eq!(msgs[3]["tool_call_id"], "call_1");
        }
        if (pid, cid) == (2, 1) {
            assert_eq!(msgs.len(), 4);
        }
    }
    // The report reads the run (n_turns included).
    let html = std::fs::read_to_string(out.path().join("report.html")).unwrap();
    assert!(html.contains("tool-user") && html.contains("turns"), "the report shows the teachers and turns");
}

#[test]
fn turns_last_and_all_are_byte_identical_on_a_single_turn_pool() {
    // Every record of examples/pool.jsonl has one assistant turn: both settings are today's single-turn scoring,
    // byte for byte, and no row carries n_turns.
    let model = student();
    let pool = repo().join("examples/pool.jsonl");
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    score(model.path(), &pool, a.path(), &["--turns", "all", "--span", "content"]);
    score(model.path(), &pool, b.path(), &["--turns", "last", "--span", "content"]);
    let (x, y) =
        (std::fs::read(a.path().join("scores.jsonl")).unwrap(), std::fs::read(b.path().join("scores.jsonl")).unwrap());
    assert!(x == y, "--turns all and --turns last differ on a single-turn pool");
    assert!(!String::from_utf8(x).unwrap().contains("n_turns"));
}

#[test]
fn sharegpt_records_score_as_their_messages() {
    let model = tool_student();
    let dir = tempfile::tempdir().unwrap();
    let sg = score(model.path(), &repo().join("examples/agentic_sharegpt.jsonl"), &dir.path().join("sg"), &[]);
    let msgs = score(model.path(), &repo().join("examples/agentic_pool.jsonl"), &dir.path().join("m"), &[]);
    // Problem 2 candidate 0 is the same conversation in both files.
    let (a, b) = (row(&sg, 2, 0), row(&msgs, 2, 0));
    for k in ["n_tokens", "n_turns", "nll_sum", "brier_sum"] {
        assert_eq!(a[k], b[k], "{k}: {a} vs {b}");
    }
    // function_call / observation turns: two tool calls, then the answer.
    assert_eq!(row(&sg, 1, 0)["n_turns"], 3);
    // Forcing --format sharegpt on a messages pool names the missing field.
    let o = lark(&[
        "score",
        "--model",
        s(model.path()),
        "--pool",
        s(&repo().join("examples/agentic_pool.jsonl")),
        "--out",
        s(&dir.path().join("forced")),
        "--device",
        "cpu",
        "--format",
        "sharegpt",
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("agentic_pool.jsonl:1: field `conversations`: missing"), "{err}");
}

#[test]
fn c_abi_scores_conversations_as_lark_score_does() {
    use lark::ffi::model::{
        lark_model_free, lark_model_open, lark_score_chats, lark_score_ids, lark_tokenize_chat,
        lark_tokenize_chat_turns,
    };
    use lark::ffi::{LarkRange, LarkSpan, LarkTokenStats, LarkTrajectoryStats};
    use std::ffi::CString;
    let model = tool_student();
    let pool = repo().join("examples/agentic_pool.jsonl");
    let out = tempfile::tempdir().unwrap();
    let rows = score(model.path(), &pool, out.path(), &[]);
    let lines: Vec<Value> = read_jsonl(&pool);
    // A record object with tools (problem 0 candidate 1, three turns), a bare messages array (problem 2
    // candidate 0, two turns), and the ShareGPT form of the latter.
    let sharegpt = &read_jsonl(&repo().join("examples/agentic_sharegpt.jsonl"))[0];
    let chats = [lines[1].to_string(), lines[6]["messages"].to_string(), sharegpt.to_string()];
    let want = [row(&rows, 0, 1), row(&rows, 2, 0), row(&rows, 2, 0)];
    let c: Vec<CString> = chats.iter().map(|j| CString::new(j.as_str()).unwrap()).collect();
    let ptrs: Vec<*const std::ffi::c_char> = c.iter().map(|x| x.as_ptr()).collect();
    let dir = CString::new(s(model.path())).unwrap();
    let dev = CString::new("cpu").unwrap();
    unsafe {
        let mut m = std::ptr::null_mut();
        assert_eq!(lark_model_open(dir.as_ptr(), dev.as_ptr(), std::ptr::null(), &mut m), 0);
        let mut got: Vec<LarkTrajectoryStats> = vec![std::mem::zeroed(); chats.len()];
        assert_eq!(lark_score_chats(m, ptrs.as_ptr(), ptrs.len(), got.as_mut_ptr()), 0);
        for (g, w) in got.iter().zip(want) {
            assert_eq!(g.skipped, 0);
            assert_eq!(g.n_tokens, w["n_tokens"].as_u64().unwrap(), "{w}");
            let (a, b) = (g.nll_sum, w["nll_sum"].as_f64().unwrap());
            assert!((a - b).abs() <= 1e-5 * b.abs(), "nll_sum {a} vs lark score {b}");
        }
        // One lark_span cannot describe three turns: refused, not a covering span.
        let mut span: LarkSpan = std::mem::zeroed();
        let mut ids = vec![0u32; 4096];
        let rc = lark_tokenize_chat(m, ptrs[0], ids.as_mut_ptr(), ids.len(), &mut span);
        assert_eq!(rc, lark::ffi::status::LARK_ERR_UNSUPPORTED);
        let err = std::ffi::CStr::from_ptr(lark::ffi::lark_last_error()).to_string_lossy().to_string();
        assert!(err.contains("3 assistant turns are scored") && err.contains("lark_tokenize_chat_turns"), "{err}");

        // lark_tokenize_chat_turns: one sizing call sizes both buffers; then the covering span through
        // lark_score_ids, kept at the turns' positions, gives lark score's per-trajectory sums.
        for (chat, w) in ptrs.iter().zip(want) {
            let (mut span, mut n_turns): (LarkSpan, usize) = (std::mem::zeroed(), 0);
            let rc = lark_tokenize_chat_turns(
                m,
                *chat,
                std::ptr::null_mut(),
                0,
                &mut span,
                std::ptr::null_mut(),
                0,
                &mut n_turns,
            );
            assert_eq!(rc, lark::ffi::status::LARK_ERR_BUFFER_TOO_SMALL);
            assert_eq!(n_turns as u64, w["n_turns"].as_u64().unwrap_or(1), "{w}");
            let mut ids = vec![0u32; span.len];
            let mut turns = vec![LarkRange::default(); n_turns - 1];
            let rc = lark_tokenize_chat_turns(
                m,
                *chat,
                ids.as_mut_ptr(),
                ids.len(),
                &mut span,
                turns.as_mut_ptr(),
                turns.len(),
                &mut n_turns,
            );
            assert_eq!(rc, lark::ffi::status::LARK_ERR_BUFFER_TOO_SMALL, "turns_cap one short");
            turns.push(LarkRange::default());
            let rc = lark_tokenize_chat_turns(
                m,
                *chat,
                ids.as_mut_ptr(),
                ids.len(),
                &mut span,
                turns.as_mut_ptr(),
                turns.len(),
                &mut n_turns,
            );
            assert_eq!(rc, 0);
            assert_eq!((turns[0].from, turns[n_turns - 1].to), (span.score_from, span.score_to));
            assert!(turns.windows(2).all(|p| p[0].to <= p[1].from), "{turns:?}");
            let covered = span.score_to - span.score_from;
            let mut per = vec![std::mem::zeroed::<LarkTokenStats>(); covered];
            let mut total: LarkTrajectoryStats = std::mem::zeroed();
            let rc =
                lark_score_ids(m, ids.as_ptr(), span.score_to, span.score_from, &mut total, per.as_mut_ptr(), covered);
            assert_eq!(rc, 0);
            let in_turns: Vec<&LarkTokenStats> =
                turns.iter().flat_map(|r| &per[r.from - span.score_from..r.to - span.score_from]).collect();
            assert_eq!(in_turns.len() as u64, w["n_tokens"].as_u64().unwrap(), "{w}");
            let nll: f64 = in_turns.iter().map(|t| -(t.logprob as f64)).sum();
            let b = w["nll_sum"].as_f64().unwrap();
            assert!((nll - b).abs() <= 1e-5 * b.abs(), "Σ −log p over the turns {nll} vs lark score {b}");
        }
        assert_eq!(lark_model_free(m), 0);
    }
}
