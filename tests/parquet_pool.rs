//! Parquet pools (README "Pools"): shards as HF datasets writes them score exactly as the same records in JSONL,
//! ShareGPT columns and missing id columns, and broken files (a missing column, a wrong type, a corrupt page, a
//! truncated footer, a codec lark is built without) refused naming the file. Fixtures: tests/fixtures/parquet/,
//! written by scripts/make_parquet_fixtures.py (pyarrow).

mod common;

use common::student::tool_student;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn lark(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_lark")).args(args).env_remove("RUST_BACKTRACE").output().expect("lark runs")
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn fx(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/parquet").join(name)
}

fn read_jsonl(p: &Path) -> Vec<Value> {
    std::fs::read_to_string(p).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

fn score_args<'a>(model: &'a Path, pool: &'a Path, out: &'a Path) -> Vec<&'a str> {
    vec!["score", "--model", s(model), "--pool", s(pool), "--out", s(out), "--device", "cpu"]
}

#[test]
fn parquet_shards_score_as_the_same_records_in_jsonl() {
    let model = tool_student();
    let dir = tempfile::tempdir().unwrap();
    let (pq, js) = (dir.path().join("pq"), dir.path().join("js"));
    let o = lark(&["run", "--model", s(model.path()), "--pool", s(&fx("shards")), "--out", s(&pq), "--device", "cpu"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = lark(&[
        "run",
        "--model",
        s(model.path()),
        "--pool",
        s(&fx("shards.jsonl")),
        "--out",
        s(&js),
        "--device",
        "cpu",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let a = std::fs::read_to_string(pq.join("scores.jsonl")).unwrap();
    assert_eq!(a, std::fs::read_to_string(js.join("scores.jsonl")).unwrap());
    assert_eq!(a.lines().count(), 8);
    assert!(a.contains("\"n_turns\":3"), "{a}");
    let run: Value = serde_json::from_str(&std::fs::read_to_string(pq.join("run.json")).unwrap()).unwrap();
    assert_eq!(run["pool_format"], "parquet");
    // train.jsonl writes the conversation back (the nulls pyarrow's unified structs hold are dropped).
    let (ta, tb) = (read_jsonl(&pq.join("train.jsonl")), read_jsonl(&js.join("train.jsonl")));
    assert_eq!(ta, tb);
}

#[test]
fn sharegpt_parquet_without_id_columns() {
    let model = tool_student();
    let out = tempfile::tempdir().unwrap();
    let o = lark(&score_args(model.path(), &fx("sharegpt.parquet"), out.path()));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let rows = read_jsonl(&out.path().join("scores.jsonl"));
    // No problem_id column: each row is its own problem (its row number); candidates numbered from 0.
    let ids: Vec<(i64, i64)> =
        rows.iter().map(|r| (r["problem_id"].as_i64().unwrap(), r["candidate_id"].as_i64().unwrap())).collect();
    assert_eq!(ids, vec![(0, 0), (1, 0)]);
    assert_eq!(rows[0]["n_turns"], 2);
    assert_eq!(rows[1]["n_turns"], 3);
}

#[test]
fn broken_parquet_files_are_refused_naming_the_file() {
    let model = tool_student();
    let dir = tempfile::tempdir().unwrap();
    let good = std::fs::read(fx("shards/data/train-00000-of-00002.parquet")).unwrap();
    let write = |name: &str, bytes: &[u8]| {
        let p = dir.path().join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    };
    // A corrupt page: garbage over the first data page (after the 4-byte magic), footer intact.
    let mut corrupt = good.clone();
    for b in &mut corrupt[40..400] {
        *b = 0xA5;
    }
    let cases: Vec<(PathBuf, Vec<&str>)> = vec![
        (
            fx("no_messages.parquet"),
            vec!["no_messages.parquet", "no `messages` or `conversations` column (columns: text)"],
        ),
        (
            fx("wrong_type.parquet"),
            vec!["wrong_type.parquet: column `messages`", "expected a list of structs", "INT64"],
        ),
        (write("corrupt.parquet", &corrupt), vec!["corrupt.parquet", "not a readable Parquet file"]),
        (
            write("truncated.parquet", &good[..good.len() - 20]),
            vec!["truncated.parquet", "not a readable Parquet file"],
        ),
        (write("empty.parquet", b""), vec!["empty.parquet", "not a readable Parquet file"]),
        (fx("zstd.parquet"), vec!["zstd.parquet", "Disabled feature at compile time: zstd", "rewrite the file"]),
    ];
    for (pool, needles) in cases {
        let out = dir.path().join("out");
        let o = lark(&score_args(model.path(), &pool, &out));
        let err = String::from_utf8_lossy(&o.stderr).to_string();
        assert_eq!(o.status.code(), Some(1), "{}: {err}", pool.display());
        assert!(!err.contains("panicked"), "{err}");
        for n in needles {
            assert!(err.contains(n), "expected {n:?} in: {err}");
        }
        assert!(!out.join("scores.jsonl").exists() && !out.join("run.json").exists(), "{err}");
    }
    // A row that fails the record checks names the file, the row and the field; --skip-invalid rejects it.
    let (out, bad) = (dir.path().join("o2"), fx("bad_row.parquet"));
    let o = lark(&score_args(model.path(), &bad, &out));
    let err = String::from_utf8_lossy(&o.stderr).to_string();
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains(
            "bad_row.parquet: row 1: field `messages[1].content`: an assistant message needs `content` or \
                      `tool_calls`"
        ),
        "{err}"
    );
    let mut args = score_args(model.path(), &bad, &out);
    args.push("--skip-invalid");
    let o = lark(&args);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let rejects = read_jsonl(&out.join("rejects.jsonl"));
    assert_eq!(rejects.len(), 1);
    assert_eq!((rejects[0]["row"].as_u64(), rejects[0]["field"].as_str()), (Some(1), Some("messages[1].content")));
}

/// `--pool a.parquet b.parquet`: shards named one by one are one pool — the same rows as their directory, one
/// numbering of id-less rows across the files, a fingerprint that covers every file and their order (a resume
/// with the files in another order is refused), and `run.json` listing the paths.
#[test]
fn several_parquet_paths_are_one_pool() {
    let model = tool_student();
    let dir = tempfile::tempdir().unwrap();
    let (d, two, rev) = (dir.path().join("dir"), dir.path().join("two"), dir.path().join("rev"));
    let shard = |i: usize| fx(&format!("shards/data/train-0000{i}-of-00002.parquet"));
    let (s0, s1) = (shard(0), shard(1));
    let run = |pool: &[&Path], out: &Path, extra: &[&str]| {
        let mut args = vec!["run", "--model", s(model.path()), "--pool"];
        args.extend(pool.iter().map(|p| s(p)));
        args.extend(["--out", s(out), "--device", "cpu"]);
        args.extend(extra);
        lark(&args)
    };
    for (pool, out) in [(vec![fx("shards")], &d), (vec![s0.clone(), s1.clone()], &two)] {
        let refs: Vec<&Path> = pool.iter().map(|p| p.as_path()).collect();
        let o = run(&refs, out, &[]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    let read = |p: PathBuf| std::fs::read_to_string(p).unwrap();
    assert_eq!(read(d.join("scores.jsonl")), read(two.join("scores.jsonl")));
    assert_eq!(read_jsonl(&d.join("train.jsonl")), read_jsonl(&two.join("train.jsonl")));
    let info = |p: &Path| -> Value { serde_json::from_str(&read(p.join("run.json"))).unwrap() };
    let (i_dir, i_two) = (info(&d), info(&two));
    assert_eq!(i_two["pool"], serde_json::json!([s(&s0), s(&s1)]));
    assert_eq!(i_dir["pool"], s(&fx("shards")), "one path stays a string, as before");
    assert_ne!(i_dir["pool_fingerprint"], i_two["pool_fingerprint"]);

    // The other order is another pool: its own fingerprint, and an unfinished run of one order does not resume
    // as the other.
    let o = run(&[&s1, &s0], &rev, &[]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_ne!(info(&rev)["pool_fingerprint"], i_two["pool_fingerprint"]);
    // An unfinished run: stopped at a crash point (every chunk journaled, scores.jsonl not yet in place), killed.
    let partial = dir.path().join("partial");
    let mut child = Command::new(env!("CARGO_BIN_EXE_lark"))
        .args(["score", "--model", s(model.path()), "--pool", s(&s0), s(&s1), "--out", s(&partial)])
        .args(["--device", "cpu"])
        .env("LARK_TEST_PAUSE_AT", "before-rename:scores.jsonl")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    while std::io::BufRead::read_line(&mut err, &mut line).unwrap() > 0 && !line.contains("test pause at") {
        line.clear();
    }
    assert!(line.contains("test pause at"), "the crash point was not reached");
    child.kill().unwrap();
    child.wait().unwrap();
    let o = lark(&[
        "score",
        "--model",
        s(model.path()),
        "--pool",
        s(&s1),
        s(&s0),
        "--out",
        s(&partial),
        "--device",
        "cpu",
        "--resume",
    ]);
    assert_eq!(o.status.code(), Some(1));
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(e.contains("cannot resume") && e.contains("fingerprints"), "{e}");
    let o = lark(&[
        "score",
        "--model",
        s(model.path()),
        "--pool",
        s(&s0),
        s(&s1),
        "--out",
        s(&partial),
        "--device",
        "cpu",
        "--resume",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(read(partial.join("scores.jsonl")), read(two.join("scores.jsonl")));

    // Id-less rows are numbered over every file, as over one dataset: the same ShareGPT file twice is four
    // problems, not two duplicated.
    let twice = dir.path().join("twice");
    let sg = fx("sharegpt.parquet");
    let o =
        lark(&["score", "--model", s(model.path()), "--pool", s(&sg), s(&sg), "--out", s(&twice), "--device", "cpu"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let ids: Vec<i64> =
        read_jsonl(&twice.join("scores.jsonl")).iter().map(|r| r["problem_id"].as_i64().unwrap()).collect();
    assert_eq!(ids, vec![0, 1, 2, 3]);
}

/// Several paths must be of one format, and a record twice across them is the duplicate it is within one file.
#[test]
fn several_pool_paths_of_mixed_formats_or_with_duplicates_are_refused() {
    let model = tool_student();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let s0 = fx("shards/data/train-00000-of-00002.parquet");
    let o = lark(&score_args_many(model.path(), &[&s0, &fx("shards.jsonl")], &out));
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("shards.jsonl") && err.contains("different formats") && err.contains("is parquet"), "{err}");
    assert!(!out.join("scores.jsonl").exists());
    let o = lark(&score_args_many(model.path(), &[&s0, &s0], &out));
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("train-00000-of-00002.parquet: row 0") && err.contains("duplicate"), "{err}");
    assert!(!out.join("scores.jsonl").exists());
}

fn score_args_many<'a>(model: &'a Path, pools: &[&'a Path], out: &'a Path) -> Vec<&'a str> {
    let mut v = vec!["score", "--model", s(model), "--pool"];
    v.extend(pools.iter().map(|p| s(p)));
    v.extend(["--out", s(out), "--device", "cpu"]);
    v
}
