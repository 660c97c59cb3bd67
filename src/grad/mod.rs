//! The student's backward pass on the CPU: the gradient g = ∇_θ ℓ of one trajectory's mean NLL over its
//! scored tokens (positions `score_from..len` of a [`SeqRequest`], as the forward pass scores them), for
//! every parameter of a Qwen2/Llama model. It is what the exact directional derivative g* of the paper
//! (Eq. 5, Appendix B.8) needs; see [`gstar`].
//!
//! The forward pass here mirrors `backend::cpu` operation by operation (RMSNorm `x / sqrt(mean(x²) + eps) · w`
//! with the mean in f64, rotate-half RoPE with the f32 angle `pos · inv_freq`, grouped-query causal attention
//! with a max-subtracted softmax, SiLU(gate)·up, LM head on the scored positions only), and the backward pass
//! is its exact reverse. Everything is generic over the float type [`Real`]: f32 is what `lark gstar` runs,
//! f64 is what the finite-difference tests check (`tests` below). Gradients are laid out as the model's
//! tensors ([`crate::model::tensor_specs`]: HF names and shapes), so a tied embedding is one tensor whose
//! gradient sums its two uses, as in torch.
//!
//! Memory of one backward pass: the activations of every layer for one sequence (≈ T·(4h + q + 2kv + 3·inter)
//! values per layer, plus T×T attention scores per head while that head is differentiated), the LM head's
//! logits in chunks of [`HEAD_CHUNK`] rows, and the gradient buffer (one value per parameter).
//!
//! **The padding row, as HF trains it.** HF's Qwen2/Qwen3/Llama models build their input embedding as
//! `nn.Embedding(vocab, hidden, padding_idx=config.pad_token_id)`, and torch never sends gradient into the
//! padding row through that lookup: SmolLM2, whose `pad_token_id` 2 is `<|im_end|>`, gets no input-side
//! gradient for the end-of-turn token that every trajectory holds (its LM-head use, when tied, still counts).
//! g* is the derivative of what fine-tuning that model does, so the gradient here does the same
//! ([`Student::padding_idx`], read from `config.json`); without it ‖∂ℓ/∂embed‖² differs from torch's by ~4e-4
//! on SmolLM2 (measured by tests/golden_gstar.rs).
//!
//! Not supported: Qwen3's per-head q/k RMSNorm and YaRN's attention factor (refused).

pub mod diagnostics;
pub mod gstar;

use crate::backend::SeqRequest;
use crate::error::{LarkError, Result};
use crate::model::{tensor_specs, LayerNames, Model, ModelConfig, EMBED, FINAL_NORM, LM_HEAD};
use gemm::Parallelism;
use rayon::prelude::*;
use std::collections::HashMap;
use std::fmt::Debug;
use std::ops::{Add, AddAssign, Div, Mul, Neg, Sub};

/// LM-head rows whose logits are held at once (bounds memory at `HEAD_CHUNK × vocab` values).
pub const HEAD_CHUNK: usize = 64;

/// The float types the backward pass runs in: f32 (use) and f64 (checks).
pub trait Real:
    Copy
    + Send
    + Sync
    + Debug
    + PartialOrd
    + 'static
    + Add<Output = Self>
    + Sub<Output = Self>
    + Mul<Output = Self>
    + Div<Output = Self>
    + Neg<Output = Self>
    + AddAssign
{
    const ZERO: Self;
    const ONE: Self;
    fn from_f64(x: f64) -> Self;
    fn to_f64(self) -> f64;
    fn exp(self) -> Self;
    fn max(self, o: Self) -> Self;
}

impl Real for f32 {
    const ZERO: Self = 0.0;
    const ONE: Self = 1.0;
    fn from_f64(x: f64) -> Self {
        x as f32
    }
    fn to_f64(self) -> f64 {
        self as f64
    }
    fn exp(self) -> Self {
        f32::exp(self)
    }
    fn max(self, o: Self) -> Self {
        f32::max(self, o)
    }
}

impl Real for f64 {
    const ZERO: Self = 0.0;
    const ONE: Self = 1.0;
    fn from_f64(x: f64) -> Self {
        x
    }
    fn to_f64(self) -> f64 {
        self
    }
    fn exp(self) -> Self {
        f64::exp(self)
    }
    fn max(self, o: Self) -> Self {
        f64::max(self, o)
    }
}

/// One value per parameter, as the model's tensors (order and shapes of [`tensor_specs`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Tensors<T>(pub Vec<Vec<T>>);

