//! A host-memory stand-in for the GPU (tests only): an address space of byte buffers, and every operation of
//! [`Exec`] done with the CPU reference ops, rounding to bf16 where the kernels store bf16. Running
//! [`Forward`](super::forward::Forward) on it checks the forward pass's orchestration without a GPU: buffer sizes,
//! address arithmetic (an access outside an allocation is an error), chunking, groups, the deferred residual add,
//! the scored-row gather and where each statistic lands; the launch-argument checks of the attention and
//! statistics wrappers run too. It says nothing about the kernels themselves (the emulator and the selftest do).
#![allow(clippy::needless_range_loop)] // index loops mirror the kernels they emulate

use super::attention::{self, AttentionArgs, AttentionKernel};
use super::exec::{Elem, Exec};
use super::ops::{DevPtr, OutType, Precision, QkNormRope};
use super::vocab_stats::{self, LogitsBlock, StatsOut};
use crate::backend::cpu::ops as cpu;
use crate::error::{LarkError, Result};
use crate::stats::{topk_brier, vocab_stats_row, StatsOptions};
use half::bf16;
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::marker::PhantomData;

pub struct MockBuf<T> {
    base: u64,
    len: usize,
    _t: PhantomData<T>,
}

#[derive(Default)]
struct Mem {
    allocs: BTreeMap<u64, Vec<u8>>,
    next: u64,
}

/// The mock device. Not thread-safe (tests only).
#[derive(Default)]
pub struct Mock {
    mem: RefCell<Mem>,
}

fn oob(what: &str, addr: u64, bytes: usize) -> LarkError {
    LarkError::Backend(format!("mock: {what} of {bytes} bytes at {addr:#x} is outside every allocation"))
}

impl Mock {
    fn read<T: Elem>(&self, addr: u64, n: usize) -> Result<Vec<T>> {
        let size = std::mem::size_of::<T>();
        let mem = self.mem.borrow();
        let (base, buf) = mem.allocs.range(..=addr).next_back().ok_or_else(|| oob("read", addr, n * size))?;
        let off = (addr - base) as usize;
        if off + n * size > buf.len() {
            return Err(oob("read", addr, n * size));
        }
        let mut out = vec![T::zeroed(); n];
        bytemuck::cast_slice_mut::<T, u8>(&mut out).copy_from_slice(&buf[off..off + n * size]);
        Ok(out)
    }

    fn store<T: Elem>(&self, addr: u64, data: &[T]) -> Result<()> {
        let bytes: &[u8] = bytemuck::cast_slice(data);
        let mut mem = self.mem.borrow_mut();
        let (base, buf) = mem.allocs.range_mut(..=addr).next_back().ok_or_else(|| oob("write", addr, bytes.len()))?;
        let off = (addr - *base) as usize;
        if off + bytes.len() > buf.len() {
            return Err(oob("write", addr, bytes.len()));
        }
        buf[off..off + bytes.len()].copy_from_slice(bytes);
        Ok(())
    }

    fn read_bf16(&self, addr: u64, n: usize) -> Result<Vec<f32>> {
        Ok(self.read::<bf16>(addr, n)?.into_iter().map(|v| v.to_f32()).collect())
    }

    fn store_bf16(&self, addr: u64, data: &[f32]) -> Result<()> {
        let b: Vec<bf16> = data.iter().map(|&v| bf16::from_f32(v)).collect();
        self.store(addr, &b)
    }

    /// n activations of type `p` at `addr`, widened to f32.
    fn read_act(&self, addr: u64, n: usize, p: Precision) -> Result<Vec<f32>> {
        match p {
            Precision::Bf16 => self.read_bf16(addr, n),
            Precision::Fp32 => self.read(addr, n),
        }
    }

    /// Store f32 values as activations of type `p` (rounding once for bf16).
    fn store_act(&self, addr: u64, data: &[f32], p: Precision) -> Result<()> {
        match p {
            Precision::Bf16 => self.store_bf16(addr, data),
            Precision::Fp32 => self.store(addr, data),
        }
    }
}

impl Exec for Mock {
    type Buf<T: Elem> = MockBuf<T>;

