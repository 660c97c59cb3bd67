//! Hostile inputs (README "Hostile inputs"): every case of the table is here, or names the test elsewhere that
//! covers it. A refused input must give exit status 1 (not clap's 2, not a panic's 101 or a signal), no
//! "panicked" on stderr, a message naming the input (file and line, field or tensor), and no final output file
//! (scores.jsonl, run.json, ...) that could be taken for a finished run.
//!
//! Most cases fail while reading inputs, before any model computes; the few that score use the random-weight
//! student of tests/common/student.rs on a handful of short trajectories, so the whole file runs in seconds.

mod common;

use common::student::{student, write_student};
use lark::model::random::{tiny_config, write_random_model};
use lark::model::{Architecture, Model, StoredDtype};
use serde_json::{json, Value};
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

/// Every file whose presence says "this run finished".
const FINAL_FILES: [&str; 8] = [
    "scores.jsonl",
    "scores.json",
    "run.json",
    "selection.jsonl",
    "train.jsonl",
    "report.html",
    "rejects.jsonl",
    "candidates.jsonl",
];

/// A refused command: exit status 1, no panic, stderr names each of `needles`, and `out` (when given) holds no
/// final file. Returns stderr.
#[track_caller]
fn assert_refused(o: &Output, needles: &[&str], out: Option<&Path>) -> String {
    let err = String::from_utf8_lossy(&o.stderr).to_string();
    assert_eq!(o.status.code(), Some(1), "expected a clean error (status 1), got {:?}: {err}", o.status);
    assert!(!err.contains("panicked"), "panic: {err}");
    assert!(err.starts_with("error: ") || err.contains("\nerror: "), "no error line: {err}");
    for n in needles {
        assert!(err.contains(n), "expected {n:?} in: {err}");
    }
    if let Some(out) = out {
        for f in FINAL_FILES {
            assert!(!out.join(f).exists(), "{} exists after a refused run: {err}", out.join(f).display());
        }
    }
    err
}

#[track_caller]
fn assert_ok(o: &Output) -> String {
    let err = String::from_utf8_lossy(&o.stderr).to_string();
    assert!(o.status.success(), "{err}");
    err
}

fn score_args<'a>(model: &'a Path, pool: &'a Path, out: &'a Path) -> Vec<&'a str> {
    vec!["score", "--model", s(model), "--pool", s(pool), "--out", s(out), "--device", "cpu"]
}

