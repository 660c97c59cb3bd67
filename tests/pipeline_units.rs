//! The model-free pipeline on temp files: pool readers (good and bad pools, both layouts), scoring from
//! made-up statistics, selection, and every output file read back.

use lark::export;
use lark::io::{read_pool, visit_pool, PoolFormat, ReadOptions};
use lark::score::{score_all, Candidate, Outcome, ScoreOptions, Scorer, TextFeatures};
use lark::select::{select, Weighting};
use lark::stats::TrajectoryStats;
use std::path::{Path, PathBuf};

fn msg(role: &str, content: &str) -> serde_json::Value {
    serde_json::json!({"role": role, "content": content})
}

fn line(pid: i64, cid: i64, teacher: &str, answer: &str) -> String {
    serde_json::json!({
        "problem_id": pid, "candidate_id": cid, "teacher": teacher,
        "messages": [msg("system", "Be brief."), msg("user", format!("Problem {pid}").as_str()), msg("assistant", answer)]
    })
    .to_string()
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    if let Some(parent) = p.parent() {
        std::fs::create_dir_all(parent).unwrap();
    }
    std::fs::write(&p, text).unwrap();
    p
}

fn strict() -> ReadOptions {
    ReadOptions::default()
}

fn skip() -> ReadOptions {
    ReadOptions { skip_invalid: true, ..Default::default() }
}

/// The error text of reading `text` as a JSONL pool.
fn jsonl_error(text: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let p = write(dir.path(), "pool.jsonl", text);
    let e = read_pool(&p, &strict()).unwrap_err().to_string();
    assert!(e.contains("pool.jsonl"), "error does not name the file: {e}");
    e
}

#[test]
fn jsonl_pool_reads_and_groups_by_first_appearance() {
    let dir = tempfile::tempdir().unwrap();
    let text =
        [line(7, 0, "a", "x"), String::new(), line(3, 0, "b", "y"), line(7, 1, "b", "z"), "   ".into()].join("\n");
    let p = write(dir.path(), "pool.jsonl", &format!("\u{feff}{text}\n"));
    let pool = read_pool(&p, &strict()).unwrap();
    assert_eq!(pool.format, PoolFormat::LarkJsonl);
    let got: Vec<(i64, Vec<i64>)> =
        pool.problems().map(|(pid, rs)| (pid, rs.iter().map(|r| r.candidate_id).collect())).collect();
    assert_eq!(got, vec![(7, vec![0, 1]), (3, vec![0])]);
    let r = pool.get(7, 1).unwrap();
    assert_eq!((r.teacher.as_str(), r.assistant_content(), r.prompt_messages().len()), ("b", "z", 2));
    assert_eq!(r.origin.line, Some(4));
    // Extra message keys are kept (chat templates may render them), null ones dropped.
    let extra = r#"{"problem_id": 9, "candidate_id": 0, "messages": [{"role": "user", "content": "q", "name": null}, {"role": "assistant", "content": "a", "reasoning_content": "think"}]}"#;
    let p2 = write(dir.path(), "extra.jsonl", extra);
    let pool2 = read_pool(&p2, &strict()).unwrap();
    let m = &pool2.records[0].messages;
    assert!(m[0].extra.is_empty());
    assert_eq!(m[1].extra["reasoning_content"], "think");
    assert_eq!(pool2.records[0].teacher, "unknown");
    // Streaming sees the same records in reading order.
    let mut seen = Vec::new();
    let s = visit_pool(&p, &strict(), |r| {
        seen.push((r.problem_id, r.candidate_id));
        Ok(())
    })
    .unwrap();
    assert_eq!(seen, vec![(7, 0), (3, 0), (7, 1)]);
    assert_eq!((s.n_records, s.problems.clone()), (3, vec![7, 3]));
}

