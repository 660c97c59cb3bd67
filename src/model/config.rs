//! `config.json` → [`ModelConfig`]: one struct for Qwen2 and Llama, their differences as fields.

use crate::error::{LarkError, Result};
use serde_json::Value;
use std::path::Path;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum Architecture {
    Qwen2,
    Llama,
}

impl Architecture {
    pub fn hf_name(self) -> &'static str {
        match self {
            Architecture::Qwen2 => "Qwen2ForCausalLM",
            Architecture::Llama => "LlamaForCausalLM",
        }
    }
}

/// Llama 3 style frequency scaling of the rotary embedding (`rope_type: "llama3"`).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Llama3RopeScaling {
    pub factor: f64,
    pub low_freq_factor: f64,
    pub high_freq_factor: f64,
    pub original_max_position_embeddings: f64,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ModelConfig {
    pub architecture: Architecture,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_layers: usize,
    pub num_heads: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
    pub rms_norm_eps: f64,
    pub rope_theta: f64,
    pub rope_scaling: Option<Llama3RopeScaling>,
    pub max_position_embeddings: usize,
    /// Bias on the q/k/v projections (always for Qwen2; `attention_bias` for Llama, which also biases o_proj).
    pub qkv_bias: bool,
    pub o_bias: bool,
    pub mlp_bias: bool,
    pub tie_word_embeddings: bool,
    /// `torch_dtype` / `dtype` as written in the file, for information only.
    pub declared_dtype: Option<String>,
}

/// Sizes above these are rejected as absurd rather than attempted (a hostile config must not allocate terabytes).
const MAX_DIM: usize = 1 << 20;
const MAX_VOCAB: usize = 1 << 24;
const MAX_LAYERS: usize = 1024;

