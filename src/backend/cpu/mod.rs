//! CPU backend: the reference forward pass of Qwen2/Qwen3/Llama in f32 (whatever the stored dtype), multi-threaded
//! through rayon and the `gemm` crate; or, opted into with `--precision bf16`, the same pass with every linear
//! layer's weights and inputs in bf16 (AMX where available, see [`bf16`]) and everything else in f32. It reads like the architecture: embed → N × (RMSNorm → attention →
//! residual → RMSNorm → SwiGLU MLP → residual) → RMSNorm → LM head on scored positions only → statistics.

pub mod bf16;
pub mod expf;
pub mod linear;
pub mod ops;
pub mod profile;

use super::{Backend, SeqRequest};
use crate::backend::cuda::Precision;
use crate::error::{LarkError, Result};
use crate::model::{LayerNames, Model, ModelConfig, EMBED, FINAL_NORM};
use crate::stats::{vocab_stats_row, StatsOptions, TokenStats};
use profile::{time, Op};
use rayon::prelude::*;

/// Rows of logits held at once by the LM-head pass: bounds memory at `LOGIT_CHUNK × vocab` floats.
const LOGIT_CHUNK: usize = 64;

/// A linear layer's weight `[out, in]`: f32 (the reference) or bf16, each packed once for its kernel.
enum Weight {
    F32(linear::F32Linear),
    Bf16(bf16::Bf16Linear),
}

impl Weight {
    fn new(w: Vec<f32>, n: usize, k: usize, precision: Precision) -> Self {
        match precision {
            Precision::Fp32 => Weight::F32(linear::F32Linear::new(w, n, k)),
            Precision::Bf16 => Weight::Bf16(bf16::Bf16Linear::pack(&w, n, k)),
        }
    }

    /// `out[m, out] = x[m, in] · wᵀ`.
    fn matmul_bt(&self, x: &[f32], m: usize, out: &mut [f32]) {
        match self {
            Weight::F32(lin) => lin.matmul_bt(x, m, out),
            Weight::Bf16(lin) => lin.matmul_bt(x, m, out),
        }
    }
}

struct Layer {
    input_norm: Vec<f32>,
    /// q, k, v projections stacked: `[(H + 2·Hkv)·D, hidden]`.
    qkv: Weight,
    qkv_bias: Option<Vec<f32>>,
    /// Per-head RMSNorm weights of q and k, `[head_dim]` each (Qwen3).
    qk_norm: Option<(Vec<f32>, Vec<f32>)>,
    o: Weight,
    o_bias: Option<Vec<f32>>,
    post_norm: Vec<f32>,
    /// gate and up projections stacked: `[2·inter, hidden]`.
    gate_up: Weight,
    gate_up_bias: Option<Vec<f32>>,
    down: Weight,
    down_bias: Option<Vec<f32>>,
}

pub struct CpuBackend {
    config: ModelConfig,
    /// The f32 embedding table; None when the f32 LM head is tied to it (rows are then read from the head's
    /// packed weight, so the table is held once). A bf16 head keeps the f32 table beside it.
    embed: Option<Vec<f32>>,
    layers: Vec<Layer>,
    final_norm: Vec<f32>,
    lm_head: Weight,
    precision: Precision,
    inv_freq: Vec<f32>,
    /// Multiplies cos and sin (YaRN; 1 otherwise).
    rope_attention_factor: f32,
}

impl CpuBackend {
    /// The f32 reference backend.
    pub fn new(model: &Model) -> Result<Self> {
        Self::with_precision(model, Precision::Fp32)
    }

