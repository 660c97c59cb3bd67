//! End-to-end runs of the `lark` binary on the example pool: every output file, every scorer, both span and
//! Brier modes, the RSR directory layout, and bad input (clear message, non-zero exit, nothing that looks
//! complete). The model is a random-weight Llama with SmolLM2's real tokenizer and chat template, so the text
//! path is real and the run is fast; the real SmolLM2 numbers are checked by golden_parity.rs.

mod common;

use common::student::student;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn lark(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_lark")).args(args).output().expect("lark runs")
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read_jsonl(p: &Path) -> Vec<Value> {
    std::fs::read_to_string(p).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

const ROW_FIELDS: [&str; 22] = [
    "problem_id",
    "candidate_id",
    "teacher",
    "n_tokens",
    "truncated",
    "nll_sum",
    "L",
    "brier_sum",
    "brier_mean",
    "rho_hat",
    "g_hat",
    "grape",
    "inverse_loss",
    "rsr",
    "mean_rank_clip",
    "mean_p_gold",
    "wrong_conc",
    "entropy_mean",
    "token_len",
    "word_len",
    "rule_quality",
    "random",
];

#[test]
fn run_writes_every_file_and_a_consistent_selection() {
    let model = student();
    let out = tempfile::tempdir().unwrap();
    let pool = repo().join("examples/pool.jsonl");
    let o = lark(&["run", "--model", s(model.path()), "--pool", s(&pool), "--out", s(out.path()), "--device", "cpu"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(stdout.contains("selection by g_hat") && stdout.contains("tokens/s"), "{stdout}");

    let rows = read_jsonl(&out.path().join("scores.jsonl"));
    assert_eq!(rows.len(), 70);
    for r in &rows {
        for f in ROW_FIELDS {
            assert!(r.get(f).is_some(), "missing {f} in {r}");
        }
        // brier_sum = Σ(Σπ² − 2p + 1) ≥ 0, ρ̂ = brier_sum / nll_sum, GRAPE = −L.
        let (b, n, l) = (r["brier_sum"].as_f64().unwrap(), r["nll_sum"].as_f64().unwrap(), r["L"].as_f64().unwrap());
        assert!(b > 0.0 && n > 0.0);
        assert!((r["rho_hat"].as_f64().unwrap() - b / n).abs() < 1e-9 * (b / n));
        assert!((r["grape"].as_f64().unwrap() + l).abs() < 1e-12);
        assert_eq!(r["n_tokens"], r["token_len"]);
    }
    // ĝ sums to (2Σρ̂ℓ − Σρ̂ℓ)/Σℓ = Σρ̂ℓ/Σℓ per problem (Eq. 7 summed over k).
    for pid in 0..12 {
        let p: Vec<&Value> = rows.iter().filter(|r| r["problem_id"] == pid).collect();
        let sl: f64 = p.iter().map(|r| r["L"].as_f64().unwrap()).sum();
        let srl: f64 = p.iter().map(|r| r["rho_hat"].as_f64().unwrap() * r["L"].as_f64().unwrap()).sum();
        let sg: f64 = p.iter().map(|r| r["g_hat"].as_f64().unwrap()).sum();
        assert!((sg - srl / sl).abs() < 1e-9, "problem {pid}: Σĝ {sg} vs {}", srl / sl);
    }

    let sel = read_jsonl(&out.path().join("selection.jsonl"));
    assert_eq!(sel.len(), 12);
    for p in &sel {
        let w: Vec<f64> = p["selected"].as_array().unwrap().iter().map(|c| c["weight"].as_f64().unwrap()).collect();
        assert_eq!(w.len(), 3);
        assert!((w.iter().sum::<f64>() - 1.0).abs() < 1e-9);
        assert!(w.windows(2).all(|x| x[0] >= x[1]), "χ²-B weights fall with rank: {w:?}");
    }
    let train = read_jsonl(&out.path().join("train.jsonl"));
    assert_eq!(train.len(), 36);
    assert_eq!(train[0]["messages"].as_array().unwrap().len(), 3);
    assert_eq!(train[0]["meta"]["method"], "chi2");

    let authors: Value =
        serde_json::from_str(&std::fs::read_to_string(out.path().join("scores.json")).unwrap()).unwrap();
    assert_eq!(authors["method"], "lark_ghat");
    assert_eq!(authors["n_scored"], 70);
    assert_eq!(authors["scores"]["0"].as_array().unwrap().len(), 6);
    let run: Value = serde_json::from_str(&std::fs::read_to_string(out.path().join("run.json")).unwrap()).unwrap();
    assert_eq!(run["counts"]["trajectories"], 70);
    assert!(run["tokens_per_s"].as_f64().unwrap() > 0.0);
    assert_eq!(run["settings"]["brier"], "exact");

    // Re-selecting from the written scores by another scorer and weighting.
    let out2 = tempfile::tempdir().unwrap();
    let o = lark(&[
        "select",
        "--scores",
        s(&out.path().join("scores.jsonl")),
        "--pool",
        s(&pool),
        "--out",
        s(out2.path()),
        "--by",
        "rsr",
        "--budget",
        "2",
        "--weighting",
        "softmax",
        "--temperature",
        "0.5",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let sel = read_jsonl(&out2.path().join("selection.jsonl"));
    assert_eq!(sel[0]["by"], "rsr");
    // RSR: lower is better, so the first ranked has the smallest RSR.
    let ranked = sel[0]["ranked"].as_array().unwrap();
    assert!(ranked[0]["score"].as_f64().unwrap() <= ranked[1]["score"].as_f64().unwrap());
}

#[test]
fn compat_modes_rsr_layout_and_every_scorer() {
    let model = student();
    let out = tempfile::tempdir().unwrap();
    let pool = repo().join("examples/rsr_pool");
    let judge = repo().join("examples/judge_scores.json");
    let o = lark(&[
        "score",
        "--model",
        s(model.path()),
        "--pool",
        s(&pool),
        "--out",
        s(out.path()),
        "--device",
        "cpu",
        "--span",
        "content",
        "--brier",
        "topk:50",
        "--scorers",
        "all",
        "--judge-scores",
        s(&judge),
        "--max-len",
        "300",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let rows = read_jsonl(&out.path().join("scores.jsonl"));
    assert_eq!(rows.len(), 18); // 2 teachers × 3 rollouts × 3 problems
    assert!(rows.iter().all(|r| r["local_naturalness"].as_f64().is_some_and(|x| x < 0.0)));
    assert!(rows.iter().all(|r| r.get("llm_judge").is_some()));
    assert!(rows.iter().any(|r| r["truncated"] == true), "--max-len 300 truncates the long ones");
    let authors: Value =
        serde_json::from_str(&std::fs::read_to_string(out.path().join("scores.json")).unwrap()).unwrap();
    assert_eq!(authors["top_k"], 50);
    // Candidate ids of the RSR layout: teachers sorted by name, then rollout index.
    let teachers: Vec<(i64, String)> = rows
        .iter()
        .filter(|r| r["problem_id"] == 0)
        .map(|r| (r["candidate_id"].as_i64().unwrap(), r["teacher"].as_str().unwrap().to_string()))
        .collect();
    assert_eq!(teachers.len(), 6);
    assert!(teachers.iter().all(|(c, t)| (*c < 3) == (t == "self-checker")), "{teachers:?}");
}

#[test]
fn bad_input_fails_clearly_and_leaves_nothing_complete() {
    let model = student();
    let dir = tempfile::tempdir().unwrap();
    let pool = dir.path().join("pool.jsonl");
    let good = std::fs::read_to_string(repo().join("examples/pool.jsonl")).unwrap();
    let mut lines: Vec<&str> = good.lines().take(4).collect();
    lines.insert(2, "{\"problem_id\": 1, \"candidate_id\": ");
    std::fs::write(&pool, lines.join("\n")).unwrap();
    let out = dir.path().join("out");
    let o = lark(&["score", "--model", s(model.path()), "--pool", s(&pool), "--out", s(&out), "--device", "cpu"]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("pool.jsonl:3"), "{err}");
    assert!(!out.join("run.json").exists() && !out.join("scores.jsonl").exists());

    // --skip-invalid: the bad line is listed in rejects.jsonl and the rest is scored.
    let o = lark(&[
        "score",
        "--model",
        s(model.path()),
        "--pool",
        s(&pool),
        "--out",
        s(&out),
        "--device",
        "cpu",
        "--skip-invalid",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(read_jsonl(&out.join("rejects.jsonl")).len(), 1);
    assert_eq!(read_jsonl(&out.join("scores.jsonl")).len(), 4);

    // A model directory without weights, a missing pool, an unknown scorer.
    let empty = tempfile::tempdir().unwrap();
    std::fs::copy(model.path().join("config.json"), empty.path().join("config.json")).unwrap();
    let good_pool = dir.path().join("good.jsonl");
    std::fs::write(&good_pool, good.lines().take(3).collect::<Vec<_>>().join("\n")).unwrap();
    let o = lark(&["score", "--model", s(empty.path()), "--pool", s(&good_pool), "--out", s(&out), "--device", "cpu"]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("model.safetensors"), "{}", String::from_utf8_lossy(&o.stderr));
    let o = lark(&["score", "--model", s(model.path()), "--pool", "/nonexistent.jsonl", "--out", s(&out)]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("/nonexistent.jsonl"));
    let o = lark(&["score", "--model", s(model.path()), "--pool", s(&pool), "--out", s(&out), "--scorers", "magic"]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("magic"));
}

#[test]
fn cuda_without_a_gpu_is_a_clear_error() {
    if lark::backend::cuda::probe().is_ok() {
        eprintln!("a GPU is present: this test checks the GPU-less path and has nothing to check here");
        return;
    }
    let model = student();
    let out = tempfile::tempdir().unwrap();
    let pool = repo().join("examples/pool.jsonl");
    let o =
        lark(&["score", "--model", s(model.path()), "--pool", s(&pool), "--out", s(out.path()), "--device", "cuda"]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.to_lowercase().contains("cuda"), "{err}");
    assert!(!out.path().join("run.json").exists());
}

#[test]
fn bench_profile_and_backward_report_what_they_measured() {
    let model = student();
    let m = model.path().to_str().unwrap();
    let common =
        ["--model", m, "--device", "cpu", "--lengths", "fixed:40", "--tokens", "80", "--repeats", "1", "--json"];
    let o = lark(&[&["bench", "--profile"][..], &common[..]].concat());
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    let ops = v["profile"].as_array().expect("a profile");
    let names: Vec<&str> = ops.iter().map(|o| o["op"].as_str().unwrap()).collect();
    for n in [
        "qkv_gemm",
        "attention",
        "o_gemm",
        "gate_up_gemm",
        "down_gemm",
        "norms_rope_elementwise",
        "lm_head_gemm",
        "vocab_pass",
        "other",
    ] {
        assert!(names.contains(&n), "{n} missing from {names:?}");
    }
    // The timed ops and `other` make up the mean run (one run here, so the median).
    let share: f64 = ops.iter().map(|o| o["share"].as_f64().unwrap()).sum();
    assert!((share - 1.0).abs() < 1e-6, "shares sum to {share}");
    assert!(ops.iter().filter(|o| o["op"] != "other").all(|o| o["s_per_run"].as_f64().unwrap() > 0.0));
    assert!(ops.iter().find(|o| o["op"] == "qkv_gemm").unwrap()["gflops_per_s"].as_f64().unwrap() > 0.0);
    // Without --profile there is none (and nothing was timed per op).
    let o = lark(&[&["bench"][..], &common[..]].concat());
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(v["profile"].is_null());

    let o = lark(&[&["bench", "--backward"][..], &common[..]].concat());
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["mode"], "backward");
    assert_eq!(v["sequences"], 2);
    assert!(v["s_per_backward_pass"].as_f64().unwrap() > 0.0 && v["peak_rss_bytes"].as_u64().unwrap() > 0);
    let o = lark(&["bench", "--backward", "--model", m, "--device", "cuda"]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("--backward runs on the CPU only"));
}