    fn alloc<T: Elem>(&self, n: usize) -> Result<MockBuf<T>> {
        let bytes = n.max(1) * std::mem::size_of::<T>();
        let mut mem = self.mem.borrow_mut();
        if mem.next == 0 {
            mem.next = 0x1000_0000;
        }
        let base = mem.next;
        // 256-byte aligned like cudaMalloc, with a gap so that running off the end never lands in a neighbour.
        mem.next = (base + bytes as u64 + 4096 + 255) & !255;
        // Fresh memory is garbage on a GPU: start from 0xFF (NaN) here.
        mem.allocs.insert(base, vec![0xFF; bytes]);
        Ok(MockBuf { base, len: n.max(1), _t: PhantomData })
    }
    fn addr<T: Elem>(&self, b: &MockBuf<T>) -> DevPtr {
        b.base
    }
    fn len<T: Elem>(&self, b: &MockBuf<T>) -> usize {
        b.len
    }
    fn write<T: Elem>(&self, data: &[T], b: &mut MockBuf<T>) -> Result<()> {
        if data.len() > b.len {
            return Err(LarkError::Backend("mock: write larger than the buffer".into()));
        }
        self.store(b.base, data)
    }
    fn download<T: Elem>(&self, b: &MockBuf<T>, n: usize) -> Result<Vec<T>> {
        if n > b.len {
            return Err(LarkError::Backend("mock: download larger than the buffer".into()));
        }
        self.read(b.base, n)
    }
    fn poison<T: Elem>(&self, b: &mut MockBuf<T>) -> Result<()> {
        let mut mem = self.mem.borrow_mut();
        mem.allocs.get_mut(&b.base).expect("live buffer").fill(0xFF);
        Ok(())
    }
    fn sync(&self) -> Result<()> {
        Ok(())
    }
    fn mem_info(&self) -> Result<(usize, usize)> {
        Ok((8 << 30, 16 << 30))
    }

    fn embedding_gather(&self, ids: DevPtr, table: DevPtr, out: DevPtr, t: usize, h: usize, v: usize) -> Result<()> {
        let ids: Vec<i32> = self.read(ids, t)?;
        for (i, &id) in ids.iter().enumerate() {
            if id < 0 || id as usize >= v {
                return Err(LarkError::Backend(format!("mock: id {id} out of range")));
            }
            let row = self.read_bf16(table + (id as usize * h * 2) as u64, h)?;
            self.store(out + (i * h * 4) as u64, &row)?;
        }
        Ok(())
    }

    fn rmsnorm_residual(
        &self,
        x: DevPtr,
        delta: DevPtr,
        bias: DevPtr,
        w: DevPtr,
        y: DevPtr,
        rows: DevPtr,
        n_rows: usize,
        h: usize,
        eps: f32,
        write_x: bool,
        prec: Precision,
    ) -> Result<()> {
        let w: Vec<f32> = self.read(w, h)?;
        let b: Option<Vec<f32>> = if bias != 0 { Some(self.read(bias, h)?) } else { None };
        let rows: Vec<i32> = if rows != 0 { self.read(rows, n_rows)? } else { (0..n_rows as i32).collect() };
        for (r, &i) in rows.iter().enumerate() {
            let i = i as usize;
            let mut v: Vec<f32> = self.read(x + (i * h * 4) as u64, h)?;
            if delta != 0 {
                let d = self.read_bf16(delta + (i * h * 2) as u64, h)?;
                v.iter_mut().zip(&d).for_each(|(a, b)| *a += b);
            }
            if let Some(b) = &b {
                v.iter_mut().zip(b).for_each(|(a, b)| *a += b);
            }
            if write_x {
                self.store(x + (i * h * 4) as u64, &v)?;
            }
            let mut out = vec![0f32; h];
            cpu::rms_norm(&v, &w, eps, &mut out);
            self.store_act(y + (r * h * prec.bytes()) as u64, &out, prec)?;
        }
        Ok(())
    }

