//! The backward pass against central finite differences in f64, every tensor of three tiny random models
//! (Qwen2: q/k/v biases, untied head; Llama: tied embedding, no bias; Llama with `attention_bias` and
//! `mlp_bias`, untied head: every bias there is), and the f32 pass against the f64 one and against the CPU
//! forward backend.

use super::gstar::problem_grads;
use super::*;
use crate::backend::cpu::CpuBackend;
use crate::backend::Backend;
use crate::model::random::{tiny_config, write_random_model, SplitMix};
use crate::model::{Architecture, StoredDtype};
use crate::stats::StatsOptions;

/// `all_biases`: a Llama with `attention_bias` (q, k, v, o) and `mlp_bias`, and an untied head.
fn tiny(arch: Architecture, all_biases: bool) -> (tempfile::TempDir, Model) {
    let mut c = tiny_config(arch);
    if all_biases {
        assert_eq!(arch, Architecture::Llama, "only Llama configs carry o and MLP biases");
        c.qkv_bias = true;
        c.o_bias = true;
        c.mlp_bias = true;
        c.tie_word_embeddings = false;
    }
    let dir = tempfile::tempdir().unwrap();
    write_random_model(dir.path(), &c, StoredDtype::F32, 5).unwrap();
    let m = Model::open(dir.path()).unwrap();
    (dir, m)
}

fn ids(n: usize, seed: u64) -> Vec<u32> {
    let mut r = SplitMix(seed);
    (0..n).map(|_| (r.next_u64() % 301) as u32).collect()
}

/// Central differences with step `H` on `PER_TENSOR` random coordinates of every tensor (for the embedding,
/// coordinates of rows the sequence uses, plus one row it does not use, whose gradient must be exactly 0).
/// Relative error `|fd − g| / max(|g|, |fd|, FLOOR · max_tensor|g|)`, bound [`FD_BOUND`].
const H: f64 = 1e-5;
const PER_TENSOR: usize = 4;
const FLOOR: f64 = 1e-3;
const FD_BOUND: f64 = 1e-5;

fn check_fd(arch: Architecture, all_biases: bool) -> f64 {
    let (_d, model) = tiny(arch, all_biases);
    let mut s = Student::<f64>::from_model(&model).unwrap();
    let seq = ids(13, 3);
    let req = SeqRequest { ids: &seq, score_from: 4 };
    let mut g = s.zeros();
    let l0 = s.loss_and_grad(req, &mut g).unwrap();
    assert!((l0 - s.loss(req).unwrap()).abs() < 1e-12, "loss with and without gradient");
    let mut rng = SplitMix(17);
    let mut worst = 0f64;
    let names = s.names().to_vec();
    let h = s.config().hidden_size;
    for (ti, name) in names.iter().enumerate() {
        let n = g.0[ti].len();
        let gmax = g.0[ti].iter().fold(0f64, |a, &x| a.max(x.abs()));
        assert!(gmax > 0.0, "{name}: gradient is identically zero");
        let mut coords: Vec<usize> = (0..PER_TENSOR).map(|_| (rng.next_u64() as usize) % n).collect();
        if name == EMBED {
            coords = (0..PER_TENSOR).map(|i| seq[i * 3] as usize * h + (rng.next_u64() as usize) % h).collect();
            let unused = (0..301u32).find(|v| !seq.contains(v)).unwrap() as usize;
            let untied = !s.config().tie_word_embeddings;
            if untied {
                assert!(g.0[ti][unused * h..(unused + 1) * h].iter().all(|&x| x == 0.0), "unused embedding row");
            }
            coords.push(unused * h + 1);
        }
        for &ci in &coords {
            let orig = s.params().0[ti][ci];
            s.params_mut().0[ti][ci] = orig + H;
            let lp = s.loss(req).unwrap();
            s.params_mut().0[ti][ci] = orig - H;
            let lm = s.loss(req).unwrap();
            s.params_mut().0[ti][ci] = orig;
            let fd = (lp - lm) / (2.0 * H);
            let an = g.0[ti][ci];
            let rel = (fd - an).abs() / an.abs().max(fd.abs()).max(FLOOR * gmax);
            assert!(rel < FD_BOUND, "{name}[{ci}]: backward {an:e}, finite difference {fd:e}, relative error {rel:e}");
            worst = worst.max(rel);
        }
    }
    worst
}