fn read_jsonl(p: &Path) -> Vec<Value> {
    std::fs::read_to_string(p).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

/// One valid pool line: a short chat for problem `pid`, candidate `cid`.
fn record(pid: i64, cid: i64, answer: &str) -> String {
    json!({"problem_id": pid, "candidate_id": cid, "teacher": "t", "messages": [
        {"role": "system", "content": "Reason step by step."},
        {"role": "user", "content": format!("What is {pid} + {pid}?")},
        {"role": "assistant", "content": answer}]})
    .to_string()
}

/// A pool of `n` short valid records over `n / 2` problems.
fn small_pool(n: i64) -> String {
    (0..n).map(|i| record(i / 2, i % 2, &format!("It is {}. Check: {} + {} = {}.", i, i, i, 2 * i)) + "\n").collect()
}

// ---------------------------------------------------------------------------------------------------------
// Pools

#[test]
fn bad_pool_entries_are_refused_naming_file_line_and_field() {
    let model = student();
    let dir = tempfile::tempdir().unwrap();
    let good = record(0, 0, "4");
    let chat = |messages: Value| json!({"problem_id": 1, "candidate_id": 0, "messages": messages}).to_string();
    let user = json!({"role": "user", "content": "q"});
    let mut invalid_utf8 = good.clone().into_bytes();
    let at = invalid_utf8.iter().position(|&b| b == b'4').unwrap();
    invalid_utf8.splice(at..at, [0xFF, 0xFE]);
    let cases: Vec<(&str, Vec<u8>, Vec<&str>)> = vec![
        ("malformed JSON", format!("{good}\n{{\"problem_id\": 1, \"candidate_id\": ").into(), vec![":2", "(json)"]),
        ("not an object", format!("{good}\n[1, 2]").into(), vec![":2", "`(record)`: expected a JSON object"]),
        (
            "problem_id a string",
            json!({"problem_id": "1", "candidate_id": 0}).to_string().into(),
            vec![":1", "`problem_id`: expected an integer, found \"1\""],
        ),
        (
            "problem_id beyond 64 bits",
            r#"{"problem_id": 99999999999999999999999, "candidate_id": 0}"#.into(),
            vec![":1", "`problem_id`: expected an integer"],
        ),
        (
            "teacher a number",
            json!({"problem_id": 1, "candidate_id": 0, "teacher": 7, "messages": []}).to_string().into(),
            vec![":1", "`teacher`: expected a string"],
        ),
        ("messages an object", chat(json!({"role": "user"})).into(), vec![":1", "`messages`: expected a list"]),
        ("messages empty", chat(json!([])).into(), vec![":1", "`messages`: empty list"]),
        ("a message not an object", chat(json!(["hi", user])).into(), vec![":1", "`messages[0]`: expected an object"]),
        (
            "content a list",
            chat(json!([user, {"role": "assistant", "content": [{"type": "text", "text": "4"}]}])).into(),
            vec![":1", "`messages[1].content`: expected a string, found a list"],
        ),
        (
            "assistant content null and no tool calls",
            chat(json!([user, {"role": "assistant", "content": null}])).into(),
            vec![":1", "`messages[1].content`: an assistant message needs `content` or `tool_calls`: it has neither"],
        ),
        (
            "assistant with neither content nor tool calls",
            chat(json!([user, {"role": "assistant", "tool_calls": []}])).into(),
            vec![":1", "`messages[1].content`: an assistant message needs `content` or `tool_calls`"],
        ),
        (
            "user content null",
            chat(json!([{"role": "user", "content": null}, {"role": "assistant", "content": "a"}])).into(),
            vec![":1", "`messages[0].content`: expected a string, found null"],
        ),
        (
            "a tool message before any user message",
            chat(json!([{"role": "tool", "content": "42"}, user, {"role": "assistant", "content": "a"}])).into(),
            vec![":1", "`messages[0].role`: a tool message before any user message"],
        ),
        (
            "tool_calls not a list",
            chat(json!([user, {"role": "assistant", "content": "", "tool_calls": {"name": "f"}}])).into(),
            vec![":1", "`messages[1].tool_calls`: expected a list of tool calls, found an object"],
        ),
        (
            "a tool call not an object",
            chat(json!([user, {"role": "assistant", "content": "", "tool_calls": ["f()"]}])).into(),
            vec![":1", "`messages[1].tool_calls[0]`: expected an object, found a string"],
        ),
        (
            "tools not a list",
            json!({"problem_id": 1, "candidate_id": 0, "tools": {"name": "f"},
                   "messages": [user, {"role": "assistant", "content": "a"}]})
            .to_string()
            .into(),
            vec![":1", "`tools`: expected a list of tool schemas, found an object"],
        ),
        (
            "ShareGPT speaker unknown",
            json!({"problem_id": 1, "candidate_id": 0,
                   "conversations": [{"from": "human", "value": "q"}, {"from": "bot", "value": "a"}]})
            .to_string()
            .into(),
            vec![":1", "`conversations[1].from`: unknown ShareGPT speaker \"bot\""],
        ),
        (
            "ShareGPT function_call not JSON",
            json!({"problem_id": 1, "candidate_id": 0, "conversations": [{"from": "human", "value": "q"},
                   {"from": "function_call", "value": "f(1)"}, {"from": "gpt", "value": "a"}]})
            .to_string()
            .into(),
            vec![":1", "`conversations[1].value`: a function_call value must be JSON"],
        ),
        (
            "ShareGPT tool result first",
            json!({"problem_id": 1, "candidate_id": 0,
                   "conversations": [{"from": "observation", "value": "1"}, {"from": "gpt", "value": "a"}]})
            .to_string()
            .into(),
            vec![":1", "`conversations[0].role`: a tool message before any user message"],
        ),
        ("role missing", chat(json!([{"content": "q"}, user])).into(), vec![":1", "`messages[0].role`: missing"]),
        ("no assistant turn", chat(json!([user])).into(), vec![":1", "no assistant turn"]),
        ("invalid UTF-8", invalid_utf8, vec![":1", "(json)", "invalid unicode"]),
        ("lone surrogate escape", good.replace('4', "\\ud800").into(), vec![":1", "(json)"]),
        ("nesting 100000 deep", "[".repeat(100_000).into(), vec![":1", "(json)", "recursion limit"]),
        ("duplicate ids", format!("{good}\n{good}").into(), vec![":2", "duplicate (problem_id 0, candidate_id 0)"]),
        ("empty file", Vec::new(), vec!["empty pool: no records"]),
        ("only blank lines", "\n  \n\t\n".into(), vec!["empty pool: no records"]),
    ];
    for (what, bytes, needles) in cases {
        let pool = dir.path().join("pool.jsonl");
        std::fs::write(&pool, &bytes).unwrap();
        let out = dir.path().join("out");
        let o = lark(&score_args(model.path(), &pool, &out));
        // ":N" is the line: "pool.jsonl:N".
        let needles: Vec<String> =
            needles.iter().map(|n| if n.starts_with(':') { format!("pool.jsonl{n}") } else { n.to_string() }).collect();
        let mut needles: Vec<&str> = needles.iter().map(String::as_str).collect();
        needles.push("pool.jsonl");
        let err = assert_refused(&o, &needles, Some(&out));
        assert!(!out.exists(), "{what}: the output directory was created before the pool was read: {err}");
    }
}

#[test]
fn bad_rsr_layout_is_refused_naming_the_file() {
    // Element-level errors, names and skips of the RSR layout: tests/pipeline_units.rs rsr_dir_id_field_and_errors.
    let model = student();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("rsr");
    std::fs::create_dir_all(root.join("teacher")).unwrap();
    std::fs::write(root.join("teacher/math_gen1.json"), r#"{"messages": []}"#).unwrap();
    let out = dir.path().join("out");
    let o = lark(&score_args(model.path(), &root, &out));
    assert_refused(&o, &["math_gen1.json:1", "`(file)`: expected a JSON list", "found an object"], Some(&out));
}

#[cfg(unix)]
#[test]
fn rsr_pool_with_a_symlink_loop_ends() {
    // The reader itself reads only <root>/<teacher>/<file> and is not affected.
    let model = student();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("rsr");
    std::fs::create_dir_all(root.join("t")).unwrap();
    let chat = json!([{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}]);
    std::fs::write(root.join("t/x_gen1.json"), chat.to_string()).unwrap();
    std::os::unix::fs::symlink("..", root.join("t/up")).unwrap();
    std::os::unix::fs::symlink(".", root.join("self")).unwrap();
    let out = dir.path().join("out");
    let mut child = Command::new(env!("CARGO_BIN_EXE_lark"))
        .args(score_args(model.path(), &root, &out))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let t0 = std::time::Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if t0.elapsed() > std::time::Duration::from_secs(60) {
            child.kill().unwrap();
            child.wait().unwrap();
            panic!("lark score did not finish in 60 s on a pool directory with a symlink loop");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert!(status.success());
}

#[test]
fn enormous_messages_are_refused_by_size() {
    let model = student();
    let dir = tempfile::tempdir().unwrap();
    let pool = dir.path().join("pool.jsonl");
    let out = dir.path().join("out");
    // 50 MB in one message: the whole chat would be tokenised (~150 bytes of memory per byte of text) before
    // --max-len cuts it, so it is refused by size, naming the line and the field.
    let huge = record(0, 0, &"x".repeat(50 << 20));
    std::fs::write(&pool, format!("{huge}\n{}\n", record(1, 0, "2"))).unwrap();
    let o = lark(&score_args(model.path(), &pool, &out));
    assert_refused(&o, &["pool.jsonl:1", "`messages[2].content`", "above the limit of 8 MiB"], Some(&out));
    // Under --skip-invalid it is a reject and the rest is scored.
    let mut args = score_args(model.path(), &pool, &out);
    args.push("--skip-invalid");
    assert_ok(&lark(&args));
    let rejects = read_jsonl(&out.join("rejects.jsonl"));
    assert_eq!(rejects.len(), 1);
    assert_eq!((rejects[0]["line"].as_u64(), rejects[0]["field"].as_str()), (Some(1), Some("messages[2].content")));
    assert_eq!(read_jsonl(&out.join("scores.jsonl")).len(), 1);

    // A line over 64 MiB (here a file with no newline at all) is refused without being read into memory whole,
    // and --skip-invalid goes on after it.
    let out2 = dir.path().join("out2");
    let mut endless = b"{\"problem_id\": 0, \"messages\": \"".to_vec();
    endless.resize(65 << 20, b'a');
    std::fs::write(&pool, &endless).unwrap();
    let o = lark(&score_args(model.path(), &pool, &out2));
    assert_refused(&o, &["pool.jsonl:1", "line longer than 64 MiB"], Some(&out2));
    endless.extend(format!("\n{}\n", record(1, 0, "2")).bytes());
    std::fs::write(&pool, &endless).unwrap();
    let mut args = score_args(model.path(), &pool, &out2);
    args.push("--skip-invalid");
    assert_ok(&lark(&args));
    assert_eq!(read_jsonl(&out2.join("rejects.jsonl"))[0]["field"], "(record)");
    assert_eq!(read_jsonl(&out2.join("scores.jsonl")).len(), 1);
}

#[test]
fn empty_assistant_content_is_skipped_or_scored_never_invented() {
    // Not an error: an empty answer is a real (bad) trajectory. `--span content` has nothing to score and writes
    // the row with `skipped` and null scores; `--span turn` scores the template's end-of-turn marker, as the LARK
    // authors' code does.
    let model = student();
    let dir = tempfile::tempdir().unwrap();
    let pool = dir.path().join("pool.jsonl");
    std::fs::write(&pool, format!("{}\n{}\n", record(0, 0, "It is 0."), record(0, 1, ""))).unwrap();
    for span in ["content", "turn"] {
        let out = dir.path().join(span);
        let mut args = score_args(model.path(), &pool, &out);
        args.extend(["--span", span]);
        assert_ok(&lark(&args));
        let rows = read_jsonl(&out.join("scores.jsonl"));
        let empty = rows.iter().find(|r| r["candidate_id"] == 1).unwrap();
        if span == "content" {
            assert!(empty["skipped"].as_str().unwrap().starts_with("no_assistant_content"), "{empty}");
            assert!(empty["nll_sum"].is_null() && empty["g_hat"].is_null(), "{empty}");
        } else {
            assert!(empty["skipped"].is_null(), "{empty}");
            let n = empty["n_tokens"].as_u64().unwrap();
            assert!((1..=3).contains(&n), "only the end-of-turn marker is scored: {empty}");
        }
    }
}

#[test]
fn every_assistant_turn_empty_is_skipped_or_scored_never_invented() {
    // A conversation whose every assistant turn is empty: as for one empty answer (above), `--span content` skips
    // it (null scores) and `--span turn` scores each turn's end-of-turn marker (and the final turn's newline).
    let model = student();
    let dir = tempfile::tempdir().unwrap();
    let pool = dir.path().join("pool.jsonl");
    let empty = json!({"problem_id": 0, "candidate_id": 1, "teacher": "t", "messages": [
        {"role": "user", "content": "hi"}, {"role": "assistant", "content": ""},
        {"role": "user", "content": "again"}, {"role": "assistant", "content": ""}]});
    std::fs::write(&pool, format!("{}\n{empty}\n", record(0, 0, "It is 0."))).unwrap();
    for span in ["content", "turn"] {
        let out = dir.path().join(span);
        let mut args = score_args(model.path(), &pool, &out);
        args.extend(["--span", span]);
        assert_ok(&lark(&args));
        let rows = read_jsonl(&out.join("scores.jsonl"));
        let row = rows.iter().find(|r| r["candidate_id"] == 1).unwrap();
        if span == "content" {
            assert!(row["skipped"].as_str().unwrap().starts_with("no_assistant_content"), "{row}");
            assert!(row["nll_sum"].is_null() && row["g_hat"].is_null(), "{row}");
        } else {
            assert!(row["skipped"].is_null(), "{row}");
            assert_eq!(row["n_turns"], 2, "{row}");
            let n = row["n_tokens"].as_u64().unwrap();
            assert!((2..=4).contains(&n), "only the end-of-turn markers are scored: {row}");
        }
    }
}

// ---------------------------------------------------------------------------------------------------------
// Tokenizers, vocabularies and token ids

#[test]
fn tokenizer_and_model_vocabulary_mismatch_is_refused_before_scoring() {
    let dir = tempfile::tempdir().unwrap();
    let pool = dir.path().join("pool.jsonl");
    std::fs::write(&pool, small_pool(2)).unwrap();
    let smol = common::fixtures::smollm2_dir();

    // A 301-token model with SmolLM2's 49152-token tokenizer.
    let small = dir.path().join("small");
    write_random_model(&small, &tiny_config(Architecture::Llama), StoredDtype::BF16, 1).unwrap();
    for f in ["tokenizer.json", "tokenizer_config.json"] {
        std::fs::copy(smol.join(f), small.join(f)).unwrap();
    }
    let out = dir.path().join("out");
    let o = lark(&score_args(&small, &pool, &out));
    let tok = small.join("tokenizer.json");
    assert_refused(&o, &[s(&tok), "ids go up to 49151", "vocabulary has 301 entries"], Some(&out));
    assert!(!out.exists(), "refused before the output directory is made");

    // As many tokens as the model's vocabulary, but one id past it (a gap in the ids): counting tokens is not
    // enough, the largest id is what must fit.
    let gap = dir.path().join("gap");
    write_student(&gap);
    let mut t: Value = serde_json::from_slice(&std::fs::read(gap.join("tokenizer.json")).unwrap()).unwrap();
    t["model"]["vocab"]["Ġthe"] = json!(60000);
    std::fs::write(gap.join("tokenizer.json"), t.to_string()).unwrap();
    let o = lark(&score_args(&gap, &pool, &out));
    assert_refused(
        &o,
        &[s(&gap.join("tokenizer.json")), "ids go up to 60000", "vocabulary has 49152 entries"],
        Some(&out),
    );
}

#[test]
fn bad_tokenizer_and_chat_template_files_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let pool = dir.path().join("pool.jsonl");
    std::fs::write(&pool, small_pool(2)).unwrap();
    let out = dir.path().join("out");
    let m = dir.path().join("m");
    write_student(&m);
    let config = std::fs::read_to_string(m.join("tokenizer_config.json")).unwrap();
    let mut tc: Value = serde_json::from_str(&config).unwrap();

    // tokenizer.json cut in half.
    let tok = std::fs::read(m.join("tokenizer.json")).unwrap();
    std::fs::write(m.join("tokenizer.json"), &tok[..tok.len() / 2]).unwrap();
    let o = lark(&score_args(&m, &pool, &out));
    assert_refused(&o, &["tokenizer.json", "not a valid tokenizer.json"], Some(&out));
    std::fs::write(m.join("tokenizer.json"), &tok).unwrap();

    // A chat template that does not compile: refused at load, naming where it came from.
    tc["chat_template"] = json!("{% for m in messages %}{{ m.content }");
    std::fs::write(m.join("tokenizer_config.json"), tc.to_string()).unwrap();
    let o = lark(&score_args(&m, &pool, &out));
    assert_refused(&o, &["tokenizer_config.json: chat_template"], Some(&out));

    // `{%}` (found by fuzzing: the `{% generation %}` rewrite used to panic on it before minijinja saw it).
    tc["chat_template"] = json!("{%}{% generation %}{{ messages }}{% endgeneration %}");
    std::fs::write(m.join("tokenizer_config.json"), tc.to_string()).unwrap();
    let o = lark(&score_args(&m, &pool, &out));
    assert_refused(&o, &["tokenizer_config.json: chat_template"], Some(&out));

    // A template that raises for these chats: the error names the pool line, nothing final is written.
    tc["chat_template"] = json!("{{ raise_exception('this template takes no chats') }}");
    std::fs::write(m.join("tokenizer_config.json"), tc.to_string()).unwrap();
    let o = lark(&score_args(&m, &pool, &out));
    assert_refused(&o, &["pool.jsonl:1", "problem 0 candidate 0", "this template takes no chats"], Some(&out));
}

#[test]
fn token_ids_beyond_the_vocabulary_are_refused() {
    let model = student();
    let dir = tempfile::tempdir().unwrap();
    let ids = dir.path().join("ids.json");
    // lark bench --ids-file: an id equal to the vocabulary size, a negative id, not JSON.
    std::fs::write(&ids, "[[5, 49152, 7]]").unwrap();
    let bench = |ids: &Path| {
        lark(&["bench", "--model", s(model.path()), "--ids-file", s(ids), "--device", "cpu", "--repeats", "1"])
    };
    assert_refused(
        &bench(&ids),
        &["ids.json (sequence 0)", "position 1", "token id 49152", "vocabulary of 49152"],
        None,
    );
    std::fs::write(&ids, "[[5, -2]]").unwrap();
    assert_refused(&bench(&ids), &["ids.json:1", "expected u32"], None);
    std::fs::write(&ids, "[[5, 6]").unwrap();
    assert_refused(&bench(&ids), &["ids.json:1", "expected a list of lists of token ids"], None);

    // The backends' own check (CPU and CUDA call it before computing anything).
    use lark::backend::{cpu::validate_batch, SeqRequest};
    let bad = [3u32, 49152];
    let e =
        validate_batch(&[SeqRequest { ids: &[1, 2], score_from: 1 }, SeqRequest { ids: &bad, score_from: 1 }], 49152)
            .unwrap_err()
            .to_string();
    assert!(e.contains("sequence 1, position 1") && e.contains("token id 49152"), "{e}");
    let e = validate_batch(&[SeqRequest { ids: &[], score_from: 1 }], 49152).unwrap_err().to_string();
    assert!(e.contains("empty token sequence"), "{e}");

    // The C ABI: lark_score_ids checks ids against the model before scoring.
    use lark::ffi::model::{lark_model_free, lark_model_open, lark_score_ids};
    use lark::ffi::status::LARK_ERR_INVALID_ARG;
    use std::ffi::{CStr, CString};
    let dir_c = CString::new(s(model.path())).unwrap();
    let cpu = CString::new("cpu").unwrap();
    let mut handle = std::ptr::null_mut();
    // SAFETY: valid C strings and an out-pointer; the handle is freed below.
    unsafe {
        assert_eq!(lark_model_open(dir_c.as_ptr(), cpu.as_ptr(), std::ptr::null(), &mut handle), 0);
        let mut stats = std::mem::MaybeUninit::zeroed();
        let ids = [1u32, 2, 49152, 3];
        let rc = lark_score_ids(handle, ids.as_ptr(), ids.len(), 1, stats.as_mut_ptr(), std::ptr::null_mut(), 0);
        assert_eq!(rc, LARK_ERR_INVALID_ARG);
        let msg = CStr::from_ptr(lark::ffi::lark_last_error()).to_string_lossy().to_string();
        assert!(msg.contains("ids[2] = 49152") && msg.contains("outside the vocabulary"), "{msg}");
        assert_eq!(lark_model_free(handle), 0);
    }
}

#[test]
fn bench_ids_file_with_an_empty_sequence() {
    let model = student();
    let dir = tempfile::tempdir().unwrap();
    let ids = dir.path().join("ids.json");
    std::fs::write(&ids, "[[1, 2, 3], []]").unwrap();
    let o = lark(&["bench", "--model", s(model.path()), "--ids-file", s(&ids), "--device", "cpu", "--repeats", "1"]);
    assert_refused(&o, &["empty"], None);
}

// ---------------------------------------------------------------------------------------------------------
// Weights and configurations

/// A small f32 Qwen2 model directory (no tokenizer: `lark inspect` reads only the config and the weights).
fn tiny_model(dir: &Path) -> Vec<u8> {
    write_random_model(dir, &tiny_config(Architecture::Qwen2), StoredDtype::F32, 3).unwrap();
    std::fs::read(dir.join("model.safetensors")).unwrap()
}

/// A safetensors file with this header (padded as the format allows) and `data_len` zero bytes of data.
fn safetensors_file(header: &Value, data_len: usize) -> Vec<u8> {
    let mut h = header.to_string().into_bytes();
    h.resize(h.len().div_ceil(8) * 8, b' ');
    let mut b = (h.len() as u64).to_le_bytes().to_vec();
    b.extend(h);
    b.resize(b.len() + data_len, 0);
    b
}

#[test]
fn missing_and_misshapen_tensors_are_named() {
    // Library-level: tests/model_loading.rs missing_tensor_and_wrong_shape_are_named.
    let dir = tempfile::tempdir().unwrap();
    let m = dir.path().join("m");
    write_student(&m);
    let pool = dir.path().join("pool.jsonl");
    std::fs::write(&pool, small_pool(2)).unwrap();
    let out = dir.path().join("out");
    let cfg_path = m.join("config.json");
    let cfg: Value = serde_json::from_str(&std::fs::read_to_string(&cfg_path).unwrap()).unwrap();
    let with = |k: &str, v: Value| {
        let mut c = cfg.clone();
        c[k] = v;
        std::fs::write(&cfg_path, c.to_string()).unwrap();
    };
    with("attention_bias", json!(true));
    let o = lark(&score_args(&m, &pool, &out));
    assert_refused(&o, &["model.safetensors: tensor model.layers.0.self_attn.q_proj.bias", "missing"], Some(&out));
    assert!(!out.exists());
    with("num_hidden_layers", json!(3));
    let o = lark(&score_args(&m, &pool, &out));
    assert_refused(&o, &["tensor model.layers.2.", "missing"], Some(&out));
    with("hidden_size", json!(64));
    let o = lark(&score_args(&m, &pool, &out));
    assert_refused(&o, &["model.safetensors: tensor model.embed_tokens.weight", "shape [49152, 48]"], Some(&out));
}

#[test]
fn malicious_safetensors_are_refused_naming_the_file() {
    // Also in-process: tests/model_loading.rs truncated_and_malformed_files_are_errors and
    // unsupported_dtype_is_named; fuzzed by fuzz/fuzz_targets/safetensors.rs.
    let dir = tempfile::tempdir().unwrap();
    let m = dir.path().join("m");
    let good = tiny_model(&m);
    let st = m.join("model.safetensors");
    let t =
        |dtype: &str, shape: Value, offsets: [u64; 2]| json!({"dtype": dtype, "shape": shape, "data_offsets": offsets});
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("truncated", good[..good.len() - 100].to_vec(), "not a valid safetensors file"),
        ("empty", Vec::new(), "not a valid safetensors file"),
        (
            "header length beyond the file",
            [&(1u64 << 40).to_le_bytes()[..], &good[8..]].concat(),
            "not a valid safetensors file",
        ),
        (
            "header length 200 MB in a small file",
            [&(200u64 << 20).to_le_bytes()[..], &good[8..]].concat(),
            "not a valid safetensors file",
        ),
        ("header not JSON", [&good[..8], b"!!!!!!!!", &good[16..]].concat(), "not a valid safetensors file"),
        (
            "overlapping offsets",
            safetensors_file(&json!({"a": t("F32", json!([2]), [0, 8]), "b": t("F32", json!([2]), [0, 8])}), 16),
            "not a valid safetensors file",
        ),
        (
            "a gap between tensors",
            safetensors_file(&json!({"a": t("F32", json!([2]), [0, 8]), "b": t("F32", json!([2]), [16, 24])}), 24),
            "not a valid safetensors file",
        ),
        (
            "offsets past the end of the file",
            safetensors_file(&json!({"a": t("F32", json!([2]), [0, 1 << 40])}), 8),
            "not a valid safetensors file",
        ),
        (
            "absurd shape (2^62 × 2^62 elements)",
            safetensors_file(&json!({"a": t("F32", json!([1u64 << 62, 1u64 << 62]), [0, 16])}), 16),
            "not a valid safetensors file",
        ),
        (
            "shape and byte length disagree",
            safetensors_file(&json!({"a": t("F32", json!([3]), [0, 8])}), 8),
            "not a valid safetensors file",
        ),
        (
            "unsupported dtype",
            safetensors_file(&json!({"model.embed_tokens.weight": t("I64", json!([1]), [0, 8])}), 8),
            "tensor model.embed_tokens.weight: dtype I64 is not supported",
        ),
    ];
    for (what, bytes, needle) in cases {
        std::fs::write(&st, &bytes).unwrap();
        let o = lark(&["inspect", "--model", s(&m)]);
        let err = assert_refused(&o, &[s(&st), needle], None);
        assert!(o.stdout.is_empty(), "{what}: printed a summary anyway: {err}");
    }

    // A sharded index naming a file outside the model directory, or a shard that is not there.
    std::fs::write(&st, &good).unwrap();
    let index = m.join("model.safetensors.index.json");
    std::fs::write(&index, json!({"weight_map": {"model.norm.weight": "../../etc/passwd"}}).to_string()).unwrap();
    let o = lark(&["inspect", "--model", s(&m)]);
    assert_refused(&o, &["model.safetensors.index.json: weight_map.model.norm.weight", "plain file name"], None);
    std::fs::write(&index, json!({"weight_map": {"model.norm.weight": "model-00002.safetensors"}}).to_string())
        .unwrap();
    let o = lark(&["inspect", "--model", s(&m)]);
    assert_refused(&o, &["model-00002.safetensors"], None);
}

#[test]
fn absurd_configs_are_refused_before_allocating() {
    // Library-level: tests/model_loading.rs config_errors_name_the_field; fuzzed by fuzz_targets/model_config.rs.
    let dir = tempfile::tempdir().unwrap();
    let m = dir.path().join("m");
    tiny_model(&m);
    let cfg_path = m.join("config.json");
    let cfg: Value = serde_json::from_str(&std::fs::read_to_string(&cfg_path).unwrap()).unwrap();
    let cases: Vec<(&str, Value, &str)> = vec![
        ("vocab_size", json!(1u64 << 40), "out of range"),
        ("num_hidden_layers", json!(100_000_000), "out of range"),
        ("hidden_size", json!(0), "out of range"),
        ("hidden_size", json!(-48), "expected a positive integer"),
        ("hidden_size", json!(48.5), "expected a positive integer"),
        ("intermediate_size", json!("83"), "expected a positive integer"),
        ("num_key_value_heads", json!(4), "does not divide"),
        ("head_dim", json!(7), "must be even"),
        ("rope_theta", json!(-1.0), "must be positive"),
        ("max_position_embeddings", json!(1u64 << 40), "out of range"),
    ];
    let config_json = s(&cfg_path).to_string();
    for (field, value, needle) in cases {
        let mut c = cfg.clone();
        c[field] = value;
        std::fs::write(&cfg_path, c.to_string()).unwrap();
        let o = lark(&["inspect", "--model", s(&m)]);
        assert_refused(&o, &[&config_json, &format!("field `{field}`"), needle], None);
    }
    // Every size in range, but the embedding alone would be 2^24 × 2^20 floats (64 TiB): refused by comparing
    // shapes with the file, nothing is allocated.
    let mut c = cfg.clone();
    c["vocab_size"] = json!(1 << 24);
    c["hidden_size"] = json!(1 << 20);
    std::fs::write(&cfg_path, c.to_string()).unwrap();
    let o = lark(&["inspect", "--model", s(&m)]);
    assert_refused(&o, &["model.safetensors: tensor model.embed_tokens.weight", "expected [16777216, 1048576]"], None);
    // Not JSON, not an object.
    std::fs::write(&cfg_path, "{\"vocab_size\": 301,").unwrap();
    assert_refused(&lark(&["inspect", "--model", s(&m)]), &[&format!("{config_json}:1"), "invalid JSON"], None);
    std::fs::write(&cfg_path, "[]").unwrap();
    assert_refused(&lark(&["inspect", "--model", s(&m)]), &[&config_json, "not a JSON object"], None);
}

// ---------------------------------------------------------------------------------------------------------
// GGUF

/// The tiny llama GGUF of the fuzz corpus (fuzz/make_seeds.py), which converts.
fn tiny_gguf() -> Vec<u8> {
    std::fs::read(repo().join("fuzz/corpus/gguf/tiny_llama.gguf")).unwrap()
}

/// Where the 8-byte data offset of tensor `name` sits in a GGUF file with 1-dimensional `name`.
fn offset_field(bytes: &[u8], name: &str) -> usize {
    let mut key = (name.len() as u64).to_le_bytes().to_vec();
    key.extend(name.as_bytes());
    let at = bytes.windows(key.len()).rposition(|w| w == key).unwrap();
    at + key.len() + 4 + 8 + 4 // n_dims, one dimension, type
}

/// The tiny GGUF with its token "ab" respelled ")b": the merge "a b" then makes a token the vocabulary lacks.
fn merge_without_result(good: &[u8]) -> Vec<u8> {
    let token = [&2u64.to_le_bytes()[..], b"ab"].concat();
    let at = good.windows(token.len()).position(|w| w == token).unwrap() + 8;
    let mut b = good.to_vec();
    b[at] = b')';
    b
}

#[test]
fn corrupt_gguf_files_are_refused_and_convert_nothing() {
    // Every truncation, random corruption, bad counts, offsets, shapes and metadata in-process:
    // tests/gguf.rs every_truncation_is_an_error, random_corruption_never_panics, header_errors,
    // metadata_errors, tensor_table_errors; fuzzed by fuzz/fuzz_targets/gguf.rs, which requires what converts to
    // open.
    let dir = tempfile::tempdir().unwrap();
    let good = tiny_gguf();
    let file = dir.path().join("model.gguf");
    let out = dir.path().join("out");
    std::fs::write(&file, &good).unwrap();
    assert_ok(&lark(&["convert-gguf", s(&file), s(&out)]));
    Model::open(&out).unwrap();
    std::fs::remove_dir_all(&out).unwrap();

    let patch = |at: usize, v: u64| {
        let mut b = good.clone();
        b[at..at + 8].copy_from_slice(&v.to_le_bytes());
        b
    };
    let norm = offset_field(&good, "output_norm.weight");
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("tensor count 2^40", patch(8, 1 << 40), "tensor count"),
        ("metadata count 2^64 - 1", patch(16, u64::MAX), "metadata count"),
        ("tensor data past the end", patch(norm, 1 << 40), "tensor output_norm.weight"),
        ("tensor data offset misaligned", patch(norm, 7), "tensor output_norm.weight: data offset 7"),
        ("truncated", good[..good.len() / 2].to_vec(), ""),
        ("not GGUF", b"GGUX".iter().chain(&good[4..]).copied().collect(), "not a GGUF file"),
        // Found by fuzzing: a merge whose result is not a token used to give a tokenizer.json that does not load.
        ("a merge making a non-token", merge_without_result(&good), "merge #0 \"a b\" makes \"ab\""),
    ];
    for (what, bytes, needle) in cases {
        std::fs::write(&file, &bytes).unwrap();
        let o = lark(&["convert-gguf", s(&file), s(&out)]);
        let err = assert_refused(&o, &[s(&file), needle], None);
        assert!(!out.join("config.json").exists() && !out.join("model.safetensors").exists(), "{what}: {err}");
    }
}