    /// `Fp32`: the reference; `Bf16`: linear layers in bf16 (weights rounded once here).
    pub fn with_precision(model: &Model, precision: Precision) -> Result<Self> {
        let c = model.config.clone();
        let w = &model.weights;
        let h = c.hidden_size;
        let (q, kv, inter) = (c.num_heads * c.head_dim, c.num_kv_heads * c.head_dim, c.intermediate_size);
        let get = |name: &str, shape: &[usize]| -> Result<Vec<f32>> { Ok(w.get(name, shape)?.to_f32()) };
        let cat = |parts: &[(&str, &[usize])]| -> Result<Vec<f32>> {
            let mut out = Vec::new();
            for (n, s) in parts {
                out.extend(get(n, s)?);
            }
            Ok(out)
        };
        let mut layers = Vec::with_capacity(c.num_layers);
        for l in 0..c.num_layers {
            let n = LayerNames::new(l);
            layers.push(Layer {
                input_norm: get(&n.input_norm, &[h])?,
                qkv: Weight::new(
                    cat(&[(&n.q, &[q, h]), (&n.k, &[kv, h]), (&n.v, &[kv, h])])?,
                    q + 2 * kv,
                    h,
                    precision,
                ),
                qkv_bias: if c.qkv_bias {
                    Some(cat(&[(&n.q_bias, &[q]), (&n.k_bias, &[kv]), (&n.v_bias, &[kv])])?)
                } else {
                    None
                },
                qk_norm: if c.qk_norm {
                    Some((get(&n.q_norm, &[c.head_dim])?, get(&n.k_norm, &[c.head_dim])?))
                } else {
                    None
                },
                o: Weight::new(get(&n.o, &[h, q])?, h, q, precision),
                o_bias: if c.o_bias { Some(get(&n.o_bias, &[h])?) } else { None },
                post_norm: get(&n.post_norm, &[h])?,
                gate_up: Weight::new(cat(&[(&n.gate, &[inter, h]), (&n.up, &[inter, h])])?, 2 * inter, h, precision),
                gate_up_bias: if c.mlp_bias {
                    Some(cat(&[(&n.gate_bias, &[inter]), (&n.up_bias, &[inter])])?)
                } else {
                    None
                },
                down: Weight::new(get(&n.down, &[h, inter])?, h, inter, precision),
                down_bias: if c.mlp_bias { Some(get(&n.down_bias, &[h])?) } else { None },
            });
        }
        let embed = get(EMBED, &[c.vocab_size, h])?;
        let v = c.vocab_size;
        let (embed, lm_head) = match (c.tie_word_embeddings, precision) {
            (true, Precision::Fp32) => (None, Weight::new(embed, v, h, precision)),
            (true, Precision::Bf16) => {
                let head = Weight::new(embed.clone(), v, h, precision);
                (Some(embed), head)
            }
            (false, _) => (Some(embed), Weight::new(model.lm_head()?.to_f32(), v, h, precision)),
        };
        Ok(CpuBackend {
            inv_freq: ops::rope_inv_freq_f32(&c),
            rope_attention_factor: c.rope_attention_factor() as f32,
            final_norm: get(FINAL_NORM, &[h])?,
            embed,
            layers,
            lm_head,
            precision,
            config: c,
        })
    }

    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    /// The final-normed hidden states `[T, hidden]` of a packed batch.
    pub fn hidden_states(&self, ids: &[u32], cu_seqlens: &[usize]) -> Vec<f32> {
        let c = &self.config;
        let (h, d) = (c.hidden_size, c.head_dim);
        let (nh, nkv) = (c.num_heads, c.num_kv_heads);
        let t = ids.len();
        let eps = c.rms_norm_eps as f32;
        let positions: Vec<u32> =
            (0..cu_seqlens.len() - 1).flat_map(|s| 0..(cu_seqlens[s + 1] - cu_seqlens[s]) as u32).collect();
        let (qw, kvw) = (nh * d, nkv * d);
        let qkv_w = qw + 2 * kvw;
        let inter = c.intermediate_size;

        let rope =
            time(Op::Elementwise, || ops::RopeTable::new(&positions, &self.inv_freq, self.rope_attention_factor));
        let mut x = vec![0f32; t * h];
        time(Op::Elementwise, || match (&self.embed, &self.lm_head) {
            (Some(table), _) => ops::embed(table, h, ids, &mut x),
            (None, Weight::F32(head)) => {
                x.par_chunks_mut(h).zip(ids.par_iter()).for_each(|(o, &id)| head.row(id as usize, o))
            }
            (None, Weight::Bf16(_)) => unreachable!("a bf16 head keeps the f32 embedding table"),
        });
        let mut normed = vec![0f32; t * h];
        let mut qkv = vec![0f32; t * qkv_w];
        let (mut qs, mut ks, mut vs) = (vec![0f32; t * qw], vec![0f32; t * kvw], vec![0f32; t * kvw]);
        let mut attn = vec![0f32; t * qw];
        let mut delta = vec![0f32; t * h];
        let mut gate_up = vec![0f32; t * 2 * inter];
        let mut act = vec![0f32; t * inter];

        for layer in &self.layers {
            // Attention block.
            time(Op::Elementwise, || ops::rms_norm(&x, &layer.input_norm, eps, &mut normed));
            time(Op::QkvGemm, || layer.qkv.matmul_bt(&normed, t, &mut qkv));
            time(Op::Elementwise, || {
                if let Some(b) = &layer.qkv_bias {
                    ops::add_bias(&mut qkv, b);
                }
                for (i, row) in qkv.chunks(qkv_w).enumerate() {
                    qs[i * qw..(i + 1) * qw].copy_from_slice(&row[..qw]);
                    ks[i * kvw..(i + 1) * kvw].copy_from_slice(&row[qw..qw + kvw]);
                    vs[i * kvw..(i + 1) * kvw].copy_from_slice(&row[qw + kvw..]);
                }
                if let Some((q_norm, k_norm)) = &layer.qk_norm {
                    // Each head's d values are one row of the norm (the weight is [head_dim]).
                    ops::rms_norm_inplace(&mut qs, q_norm, eps);
                    ops::rms_norm_inplace(&mut ks, k_norm, eps);
                }
                ops::rope_apply(&mut qs, &rope, nh, d);
                ops::rope_apply(&mut ks, &rope, nkv, d);
            });
            time(Op::Attention, || ops::attention_causal(&qs, &ks, &vs, cu_seqlens, nh, nkv, d, &mut attn));
            time(Op::OGemm, || layer.o.matmul_bt(&attn, t, &mut delta));
            time(Op::Elementwise, || {
                if let Some(b) = &layer.o_bias {
                    ops::add_bias(&mut delta, b);
                }
                ops::add_inplace(&mut x, &delta);
                // MLP block.
                ops::rms_norm(&x, &layer.post_norm, eps, &mut normed);
            });
            time(Op::GateUpGemm, || layer.gate_up.matmul_bt(&normed, t, &mut gate_up));
            time(Op::Elementwise, || {
                if let Some(b) = &layer.gate_up_bias {
                    ops::add_bias(&mut gate_up, b);
                }
                ops::silu_mul_stacked(&gate_up, inter, &mut act);
            });
            time(Op::DownGemm, || layer.down.matmul_bt(&act, t, &mut delta));
            time(Op::Elementwise, || {
                if let Some(b) = &layer.down_bias {
                    ops::add_bias(&mut delta, b);
                }
                ops::add_inplace(&mut x, &delta);
            });
        }
        time(Op::Elementwise, || ops::rms_norm(&x, &self.final_norm, eps, &mut normed));
        normed
    }