#[test]
fn finite_differences_qwen2_qkv_bias_untied() {
    let w = check_fd(Architecture::Qwen2, false);
    eprintln!("qwen2 (q/k/v biases, untied head): worst relative error {w:e}");
}

#[test]
fn finite_differences_llama_every_bias_untied() {
    let w = check_fd(Architecture::Llama, true);
    eprintln!("llama (every bias, untied head): worst relative error {w:e}");
}

#[test]
fn finite_differences_llama_tied_no_bias() {
    let w = check_fd(Architecture::Llama, false);
    eprintln!("llama (tied embedding): worst relative error {w:e}");
}

#[test]
fn every_parameter_group_is_covered() {
    let (_d, model) = tiny(Architecture::Llama, true);
    let s = Student::<f64>::from_model(&model).unwrap();
    let names = s.names().join(" ");
    for part in [
        "embed_tokens",
        "input_layernorm",
        "q_proj.weight",
        "q_proj.bias",
        "k_proj.bias",
        "v_proj.bias",
        "o_proj.weight",
        "o_proj.bias",
        "post_attention_layernorm",
        "gate_proj.bias",
        "up_proj.bias",
        "down_proj.weight",
        "down_proj.bias",
        "model.norm",
        "lm_head",
    ] {
        assert!(names.contains(part), "{part} not among the differentiated tensors");
    }
    assert_eq!(s.parameter_count() as u64, model.config.parameter_count());
}

#[test]
fn f32_gradient_matches_f64_and_the_forward_backend() {
    for arch in [Architecture::Qwen2, Architecture::Llama] {
        let (_d, model) = tiny(arch, false);
        let s64 = Student::<f64>::from_model(&model).unwrap();
        let s32 = Student::<f32>::from_model(&model).unwrap();
        // Longer than a LM-head chunk, so chunking is exercised.
        let seq = ids(HEAD_CHUNK + 30, 9);
        let req = SeqRequest { ids: &seq, score_from: 7 };
        let (mut g64, mut g32) = (s64.zeros(), s32.zeros());
        let l64 = s64.loss_and_grad(req, &mut g64).unwrap();
        let l32 = s32.loss_and_grad(req, &mut g32).unwrap();
        let diff: f64 = g64
            .0
            .iter()
            .zip(&g32.0)
            .map(|(a, b)| a.iter().zip(b).map(|(x, &y)| (x - y as f64).powi(2)).sum::<f64>())
            .sum::<f64>()
            .sqrt();
        let rel = diff / g64.sq_norm().sqrt();
        assert!(rel < 1e-4, "{arch:?}: f32 gradient relative error {rel:e}");
        assert!((l32 - l64).abs() < 1e-5 * l64, "{arch:?}: loss f32 {l32} f64 {l64}");
        // The CPU forward backend's mean NLL over the same span.
        let mut b = CpuBackend::new(&model).unwrap();
        let st = b.score(&[req], &StatsOptions::default()).unwrap();
        let nll = -st[0].iter().map(|t| t.logprob as f64).sum::<f64>() / st[0].len() as f64;
        assert!((nll - l64).abs() < 1e-5 * l64, "{arch:?}: forward backend ℓ {nll}, backward pass ℓ {l64}");
    }
}