    /// Both rope kernels with the CPU reference ops: bias, the optional per-head q/k norm, RoPE with scaled
    /// cos/sin, split.
    fn rope_qkv_split(
        &self,
        qkv: DevPtr,
        bias: DevPtr,
        positions: DevPtr,
        inv_freq: DevPtr,
        norm: Option<&QkNormRope>,
        q: DevPtr,
        k: DevPtr,
        v: DevPtr,
        t: usize,
        heads: usize,
        kv_heads: usize,
        d: usize,
        prec: Precision,
    ) -> Result<()> {
        let eb = prec.bytes();
        let w = (heads + 2 * kv_heads) * d;
        let (qw, kw) = (heads * d, kv_heads * d);
        let inv: Vec<f32> = self.read(inv_freq, d / 2)?;
        let pos: Vec<i32> = self.read(positions, t)?;
        let b: Option<Vec<f32>> = if bias != 0 { Some(self.read(bias, w)?) } else { None };
        let weights: Option<(Vec<f32>, Vec<f32>)> = match norm {
            Some(n) if n.q_norm != 0 => Some((self.read(n.q_norm, d)?, self.read(n.k_norm, d)?)),
            _ => None,
        };
        let factor = norm.map(|n| n.attention_factor).unwrap_or(1.0);
        for (i, &pos_i) in pos.iter().enumerate() {
            let mut row = self.read_act(qkv + (i * w * eb) as u64, w, prec)?;
            if let Some(b) = &b {
                row.iter_mut().zip(b).for_each(|(a, b)| *a += b);
            }
            let p = [pos_i as u32];
            let (mut qr, mut kr) = (row[..qw].to_vec(), row[qw..qw + kw].to_vec());
            if let (Some((wq, wk)), Some(n)) = (&weights, norm) {
                cpu::rms_norm_inplace(&mut qr, wq, n.eps);
                cpu::rms_norm_inplace(&mut kr, wk, n.eps);
            }
            cpu::rope_scaled_inplace(&mut qr, &p, heads, d, &inv, factor);
            cpu::rope_scaled_inplace(&mut kr, &p, kv_heads, d, &inv, factor);
            self.store_act(q + (i * qw * eb) as u64, &qr, prec)?;
            self.store_act(k + (i * kw * eb) as u64, &kr, prec)?;
            self.store_act(v + (i * kw * eb) as u64, &row[qw + kw..], prec)?;
        }
        Ok(())
    }

    fn swiglu(&self, gu: DevPtr, bias: DevPtr, out: DevPtr, t: usize, inter: usize, prec: Precision) -> Result<()> {
        let b: Option<Vec<f32>> = if bias != 0 { Some(self.read(bias, 2 * inter)?) } else { None };
        let eb = prec.bytes();
        for i in 0..t {
            let mut row = self.read_act(gu + (i * 2 * inter * eb) as u64, 2 * inter, prec)?;
            if let Some(b) = &b {
                row.iter_mut().zip(b).for_each(|(a, b)| *a += b);
            }
            let mut o = vec![0f32; inter];
            cpu::silu_mul(&row[..inter], &row[inter..], &mut o);
            self.store_act(out + (i * inter * eb) as u64, &o, prec)?;
        }
        Ok(())
    }

    fn split_bf16(&self, x: DevPtr, hi: DevPtr, lo: DevPtr, n: usize) -> Result<()> {
        let xs: Vec<f32> = self.read(x, n)?;
        let h: Vec<bf16> = xs.iter().map(|&v| bf16::from_f32(v)).collect();
        let l: Vec<bf16> = xs.iter().zip(&h).map(|(&v, h)| bf16::from_f32(v - h.to_f32())).collect();
        self.store(hi, &h)?;
        self.store(lo, &l)
    }

    fn gemm_bt(&self, x: DevPtr, w: DevPtr, out: DevPtr, m: usize, n: usize, k: usize, ty: OutType) -> Result<()> {
        let xs = self.read_bf16(x, m * k)?;
        let ws = self.read_bf16(w, n * k)?;
        let mut o = vec![0f32; m * n];
        cpu::matmul_bt(&xs, m, k, &ws, n, &mut o);
        match ty {
            OutType::Bf16 => self.store_bf16(out, &o),
            OutType::F32 => self.store(out, &o),
            OutType::F32Accumulate => {
                let mut c: Vec<f32> = self.read(out, m * n)?;
                c.iter_mut().zip(&o).for_each(|(c, o)| *c += o);
                self.store(out, &c)
            }
        }
    }