    /// Statistics for rows of final hidden states `rows[r]` with gold tokens `gold[r]`: the LM head in chunks
    /// of [`LOGIT_CHUNK`] rows, each chunk reduced before the next is formed.
    pub fn head_stats(&self, hidden: &[f32], gold: &[u32], opts: &StatsOptions) -> Vec<TokenStats> {
        let c = &self.config;
        let (h, v) = (c.hidden_size, c.vocab_size);
        let mut out = Vec::with_capacity(gold.len());
        let mut logits = vec![0f32; LOGIT_CHUNK * v];
        for (rows, golds) in hidden.chunks(LOGIT_CHUNK * h).zip(gold.chunks(LOGIT_CHUNK)) {
            let m = golds.len();
            time(Op::HeadGemm, || self.lm_head.matmul_bt(rows, m, &mut logits[..m * v]));
            let stats: Vec<TokenStats> = time(Op::VocabPass, || {
                logits[..m * v]
                    .par_chunks(v)
                    .zip(golds.par_iter())
                    .map(|(row, &g)| vocab_stats_row(row, g, opts))
                    .collect()
            });
            out.extend(stats);
        }
        out
    }
}

/// Check a batch against the model before computing anything: ids in range, a valid scored span.
pub fn validate_batch(batch: &[SeqRequest<'_>], vocab: usize) -> Result<()> {
    for (i, s) in batch.iter().enumerate() {
        if s.ids.is_empty() {
            return Err(LarkError::input(format!("sequence {i}"), "empty token sequence"));
        }
        if s.score_from == 0 || s.score_from > s.ids.len() {
            return Err(LarkError::input(
                format!("sequence {i}"),
                format!("scored span starts at {} (must be in 1..={})", s.score_from, s.ids.len()),
            ));
        }
        if let Some((p, &id)) = s.ids.iter().enumerate().find(|(_, &id)| id as usize >= vocab) {
            return Err(LarkError::input(
                format!("sequence {i}, position {p}"),
                format!("token id {id} is outside the model's vocabulary of {vocab}"),
            ));
        }
    }
    Ok(())
}

impl CpuBackend {
    /// Score a packed batch and also return its final-normed hidden states `[T, hidden]` (the selftest
    /// compares the layer stack on its own). `score` is this without the hidden states.
    pub fn score_with_hidden(
        &self,
        batch: &[SeqRequest<'_>],
        opts: &StatsOptions,
    ) -> Result<(Vec<f32>, Vec<Vec<TokenStats>>)> {
        validate_batch(batch, self.config.vocab_size)?;
        let mut ids = Vec::new();
        let mut cu = vec![0usize];
        for s in batch {
            ids.extend_from_slice(s.ids);
            cu.push(ids.len());
        }
        let hidden = self.hidden_states(&ids, &cu);
        // Only scored positions go through the LM head: row t−1 predicts ids[t].
        let h = self.config.hidden_size;
        let mut rows = Vec::new();
        let mut gold = Vec::new();
        for (s, req) in batch.iter().enumerate() {
            for t in req.score_from..req.ids.len() {
                let r = cu[s] + t - 1;
                rows.extend_from_slice(&hidden[r * h..(r + 1) * h]);
                gold.push(req.ids[t]);
            }
        }
        let mut flat = self.head_stats(&rows, &gold, opts).into_iter();
        let stats = batch.iter().map(|req| flat.by_ref().take(req.n_scored()).collect()).collect();
        Ok((hidden, stats))
    }
}

impl Backend for CpuBackend {
    fn describe(&self) -> String {
        match self.precision {
            Precision::Fp32 => format!("cpu ({} threads)", rayon::current_num_threads()),
            Precision::Bf16 => {
                format!("cpu ({} threads, bf16 linear layers: {})", rayon::current_num_threads(), bf16::kernel_name())
            }
        }
    }

    fn score(&mut self, batch: &[SeqRequest<'_>], opts: &StatsOptions) -> Result<Vec<Vec<TokenStats>>> {
        Ok(self.score_with_hidden(batch, opts)?.1)
    }

    fn work_model(&self) -> Option<crate::model::flops::WorkModel> {
        Some(crate::model::flops::WorkModel::of(&self.config))
    }

    /// 25 GFLOP/s: two older cores without AVX-512 (this backend reaches ~200 GFLOP/s on two AVX-512 cores).
    fn nominal_flops_per_s(&self) -> f64 {
        25e9
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::random::{tiny_config, write_random_model};
    use crate::model::{Architecture, StoredDtype};

    fn tiny_model(arch: Architecture, dtype: StoredDtype) -> (tempfile::TempDir, Model) {
        let dir = tempfile::tempdir().unwrap();
        write_random_model(dir.path(), &tiny_config(arch), dtype, 11).unwrap();
        let m = Model::open(dir.path()).unwrap();
        (dir, m)
    }

    #[test]
    fn scores_do_not_depend_on_batch_companions() {
        let (_d, model) = tiny_model(Architecture::Qwen2, StoredDtype::F32);
        let mut b = CpuBackend::new(&model).unwrap();
        let a: Vec<u32> = (0..40).map(|i| (i * 7 % 301) as u32).collect();
        let c: Vec<u32> = (0..3).map(|i| (i * 13 + 5) as u32).collect();
        let opts = StatsOptions::default();
        let alone = b.score(&[SeqRequest { ids: &a, score_from: 5 }], &opts).unwrap();
        let packed =
            b.score(&[SeqRequest { ids: &c, score_from: 1 }, SeqRequest { ids: &a, score_from: 5 }], &opts).unwrap();
        assert_eq!(packed[0].len(), 2);
        assert_eq!(alone[0].len(), 35);
        for (x, y) in alone[0].iter().zip(&packed[1]) {
            assert!((x.logprob - y.logprob).abs() < 1e-5);
            assert_eq!(x.rank, y.rank);
        }
    }

    #[test]
    fn prefix_positions_are_causal() {
        // Scoring a prefix gives the same statistics as the same positions of the longer sequence.
        let (_d, model) = tiny_model(Architecture::Llama, StoredDtype::BF16);
        let mut b = CpuBackend::new(&model).unwrap();
        let a: Vec<u32> = (0..30).map(|i| (i * 11 % 301) as u32).collect();
        let opts = StatsOptions { topk_brier: Some(50) };
        let full = b.score(&[SeqRequest { ids: &a, score_from: 1 }], &opts).unwrap();
        let pre = b.score(&[SeqRequest { ids: &a[..12], score_from: 1 }], &opts).unwrap();
        for (x, y) in pre[0].iter().zip(&full[0]) {
            assert!((x.logprob - y.logprob).abs() < 1e-5 && (x.sum_p2 - y.sum_p2).abs() < 1e-6);
            assert!(x.topk_brier.is_finite());
        }
    }

    #[test]
    fn rejects_out_of_vocabulary_ids() {
        let (_d, model) = tiny_model(Architecture::Llama, StoredDtype::F16);
        let mut b = CpuBackend::new(&model).unwrap();
        let ids = [1u32, 2, 301];
        let e = b.score(&[SeqRequest { ids: &ids, score_from: 1 }], &StatsOptions::default()).unwrap_err();
        assert!(e.to_string().contains("301"), "{e}");
    }
}