#[test]
fn two_pass_scheme_matches_stored_gradients() {
    let (_d, model) = tiny(Architecture::Qwen2, false);
    let s = Student::<f64>::from_model(&model).unwrap();
    let seqs: Vec<Vec<u32>> = (0..3).map(|i| ids(10 + 4 * i, 30 + i as u64)).collect();
    let reqs: Vec<SeqRequest> = seqs.iter().map(|x| SeqRequest { ids: x, score_from: 3 }).collect();
    let mut calls = 0;
    let pg = problem_grads(&s, &reqs, |_, _| calls += 1).unwrap();
    assert_eq!(calls, 2 * reqs.len() - 1, "2K − 1 backward passes");
    // Reference: all gradients stored (fine at this size).
    let gs: Vec<Tensors<f64>> = reqs
        .iter()
        .map(|r| {
            let mut g = s.zeros();
            s.loss_and_grad(*r, &mut g).unwrap();
            g
        })
        .collect();
    for k in 0..3 {
        let dot: f64 = (0..3).map(|j| gs[k].dot(&gs[j])).sum();
        assert!((pg.dot_sum[k] - dot).abs() < 1e-12 * dot.abs().max(1.0));
        assert!((pg.grad_sq[k] - gs[k].sq_norm()).abs() < 1e-12 * pg.grad_sq[k]);
    }
    assert!(pg.closure_error() < 1e-12);
}

#[test]
fn rejects_bad_requests() {
    let (_d, model) = tiny(Architecture::Llama, false);
    let s = Student::<f32>::from_model(&model).unwrap();
    let seq = [1u32, 2, 3];
    assert!(s.loss(SeqRequest { ids: &seq, score_from: 3 }).is_err());
    assert!(s.loss(SeqRequest { ids: &[1, 301], score_from: 1 }).is_err());
}

#[test]
fn padding_row_gets_no_gradient_from_the_lookup_as_in_hf() {
    // Untied, so the embedding's only use is the lookup: with `pad_token_id` set, the padding row's gradient is
    // exactly 0 (nn.Embedding(padding_idx)), and every other tensor is unchanged.
    let (dir, model) = tiny(Architecture::Llama, true);
    let seq = ids(40, 3);
    let pad = seq[5];
    let req = SeqRequest { ids: &seq, score_from: 2 };
    let plain = Student::<f64>::from_model(&model).unwrap();
    assert_eq!(plain.padding_idx(), None, "the random model's config has no pad_token_id");
    let path = dir.path().join("config.json");
    let mut cfg: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    cfg["pad_token_id"] = serde_json::json!(pad);
    std::fs::write(&path, cfg.to_string()).unwrap();
    let padded = Student::<f64>::from_model(&Model::open(dir.path()).unwrap()).unwrap();
    assert_eq!(padded.padding_idx(), Some(pad as usize));
    let (mut g0, mut g1) = (plain.zeros(), padded.zeros());
    let l0 = plain.loss_and_grad(req, &mut g0).unwrap();
    let l1 = padded.loss_and_grad(req, &mut g1).unwrap();
    assert_eq!(l0, l1, "the forward pass is the same");
    let h = model.config.hidden_size;
    let e = plain.names().iter().position(|n| n == crate::model::EMBED).unwrap();
    let row = |g: &Tensors<f64>, r: usize| g.0[e][r * h..(r + 1) * h].to_vec();
    assert!(row(&g0, pad as usize).iter().any(|&x| x != 0.0));
    assert!(row(&g1, pad as usize).iter().all(|&x| x == 0.0));
    for r in seq.iter().filter(|&&r| r != pad) {
        assert_eq!(row(&g0, *r as usize), row(&g1, *r as usize));
    }
    for (i, (a, b)) in g0.0.iter().zip(&g1.0).enumerate() {
        if i != e {
            assert_eq!(a, b, "{}", plain.names()[i]);
        }
    }
    // An id outside the vocabulary or a non-integer is no padding row.
    cfg["pad_token_id"] = serde_json::json!(model.config.vocab_size);
    std::fs::write(&path, cfg.to_string()).unwrap();
    assert_eq!(hf_padding_idx(dir.path(), model.config.vocab_size), None);
    cfg["pad_token_id"] = serde_json::json!([1, 2]);
    std::fs::write(&path, cfg.to_string()).unwrap();
    assert_eq!(hf_padding_idx(dir.path(), model.config.vocab_size), None);
}