impl<T: Real> Tensors<T> {
    pub fn zeros_like(&self) -> Self {
        Tensors(self.0.iter().map(|t| vec![T::ZERO; t.len()]).collect())
    }
    pub fn fill_zero(&mut self) {
        self.0.par_iter_mut().for_each(|t| t.fill(T::ZERO));
    }
    /// Σ a·b, accumulated in f64.
    pub fn dot(&self, other: &Self) -> f64 {
        assert_eq!(self.0.len(), other.0.len());
        self.0
            .par_iter()
            .zip(other.0.par_iter())
            .map(|(a, b)| a.iter().zip(b).map(|(x, y)| x.to_f64() * y.to_f64()).sum::<f64>())
            .sum()
    }
    pub fn sq_norm(&self) -> f64 {
        self.dot(self)
    }
    /// `self += other`.
    pub fn add_assign(&mut self, other: &Self) {
        self.0
            .par_iter_mut()
            .zip(other.0.par_iter())
            .for_each(|(a, b)| a.iter_mut().zip(b).for_each(|(x, &y)| *x += y));
    }
    pub fn len(&self) -> usize {
        self.0.iter().map(Vec::len).sum()
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Indices of one layer's tensors in [`Tensors`].
#[derive(Debug, Clone)]
struct LayerIdx {
    input_norm: usize,
    q: usize,
    k: usize,
    v: usize,
    o: usize,
    q_bias: Option<usize>,
    k_bias: Option<usize>,
    v_bias: Option<usize>,
    o_bias: Option<usize>,
    post_norm: usize,
    gate: usize,
    up: usize,
    down: usize,
    gate_bias: Option<usize>,
    up_bias: Option<usize>,
    down_bias: Option<usize>,
}

/// The student in the float type `T`: its weights as [`Tensors`] and what the forward pass needs.
pub struct Student<T> {
    config: ModelConfig,
    names: Vec<String>,
    shapes: Vec<Vec<usize>>,
    params: Tensors<T>,
    embed: usize,
    layers: Vec<LayerIdx>,
    final_norm: usize,
    /// The LM head's tensor: `lm_head.weight`, or the embedding when tied.
    head: usize,
    inv_freq: Vec<f32>,
    /// `pad_token_id` of config.json: the embedding row the input lookup sends no gradient to (see the module doc).
    padding_idx: Option<usize>,
}

/// HF's `padding_idx` of the input embedding: `pad_token_id` of `dir/config.json` when it is an integer inside the
/// vocabulary (absent, null or anything else: none).
pub fn hf_padding_idx(dir: &std::path::Path, vocab: usize) -> Option<usize> {
    let text = std::fs::read_to_string(dir.join("config.json")).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    v.get("pad_token_id")?.as_u64().map(|x| x as usize).filter(|&x| x < vocab)
}

/// One layer's saved activations for one sequence.
struct LayerCache<T> {
    x_in: Vec<T>,
    inv1: Vec<T>,
    n1: Vec<T>,
    /// After RoPE.
    q: Vec<T>,
    k: Vec<T>,
    v: Vec<T>,
    attn: Vec<T>,
    x_mid: Vec<T>,
    inv2: Vec<T>,
    n2: Vec<T>,
    gate: Vec<T>,
    up: Vec<T>,
    act: Vec<T>,
}

/// The residual stream before the final norm, the layers' caches (when kept) and the RoPE (cos, sin) table.
type Forward<T> = (Vec<T>, Vec<LayerCache<T>>, Vec<(T, T)>);

/// One kv head's share of the attention gradient: dq of each of its query heads, dk and dv.
type KvGrads<T> = (Vec<Vec<T>>, Vec<T>, Vec<T>);

fn parallelism() -> Parallelism {
    match rayon::current_num_threads() {
        0 | 1 => Parallelism::None,
        n => Parallelism::Rayon(n),
    }
}

/// `c[m, n] (=|+=) a · b` with `a(i, p) = a[i·ars + p·acs]`, `b(p, j) = b[p·brs + j·bcs]`, `c` row-major.
#[allow(clippy::too_many_arguments)]
fn mm<T: Real>(
    (m, n, k): (usize, usize, usize),
    a: &[T],
    (ars, acs): (usize, usize),
    b: &[T],
    (brs, bcs): (usize, usize),
    c: &mut [T],
    accumulate: bool,
    par: Parallelism,
) {
    if m == 0 || n == 0 {
        return;
    }
    assert!(c.len() >= m * n, "mm: output size");
    if k == 0 {
        if !accumulate {
            c[..m * n].fill(T::ZERO);
        }
        return;
    }
    assert!((m - 1) * ars + (k - 1) * acs < a.len(), "mm: lhs bounds");
    assert!((k - 1) * brs + (n - 1) * bcs < b.len(), "mm: rhs bounds");
    // SAFETY: the asserts above bound every element gemm reads or writes.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c.as_mut_ptr(),
            1,
            n as isize,
            accumulate,
            a.as_ptr(),
            acs as isize,
            ars as isize,
            b.as_ptr(),
            bcs as isize,
            brs as isize,
            T::ONE,
            T::ONE,
            false,
            false,
            false,
            par,
        )
    }
}