// ---------------------------------------------------------------------------------------------------------
// Output directories and full disks

#[test]
fn unwritable_output_directory_is_named() {
    // Tests run as root in CI, where permission bits do not stop writes; a path through a regular file fails
    // for every user, the same way (an OS error naming the path).
    let model = student();
    let dir = tempfile::tempdir().unwrap();
    let pool = dir.path().join("pool.jsonl");
    std::fs::write(&pool, small_pool(2)).unwrap();
    let file = dir.path().join("a-file");
    std::fs::write(&file, "").unwrap();
    let o = lark(&score_args(model.path(), &pool, &file));
    assert_refused(&o, &[s(&file), "File exists"], None);
    let under = file.join("out");
    let o = lark(&score_args(model.path(), &pool, &under));
    assert_refused(&o, &[s(&under), "Not a directory"], None);
    let mut args = score_args(model.path(), &pool, &under);
    args[0] = "run";
    assert_refused(&lark(&args), &[s(&under), "Not a directory"], None);
    // convert-gguf too.
    let gguf = dir.path().join("m.gguf");
    std::fs::write(&gguf, tiny_gguf()).unwrap();
    assert_refused(&lark(&["convert-gguf", s(&gguf), s(&under)]), &[s(&under)], None);
}

/// `lark ARGS` under a file-size limit of a few KB with SIGXFSZ ignored (both inherited through exec): a write
/// past the limit fails with EFBIG, like a disk filling up mid-run. POSIX `sh` and `ulimit -f` (in 512- or
/// 1024-byte blocks, either is small enough).
#[cfg(unix)]
fn lark_with_file_size_limit(args: &[&str], blocks: u32) -> Output {
    Command::new("sh")
        .arg("-c")
        .arg(format!("trap '' XFSZ; ulimit -f {blocks} && exec \"$0\" \"$@\""))
        .arg(env!("CARGO_BIN_EXE_lark"))
        .args(args)
        .env_remove("RUST_BACKTRACE")
        .output()
        .expect("sh runs")
}