#[test]
fn jsonl_errors_name_file_line_and_field() {
    let good = line(1, 0, "a", "ok");
    let cases: Vec<(String, &str, &str)> = vec![
        (format!("{good}\n{{\"problem_id\": 1,"), ":2", "(json)"),
        (format!("{good}\n[1, 2]"), ":2", "(record)"),
        (r#"{"candidate_id": 0, "messages": []}"#.into(), ":1", "`problem_id`: missing"),
        (r#"{"problem_id": 1.5, "candidate_id": 0}"#.into(), ":1", "`problem_id`: expected an integer"),
        (r#"{"problem_id": "1", "candidate_id": 0}"#.into(), ":1", "`problem_id`"),
        (r#"{"problem_id": 1, "candidate_id": 0, "teacher": 3, "messages": []}"#.into(), ":1", "`teacher`"),
        (r#"{"problem_id": 1, "candidate_id": 0}"#.into(), ":1", "`messages`: missing"),
        (r#"{"problem_id": 1, "candidate_id": 0, "messages": "hi"}"#.into(), ":1", "`messages`: expected a list"),
        (r#"{"problem_id": 1, "candidate_id": 0, "messages": []}"#.into(), ":1", "`messages`: empty"),
        (
            r#"{"problem_id": 1, "candidate_id": 0, "messages": [{"role": "user", "content": "q"}]}"#.into(),
            ":1",
            "no assistant turn",
        ),
        (
            r#"{"problem_id": 1, "candidate_id": 0, "messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": [{"type": "text"}]}]}"#.into(),
            ":1",
            "`messages[1].content`: expected a string, found a list",
        ),
        (
            r#"{"problem_id": 1, "candidate_id": 0, "messages": [{"content": "q"}, {"role": "assistant", "content": "a"}]}"#.into(),
            ":1",
            "`messages[0].role`: missing",
        ),
        (
            r#"{"problem_id": 1, "candidate_id": 0, "messages": [{"role": "user", "content": "q"}, {"role": "system", "content": "s"}, {"role": "assistant", "content": "a"}]}"#.into(),
            ":1",
            "`messages[1].role`: a system message is only allowed first",
        ),
        (
            r#"{"problem_id": 1, "candidate_id": 0, "messages": [{"role": "system", "content": "s"}, {"role": "assistant", "content": "a"}]}"#.into(),
            ":1",
            "`messages`: no user message",
        ),
        (format!("{good}\n\n{good}"), ":3", "`candidate_id`: duplicate (problem_id 1, candidate_id 0): first seen at"),
    ];
    for (text, loc, field) in cases {
        let e = jsonl_error(&text);
        assert!(e.contains(&format!("pool.jsonl{loc}")), "no line {loc} in: {e}");
        assert!(e.contains(field), "no {field:?} in: {e}");
    }
    let e = jsonl_error("\n \n");
    assert!(e.contains("empty pool"), "{e}");
}

#[test]
fn skip_invalid_collects_rejects() {
    let dir = tempfile::tempdir().unwrap();
    let text = [
        line(1, 0, "a", "ok"),
        "not json".into(),
        r#"{"problem_id": 1, "candidate_id": 1, "messages": [{"role": "user", "content": "q"}]}"#.into(),
        line(1, 0, "b", "dup"),
        line(2, 0, "a", "ok"),
    ]
    .join("\n");
    let p = write(dir.path(), "pool.jsonl", &text);
    let pool = read_pool(&p, &skip()).unwrap();
    assert_eq!(pool.records.len(), 2);
    assert_eq!(pool.get(1, 0).unwrap().teacher, "a"); // the first of a duplicate pair is kept
    let rj: Vec<(Option<usize>, &str)> = pool.rejects.iter().map(|r| (r.line, r.field.as_str())).collect();
    assert_eq!(rj, vec![(Some(2), "(json)"), (Some(3), "messages"), (Some(4), "candidate_id")]);
    assert!(pool.rejects[0].file.ends_with("pool.jsonl"));
    // rejects.jsonl round trip
    let out = dir.path().join("rejects.jsonl");
    export::write_rejects_jsonl(&out, &pool.rejects).unwrap();
    let back: Vec<lark::io::Reject> = export::jsonl::read_jsonl(&out).unwrap();
    assert_eq!(back, pool.rejects);
    // Everything invalid: still an error, which says so.
    let p = write(dir.path(), "bad.jsonl", "x\ny\n");
    let e = read_pool(&p, &skip()).unwrap_err().to_string();
    assert!(e.contains("bad.jsonl") && e.contains("all 2 entries were invalid"), "{e}");
}

fn rsr_file(pids: &[Option<serde_json::Value>], tag: &str) -> String {
    let items: Vec<serde_json::Value> = pids
        .iter()
        .enumerate()
        .map(|(i, id)| {
            let mut o = serde_json::json!({"messages": [msg("user", &format!("q{i}")), msg("assistant", &format!("{tag} a{i}"))]});
            if let Some(id) = id {
                o["id"] = id.clone();
            }
            o
        })
        .collect();
    serde_json::to_string_pretty(&items).unwrap()
}

#[test]
fn rsr_dir_ids_are_deterministic() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("RSR_data");
    let two = [None, None];
    // Written out of order on purpose; gen10 sorts after gen2 numerically.
    write(&root, "zeta/data_gen2.json", &rsr_file(&two, "z2"));
    write(&root, "zeta/data_gen1.json", &rsr_file(&two, "z1"));
    write(&root, "alpha/data_gen10.json", &rsr_file(&two, "a10"));
    write(&root, "alpha/data_gen2.json", &rsr_file(&two, "a2"));
    write(&root, "README.md", "not a teacher");
    write(&root, "alpha/notes.txt", "ignored");
    let pool = read_pool(&root, &strict()).unwrap();
    assert_eq!(pool.format, PoolFormat::RsrDir);
    let p0: Vec<(i64, String, String)> = pool
        .problems()
        .next()
        .unwrap()
        .1
        .iter()
        .map(|r| (r.candidate_id, r.teacher.clone(), r.assistant_content().to_string()))
        .collect();
    assert_eq!(
        p0,
        vec![
            (0, "alpha".into(), "a2 a0".into()),
            (1, "alpha".into(), "a10 a0".into()),
            (2, "zeta".into(), "z1 a0".into()),
            (3, "zeta".into(), "z2 a0".into())
        ]
    );
    assert_eq!(pool.groups.iter().map(|g| g.0).collect::<Vec<_>>(), vec![0, 1]);
    // Element origins carry the line where the element starts.
    let r = pool.get(1, 0).unwrap();
    assert_eq!(r.origin.index, Some(1));
    assert!(r.origin.line.unwrap() > 1);
}

#[test]
fn rsr_dir_id_field_and_errors() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("pool");
    write(&root, "t/x_gen1.json", &rsr_file(&[Some(serde_json::json!(17)), Some(serde_json::json!("5"))], "t"));
    let pool = read_pool(&root, &ReadOptions { format: PoolFormat::RsrDir, skip_invalid: false }).unwrap();
    assert_eq!(pool.groups.iter().map(|g| g.0).collect::<Vec<_>>(), vec![17, 5]);

    // A bad element: the error names the file, the element's line and index, and the field.
    let bad = r#"[
  {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]},
  {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": 42}]}
]"#;
    write(&root, "u/y_gen1.json", bad);
    let e = read_pool(&root, &strict()).unwrap_err().to_string();
    assert!(e.contains("y_gen1.json:3 (element 1)") && e.contains("messages[1].content"), "{e}");

    // Invalid JSON names the line serde found; a wrong file name is named too.
    std::fs::remove_file(root.join("u/y_gen1.json")).unwrap();
    write(&root, "u/y_gen1.json", "[\n{\"messages\": [}\n]");
    let e = read_pool(&root, &strict()).unwrap_err().to_string();
    assert!(e.contains("y_gen1.json:2") && e.contains("(json)"), "{e}");
    std::fs::remove_file(root.join("u/y_gen1.json")).unwrap();
    write(&root, "u/y.json", "[]");
    let e = read_pool(&root, &strict()).unwrap_err().to_string();
    assert!(e.contains("y.json") && e.contains("_gen<N>"), "{e}");
    // ... and skipped under --skip-invalid, along with a duplicate id inside one file.
    write(&root, "v/z_gen1.json", &rsr_file(&[Some(serde_json::json!(1)), Some(serde_json::json!(1))], "v"));
    let pool = read_pool(&root, &skip()).unwrap();
    let fields: Vec<&str> = pool.rejects.iter().map(|r| r.field.as_str()).collect();
    assert_eq!(fields, vec!["(file)", "candidate_id"], "{:?}", pool.rejects);
    assert!(pool.rejects[1].reason.contains("duplicate"));

    // No teacher files at all.
    let empty = dir.path().join("empty");
    std::fs::create_dir_all(empty.join("t")).unwrap();
    let e = read_pool(&empty, &strict()).unwrap_err().to_string();
    assert!(e.contains("empty pool"), "{e}");
    // A missing path is an I/O error naming it.
    let e = read_pool(dir.path().join("nope"), &strict()).unwrap_err().to_string();
    assert!(e.contains("nope"), "{e}");
}

/// A one-token trajectory with gold probability p and Σπ² = q.
fn one_token(p: f64, q: f64) -> TrajectoryStats {
    TrajectoryStats {
        n_tokens: 1,
        nll_sum: -p.ln(),
        brier_sum: q - 2.0 * p + 1.0,
        sum_p2_sum: q,
        p_gold_sum: p,
        wrong_conc_sum: q - p * p,
        entropy_sum: 0.5,
        rank_clip_sum: 2.0,
        rank_sum: 2.0,
        topk_brier_sum: f64::NAN,
    }
}

#[test]
fn score_select_export_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let text = [
        line(4, 0, "a", "short"),
        line(4, 1, "b", "a longer answer"),
        line(4, 2, "c", "skipped"),
        line(8, 0, "a", "x"),
    ]
    .join("\n");
    let pool_path = write(dir.path(), "pool.jsonl", &text);
    let pool = read_pool(&pool_path, &strict()).unwrap();
    let stats = [one_token(0.5, 0.4), one_token(0.2, 0.3), one_token(0.9, 0.8), one_token(0.6, 0.5)];
    let cands: Vec<Candidate> = pool
        .records
        .iter()
        .zip(stats)
        .map(|(r, st)| Candidate {
            problem_id: r.problem_id,
            candidate_id: r.candidate_id,
            teacher: r.teacher.clone(),
            outcome: if r.teacher == "c" {
                Outcome::Skipped("prompt fills --max-len".into())
            } else {
                Outcome::Scored { stats: st, truncated: false, n_turns: 1 }
            },
            text: TextFeatures::from_text(r.assistant_content()),
            local_naturalness: None,
            llm_judge: None,
        })
        .collect();
    let rows = score_all(&cands, &ScoreOptions::default());
    let sj = dir.path().join("scores.jsonl");
    export::write_scores_jsonl(&sj, &rows).unwrap();
    let raw = std::fs::read_to_string(&sj).unwrap();
    assert_eq!(raw.lines().count(), 4);
    assert!(raw.lines().nth(2).unwrap().contains("\"skipped\":\"prompt fills --max-len\""));
    assert!(raw.lines().nth(2).unwrap().contains("\"g_hat\":null"));
    let back = export::read_scores_jsonl(&sj).unwrap();
    assert_eq!(serde_json::to_string(&back).unwrap(), serde_json::to_string(&rows).unwrap());

    // Authors' scores.json: scored candidates only, keys in first-appearance order.
    let authors = dir.path().join("scores.json");
    export::write_scores_json(&authors, &rows, "SmolLM2-135M", None).unwrap();
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&authors).unwrap()).unwrap();
    assert_eq!(v["method"], "lark_ghat");
    assert_eq!(
        (v["n_problems"].as_u64(), v["n_scored"].as_u64(), v["n_skipped"].as_u64()),
        (Some(2), Some(3), Some(1))
    );
    assert!(v["top_k"].is_null());
    assert_eq!(v["scores"]["4"].as_array().unwrap().len(), 2);
    assert!((v["scores"]["4"][0]["g_hat"].as_f64().unwrap() - rows[0].g_hat).abs() < 1e-15);
    assert!((v["scores"]["4"][1]["Brier"].as_f64().unwrap() - rows[1].brier_mean).abs() < 1e-15);

    // Select by ĝ (B = 1) and by RSR, write selection.jsonl and train.jsonl.
    let sels: Vec<_> = lark::score::group_rows(back)
        .into_iter()
        .map(|(pid, rs)| {
            let c: Vec<(i64, f64)> = rs.iter().map(|r| (r.candidate_id, Scorer::GHat.value(r))).collect();
            select(pid, &c, "g_hat", Scorer::GHat.direction(), 1, Weighting::Chi2).unwrap()
        })
        .collect();
    let best4 = if rows[0].g_hat > rows[1].g_hat { 0 } else { 1 };
    assert_eq!(sels[0].selected[0].candidate_id, best4);
    assert_eq!(sels[0].ranked.last().unwrap().candidate_id, 2); // the skipped one ranks last
    let sel_path = dir.path().join("selection.jsonl");
    export::write_selection_jsonl(&sel_path, &sels).unwrap();
    let sels_back = export::read_selection_jsonl(&sel_path).unwrap();
    assert_eq!(serde_json::to_string(&sels_back).unwrap(), serde_json::to_string(&sels).unwrap());

    let train = dir.path().join("train.jsonl");
    let n = export::write_train_jsonl(&train, &sels, |p, c| pool.get(p, c), false).unwrap();
    assert_eq!(n, 2);
    let first: serde_json::Value =
        serde_json::from_str(std::fs::read_to_string(&train).unwrap().lines().next().unwrap()).unwrap();
    assert_eq!(first["meta"]["problem_id"], 4);
    assert_eq!(first["meta"]["candidate_id"], best4);
    assert_eq!(first["meta"]["sample_idx"], best4);
    assert_eq!(first["meta"]["B"], 1);
    assert_eq!(first["meta"]["train_weight"], 1.0);
    assert_eq!(first["meta"]["method"], "chi2");
    assert_eq!(first["messages"].as_array().unwrap().len(), 3);

    // The streaming lookup finds the same records.
    let recs = export::selected_records(&pool_path, &strict(), &sels).unwrap();
    assert_eq!(recs.len(), 2);
    let train2 = dir.path().join("train2.jsonl");
    export::write_train_jsonl(&train2, &sels, |p, c| recs.get(&(p, c)), false).unwrap();
    assert_eq!(std::fs::read(&train).unwrap(), std::fs::read(&train2).unwrap());
    // A selection naming a candidate the pool lacks is an error, and leaves no file behind.
    let mut bad = sels.clone();
    bad[0].selected[0].candidate_id = 99;
    let missing = dir.path().join("missing.jsonl");
    let e = export::write_train_jsonl(&missing, &bad, |p, c| pool.get(p, c), false).unwrap_err().to_string();
    assert!(e.contains("candidate_id 99"), "{e}");
    assert!(!missing.exists() && !dir.path().join("missing.jsonl.tmp").exists());
}

#[test]
fn scores_reader_errors() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(dir.path(), "scores.jsonl", "{\"problem_id\": 1}\n");
    let e = export::read_scores_jsonl(&p).unwrap_err().to_string();
    assert!(e.contains("scores.jsonl:1") && e.contains("missing field"), "{e}");
    let p = write(dir.path(), "empty.jsonl", "\n");
    assert!(export::read_scores_jsonl(&p).unwrap_err().to_string().contains("no score rows"));
}
