//! Random-weight models with exact shapes: for tests, the selftest and `lark bench --random-weights`.

use super::{tensor_specs, ModelConfig, StoredDtype};
use crate::error::{LarkError, Result};
use std::path::Path;

/// A small deterministic generator (splitmix64), so that tests and benchmarks need no RNG crate.
pub struct SplitMix(pub u64);

impl SplitMix {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E3779B97F4A7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58476D1CE4E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D049BB133111EB);
        z ^ (z >> 31)
    }
    /// Uniform in [-1, 1).
    pub fn next_f32(&mut self) -> f32 {
        ((self.next_u64() >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }
}

/// How a random tensor's values are drawn: `offset + scale · U[-1, 1)`. Norms near 1, everything else with a
/// scale of `1/sqrt(fan_in)` (embeddings larger, so logits have a realistic spread).
fn value_law(name: &str, shape: &[usize]) -> (f32, f32) {
    if name.ends_with("norm.weight") {
        return (1.0, 0.1);
    }
    let fan_in = *shape.last().unwrap_or(&1) as f32;
    let scale = if name.contains("embed_tokens") || name.starts_with("lm_head") {
        1.0
    } else if name.ends_with(".bias") {
        0.5
    } else {
        1.0 / fan_in.sqrt()
    };
    (0.0, scale)
}

/// The values of one random tensor.
pub fn random_values(name: &str, shape: &[usize], rng: &mut SplitMix) -> Vec<f32> {
    let (offset, scale) = value_law(name, shape);
    (0..shape.iter().product()).map(|_| offset + scale * rng.next_f32()).collect()
}

/// Write `config.json` and `model.safetensors` with random weights of the configuration's exact shapes.
pub fn write_random_model(dir: &Path, config: &ModelConfig, dtype: StoredDtype, seed: u64) -> Result<()> {
    write_random_model_with(dir, config, dtype, seed, value_law)
}

/// [`write_random_model`] with another law `(name, shape) → (offset, scale)` for the values (the Qwen3 golden
/// test draws wider weights; scripts/golden_qwen3.py reproduces this generator bit for bit).
pub fn write_random_model_with(
    dir: &Path,
    config: &ModelConfig,
    dtype: StoredDtype,
    seed: u64,
    law: impl Fn(&str, &[usize]) -> (f32, f32) + Sync,
) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| LarkError::io(dir, e))?;
    let cfg_path = dir.join("config.json");
    let text = serde_json::to_string_pretty(&config.to_hf_json()).expect("config serialises");
    std::fs::write(&cfg_path, text).map_err(|e| LarkError::io(&cfg_path, e))?;
    // Each tensor has its own generator, seeded from the model seed and the tensor's name, so that tensors
    // are generated in parallel (a 7B model is 7.6 G values) and independently of each other's order.
    use rayon::prelude::*;
    let buffers: Vec<(String, Vec<usize>, Vec<u8>)> = tensor_specs(config)
        .into_par_iter()
        .map(|(name, shape)| {
            let mut rng = SplitMix(seed ^ name_hash(&name));
            let n: usize = shape.iter().product();
            let (offset, scale) = law(&name, &shape);
            let mut bytes = Vec::with_capacity(n * dtype.size());
            for _ in 0..n {
                let v = offset + scale * rng.next_f32();
                match dtype {
                    StoredDtype::F32 => bytes.extend_from_slice(&v.to_le_bytes()),
                    StoredDtype::F16 => bytes.extend_from_slice(&half::f16::from_f32(v).to_le_bytes()),
                    StoredDtype::BF16 => bytes.extend_from_slice(&half::bf16::from_f32(v).to_le_bytes()),
                }
            }
            (name, shape, bytes)
        })
        .collect();
    let st_dtype = match dtype {
        StoredDtype::F32 => safetensors::Dtype::F32,
        StoredDtype::F16 => safetensors::Dtype::F16,
        StoredDtype::BF16 => safetensors::Dtype::BF16,
    };
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = buffers
        .iter()
        .map(|(n, s, b)| {
            (n.clone(), safetensors::tensor::TensorView::new(st_dtype, s.clone(), b).expect("sizes match"))
        })
        .collect();
    let path = dir.join("model.safetensors");
    safetensors::serialize_to_file(views, None, &path)
        .map_err(|e| LarkError::Other(format!("{}: writing safetensors: {e}", path.display())))?;
    Ok(())
}

/// FNV-1a of a tensor name (a stable per-tensor seed).
fn name_hash(name: &str) -> u64 {
    name.bytes().fold(0xcbf29ce484222325u64, |h, b| (h ^ b as u64).wrapping_mul(0x100000001b3))
}

/// A tiny configuration for tests (odd sizes on purpose).
pub fn tiny_config(arch: super::Architecture) -> ModelConfig {
    ModelConfig {
        architecture: arch,
        vocab_size: 301,
        hidden_size: 48,
        intermediate_size: 83,
        num_layers: 2,
        num_heads: 6,
        num_kv_heads: 2,
        head_dim: 8,
        rms_norm_eps: 1e-6,
        rope_theta: 10000.0,
        rope_scaling: None,
        max_position_embeddings: 4096,
        qkv_bias: arch == super::Architecture::Qwen2,
        qk_norm: arch == super::Architecture::Qwen3,
        o_bias: false,
        mlp_bias: false,
        tie_word_embeddings: arch == super::Architecture::Llama,
        declared_dtype: Some("float32".into()),
    }
}