#[cfg(unix)]
#[test]
fn full_disk_leaves_a_resumable_journal_and_nothing_final() {
    let model = student();
    let dir = tempfile::tempdir().unwrap();
    let pool = dir.path().join("pool.jsonl");
    std::fs::write(&pool, small_pool(6)).unwrap();

    // 1. ENOSPC on a final file: OUT/scores.jsonl.tmp (the atomic writer's temporary) is a symlink to /dev/full,
    // where every write fails with "No space left on device".
    let out = dir.path().join("out");
    std::fs::create_dir_all(&out).unwrap();
    let tmp = out.join("scores.jsonl.tmp");
    std::os::unix::fs::symlink("/dev/full", &tmp).unwrap();
    let o = lark(&score_args(model.path(), &pool, &out));
    assert_refused(&o, &[s(&tmp), "No space left on device"], Some(&out));
    let journal = out.join("partial/journal.jsonl");
    assert!(journal.exists(), "the journal of the scored chunks is kept");
    // Space is back; a torn line at the end of the journal (a write cut short) is cut off on resume.
    std::fs::remove_file(&tmp).unwrap();
    std::fs::OpenOptions::new()
        .append(true)
        .open(&journal)
        .map(|mut f| {
            use std::io::Write;
            f.write_all(b"{\"chunk\": 99, \"items\": [").unwrap()
        })
        .unwrap();
    let mut args = score_args(model.path(), &pool, &out);
    args.push("--resume");
    let err = assert_ok(&lark(&args));
    assert!(err.contains("resuming: "), "{err}");
    assert_eq!(read_jsonl(&out.join("scores.jsonl")).len(), 6);
    assert!(out.join("run.json").exists() && !out.join("partial").exists());

    // 2. The disk fills mid-run: a 1-2 KB file-size limit stops the first file that outgrows it (EFBIG).
    let out2 = dir.path().join("out2");
    let o = lark_with_file_size_limit(&score_args(model.path(), &pool, &out2), 2);
    assert_refused(&o, &[s(&out2), "File too large"], Some(&out2));
    let mut args = score_args(model.path(), &pool, &out2);
    args.push("--resume");
    assert_ok(&lark(&args));
    assert_eq!(std::fs::read(out2.join("scores.jsonl")).unwrap(), std::fs::read(out.join("scores.jsonl")).unwrap());

    // 3. convert-gguf onto a full disk: the staged weights file fails, nothing is renamed into place.
    let gguf = dir.path().join("m.gguf");
    std::fs::write(&gguf, tiny_gguf()).unwrap();
    let conv = dir.path().join("conv");
    std::fs::create_dir_all(&conv).unwrap();
    std::os::unix::fs::symlink("/dev/full", conv.join(".model.safetensors.partial")).unwrap();
    let o = lark(&["convert-gguf", s(&gguf), s(&conv)]);
    assert_refused(&o, &["No space left on device"], None);
    for f in ["config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"] {
        assert!(!conv.join(f).exists(), "{f} written by a failed conversion");
    }
}