/// `y[m, n] = x[m, k] · w[n, k]ᵀ`.
fn linear<T: Real>(x: &[T], m: usize, k: usize, w: &[T], n: usize) -> Vec<T> {
    let mut y = vec![T::ZERO; m * n];
    mm((m, n, k), x, (k, 1), w, (1, k), &mut y, false, parallelism());
    y
}

/// `dx[m, k] += dy[m, n] · w[n, k]`.
fn linear_back_input<T: Real>(dy: &[T], m: usize, n: usize, w: &[T], k: usize, dx: &mut [T]) {
    mm((m, k, n), dy, (n, 1), w, (k, 1), dx, true, parallelism());
}

/// `dw[n, k] += dy[m, n]ᵀ · x[m, k]`.
fn linear_back_weight<T: Real>(dy: &[T], m: usize, n: usize, x: &[T], k: usize, dw: &mut [T]) {
    mm((n, k, m), dy, (1, n), x, (k, 1), dw, true, parallelism());
}

fn add_bias<T: Real>(y: &mut [T], b: &[T]) {
    y.chunks_mut(b.len()).for_each(|r| r.iter_mut().zip(b).for_each(|(y, &b)| *y += b));
}

/// `db += Σ_rows dy`.
fn bias_back<T: Real>(dy: &[T], db: &mut [T]) {
    dy.chunks(db.len()).for_each(|r| db.iter_mut().zip(r).for_each(|(d, &g)| *d += g));
}

/// RMSNorm as `ops::rms_norm`: returns the output and the per-row `1/sqrt(mean(x²) + eps)`.
fn rms_norm<T: Real>(x: &[T], w: &[T], eps: f64) -> (Vec<T>, Vec<T>) {
    let d = w.len();
    let rows = x.len() / d;
    let mut out = vec![T::ZERO; x.len()];
    let mut inv = vec![T::ZERO; rows];
    for ((o, r), iv) in out.chunks_mut(d).zip(x.chunks(d)).zip(inv.iter_mut()) {
        let ms = r.iter().map(|v| v.to_f64() * v.to_f64()).sum::<f64>() / d as f64;
        let i = T::from_f64(1.0 / (ms + eps).sqrt());
        *iv = i;
        for ((o, &v), &w) in o.iter_mut().zip(r).zip(w) {
            *o = v * i * w;
        }
    }
    (out, inv)
}

/// Reverse of [`rms_norm`]: `dx += r·w⊙dy − x·r³·(Σ_j dy_j w_j x_j)/d`, `dw += Σ_rows dy⊙x·r`.
fn rms_norm_back<T: Real>(x: &[T], inv: &[T], w: &[T], dy: &[T], dx: &mut [T], dw: &mut [T]) {
    let d = w.len();
    for (((r, &iv), g), dxr) in x.chunks(d).zip(inv).zip(dy.chunks(d)).zip(dx.chunks_mut(d)) {
        let s: f64 = (0..d).map(|j| (g[j] * w[j] * r[j]).to_f64()).sum();
        let c = T::from_f64(s / d as f64) * iv * iv * iv;
        for j in 0..d {
            dxr[j] += iv * w[j] * g[j] - r[j] * c;
            dw[j] += g[j] * r[j] * iv;
        }
    }
}

/// Per position and frequency, the (cos, sin) the forward uses: angle `(pos as f32) · inv_freq` in f32.
fn rope_table<T: Real>(t: usize, inv_freq: &[f32]) -> Vec<(T, T)> {
    let mut tab = Vec::with_capacity(t * inv_freq.len());
    for pos in 0..t {
        for &f in inv_freq {
            let a = (pos as f32 * f) as f64;
            // The f32 forward rounds cos/sin to f32; from_f64 does exactly that for T = f32.
            tab.push((T::from_f64(a.cos()), T::from_f64(a.sin())));
        }
    }
    tab
}

