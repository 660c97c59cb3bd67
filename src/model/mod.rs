//! The student model: configuration, tensor names and shapes, weight storage, GGUF import.
//! No compute lives here: backends turn these host tensors into whatever they compute with.

pub mod config;
pub mod flops;
pub mod gguf;
pub mod presets;
pub mod random;
pub mod weights;

pub use config::{Architecture, Llama3RopeScaling, ModelConfig, RopeScaling, YarnRopeScaling};
pub use weights::{StoredDtype, TensorView, WeightStore};

use crate::error::{LarkError, Result};
use std::path::{Path, PathBuf};

/// HF tensor names of one decoder layer.
pub struct LayerNames {
    pub input_norm: String,
    pub q: String,
    pub k: String,
    pub v: String,
    pub o: String,
    pub q_bias: String,
    pub k_bias: String,
    pub v_bias: String,
    pub o_bias: String,
    pub q_norm: String,
    pub k_norm: String,
    pub post_norm: String,
    pub gate: String,
    pub up: String,
    pub down: String,
    pub gate_bias: String,
    pub up_bias: String,
    pub down_bias: String,
}

impl LayerNames {
    pub fn new(i: usize) -> Self {
        let p = format!("model.layers.{i}");
        LayerNames {
            input_norm: format!("{p}.input_layernorm.weight"),
            q: format!("{p}.self_attn.q_proj.weight"),
            k: format!("{p}.self_attn.k_proj.weight"),
            v: format!("{p}.self_attn.v_proj.weight"),
            o: format!("{p}.self_attn.o_proj.weight"),
            q_bias: format!("{p}.self_attn.q_proj.bias"),
            k_bias: format!("{p}.self_attn.k_proj.bias"),
            v_bias: format!("{p}.self_attn.v_proj.bias"),
            o_bias: format!("{p}.self_attn.o_proj.bias"),
            q_norm: format!("{p}.self_attn.q_norm.weight"),
            k_norm: format!("{p}.self_attn.k_norm.weight"),
            post_norm: format!("{p}.post_attention_layernorm.weight"),
            gate: format!("{p}.mlp.gate_proj.weight"),
            up: format!("{p}.mlp.up_proj.weight"),
            down: format!("{p}.mlp.down_proj.weight"),
            gate_bias: format!("{p}.mlp.gate_proj.bias"),
            up_bias: format!("{p}.mlp.up_proj.bias"),
            down_bias: format!("{p}.mlp.down_proj.bias"),
        }
    }
}

pub const EMBED: &str = "model.embed_tokens.weight";
pub const FINAL_NORM: &str = "model.norm.weight";
pub const LM_HEAD: &str = "lm_head.weight";

/// Every tensor the configuration requires, with its HF shape (`[out, in]` for linear weights).
pub fn tensor_specs(c: &ModelConfig) -> Vec<(String, Vec<usize>)> {
    let h = c.hidden_size;
    let q = c.num_heads * c.head_dim;
    let kv = c.num_kv_heads * c.head_dim;
    let i = c.intermediate_size;
    let mut specs = vec![(EMBED.to_string(), vec![c.vocab_size, h])];
    for l in 0..c.num_layers {
        let n = LayerNames::new(l);
        specs.push((n.input_norm, vec![h]));
        specs.push((n.q, vec![q, h]));
        specs.push((n.k, vec![kv, h]));
        specs.push((n.v, vec![kv, h]));
        specs.push((n.o, vec![h, q]));
        if c.qkv_bias {
            specs.push((n.q_bias, vec![q]));
            specs.push((n.k_bias, vec![kv]));
            specs.push((n.v_bias, vec![kv]));
        }
        if c.o_bias {
            specs.push((n.o_bias, vec![h]));
        }
        if c.qk_norm {
            specs.push((n.q_norm, vec![c.head_dim]));
            specs.push((n.k_norm, vec![c.head_dim]));
        }
        specs.push((n.post_norm, vec![h]));
        specs.push((n.gate, vec![i, h]));
        specs.push((n.up, vec![i, h]));
        specs.push((n.down, vec![h, i]));
        if c.mlp_bias {
            specs.push((n.gate_bias, vec![i]));
            specs.push((n.up_bias, vec![i]));
            specs.push((n.down_bias, vec![h]));
        }
    }
    specs.push((FINAL_NORM.to_string(), vec![h]));
    if !c.tie_word_embeddings {
        specs.push((LM_HEAD.to_string(), vec![c.vocab_size, h]));
    }
    specs
}

/// Say which configuration fields a missing or misshapen tensor follows from: the attention projections' shapes
/// from the heads and `head_dim`, the q/k norms from the architecture.
fn explain_tensor_error(e: LarkError, name: &str, c: &ModelConfig) -> LarkError {
    let LarkError::Input { location, message } = e else { return e };
    let hint = if name.ends_with("q_norm.weight") || name.ends_with("k_norm.weight") {
        format!(
            "{message}: {} applies a per-head RMSNorm to q and k, so every layer needs \
             self_attn.q_norm.weight and self_attn.k_norm.weight of shape [head_dim = {}]",
            c.architecture.hf_name(),
            c.head_dim
        )
    } else if message.starts_with("shape")
        && [".q_proj.", ".k_proj.", ".v_proj.", ".o_proj."].iter().any(|p| name.contains(p))
    {
        format!(
            "{message} (from config.json: num_attention_heads {} × head_dim {} = {}, num_key_value_heads {} × head_dim \
             = {}, hidden_size {}): the config's head_dim does not fit the projection weights",
            c.num_heads,
            c.head_dim,
            c.num_heads * c.head_dim,
            c.num_kv_heads,
            c.num_kv_heads * c.head_dim,
            c.hidden_size
        )
    } else {
        message
    };
    LarkError::Input { location, message: hint }
}

/// A model directory: its configuration and its (mapped, validated) weights.
pub struct Model {
    pub dir: PathBuf,
    pub config: ModelConfig,
    pub weights: WeightStore,
}

impl Model {
    /// Open `dir/config.json` and the weights, and check that every tensor the configuration needs is present
    /// with the right shape, so that backends never meet a missing tensor half-way through an upload.
    pub fn open(dir: &Path) -> Result<Self> {
        if !dir.is_dir() {
            return Err(LarkError::input(dir.display().to_string(), "model directory not found"));
        }
        let config = ModelConfig::from_file(&dir.join("config.json"))?;
        let weights = WeightStore::open_dir(dir)?;
        for (name, shape) in tensor_specs(&config) {
            weights.get(&name, &shape).map_err(|e| explain_tensor_error(e, &name, &config))?;
        }
        Ok(Model { dir: dir.to_path_buf(), config, weights })
    }

    /// The LM head matrix `[vocab, hidden]`: `lm_head.weight`, or the embedding when tied.
    pub fn lm_head(&self) -> Result<TensorView<'_>> {
        let c = &self.config;
        let name = if c.tie_word_embeddings { EMBED } else { LM_HEAD };
        self.weights.get(name, &[c.vocab_size, c.hidden_size])
    }
}