    fn attention(&self, a: &AttentionArgs) -> Result<()> {
        attention::launch_config(AttentionKernel::for_args(a.head_dim, a.precision)?, a)?;
        let cu: Vec<i32> = self.read(a.cu_seqlens, a.num_seqs + 1)?;
        let cu: Vec<usize> = cu.iter().map(|&c| c as usize).collect();
        if cu.last() != Some(&a.total_tokens) {
            return Err(LarkError::Backend("mock: cu_seqlens does not end at total_tokens".into()));
        }
        // The tile table must cover every query row exactly once.
        let tiles: Vec<i32> = self.read(a.tiles, 2 * a.num_tiles)?;
        let mut covered = vec![0u8; a.total_tokens];
        for j in 0..a.num_tiles {
            let (s, start) = (tiles[j] as usize, tiles[a.num_tiles + j] as usize);
            for p in start..(start + a.query_tile).min(cu[s + 1] - cu[s]) {
                covered[cu[s] + p] += 1;
            }
        }
        if covered.iter().any(|&c| c != 1) {
            return Err(LarkError::Backend("mock: the tile table does not cover every row once".into()));
        }
        let (t, d) = (a.total_tokens, a.head_dim);
        let p = a.precision;
        let q = self.read_act(a.q, t * a.num_heads * d, p)?;
        let k = self.read_act(a.k, t * a.num_kv_heads * d, p)?;
        let v = self.read_act(a.v, t * a.num_kv_heads * d, p)?;
        let mut out = vec![0f32; t * a.num_heads * d];
        cpu::attention_causal(&q, &k, &v, &cu, a.num_heads, a.num_kv_heads, d, &mut out);
        self.store_act(a.out, &out, p)
    }

    fn vocab_stats(&self, block: &LogitsBlock, out: &StatsOut) -> Result<()> {
        vocab_stats::launch_config("mock vocab_stats", block)?;
        let gold: Vec<i32> = self.read(block.gold, block.rows)?;
        for (r, &g) in gold.iter().enumerate() {
            let z: Vec<f32> = self.read(block.logits + (r * block.row_stride * 4) as u64, block.vocab)?;
            let s = vocab_stats_row(&z, g as u32, &StatsOptions::default());
            let o = (r * 4) as u64;
            self.store(out.lse + o, &[s.lse])?;
            self.store(out.logprob + o, &[s.logprob])?;
            self.store(out.sum_p2 + o, &[s.sum_p2])?;
            self.store(out.entropy + o, &[s.entropy])?;
            self.store(out.rank + o, &[s.rank])?;
        }
        Ok(())
    }