fn rope<T: Real>(x: &mut [T], heads: usize, d: usize, tab: &[(T, T)]) {
    let half = d / 2;
    for (pos, row) in x.chunks_mut(heads * d).enumerate() {
        let cs = &tab[pos * half..(pos + 1) * half];
        for h in row.chunks_mut(d) {
            for i in 0..half {
                let (a, b) = (h[i], h[i + half]);
                let (c, s) = cs[i];
                h[i] = a * c - b * s;
                h[i + half] = b * c + a * s;
            }
        }
    }
}

/// Transpose of [`rope`] (a rotation): applied to a gradient in place.
fn rope_back<T: Real>(g: &mut [T], heads: usize, d: usize, tab: &[(T, T)]) {
    let half = d / 2;
    for (pos, row) in g.chunks_mut(heads * d).enumerate() {
        let cs = &tab[pos * half..(pos + 1) * half];
        for h in row.chunks_mut(d) {
            for i in 0..half {
                let (ga, gb) = (h[i], h[i + half]);
                let (c, s) = cs[i];
                h[i] = ga * c + gb * s;
                h[i + half] = gb * c - ga * s;
            }
        }
    }
}

/// Causal softmax probabilities `P[t, t]` of one head, as `ops::attention_causal` forms them.
fn head_probs<T: Real>(q: &[T], qw: usize, k: &[T], kw: usize, t: usize, d: usize, scale: T) -> Vec<T> {
    let mut s = vec![T::ZERO; t * t];
    mm((t, t, d), q, (qw, 1), k, (1, kw), &mut s, false, Parallelism::None);
    for i in 0..t {
        let row = &mut s[i * t..(i + 1) * t];
        let m = row[1..=i].iter().fold(row[0] * scale, |a, &x| a.max(x * scale));
        let mut sum = 0f64;
        for x in row[..=i].iter_mut() {
            *x = (*x * scale - m).exp();
            sum += x.to_f64();
        }
        let inv = T::from_f64(1.0 / sum);
        row[..=i].iter_mut().for_each(|x| *x = *x * inv);
        row[i + 1..].fill(T::ZERO);
    }
    s
}

impl<T: Real> Student<T> {
    /// The model's weights in `T` (converted from whatever is stored).
    pub fn from_model(model: &Model) -> Result<Self> {
        let c = model.config.clone();
        let specs = tensor_specs(&c);
        let mut data = Vec::with_capacity(specs.len());
        for (name, shape) in &specs {
            let v = model.weights.get(name, shape)?.to_f32();
            data.push(v.into_iter().map(|x| T::from_f64(x as f64)).collect());
        }
        let (names, shapes): (Vec<String>, Vec<Vec<usize>>) = specs.into_iter().unzip();
        let mut s = Self::from_tensors(c, names, shapes, Tensors(data))?;
        s.padding_idx = hf_padding_idx(&model.dir, s.config.vocab_size);
        Ok(s)
    }

    /// The embedding row that gets no gradient from the input lookup (HF's `padding_idx`), if any.
    pub fn padding_idx(&self) -> Option<usize> {
        self.padding_idx
    }

    fn from_tensors(c: ModelConfig, names: Vec<String>, shapes: Vec<Vec<usize>>, params: Tensors<T>) -> Result<Self> {
        // The backward pass mirrors the Qwen2/Llama forward; Qwen3's per-head q/k norm and YaRN's cos/sin factor
        // have no backward yet: refused rather than a silently wrong gradient.
        if c.qk_norm {
            return Err(LarkError::Unsupported("gradients of Qwen3's per-head q/k RMSNorm (lark gstar)".into()));
        }
        if c.rope_attention_factor() != 1.0 {
            return Err(LarkError::Unsupported(
                "gradients with YaRN's attention factor on cos/sin (lark gstar)".into(),
            ));
        }
        let index: HashMap<&str, usize> = names.iter().enumerate().map(|(i, n)| (n.as_str(), i)).collect();
        let find = |n: &str| -> Result<usize> {
            index.get(n).copied().ok_or_else(|| LarkError::Other(format!("gradient layout: tensor {n} missing")))
        };
        let opt = |on: bool, n: &str| -> Result<Option<usize>> {
            if on {
                find(n).map(Some)
            } else {
                Ok(None)
            }
        };
        let mut layers = Vec::with_capacity(c.num_layers);
        for l in 0..c.num_layers {
            let n = LayerNames::new(l);
            layers.push(LayerIdx {
                input_norm: find(&n.input_norm)?,
                q: find(&n.q)?,
                k: find(&n.k)?,
                v: find(&n.v)?,
                o: find(&n.o)?,
                q_bias: opt(c.qkv_bias, &n.q_bias)?,
                k_bias: opt(c.qkv_bias, &n.k_bias)?,
                v_bias: opt(c.qkv_bias, &n.v_bias)?,
                o_bias: opt(c.o_bias, &n.o_bias)?,
                post_norm: find(&n.post_norm)?,
                gate: find(&n.gate)?,
                up: find(&n.up)?,
                down: find(&n.down)?,
                gate_bias: opt(c.mlp_bias, &n.gate_bias)?,
                up_bias: opt(c.mlp_bias, &n.up_bias)?,
                down_bias: opt(c.mlp_bias, &n.down_bias)?,
            });
        }
        let embed = find(EMBED)?;
        let head = if c.tie_word_embeddings { embed } else { find(LM_HEAD)? };
        Ok(Student {
            inv_freq: crate::backend::cpu::ops::rope_inv_freq_f32(&c),
            final_norm: find(FINAL_NORM)?,
            embed,
            head,
            layers,
            names,
            shapes,
            params,
            config: c,
            padding_idx: None,
        })
    }

