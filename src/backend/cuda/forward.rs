//! The GPU forward pass: weights uploaded once as bf16 (norm weights, biases and rope frequencies in fp32), then
//! per packed batch: embed → N × (RMSNorm → fused QKV GEMM → bias+RoPE+split → attention → O GEMM accumulated into
//! the residual → RMSNorm → MLP in row chunks: fused gate/up GEMM → SwiGLU → down GEMM accumulated into the
//! residual) → final RMSNorm of the scored rows only → LM head in chunks into an fp32 logits workspace → one-pass
//! vocabulary statistics. Only the per-token statistics are copied back.
//!
//! Numbers ([`Precision`]): GEMMs are bf16 × bf16 with fp32 accumulation; the residual stream x stays fp32 for the
//! whole pass and the O and down projections add into it in fp32 (cuBLAS beta = 1). With `Bf16` activations the
//! only bf16 roundings are the GEMM inputs (normed activations, q/k/v, attention output, SwiGLU output) and the
//! gate/up and QKV outputs; every elementwise step computes in fp32 and rounds once. With `Fp32` activations
//! those buffers are fp32 and each GEMM input is split into bf16 hi + lo halves (two GEMMs accumulated in fp32,
//! see [`Precision`]); attention runs the fp32 generic kernel. The logits are fp32 either way.
//!
//! Memory per batch of T tokens (bytes, H hidden, Q = heads·D, K = kv_heads·D, W = Q + 2K, I intermediate, V vocab):
//! `T·(4H + 2H + 2W + 2W + 2Q + 16) + C_mlp·6I + C_head·(4V + 2H) + n_scored·24`, with C_mlp = min(T,
//! MLP_CHUNK) and C_head ≤ HEAD_CHUNK rows sized from free memory. For Qwen2.5-7B that is ≈ 47 KB per token
//! (1.55 GB at 32K tokens) plus 0.47 GB of MLP chunk and ≤ 1.25 GB of logits, ≈ 3.3 GB over the weights for a
//! 32,768-token trajectory: activations grow linearly in T, never T² (attention keeps no score matrix). Buffers
//! grow to the largest batch seen and are reused.

use super::exec::{Elem, Exec};
use super::ops::{DevPtr, OutType, Precision, QkNormRope};
use super::{attention, vocab_stats};
use crate::backend::cpu::validate_batch;
use crate::backend::SeqRequest;
use crate::error::{LarkError, Result};
use crate::model::{LayerNames, Model, ModelConfig, EMBED, FINAL_NORM};
use crate::stats::{StatsOptions, TokenStats};
use half::bf16;

/// Rows of the MLP processed at once: bounds the gate/up and activation buffers at MLP_CHUNK·6I bytes.
pub const MLP_CHUNK: usize = 4096;
/// Upper bound on scored rows per LM-head chunk (the logits workspace is `rows × vocab` fp32).
pub const HEAD_CHUNK: usize = 2048;

struct Layer<E: Exec> {
    input_norm: E::Buf<f32>,
    /// q, k, v projections stacked: bf16 [(H + 2·Hkv)·D, hidden].
    qkv: E::Buf<bf16>,
    qkv_bias: Option<E::Buf<f32>>,
    /// Per-head q and k RMSNorm weights, fp32 [D] each (Qwen3).
    qk_norm: Option<(E::Buf<f32>, E::Buf<f32>)>,
    o: E::Buf<bf16>,
    o_bias: Option<E::Buf<f32>>,
    post_norm: E::Buf<f32>,
    /// gate and up projections stacked: bf16 [2·I, hidden].
    gate_up: E::Buf<bf16>,
    gate_up_bias: Option<E::Buf<f32>>,
    down: E::Buf<bf16>,
    down_bias: Option<E::Buf<f32>>,
}

/// The model's weights on the device.
pub struct DeviceModel<E: Exec> {
    pub config: ModelConfig,
    embed: E::Buf<bf16>,
    layers: Vec<Layer<E>>,
    final_norm: E::Buf<f32>,
    /// None when tied to the embedding.
    lm_head: Option<E::Buf<bf16>>,
    inv_freq: E::Buf<f32>,
    /// cos and sin are multiplied by this (YaRN's attention factor; 1 otherwise).
    rope_attention_factor: f32,
    /// Bytes of weights uploaded.
    pub weight_bytes: usize,
}