    fn topk_brier(&self, block: &LogitsBlock, k: usize, out: DevPtr) -> Result<()> {
        vocab_stats::launch_config("mock topk", block)?;
        let gold: Vec<i32> = self.read(block.gold, block.rows)?;
        for (r, &g) in gold.iter().enumerate() {
            let z: Vec<f32> = self.read(block.logits + (r * block.row_stride * 4) as u64, block.vocab)?;
            self.store(out + (r * 4) as u64, &[topk_brier(&z, g as u32, k) as f32])?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::forward::Forward;
    use super::*;
    use crate::backend::cpu::CpuBackend;
    use crate::backend::{Backend, SeqRequest};
    use crate::model::random::{tiny_config, write_random_model, SplitMix};
    use crate::model::{Architecture, Model, StoredDtype};
    use crate::stats::TokenStats;

    fn batch_data(vocab: usize) -> Vec<(Vec<u32>, usize)> {
        let mut rng = SplitMix(17);
        let mut out = vec![];
        for &(len, from) in &[(1usize, 1usize), (2, 1), (37, 5), (70, 30), (9, 8), (130, 1), (3, 3)] {
            out.push(((0..len).map(|_| (rng.next_u64() % vocab as u64) as u32).collect(), from));
        }
        out
    }

    fn max_dlogp(a: &[Vec<TokenStats>], b: &[Vec<TokenStats>]) -> f64 {
        assert_eq!(a.len(), b.len());
        let mut m = 0f64;
        for (x, y) in a.iter().zip(b) {
            assert_eq!(x.len(), y.len());
            for (p, q) in x.iter().zip(y) {
                assert!(p.logprob.is_finite() && p.sum_p2.is_finite() && p.entropy.is_finite() && p.lse.is_finite());
                m = m.max((p.logprob - q.logprob).abs() as f64);
            }
        }
        m
    }

    /// The forward pass on the mock device equals the CPU backend up to bf16 rounding, whatever the chunk sizes,
    /// group sizes and biases; statistics land in the right place for every sequence.
    #[test]
    fn forward_on_the_mock_matches_the_cpu_backend() {
        for (arch, mlp_bias) in
            [(Architecture::Qwen2, false), (Architecture::Llama, true), (Architecture::Qwen3, false)]
        {
            let dir = tempfile::tempdir().unwrap();
            let mut cfg = tiny_config(arch);
            cfg.mlp_bias = mlp_bias;
            cfg.o_bias = mlp_bias;
            cfg.qkv_bias = true;
            if arch == Architecture::Qwen3 {
                // The fused q/k-norm + RoPE path, with YaRN's attention factor and head_dim ≠ hidden/heads.
                cfg.head_dim = 12;
                cfg.o_bias = true; // attention_bias biases q, k, v and o alike in Qwen3
                cfg.rope_scaling = Some(crate::model::RopeScaling::Yarn(crate::model::YarnRopeScaling::new(4.0, 16.0)));
            }
            write_random_model(dir.path(), &cfg, StoredDtype::BF16, 5).unwrap();
            let model = Model::open(dir.path()).unwrap();
            let data = batch_data(cfg.vocab_size);
            let batch: Vec<SeqRequest<'_>> = data.iter().map(|(ids, f)| SeqRequest { ids, score_from: *f }).collect();
            let opts = StatsOptions { topk_brier: Some(50) };
            let want = CpuBackend::new(&model).unwrap().score(&batch, &opts).unwrap();

            let mock = Mock::default();
            let mut fwd = Forward::new(&mock, &model).unwrap();
            fwd.poison = true;
            let base = fwd.score(&mock, &batch, &opts).unwrap();
            // Small chunks and groups: several MLP chunks, LM-head chunks and groups of whole sequences.
            fwd.mlp_chunk = 7;
            fwd.head_chunk = 5;
            fwd.max_tokens = 100;
            let chunked = fwd.score(&mock, &batch, &opts).unwrap();
            for got in [&base, &chunked] {
                let d = max_dlogp(got, &want);
                assert!(d < 0.05, "{arch:?}: max |Δ log p| {d}");
                for (g, w) in got.iter().zip(&want) {
                    for (x, y) in g.iter().zip(w) {
                        assert!((x.topk_brier - y.topk_brier).abs() < 0.05);
                        assert!(((x.sum_p2 - y.sum_p2) / y.sum_p2).abs() < 0.05);
                    }
                }
            }
            // Chunking changes only the GEMM shapes (hence a last-bit difference now and then).
            assert!(max_dlogp(&base, &chunked) < 1e-3);
            // Hidden states of the layer stack.
            let hidden = fwd.final_hidden(&mock, &batch).unwrap();
            let cpu = CpuBackend::new(&model).unwrap();
            let mut ids = vec![];
            let mut cu = vec![0usize];
            for r in &batch {
                ids.extend_from_slice(r.ids);
                cu.push(ids.len());
            }
            let ref_h = cpu.hidden_states(&ids, &cu);
            let num: f64 = hidden.iter().zip(&ref_h).map(|(a, b)| ((a - b) as f64).powi(2)).sum();
            let den: f64 = ref_h.iter().map(|b| (*b as f64).powi(2)).sum();
            assert!((num / den).sqrt() < 3e-2, "hidden rel {}", (num / den).sqrt());
        }
    }

    #[test]
    fn out_of_bounds_access_is_an_error() {
        let m = Mock::default();
        let b = m.alloc::<f32>(4).unwrap();
        assert!(m.read::<f32>(b.base, 4).is_ok());
        assert!(m.read::<f32>(b.base + 4, 4).is_err());
        assert!(m.store(b.base + 16, &[1f32]).is_err());
    }
}