    pub fn config(&self) -> &ModelConfig {
        &self.config
    }
    /// HF tensor names, in the order of [`Tensors`].
    pub fn names(&self) -> &[String] {
        &self.names
    }
    pub fn shapes(&self) -> &[Vec<usize>] {
        &self.shapes
    }
    pub fn params(&self) -> &Tensors<T> {
        &self.params
    }
    /// The weights, for perturbation in checks.
    pub fn params_mut(&mut self) -> &mut Tensors<T> {
        &mut self.params
    }
    /// A zero gradient buffer.
    pub fn zeros(&self) -> Tensors<T> {
        self.params.zeros_like()
    }
    pub fn parameter_count(&self) -> usize {
        self.params.len()
    }

    fn validate(&self, req: &SeqRequest<'_>) -> Result<()> {
        crate::backend::cpu::validate_batch(std::slice::from_ref(req), self.config.vocab_size)?;
        if req.n_scored() == 0 {
            return Err(LarkError::input("sequence", "nothing to score (score_from = len)"));
        }
        Ok(())
    }

    /// The mean NLL ℓ over the scored tokens (forward only).
    pub fn loss(&self, req: SeqRequest<'_>) -> Result<f64> {
        self.validate(&req)?;
        let (xf, _, _) = self.forward(req.ids, false);
        let (nf, _) = rms_norm(&xf, &self.params.0[self.final_norm], self.config.rms_norm_eps);
        Ok(self.head(&nf, req, None).0)
    }