fn opt_ptr<E: Exec, T: Elem>(s: &Option<E::Buf<T>>, gpu: &E) -> DevPtr {
    s.as_ref().map(|s| gpu.addr(s)).unwrap_or(0)
}

impl<E: Exec> DeviceModel<E> {
    /// Upload every tensor once, converting to bf16 (matrices) or fp32 (norms, biases).
    pub fn upload(gpu: &E, model: &Model) -> Result<Self> {
        let c = model.config.clone();
        let w = &model.weights;
        let h = c.hidden_size;
        let (q, kv, inter) = (c.num_heads * c.head_dim, c.num_kv_heads * c.head_dim, c.intermediate_size);
        let mut bytes = 0usize;
        let mut mat = |parts: &[(&str, Vec<usize>)]| -> Result<E::Buf<bf16>> {
            let mut host: Vec<bf16> = Vec::new();
            for (name, shape) in parts {
                host.extend(w.get(name, shape)?.to_bf16());
            }
            bytes += host.len() * 2;
            gpu.upload(&host)
        };
        let vecs = |parts: &[(&str, Vec<usize>)]| -> Result<E::Buf<f32>> {
            let mut host: Vec<f32> = Vec::new();
            for (name, shape) in parts {
                host.extend(w.get(name, shape)?.to_f32());
            }
            gpu.upload(&host)
        };
        let mut layers = Vec::with_capacity(c.num_layers);
        for l in 0..c.num_layers {
            let n = LayerNames::new(l);
            layers.push(Layer {
                input_norm: vecs(&[(&n.input_norm, vec![h])])?,
                qkv: mat(&[(&n.q, vec![q, h]), (&n.k, vec![kv, h]), (&n.v, vec![kv, h])])?,
                qkv_bias: if c.qkv_bias {
                    Some(vecs(&[(&n.q_bias, vec![q]), (&n.k_bias, vec![kv]), (&n.v_bias, vec![kv])])?)
                } else {
                    None
                },
                qk_norm: if c.qk_norm {
                    Some((vecs(&[(&n.q_norm, vec![c.head_dim])])?, vecs(&[(&n.k_norm, vec![c.head_dim])])?))
                } else {
                    None
                },
                o: mat(&[(&n.o, vec![h, q])])?,
                o_bias: if c.o_bias { Some(vecs(&[(&n.o_bias, vec![h])])?) } else { None },
                post_norm: vecs(&[(&n.post_norm, vec![h])])?,
                gate_up: mat(&[(&n.gate, vec![inter, h]), (&n.up, vec![inter, h])])?,
                gate_up_bias: if c.mlp_bias {
                    Some(vecs(&[(&n.gate_bias, vec![inter]), (&n.up_bias, vec![inter])])?)
                } else {
                    None
                },
                down: mat(&[(&n.down, vec![h, inter])])?,
                down_bias: if c.mlp_bias { Some(vecs(&[(&n.down_bias, vec![h])])?) } else { None },
            });
        }
        let embed = mat(&[(EMBED, vec![c.vocab_size, h])])?;
        let lm_head =
            if c.tie_word_embeddings { None } else { Some(mat(&[(crate::model::LM_HEAD, vec![c.vocab_size, h])])?) };
        let final_norm = vecs(&[(FINAL_NORM, vec![h])])?;
        let inv_freq = gpu.upload(&crate::backend::cpu::ops::rope_inv_freq_f32(&c))?;
        gpu.sync()?;
        let rope_attention_factor = c.rope_attention_factor() as f32;
        Ok(DeviceModel {
            config: c,
            embed,
            layers,
            final_norm,
            lm_head,
            inv_freq,
            rope_attention_factor,
            weight_bytes: bytes,
        })
    }
}

/// Whether the model needs the `rope_norm_qkv_split` kernel (a per-head q/k norm, or cos/sin scaled by YaRN's
/// attention factor) rather than the original `rope_qkv_split`.
pub fn needs_norm_rope(c: &ModelConfig) -> bool {
    c.qk_norm || c.rope_attention_factor() != 1.0
}

/// A device buffer that grows to the largest size requested and is then reused.
struct Grow<E: Exec, T: Elem> {
    buf: Option<E::Buf<T>>,
}