impl ModelConfig {
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| LarkError::io(path, e))?;
        Self::from_json_str(&text, &path.display().to_string())
    }

    pub fn from_json_str(text: &str, origin: &str) -> Result<Self> {
        let v: Value = serde_json::from_str(text)
            .map_err(|e| LarkError::input(format!("{origin}:{}", e.line()), format!("invalid JSON: {e}")))?;
        Self::from_json(&v, origin)
    }

    pub fn from_json(v: &Value, origin: &str) -> Result<Self> {
        let err = |field: &str, msg: String| LarkError::input(format!("{origin}: field `{field}`"), msg);
        let obj = v.as_object().ok_or_else(|| LarkError::input(origin, "config is not a JSON object"))?;
        let arch_name = obj
            .get("architectures")
            .and_then(|a| a.as_array())
            .and_then(|a| a.first())
            .and_then(|a| a.as_str())
            .or_else(|| obj.get("model_type").and_then(|m| m.as_str()))
            .ok_or_else(|| err("architectures", "missing".into()))?;
        let architecture = match arch_name {
            "Qwen2ForCausalLM" | "qwen2" => Architecture::Qwen2,
            "LlamaForCausalLM" | "llama" => Architecture::Llama,
            other => {
                return Err(LarkError::Unsupported(format!(
                    "{origin}: architecture `{other}` (supported: Qwen2ForCausalLM, LlamaForCausalLM)"
                )))
            }
        };
        let get_usize = |field: &str, max: usize| -> Result<usize> {
            let x = obj.get(field).ok_or_else(|| err(field, "missing".into()))?;
            let n = x.as_u64().ok_or_else(|| err(field, format!("expected a positive integer, got {x}")))?;
            if n == 0 || n as usize > max {
                return Err(err(field, format!("{n} is out of range (1..={max})")));
            }
            Ok(n as usize)
        };
        let opt_usize = |field: &str, max: usize| -> Result<Option<usize>> {
            match obj.get(field) {
                None | Some(Value::Null) => Ok(None),
                Some(_) => get_usize(field, max).map(Some),
            }
        };
        let get_bool = |field: &str, default: bool| -> Result<bool> {
            match obj.get(field) {
                None | Some(Value::Null) => Ok(default),
                Some(Value::Bool(b)) => Ok(*b),
                Some(x) => Err(err(field, format!("expected true/false, got {x}"))),
            }
        };
        let get_f64 = |o: &serde_json::Map<String, Value>, field: &str| -> Result<Option<f64>> {
            match o.get(field) {
                None | Some(Value::Null) => Ok(None),
                Some(x) => x.as_f64().map(Some).ok_or_else(|| err(field, format!("expected a number, got {x}"))),
            }
        };

        let vocab_size = get_usize("vocab_size", MAX_VOCAB)?;
        let hidden_size = get_usize("hidden_size", MAX_DIM)?;
        let intermediate_size = get_usize("intermediate_size", MAX_DIM)?;
        let num_layers = get_usize("num_hidden_layers", MAX_LAYERS)?;
        let num_heads = get_usize("num_attention_heads", MAX_DIM)?;
        let num_kv_heads = opt_usize("num_key_value_heads", MAX_DIM)?.unwrap_or(num_heads);
        if num_heads % num_kv_heads != 0 {
            return Err(err(
                "num_key_value_heads",
                format!("{num_kv_heads} does not divide num_attention_heads = {num_heads}"),
            ));
        }
        let head_dim = match opt_usize("head_dim", MAX_DIM)? {
            Some(d) => d,
            None => {
                if hidden_size % num_heads != 0 {
                    return Err(err(
                        "num_attention_heads",
                        format!("{num_heads} does not divide hidden_size {hidden_size}"),
                    ));
                }
                hidden_size / num_heads
            }
        };
        if head_dim % 2 != 0 {
            return Err(err("head_dim", format!("{head_dim} must be even for rotary embeddings")));
        }
        let rms_norm_eps = get_f64(obj, "rms_norm_eps")?.unwrap_or(1e-6);

        // Rope settings come either at the top level (rope_theta / rope_scaling) or, as transformers 5 writes
        // them, in one `rope_parameters` object.
        let (rope_obj, scaling_obj) = match obj.get("rope_parameters") {
            Some(Value::Object(p)) => (Some(p), Some(p)),
            Some(Value::Null) | None => (None, obj.get("rope_scaling").and_then(|s| s.as_object())),
            Some(x) => return Err(err("rope_parameters", format!("expected an object, got {x}"))),
        };
        if let Some(x) = obj.get("rope_scaling") {
            if !x.is_null() && !x.is_object() {
                return Err(err("rope_scaling", format!("expected an object or null, got {x}")));
            }
        }
        let rope_theta = match rope_obj {
            Some(p) => get_f64(p, "rope_theta")?,
            None => None,
        }
        .or(get_f64(obj, "rope_theta")?)
        .unwrap_or(10000.0);
        if rope_theta.is_nan() || rope_theta <= 0.0 {
            return Err(err("rope_theta", format!("{rope_theta} must be positive")));
        }
        let rope_scaling = match scaling_obj {
            None => None,
            Some(s) => {
                let kind = s.get("rope_type").or_else(|| s.get("type")).and_then(|t| t.as_str()).unwrap_or("default");
                match kind {
                    "default" => None,
                    "llama3" => {
                        let f = |name: &str| -> Result<f64> {
                            get_f64(s, name)?.ok_or_else(|| err(&format!("rope_scaling.{name}"), "missing".into()))
                        };
                        Some(Llama3RopeScaling {
                            factor: f("factor")?,
                            low_freq_factor: f("low_freq_factor")?,
                            high_freq_factor: f("high_freq_factor")?,
                            original_max_position_embeddings: f("original_max_position_embeddings")?,
                        })
                    }
                    other => {
                        return Err(LarkError::Unsupported(format!(
                            "{origin}: rope scaling type `{other}` (supported: default, llama3)"
                        )))
                    }
                }
            }
        };
        let attention_bias = get_bool("attention_bias", false)?;
        let (qkv_bias, o_bias) = match architecture {
            Architecture::Qwen2 => (true, false),
            Architecture::Llama => (attention_bias, attention_bias),
        };
        let mlp_bias = get_bool("mlp_bias", false)?;
        let tie_word_embeddings = get_bool("tie_word_embeddings", false)?;
        let max_position_embeddings = opt_usize("max_position_embeddings", 1 << 26)?.unwrap_or(32768);
        let declared_dtype =
            obj.get("torch_dtype").or_else(|| obj.get("dtype")).and_then(|d| d.as_str()).map(str::to_string);
        Ok(ModelConfig {
            architecture,
            vocab_size,
            hidden_size,
            intermediate_size,
            num_layers,
            num_heads,
            num_kv_heads,
            head_dim,
            rms_norm_eps,
            rope_theta,
            rope_scaling,
            max_position_embeddings,
            qkv_bias,
            o_bias,
            mlp_bias,
            tie_word_embeddings,
            declared_dtype,
        })
    }

    /// Width of the concatenated q, k, v projection output.
    pub fn qkv_width(&self) -> usize {
        (self.num_heads + 2 * self.num_kv_heads) * self.head_dim
    }

    /// The rotary inverse frequencies (one per pair of dimensions), llama3 scaling applied, in f64 as HF does
    /// before its cast.
    pub fn rope_inv_freq(&self) -> Vec<f64> {
        let d = self.head_dim;
        let base: Vec<f64> = (0..d / 2).map(|i| 1.0 / self.rope_theta.powf((2 * i) as f64 / d as f64)).collect();
        match &self.rope_scaling {
            None => base,
            Some(s) => {
                let low_wavelen = s.original_max_position_embeddings / s.low_freq_factor;
                let high_wavelen = s.original_max_position_embeddings / s.high_freq_factor;
                base.into_iter()
                    .map(|f| {
                        let wavelen = 2.0 * std::f64::consts::PI / f;
                        if wavelen < high_wavelen {
                            f
                        } else if wavelen > low_wavelen {
                            f / s.factor
                        } else {
                            let smooth = (s.original_max_position_embeddings / wavelen - s.low_freq_factor)
                                / (s.high_freq_factor - s.low_freq_factor);
                            (1.0 - smooth) * f / s.factor + smooth * f
                        }
                    })
                    .collect()
            }
        }
    }

    /// Parameter count implied by the shapes (embedding counted once when tied).
    pub fn parameter_count(&self) -> u64 {
        let h = self.hidden_size as u64;
        let q = (self.num_heads * self.head_dim) as u64;
        let kv = (self.num_kv_heads * self.head_dim) as u64;
        let i = self.intermediate_size as u64;
        let v = self.vocab_size as u64;
        let mut layer = h * (q + 2 * kv) + q * h + 3 * h * i + 2 * h;
        if self.qkv_bias {
            layer += q + 2 * kv;
        }
        if self.o_bias {
            layer += h;
        }
        if self.mlp_bias {
            layer += 2 * i + h;
        }
        let head = if self.tie_word_embeddings { 0 } else { v * h };
        v * h + self.num_layers as u64 * layer + h + head
    }

    /// Write an HF-style `config.json` (top-level rope style) for this configuration.
    pub fn to_hf_json(&self) -> Value {
        let mut m = serde_json::json!({
            "architectures": [self.architecture.hf_name()],
            "model_type": match self.architecture { Architecture::Qwen2 => "qwen2", Architecture::Llama => "llama" },
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.num_layers,
            "num_attention_heads": self.num_heads,
            "num_key_value_heads": self.num_kv_heads,
            "head_dim": self.head_dim,
            "rms_norm_eps": self.rms_norm_eps,
            "rope_theta": self.rope_theta,
            "max_position_embeddings": self.max_position_embeddings,
            "tie_word_embeddings": self.tie_word_embeddings,
            "hidden_act": "silu",
        });
        if self.architecture == Architecture::Llama {
            m["attention_bias"] = Value::Bool(self.qkv_bias);
            m["mlp_bias"] = Value::Bool(self.mlp_bias);
        }
        if let Some(s) = &self.rope_scaling {
            m["rope_scaling"] = serde_json::json!({
                "rope_type": "llama3", "factor": s.factor, "low_freq_factor": s.low_freq_factor,
                "high_freq_factor": s.high_freq_factor,
                "original_max_position_embeddings": s.original_max_position_embeddings,
            });
        }
        if let Some(d) = &self.declared_dtype {
            m["torch_dtype"] = Value::String(d.clone());
        }
        m
    }
}