    /// ℓ and its gradient with respect to every parameter, written into `grad` (overwritten).
    pub fn loss_and_grad(&self, req: SeqRequest<'_>, grad: &mut Tensors<T>) -> Result<f64> {
        self.validate(&req)?;
        assert_eq!(grad.0.len(), self.params.0.len(), "gradient buffer of another model");
        grad.fill_zero();
        let c = &self.config;
        let p = &self.params.0;
        let (h, d, t) = (c.hidden_size, c.head_dim, req.ids.len());
        let (nh, nkv, inter) = (c.num_heads, c.num_kv_heads, c.intermediate_size);
        let (qw, kw) = (nh * d, nkv * d);
        let eps = c.rms_norm_eps;
        let (xf, caches, tab) = self.forward(req.ids, true);
        let (nf, invf) = rms_norm(&xf, &p[self.final_norm], eps);
        let mut dnf = vec![T::ZERO; t * h];
        let (loss, dhead) = self.head(&nf, req, Some(&mut dnf));
        let dhead = dhead.expect("gradient requested");
        grad.0[self.head].iter_mut().zip(&dhead).for_each(|(g, &x)| *g += x);
        drop(dhead);
        let mut dx = vec![T::ZERO; t * h];
        {
            let dw = &mut grad.0[self.final_norm];
            rms_norm_back(&xf, &invf, &p[self.final_norm], &dnf, &mut dx, dw);
        }
        let scale = T::from_f64(1.0 / (d as f64).sqrt());
        for (li, cache) in self.layers.iter().zip(caches).rev() {
            let (li, cc) = (li.clone(), cache);
            // MLP: x_out = x_mid + down(silu(gate) ⊙ up) (+ b).
            if let Some(b) = li.down_bias {
                bias_back(&dx, &mut grad.0[b]);
            }
            linear_back_weight(&dx, t, h, &cc.act, inter, &mut grad.0[li.down]);
            let mut dact = vec![T::ZERO; t * inter];
            linear_back_input(&dx, t, h, &p[li.down], inter, &mut dact);
            let mut dgate = vec![T::ZERO; t * inter];
            let mut dup = vec![T::ZERO; t * inter];
            for i in 0..t * inter {
                let g = cc.gate[i];
                let s = T::ONE / (T::ONE + (-g).exp());
                dup[i] = dact[i] * g * s;
                dgate[i] = dact[i] * cc.up[i] * s * (T::ONE + g * (T::ONE - s));
            }
            drop(dact);
            if let (Some(bg), Some(bu)) = (li.gate_bias, li.up_bias) {
                bias_back(&dgate, &mut grad.0[bg]);
                bias_back(&dup, &mut grad.0[bu]);
            }
            linear_back_weight(&dgate, t, inter, &cc.n2, h, &mut grad.0[li.gate]);
            linear_back_weight(&dup, t, inter, &cc.n2, h, &mut grad.0[li.up]);
            let mut dn2 = vec![T::ZERO; t * h];
            linear_back_input(&dgate, t, inter, &p[li.gate], h, &mut dn2);
            linear_back_input(&dup, t, inter, &p[li.up], h, &mut dn2);
            rms_norm_back(&cc.x_mid, &cc.inv2, &p[li.post_norm], &dn2, &mut dx, &mut grad.0[li.post_norm]);

            // Attention: x_mid = x_in + o(attn(rope(q), rope(k), v)) (+ b).
            if let Some(b) = li.o_bias {
                bias_back(&dx, &mut grad.0[b]);
            }
            linear_back_weight(&dx, t, h, &cc.attn, qw, &mut grad.0[li.o]);
            let mut dattn = vec![T::ZERO; t * qw];
            linear_back_input(&dx, t, h, &p[li.o], qw, &mut dattn);
            let (mut dq, mut dk, dv) = attention_back(&cc.q, &cc.k, &cc.v, &dattn, t, nh, nkv, d, scale);
            drop(dattn);
            rope_back(&mut dq, nh, d, &tab);
            rope_back(&mut dk, nkv, d, &tab);
            for (b, g) in [(li.q_bias, &dq), (li.k_bias, &dk), (li.v_bias, &dv)] {
                if let Some(b) = b {
                    bias_back(g, &mut grad.0[b]);
                }
            }
            linear_back_weight(&dq, t, qw, &cc.n1, h, &mut grad.0[li.q]);
            linear_back_weight(&dk, t, kw, &cc.n1, h, &mut grad.0[li.k]);
            linear_back_weight(&dv, t, kw, &cc.n1, h, &mut grad.0[li.v]);
            let mut dn1 = vec![T::ZERO; t * h];
            linear_back_input(&dq, t, qw, &p[li.q], h, &mut dn1);
            linear_back_input(&dk, t, kw, &p[li.k], h, &mut dn1);
            linear_back_input(&dv, t, kw, &p[li.v], h, &mut dn1);
            drop((dq, dk, dv));
            rms_norm_back(&cc.x_in, &cc.inv1, &p[li.input_norm], &dn1, &mut dx, &mut grad.0[li.input_norm]);
        }
        let de = &mut grad.0[self.embed];
        for (pos, &id) in req.ids.iter().enumerate() {
            if Some(id as usize) == self.padding_idx {
                continue; // nn.Embedding(padding_idx): no gradient into the padding row from the lookup
            }
            let row = &mut de[id as usize * h..(id as usize + 1) * h];
            row.iter_mut().zip(&dx[pos * h..(pos + 1) * h]).for_each(|(g, &x)| *g += x);
        }
        Ok(loss)
    }