// ---------------------------------------------------------------------------------------------------------
// Other inputs: judge scores, a corrupted resume journal, the C ABI's JSON

#[test]
fn other_bad_inputs_are_named() {
    let model = student();
    let dir = tempfile::tempdir().unwrap();
    let pool = dir.path().join("pool.jsonl");
    std::fs::write(&pool, small_pool(2)).unwrap();
    let out = dir.path().join("out");

    // --judge-scores that is not JSON (nor JSON Lines).
    let judge = dir.path().join("judge.json");
    std::fs::write(&judge, "{\"0\": {\"0\": 7.5},\n").unwrap();
    let mut args = score_args(model.path(), &pool, &out);
    args.extend(["--judge-scores", s(&judge)]);
    assert_refused(&lark(&args), &["judge.json"], Some(&out));

    // --resume over a journal whose manifest is garbage.
    std::fs::create_dir_all(out.join("partial")).unwrap();
    std::fs::write(out.join("partial/manifest.json"), "\u{0}garbage").unwrap();
    std::fs::write(out.join("partial/journal.jsonl"), "").unwrap();
    let mut args = score_args(model.path(), &pool, &out);
    args.push("--resume");
    assert_refused(&lark(&args), &["partial/manifest.json"], Some(&out));

    // lark select over a scores file with a broken line (in-process: tests/pipeline_units.rs scores_reader_errors).
    let scores = dir.path().join("scores.jsonl");
    std::fs::write(&scores, "{\"problem_id\": 0, \"candidate_id\": 0\n").unwrap();
    let sel = dir.path().join("sel");
    let o = lark(&["select", "--scores", s(&scores), "--pool", s(&pool), "--out", s(&sel)]);
    assert_refused(&o, &["scores.jsonl:1"], Some(&sel));

    // The C ABI: a chat that is not JSON, and one with a wrong field type, name the argument and field.
    use lark::ffi::model::{lark_model_free, lark_model_open, lark_score_chats};
    use lark::ffi::status::LARK_ERR_INPUT;
    use std::ffi::{CStr, CString};
    let dir_c = CString::new(s(model.path())).unwrap();
    let cpu = CString::new("cpu").unwrap();
    let mut handle = std::ptr::null_mut();
    // SAFETY: valid C strings and out-pointers; the handle is freed below.
    unsafe {
        assert_eq!(lark_model_open(dir_c.as_ptr(), cpu.as_ptr(), std::ptr::null(), &mut handle), 0);
        for (chat, needle) in [
            ("[{\"role\": \"user\", \"content\": ", "messages_json[1]: invalid JSON"),
            (r#"[{"role": "user", "content": "q"}, {"role": "assistant", "content": 4}]"#, "messages[1].content"),
        ] {
            let ok =
                CString::new(r#"[{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]"#).unwrap();
            let bad = CString::new(chat).unwrap();
            let chats = [ok.as_ptr(), bad.as_ptr()];
            let mut stats = [std::mem::MaybeUninit::zeroed(), std::mem::MaybeUninit::zeroed()];
            let rc = lark_score_chats(handle, chats.as_ptr(), 2, stats[0].as_mut_ptr());
            assert_eq!(rc, LARK_ERR_INPUT);
            let msg = CStr::from_ptr(lark::ffi::lark_last_error()).to_string_lossy().to_string();
            assert!(msg.contains(needle), "expected {needle:?} in: {msg}");
        }
        assert_eq!(lark_model_free(handle), 0);
    }
}

/// Weights with a NaN: the run stops naming the first trajectory whose statistics are not finite, and writes no
/// score for anything (a null or a number would be a fake score).
#[test]
fn nan_weights_stop_the_run_without_recording_scores() {
    let model = student();
    let st = model.path().join("model.safetensors");
    let mut bytes = std::fs::read(&st).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    let norm = &header["model.norm.weight"];
    assert_eq!(norm["dtype"], "BF16");
    let start = 8 + n + norm["data_offsets"][0].as_u64().unwrap() as usize;
    bytes[start..start + 2].copy_from_slice(&half::bf16::NAN.to_le_bytes());
    std::fs::write(&st, bytes).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let pool = dir.path().join("pool.jsonl");
    std::fs::write(&pool, small_pool(2)).unwrap();
    let out = dir.path().join("out");
    let o = lark(&score_args(model.path(), &pool, &out));
    assert_refused(&o, &["pool.jsonl:", "non-finite log-probabilities", "no score is recorded"], Some(&out));
}

// ---------------------------------------------------------------------------------------------------------
// Qwen3 and rope scaling (issue 13)

/// A tiny Qwen3 student with SmolLM2's tokenizer (the text path is real; the weights random), YaRN scaled.
fn write_qwen3_student(dir: &Path) -> lark::model::ModelConfig {
    let mut cfg = tiny_config(Architecture::Qwen3);
    cfg.vocab_size = 49152;
    cfg.head_dim = 16; // ≠ hidden/heads = 8
    cfg.rope_scaling = Some(lark::model::RopeScaling::Yarn(lark::model::YarnRopeScaling::new(4.0, 32.0)));
    write_random_model(dir, &cfg, StoredDtype::F32, 13).unwrap();
    let smol = common::fixtures::smollm2_dir();
    for f in ["tokenizer.json", "tokenizer_config.json"] {
        std::fs::copy(smol.join(f), dir.join(f)).unwrap();
    }
    cfg
}

#[test]
fn qwen3_and_rope_scaling_mistakes_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let m = dir.path().join("m");
    write_qwen3_student(&m);
    let cfg_path = m.join("config.json");
    let config_json = s(&cfg_path).to_string();
    let cfg: Value = serde_json::from_str(&std::fs::read_to_string(&cfg_path).unwrap()).unwrap();
    let inspect = |c: &Value| {
        std::fs::write(&cfg_path, c.to_string()).unwrap();
        lark(&["inspect", "--model", s(&m)])
    };
    // As written, it opens and `lark inspect` shows the scaling.
    let o = inspect(&cfg);
    let shown = String::from_utf8_lossy(&o.stdout).to_string();
    assert_ok(&o);
    assert!(shown.contains("Qwen3ForCausalLM") && shown.contains("yarn scaling factor 4"), "{shown}");

    // A head_dim that does not fit the projections: named with the sizes it implies.
    let mut c = cfg.clone();
    c["head_dim"] = json!(32);
    assert_refused(
        &inspect(&c),
        &[
            "model.safetensors: tensor model.layers.0.self_attn.q_proj.weight",
            "shape [96, 48], expected [192, 48]",
            "head_dim",
        ],
        None,
    );
    // Rope scaling: an unknown type, YaRN without its original context, zero or negative factors; both styles.
    let mut cases: Vec<(Value, Vec<&str>)> = vec![];
    let scaling = |v: Value| {
        let mut c = cfg.clone();
        c["rope_scaling"] = v;
        c
    };
    cases.push((
        scaling(json!({"rope_type": "dynamic", "factor": 2.0})),
        vec!["`dynamic`", "field `rope_scaling.rope_type`"],
    ));
    cases.push((scaling(json!({"type": "longrope", "factor": 2.0})), vec!["`longrope`", "supported: default, linear"]));
    cases.push((
        scaling(json!({"rope_type": "yarn", "factor": 4.0})),
        vec!["field `rope_scaling.original_max_position_embeddings`", "missing (rope type `yarn` needs it)"],
    ));
    for f in [0.0, -2.0] {
        cases.push((
            scaling(json!({"rope_type": "yarn", "factor": f, "original_max_position_embeddings": 32})),
            vec!["field `rope_scaling.factor`", "must be a positive number"],
        ));
        cases.push((
            scaling(json!({"rope_type": "linear", "factor": f})),
            vec!["field `rope_scaling.factor`", "must be a positive number"],
        ));
    }
    let mut nested = cfg.clone();
    nested.as_object_mut().unwrap().remove("rope_scaling");
    nested["rope_parameters"] =
        json!({"rope_type": "yarn", "rope_theta": 10000.0, "factor": 4.0, "original_max_position_embeddings": -1});
    cases.push((nested, vec!["field `rope_parameters.original_max_position_embeddings`", "must be a positive number"]));
    for (c, needles) in cases {
        let mut needles = needles;
        needles.push(&config_json);
        assert_refused(&inspect(&c), &needles, None);
    }

    // A Qwen3 config over weights without the q/k norms (here: a Qwen2 model's).
    let q2 = dir.path().join("q2");
    write_random_model(&q2, &tiny_config(Architecture::Qwen2), StoredDtype::F32, 3).unwrap();
    let q2_cfg = q2.join("config.json");
    let mut c: Value = serde_json::from_str(&std::fs::read_to_string(&q2_cfg).unwrap()).unwrap();
    c["architectures"] = json!(["Qwen3ForCausalLM"]);
    c["model_type"] = json!("qwen3");
    std::fs::write(&q2_cfg, c.to_string()).unwrap();
    assert_refused(
        &lark(&["inspect", "--model", s(&q2)]),
        &["model.safetensors: tensor model.layers.0.self_attn.q_norm.weight", "missing", "per-head RMSNorm"],
        None,
    );
}

#[test]
fn qwen3_scores_on_the_cpu_and_waits_for_an_opt_in_on_the_gpu() {
    let dir = tempfile::tempdir().unwrap();
    let m = dir.path().join("m");
    write_qwen3_student(&m);
    let pool = dir.path().join("pool.jsonl");
    std::fs::write(&pool, small_pool(4)).unwrap();
    // The CPU scores it (past YaRN's original context of 32 tokens), with --max-len up to 131,072.
    let out = dir.path().join("cpu");
    let mut args = score_args(&m, &pool, &out);
    args.extend(["--max-len", "131072"]);
    assert_ok(&lark(&args));
    let rows = read_jsonl(&out.join("scores.jsonl"));
    assert_eq!(rows.len(), 4);
    assert!(rows.iter().all(|r| r["L"].as_f64().is_some_and(|l| l.is_finite() && l > 0.0)), "{rows:?}");
    assert!(rows.iter().all(|r| r["n_tokens"].as_u64().unwrap() > 0));
    // The GPU path needs a kernel no GPU has run yet: refused, saying how to opt in, before anything is written
    // (on a machine without a GPU the opt-in then fails at opening the device instead).
    let out = dir.path().join("gpu");
    let mut args = score_args(&m, &pool, &out);
    let n = args.len();
    args[n - 1] = "cuda";
    let o = Command::new(env!("CARGO_BIN_EXE_lark")).args(&args).env_remove(UNMEASURED).output().unwrap();
    assert_refused(&o, &["config.json", "Qwen3ForCausalLM", "q/k RMSNorm", "LARK_UNMEASURED_KERNELS=1"], Some(&out));
    let o = Command::new(env!("CARGO_BIN_EXE_lark")).args(&args).env(UNMEASURED, "1").output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!err.contains(UNMEASURED), "the opt-in was not taken: {err}");
}