impl<E: Exec, T: Elem> Grow<E, T> {
    fn new() -> Self {
        Grow { buf: None }
    }
    fn get(&mut self, gpu: &E, n: usize) -> Result<DevPtr> {
        if self.buf.as_ref().is_none_or(|b| gpu.len(b) < n) {
            self.buf = None; // free first: the old and new buffer need not coexist
            self.buf = Some(gpu.alloc::<T>(n)?);
        }
        Ok(gpu.addr(self.buf.as_ref().expect("just set")))
    }
    fn slice(&self) -> Option<&E::Buf<T>> {
        self.buf.as_ref()
    }
    fn poison(&mut self, gpu: &E) -> Result<()> {
        match self.buf.as_mut() {
            Some(b) => gpu.poison(b),
            None => Ok(()),
        }
    }
}

/// Activation and statistics buffers, grown on demand. The activation buffers (y … act) are byte buffers of
/// `n · precision.bytes()` bytes: bf16 or fp32 elements.
struct Workspace<E: Exec> {
    x: Grow<E, f32>,
    y: Grow<E, u8>,
    qkv: Grow<E, u8>,
    q: Grow<E, u8>,
    k: Grow<E, u8>,
    v: Grow<E, u8>,
    attn: Grow<E, u8>,
    gu: Grow<E, u8>,
    act: Grow<E, u8>,
    /// The bf16 halves of a GEMM input ([`Precision::Fp32`] only).
    hi: Grow<E, bf16>,
    lo: Grow<E, bf16>,
    logits: Grow<E, f32>,
    ids: Grow<E, i32>,
    positions: Grow<E, i32>,
    cu_seqlens: Grow<E, i32>,
    tiles: Grow<E, i32>,
    rows: Grow<E, i32>,
    gold: Grow<E, i32>,
    lse: Grow<E, f32>,
    logprob: Grow<E, f32>,
    sum_p2: Grow<E, f32>,
    entropy: Grow<E, f32>,
    rank: Grow<E, u32>,
    topk: Grow<E, f32>,
}

impl<E: Exec> Workspace<E> {
    fn new() -> Self {
        Workspace {
            x: Grow::new(),
            y: Grow::new(),
            qkv: Grow::new(),
            q: Grow::new(),
            k: Grow::new(),
            v: Grow::new(),
            attn: Grow::new(),
            gu: Grow::new(),
            act: Grow::new(),
            hi: Grow::new(),
            lo: Grow::new(),
            logits: Grow::new(),
            ids: Grow::new(),
            positions: Grow::new(),
            cu_seqlens: Grow::new(),
            tiles: Grow::new(),
            rows: Grow::new(),
            gold: Grow::new(),
            lse: Grow::new(),
            logprob: Grow::new(),
            sum_p2: Grow::new(),
            entropy: Grow::new(),
            rank: Grow::new(),
            topk: Grow::new(),
        }
    }
}

impl<E: Exec> Workspace<E> {
    fn poison_all(&mut self, gpu: &E) -> Result<()> {
        for g in [&mut self.x, &mut self.logits, &mut self.lse, &mut self.logprob, &mut self.sum_p2] {
            g.poison(gpu)?;
        }
        for g in [&mut self.entropy, &mut self.topk] {
            g.poison(gpu)?;
        }
        for g in [&mut self.y, &mut self.qkv, &mut self.q, &mut self.k, &mut self.v] {
            g.poison(gpu)?;
        }
        for g in [&mut self.attn, &mut self.gu, &mut self.act] {
            g.poison(gpu)?;
        }
        for g in [&mut self.hi, &mut self.lo] {
            g.poison(gpu)?;
        }
        self.rank.poison(gpu)
    }
}

/// Host-side description of one packed batch.
struct Packed {
    ids: Vec<i32>,
    positions: Vec<i32>,
    cu_seqlens: Vec<i32>,
    /// Hidden-state row of each scored position (t − 1 for gold ids[t]) and its gold token.
    rows: Vec<i32>,
    gold: Vec<i32>,
}