    /// The layer stack on one sequence: the residual stream before the final norm, the caches (when asked)
    /// and the RoPE table.
    fn forward(&self, ids: &[u32], keep: bool) -> Forward<T> {
        let c = &self.config;
        let p = &self.params.0;
        let (h, d, t) = (c.hidden_size, c.head_dim, ids.len());
        let (nh, nkv, inter) = (c.num_heads, c.num_kv_heads, c.intermediate_size);
        let (qw, kw) = (nh * d, nkv * d);
        let eps = c.rms_norm_eps;
        let tab = rope_table::<T>(t, &self.inv_freq);
        let mut x = Vec::with_capacity(t * h);
        for &id in ids {
            x.extend_from_slice(&p[self.embed][id as usize * h..(id as usize + 1) * h]);
        }
        let scale = T::from_f64(1.0 / (d as f64).sqrt());
        let mut caches = Vec::new();
        for li in &self.layers {
            let x_in = if keep { x.clone() } else { Vec::new() };
            let (n1, inv1) = rms_norm(&x, &p[li.input_norm], eps);
            let mut q = linear(&n1, t, h, &p[li.q], qw);
            let mut k = linear(&n1, t, h, &p[li.k], kw);
            let mut v = linear(&n1, t, h, &p[li.v], kw);
            for (b, y) in [(li.q_bias, &mut q), (li.k_bias, &mut k), (li.v_bias, &mut v)] {
                if let Some(b) = b {
                    add_bias(y, &p[b]);
                }
            }
            rope(&mut q, nh, d, &tab);
            rope(&mut k, nkv, d, &tab);
            let attn = attention(&q, &k, &v, t, nh, nkv, d, scale);
            let mut delta = linear(&attn, t, qw, &p[li.o], h);
            if let Some(b) = li.o_bias {
                add_bias(&mut delta, &p[b]);
            }
            x.iter_mut().zip(&delta).for_each(|(a, &b)| *a += b);
            let x_mid = if keep { x.clone() } else { Vec::new() };
            let (n2, inv2) = rms_norm(&x, &p[li.post_norm], eps);
            let mut gate = linear(&n2, t, h, &p[li.gate], inter);
            let mut up = linear(&n2, t, h, &p[li.up], inter);
            if let (Some(bg), Some(bu)) = (li.gate_bias, li.up_bias) {
                add_bias(&mut gate, &p[bg]);
                add_bias(&mut up, &p[bu]);
            }
            let act: Vec<T> = gate.iter().zip(&up).map(|(&g, &u)| g / (T::ONE + (-g).exp()) * u).collect();
            let mut delta = linear(&act, t, inter, &p[li.down], h);
            if let Some(b) = li.down_bias {
                add_bias(&mut delta, &p[b]);
            }
            x.iter_mut().zip(&delta).for_each(|(a, &b)| *a += b);
            if keep {
                caches.push(LayerCache { x_in, inv1, n1, q, k, v, attn, x_mid, inv2, n2, gate, up, act });
            }
        }
        (x, caches, tab)
    }

    /// The LM head on the scored rows (row `t−1` predicts `ids[t]`) in chunks of [`HEAD_CHUNK`]: the mean NLL
    /// and, when `dnf` is given, the head's gradient (returned) and the gradient into the normed hidden states
    /// (accumulated into `dnf`).
    fn head(&self, nf: &[T], req: SeqRequest<'_>, mut dnf: Option<&mut [T]>) -> (f64, Option<Vec<T>>) {
        let c = &self.config;
        let (h, vocab) = (c.hidden_size, c.vocab_size);
        let w = &self.params.0[self.head];
        let n = req.n_scored();
        let inv_n = T::from_f64(1.0 / n as f64);
        let mut dhead = dnf.as_ref().map(|_| vec![T::ZERO; vocab * h]);
        let mut nll = 0f64;
        let rows: Vec<usize> = (req.score_from..req.ids.len()).collect();
        for chunk in rows.chunks(HEAD_CHUNK) {
            let m = chunk.len();
            let r0 = chunk[0] - 1; // consecutive rows r0..r0+m
            let x = &nf[r0 * h..(r0 + m) * h];
            let mut z = linear(x, m, h, w, vocab);
            let losses: Vec<f64> = z
                .par_chunks_mut(vocab)
                .zip(chunk.par_iter())
                .map(|(row, &pos)| {
                    let gold = req.ids[pos] as usize;
                    let mx = row.iter().fold(f64::NEG_INFINITY, |a, &v| a.max(v.to_f64()));
                    let s: f64 = row.iter().map(|&v| (v.to_f64() - mx).exp()).sum();
                    let lse = mx + s.ln();
                    let l = lse - row[gold].to_f64();
                    // dz = (softmax − onehot) / n, written over the logits.
                    for v in row.iter_mut() {
                        *v = T::from_f64((v.to_f64() - lse).exp()) * inv_n;
                    }
                    row[gold] = row[gold] - inv_n;
                    l
                })
                .collect();
            nll += losses.iter().sum::<f64>();
            if let (Some(dh), Some(dn)) = (dhead.as_mut(), dnf.as_deref_mut()) {
                linear_back_weight(&z, m, vocab, x, h, dh);
                linear_back_input(&z, m, vocab, w, h, &mut dn[r0 * h..(r0 + m) * h]);
            }
        }
        (nll / n as f64, dhead)
    }
}