const UNMEASURED: &str = "LARK_UNMEASURED_KERNELS";

#[test]
fn gstar_refuses_what_it_cannot_differentiate_and_select_by_g_star_needs_its_rows() {
    // A Qwen3 student (q/k norm, YaRN): no backward pass for those yet, so no gradient is invented. Refused before
    // anything is written.
    let dir = tempfile::tempdir().unwrap();
    let m = dir.path().join("m");
    write_qwen3_student(&m);
    let pool = dir.path().join("pool.jsonl");
    std::fs::write(&pool, small_pool(4)).unwrap();
    let out = dir.path().join("g");
    let o = lark(&["gstar", "--model", s(&m), "--pool", s(&pool), "--out", s(&out)]);
    assert_refused(&o, &["gradients of Qwen3's per-head q/k RMSNorm", "lark gstar"], None);
    assert!(!out.exists(), "lark gstar wrote {} after refusing", out.display());
    // `--by g_star` over a scores.jsonl (not the gstar.jsonl of `lark gstar`): said plainly, nothing written.
    let scores = dir.path().join("scores.jsonl");
    std::fs::write(&scores, "{\"problem_id\": 0, \"candidate_id\": 0, \"teacher\": \"t\", \"L\": 1.0}\n").unwrap();
    let sel = dir.path().join("sel");
    let o = lark(&["select", "--scores", s(&scores), "--pool", s(&pool), "--out", s(&sel), "--by", "g_star"]);
    assert_refused(&o, &["scores.jsonl", "gstar.jsonl that `lark gstar` writes", "line 1"], Some(&sel));
}