fn pack(batch: &[SeqRequest<'_>]) -> Result<Packed> {
    let total: usize = batch.iter().map(|s| s.ids.len()).sum();
    if total >= i32::MAX as usize {
        return Err(LarkError::Backend(format!("a batch of {total} tokens exceeds the kernels' 32-bit range")));
    }
    let mut p = Packed {
        ids: Vec::with_capacity(total),
        positions: Vec::with_capacity(total),
        cu_seqlens: vec![0],
        rows: Vec::new(),
        gold: Vec::new(),
    };
    for s in batch {
        let start = p.ids.len();
        p.ids.extend(s.ids.iter().map(|&i| i as i32));
        p.positions.extend(0..s.ids.len() as i32);
        for t in s.score_from..s.ids.len() {
            p.rows.push((start + t - 1) as i32);
            p.gold.push(s.ids[t] as i32);
        }
        p.cu_seqlens.push(p.ids.len() as i32);
    }
    Ok(p)
}

/// The forward pass on one GPU.
pub struct Forward<E: Exec> {
    pub model: DeviceModel<E>,
    ws: Workspace<E>,
    /// Scored rows per LM-head chunk.
    pub head_chunk: usize,
    /// Rows per MLP chunk ([`MLP_CHUNK`]).
    pub mlp_chunk: usize,
    /// Tokens per group when a batch is split to bound activation memory (one sequence is never split).
    pub max_tokens: usize,
    /// Fill every activation and output buffer with NaN (0xFF bytes) before each pass (selftest): a value read
    /// before it was written shows up as NaN in the statistics.
    pub poison: bool,
    /// The activation type ([`Precision`]); set at construction because it sizes `max_tokens`.
    precision: Precision,
}

/// `out = x · wᵀ` for an activation `x` of type `prec` (see [`Precision`]). `Bf16`: one GEMM, output `ty`.
/// `Fp32`: x is split into bf16 halves in `hi`/`lo` (each ≥ m·k elements), then `out (=|+=) hi·wᵀ; out += lo·wᵀ`,
/// fp32 output — an activation output (`ty` = Bf16) becomes fp32 there.
#[allow(clippy::too_many_arguments)]
fn gemm_act<E: Exec>(
    gpu: &E,
    prec: Precision,
    (x, hi, lo): (DevPtr, DevPtr, DevPtr),
    w: DevPtr,
    out: DevPtr,
    m: usize,
    n: usize,
    k: usize,
    ty: OutType,
) -> Result<()> {
    match prec {
        Precision::Bf16 => gpu.gemm_bt(x, w, out, m, n, k, ty),
        Precision::Fp32 => {
            gpu.split_bf16(x, hi, lo, m * k)?;
            let first = if ty == OutType::F32Accumulate { OutType::F32Accumulate } else { OutType::F32 };
            gpu.gemm_bt(hi, w, out, m, n, k, first)?;
            gpu.gemm_bt(lo, w, out, m, n, k, OutType::F32Accumulate)
        }
    }
}

impl<E: Exec> Forward<E> {
    pub fn new(gpu: &E, model: &Model) -> Result<Self> {
        Self::with_precision(gpu, model, Precision::Bf16)
    }

    pub fn with_precision(gpu: &E, model: &Model, precision: Precision) -> Result<Self> {
        let dm = DeviceModel::upload(gpu, model)?;
        let c = &dm.config;
        let (free, _total) = gpu.mem_info()?;
        // Logits workspace: at most an eighth of the free memory, between 64 and HEAD_CHUNK rows.
        let head_chunk = ((free / 8) / (c.vocab_size * 4).max(1)).clamp(64, HEAD_CHUNK);
        let per_token = Self::bytes_per_token(c, precision);
        let eb = precision.bytes();
        // The MLP chunk's gate/up and activation buffers (+ its bf16 halves in fp32 mode), the LM-head chunk.
        let split = if precision == Precision::Fp32 { 4 } else { 0 };
        let fixed = MLP_CHUNK * (3 * eb + split) * c.intermediate_size
            + head_chunk * (4 * c.vocab_size + (eb + split) * c.hidden_size);
        let budget = (free as f64 * 0.6) as usize;
        let max_tokens = (budget.saturating_sub(fixed) / per_token).max(1024);
        Ok(Forward {
            model: dm,
            ws: Workspace::new(),
            head_chunk,
            mlp_chunk: MLP_CHUNK,
            max_tokens,
            poison: false,
            precision,
        })
    }

    pub fn precision(&self) -> Precision {
        self.precision
    }

    /// Activation bytes per token of a batch (excluding the MLP chunk and LM-head workspaces): x (fp32), then y,
    /// qkv, q/k/v and the attention output in the activation type, the bf16 halves of the widest GEMM input in
    /// fp32 mode, ids/positions and the per-token statistics.
    pub fn bytes_per_token(c: &ModelConfig, precision: Precision) -> usize {
        let h = c.hidden_size;
        let qw = c.num_heads * c.head_dim;
        let w = c.qkv_width();
        let eb = precision.bytes();
        let split = if precision == Precision::Fp32 { 4 * h.max(qw) } else { 0 };
        4 * h + eb * (h + w + w + qw) + split + 16 + 24
    }

    /// Statistics for every scored position of every sequence (see [`crate::backend::Backend::score`]). A batch
    /// larger than `max_tokens` is processed in groups of whole sequences.
    pub fn score(&mut self, gpu: &E, batch: &[SeqRequest<'_>], opts: &StatsOptions) -> Result<Vec<Vec<TokenStats>>> {
        validate_batch(batch, self.model.config.vocab_size)?;
        let mut out = Vec::with_capacity(batch.len());
        let mut start = 0;
        while start < batch.len() {
            let mut end = start;
            let mut tokens = 0;
            while end < batch.len() && (end == start || tokens + batch[end].ids.len() <= self.max_tokens) {
                tokens += batch[end].ids.len();
                end += 1;
            }
            match self.score_group(gpu, &batch[start..end], opts) {
                Ok(stats) => out.extend(stats),
                Err(e) => {
                    // After an out-of-memory error the caller retries smaller batches: free every workspace
                    // (they only grow) so that the retry starts from the weights alone.
                    if matches!(e, LarkError::OutOfMemory { .. }) {
                        self.ws = Workspace::new();
                    }
                    return Err(e);
                }
            }
            start = end;
        }
        Ok(out)
    }

    fn score_group(&mut self, gpu: &E, batch: &[SeqRequest<'_>], opts: &StatsOptions) -> Result<Vec<Vec<TokenStats>>> {
        let p = pack(batch)?;
        let n_scored = p.rows.len();
        if n_scored == 0 {
            // Nothing is scored: no forward pass needed (causal attention: unscored tokens affect nothing else).
            return Ok(batch.iter().map(|_| Vec::new()).collect());
        }
        self.run(gpu, &p, Some(opts))?;
        let ws = &self.ws;
        let get_f =
            |g: &Grow<E, f32>| -> Result<Vec<f32>> { gpu.download(g.slice().expect("allocated by run"), n_scored) };
        let lse = get_f(&ws.lse)?;
        let logprob = get_f(&ws.logprob)?;
        let sum_p2 = get_f(&ws.sum_p2)?;
        let entropy = get_f(&ws.entropy)?;
        let rank = gpu.download(ws.rank.slice().expect("allocated by run"), n_scored)?;
        let topk = if opts.topk_brier.is_some() { Some(get_f(&ws.topk)?) } else { None };
        let mut flat = (0..n_scored).map(|i| TokenStats {
            logprob: logprob[i],
            lse: lse[i],
            sum_p2: sum_p2[i],
            entropy: entropy[i],
            rank: rank[i],
            topk_brier: topk.as_ref().map(|t| t[i]).unwrap_or(f32::NAN),
        });
        Ok(batch.iter().map(|s| flat.by_ref().take(s.n_scored()).collect()).collect())
    }

    /// The final-normed hidden states `[T, hidden]` of a packed batch (bf16, widened to f32), for the selftest's
    /// layer-stack check against [`crate::backend::cpu::CpuBackend::hidden_states`].
    pub fn final_hidden(&mut self, gpu: &E, batch: &[SeqRequest<'_>]) -> Result<Vec<f32>> {
        validate_batch(batch, self.model.config.vocab_size)?;
        let mut p = pack(batch)?;
        let t = p.ids.len();
        p.rows = (0..t as i32).collect();
        p.gold = vec![0; t];
        self.run(gpu, &p, None)?;
        let h = self.model.config.hidden_size;
        let bytes = gpu.download(self.ws.y.slice().expect("allocated by run"), t * h * self.precision.bytes())?;
        Ok(self.precision.decode(&bytes))
    }

    /// Queue the whole forward pass and the statistics of one packed group (no host synchronisation). With
    /// `opts` None, stop after the final norm of rows `p.rows`, all at once into `y` (no LM head).
    fn run(&mut self, gpu: &E, p: &Packed, opts: Option<&StatsOptions>) -> Result<()> {
        let c = self.model.config.clone();
        let t = p.ids.len();
        let (h, d) = (c.hidden_size, c.head_dim);
        let (nh, nkv) = (c.num_heads, c.num_kv_heads);
        let (qw, kw) = (nh * d, nkv * d);
        let qkv_w = qw + 2 * kw;
        let inter = c.intermediate_size;
        let vocab = c.vocab_size;
        let eps = c.rms_norm_eps as f32;
        let n_scored = p.rows.len();
        let head_rows = if opts.is_some() { n_scored.min(self.head_chunk).max(1) } else { n_scored.max(1) };
        let mlp_rows = t.clamp(1, self.mlp_chunk);
        let prec = self.precision;
        let eb = prec.bytes();
        let ws = &mut self.ws;

        // Buffers (grown as needed; addresses fetched after every allocation of this call).
        let x = ws.x.get(gpu, t * h)?;
        let y = ws.y.get(gpu, t.max(head_rows) * h * eb)?;
        let qkv = ws.qkv.get(gpu, t * qkv_w * eb)?;
        let q = ws.q.get(gpu, t * qw * eb)?;
        let k = ws.k.get(gpu, t * kw * eb)?;
        let v = ws.v.get(gpu, t * kw * eb)?;
        let attn = ws.attn.get(gpu, t * qw * eb)?;
        let gu = ws.gu.get(gpu, mlp_rows * 2 * inter * eb)?;
        let act = ws.act.get(gpu, mlp_rows * inter * eb)?;
        // The bf16 halves of the widest GEMM input (fp32 mode): t × max(H, Q), mlp_rows × I, head_rows × H.
        let (hi, lo) = if prec == Precision::Fp32 {
            let n = (t * h.max(qw)).max(mlp_rows * inter).max(head_rows * h);
            (ws.hi.get(gpu, n)?, ws.lo.get(gpu, n)?)
        } else {
            (0, 0)
        };
        let ids = ws.ids.get(gpu, t)?;
        let positions = ws.positions.get(gpu, t)?;
        let cu_seqlens = ws.cu_seqlens.get(gpu, p.cu_seqlens.len())?;
        let attn_kind = attention::AttentionKernel::for_args(d, prec)?;
        let tiles = attention::TileTable::build(&p.cu_seqlens, attn_kind.query_tile())?;
        let tiles_ptr = ws.tiles.get(gpu, tiles.data.len())?;
        let rows = ws.rows.get(gpu, n_scored)?;
        let gold = ws.gold.get(gpu, n_scored)?;
        for g in [&mut ws.lse, &mut ws.logprob, &mut ws.sum_p2, &mut ws.entropy, &mut ws.topk] {
            g.get(gpu, n_scored)?;
        }
        ws.rank.get(gpu, n_scored)?;
        let logits = if opts.is_some() { ws.logits.get(gpu, head_rows * vocab)? } else { 0 };

        if self.poison {
            ws.poison_all(gpu)?;
        }
        gpu.write(&p.ids, ws.ids.buf.as_mut().expect("allocated"))?;
        gpu.write(&p.positions, ws.positions.buf.as_mut().expect("allocated"))?;
        gpu.write(&p.cu_seqlens, ws.cu_seqlens.buf.as_mut().expect("allocated"))?;
        gpu.write(&tiles.data, ws.tiles.buf.as_mut().expect("allocated"))?;
        if n_scored > 0 {
            gpu.write(&p.rows, ws.rows.buf.as_mut().expect("allocated"))?;
            gpu.write(&p.gold, ws.gold.buf.as_mut().expect("allocated"))?;
        }

        let m = &self.model;
        gpu.embedding_gather(ids, gpu.addr(&m.embed), x, t, h, vocab)?;
        // What is not yet added to x: (a bf16 delta, a bias), folded into the next norm. The projections feeding
        // the residual stream accumulate straight into x (fp32), so only a bias (o / down bias) is ever pending.
        let mut pending: (DevPtr, DevPtr) = (0, 0);
        let attn_args = attention::AttentionArgs {
            q,
            k,
            v,
            out: attn,
            cu_seqlens,
            tiles: tiles_ptr,
            num_seqs: p.cu_seqlens.len() - 1,
            num_tiles: tiles.num_tiles,
            total_tokens: t,
            num_heads: nh,
            num_kv_heads: nkv,
            head_dim: d,
            softmax_scale: 1.0 / (d as f32).sqrt(),
            precision: prec,
            query_tile: attn_kind.query_tile(),
        };
        for layer in &m.layers {
            // Attention block.
            let write_x = pending.0 != 0 || pending.1 != 0;
            gpu.rmsnorm_residual(x, pending.0, pending.1, gpu.addr(&layer.input_norm), y, 0, t, h, eps, write_x, prec)?;
            gemm_act(gpu, prec, (y, hi, lo), gpu.addr(&layer.qkv), qkv, t, qkv_w, h, OutType::Bf16)?;
            let (qkv_bias, inv_freq) = (opt_ptr(&layer.qkv_bias, gpu), gpu.addr(&m.inv_freq));
            // Qwen2 and Llama (None): the original kernel, unchanged; Qwen3 and YaRN: the fused one.
            let norm = needs_norm_rope(&c).then(|| QkNormRope {
                q_norm: layer.qk_norm.as_ref().map(|(w, _)| gpu.addr(w)).unwrap_or(0),
                k_norm: layer.qk_norm.as_ref().map(|(_, w)| gpu.addr(w)).unwrap_or(0),
                eps,
                attention_factor: m.rope_attention_factor,
            });
            gpu.rope_qkv_split(qkv, qkv_bias, positions, inv_freq, norm.as_ref(), q, k, v, t, nh, nkv, d, prec)?;
            gpu.attention(&attn_args)?;
            // x += attn · W_oᵀ, accumulated in fp32 by cuBLAS (beta = 1).
            gemm_act(gpu, prec, (attn, hi, lo), gpu.addr(&layer.o), x, t, h, qw, OutType::F32Accumulate)?;
            let o_bias = opt_ptr(&layer.o_bias, gpu);
            gpu.rmsnorm_residual(x, 0, o_bias, gpu.addr(&layer.post_norm), y, 0, t, h, eps, o_bias != 0, prec)?;
            // MLP block, in row chunks (bounds the 2·I-wide intermediate); x += act · W_downᵀ in fp32.
            let mut r0 = 0;
            while r0 < t {
                let r = (t - r0).min(self.mlp_chunk);
                let y_rows = y + (r0 * h * eb) as u64;
                gemm_act(gpu, prec, (y_rows, hi, lo), gpu.addr(&layer.gate_up), gu, r, 2 * inter, h, OutType::Bf16)?;
                gpu.swiglu(gu, opt_ptr(&layer.gate_up_bias, gpu), act, r, inter, prec)?;
                let x_rows = x + (r0 * h * 4) as u64;
                gemm_act(gpu, prec, (act, hi, lo), gpu.addr(&layer.down), x_rows, r, h, inter, OutType::F32Accumulate)?;
                r0 += r;
            }
            // The down-projection bias (mlp_bias models) is added by the next norm.
            pending = (0, opt_ptr(&layer.down_bias, gpu));
        }

        let Some(opts) = opts else {
            // Hidden states only: the final norm of every requested row.
            let fnorm = gpu.addr(&m.final_norm);
            return gpu.rmsnorm_residual(x, pending.0, pending.1, fnorm, y, rows, n_scored, h, eps, false, prec);
        };
        // LM head over the scored rows only, in chunks.
        let head = m.lm_head.as_ref().unwrap_or(&m.embed);
        let mut r0 = 0;
        while r0 < n_scored {
            let r = (n_scored - r0).min(self.head_chunk);
            gpu.rmsnorm_residual(
                x,
                pending.0,
                pending.1,
                gpu.addr(&m.final_norm),
                y,
                rows + (r0 * 4) as u64,
                r,
                h,
                eps,
                false,
                prec,
            )?;
            gemm_act(gpu, prec, (y, hi, lo), gpu.addr(head), logits, r, vocab, h, OutType::F32)?;
            let off = (r0 * 4) as u64;
            let block = vocab_stats::LogitsBlock { logits, gold: gold + off, rows: r, vocab, row_stride: vocab };
            let outs = vocab_stats::StatsOut {
                lse: gpu.addr(ws.lse.slice().expect("allocated")) + off,
                logprob: gpu.addr(ws.logprob.slice().expect("allocated")) + off,
                sum_p2: gpu.addr(ws.sum_p2.slice().expect("allocated")) + off,
                entropy: gpu.addr(ws.entropy.slice().expect("allocated")) + off,
                rank: gpu.addr(ws.rank.slice().expect("allocated")) + off,
            };
            gpu.vocab_stats(&block, &outs)?;
            if let Some(kk) = opts.topk_brier {
                let tk = gpu.addr(ws.topk.slice().expect("allocated")) + off;
                gpu.topk_brier(&block, kk, tk)?;
            }
            r0 += r;
        }
        Ok(())
    }
}