/// Causal GQA attention of one sequence: `[t, nh·d]` from `q [t, nh·d]`, `k, v [t, nkv·d]`.
#[allow(clippy::too_many_arguments)]
fn attention<T: Real>(q: &[T], k: &[T], v: &[T], t: usize, nh: usize, nkv: usize, d: usize, scale: T) -> Vec<T> {
    let (qw, kw, group) = (nh * d, nkv * d, nh / nkv);
    let heads: Vec<Vec<T>> = (0..nh)
        .into_par_iter()
        .map(|hh| {
            let g = hh / group;
            let pr = head_probs(&q[hh * d..], qw, &k[g * d..], kw, t, d, scale);
            let mut o = vec![T::ZERO; t * d];
            mm((t, d, t), &pr, (t, 1), &v[g * d..], (kw, 1), &mut o, false, Parallelism::None);
            o
        })
        .collect();
    let mut out = vec![T::ZERO; t * qw];
    for (hh, o) in heads.iter().enumerate() {
        for i in 0..t {
            out[i * qw + hh * d..i * qw + (hh + 1) * d].copy_from_slice(&o[i * d..(i + 1) * d]);
        }
    }
    out
}

/// Reverse of [`attention`]: gradients into (post-RoPE) q, k and v. Per head, with P = softmax(scale·QKᵀ)
/// (causal): dV += Pᵀ dO, dP = dO Vᵀ, dS = P ⊙ (dP − rowsum(dP ⊙ P)), dQ = scale·dS K, dK += scale·dSᵀ Q.
#[allow(clippy::too_many_arguments)]
fn attention_back<T: Real>(
    q: &[T],
    k: &[T],
    v: &[T],
    dout: &[T],
    t: usize,
    nh: usize,
    nkv: usize,
    d: usize,
    scale: T,
) -> (Vec<T>, Vec<T>, Vec<T>) {
    let (qw, kw, group) = (nh * d, nkv * d, nh / nkv);
    let per_kv: Vec<KvGrads<T>> = (0..nkv)
        .into_par_iter()
        .map(|g| {
            let mut dk = vec![T::ZERO; t * d];
            let mut dv = vec![T::ZERO; t * d];
            let mut dqs = Vec::with_capacity(group);
            for hh in g * group..(g + 1) * group {
                let pr = head_probs(&q[hh * d..], qw, &k[g * d..], kw, t, d, scale);
                let dout_h = &dout[hh * d..];
                // dV += Pᵀ dO
                mm((t, d, t), &pr, (1, t), dout_h, (qw, 1), &mut dv, true, Parallelism::None);
                // dP = dO Vᵀ
                let mut ds = vec![T::ZERO; t * t];
                mm((t, t, d), dout_h, (qw, 1), &v[g * d..], (1, kw), &mut ds, false, Parallelism::None);
                for i in 0..t {
                    let (prow, drow) = (&pr[i * t..(i + 1) * t], &mut ds[i * t..(i + 1) * t]);
                    let dot: f64 = (0..=i).map(|j| (prow[j] * drow[j]).to_f64()).sum();
                    let dot = T::from_f64(dot);
                    for j in 0..=i {
                        drow[j] = prow[j] * (drow[j] - dot) * scale;
                    }
                    drow[i + 1..].fill(T::ZERO);
                }
                let mut dq = vec![T::ZERO; t * d];
                mm((t, d, t), &ds, (t, 1), &k[g * d..], (kw, 1), &mut dq, false, Parallelism::None);
                mm((t, d, t), &ds, (1, t), &q[hh * d..], (qw, 1), &mut dk, true, Parallelism::None);
                dqs.push(dq);
            }
            (dqs, dk, dv)
        })
        .collect();
    let mut dq = vec![T::ZERO; t * qw];
    let mut dk = vec![T::ZERO; t * kw];
    let mut dv = vec![T::ZERO; t * kw];
    for (g, (dqs, dkg, dvg)) in per_kv.iter().enumerate() {
        for i in 0..t {
            dk[i * kw + g * d..i * kw + (g + 1) * d].copy_from_slice(&dkg[i * d..(i + 1) * d]);
            dv[i * kw + g * d..i * kw + (g + 1) * d].copy_from_slice(&dvg[i * d..(i + 1) * d]);
            for (j, dqh) in dqs.iter().enumerate() {
                let hh = g * group + j;
                dq[i * qw + hh * d..i * qw + (hh + 1) * d].copy_from_slice(&dqh[i * d..(i + 1) * d]);
            }
        }
    }
    (dq, dk, dv)
}

#[cfg(test)]
mod tests;
