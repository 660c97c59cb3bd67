//! `config.json` → [`ModelConfig`]: one struct for Qwen2, Qwen3 and Llama, their differences as fields.

use crate::error::{LarkError, Result};
use serde_json::Value;
use std::path::Path;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum Architecture {
    Qwen2,
    /// Qwen3 (dense): per-head RMSNorm of q and k before RoPE, no q/k/v bias unless `attention_bias`.
    Qwen3,
    Llama,
}

impl Architecture {
    pub fn hf_name(self) -> &'static str {
        match self {
            Architecture::Qwen2 => "Qwen2ForCausalLM",
            Architecture::Qwen3 => "Qwen3ForCausalLM",
            Architecture::Llama => "LlamaForCausalLM",
        }
    }
    pub fn model_type(self) -> &'static str {
        match self {
            Architecture::Qwen2 => "qwen2",
            Architecture::Qwen3 => "qwen3",
            Architecture::Llama => "llama",
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

/// YaRN scaling of the rotary embedding (`rope_type: "yarn"`), as transformers' `_compute_yarn_parameters` reads
/// it, every default resolved at load time.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct YarnRopeScaling {
    /// `factor` as written in the file (for `lark inspect` and for writing the config back).
    pub factor: f64,
    pub original_max_position_embeddings: f64,
    /// Rotations bounding the linear ramp (defaults 32 and 1; transformers also replaces 0 by the default).
    pub beta_fast: f64,
    pub beta_slow: f64,
    /// `attention_factor`, `mscale`, `mscale_all_dim` as written (None when absent).
    pub attention_factor: Option<f64>,
    pub mscale: Option<f64>,
    pub mscale_all_dim: Option<f64>,
    /// Round the correction range outward to whole dimensions (default true).
    pub truncate: bool,
}

impl YarnRopeScaling {
    /// `factor` over `original_max_position_embeddings` with transformers' defaults for everything else (the
    /// settings Qwen3's model cards give: factor 4 over 32,768).
    pub fn new(factor: f64, original_max_position_embeddings: f64) -> Self {
        YarnRopeScaling {
            factor,
            original_max_position_embeddings,
            beta_fast: 32.0,
            beta_slow: 1.0,
            attention_factor: None,
            mscale: None,
            mscale_all_dim: None,
            truncate: true,
        }
    }

    /// The factor cos and sin are multiplied by: `attention_factor` when given, else transformers'
    /// `get_mscale(factor, mscale) / get_mscale(factor, mscale_all_dim)` when both are given (and non-zero), else
    /// `get_mscale(factor)` = 0.1·ln(factor) + 1 (1 for factor ≤ 1).
    pub fn attention_factor(&self) -> f64 {
        let get_mscale = |scale: f64, mscale: f64| if scale <= 1.0 { 1.0 } else { 0.1 * mscale * scale.ln() + 1.0 };
        if let Some(a) = self.attention_factor {
            return a;
        }
        match (self.mscale, self.mscale_all_dim) {
            (Some(m), Some(all)) if m != 0.0 && all != 0.0 => get_mscale(self.factor, m) / get_mscale(self.factor, all),
            _ => get_mscale(self.factor, 1.0),
        }
    }

    /// The inverse frequencies of transformers' `_compute_yarn_parameters`: dimensions rotating fewer than
    /// `beta_slow` times over the original context are interpolated (divided by `factor`), those rotating more
    /// than `beta_fast` times are kept, and a linear ramp over dimension index blends the two in between.
    pub fn inv_freq(&self, theta: f64, dim: usize) -> Vec<f64> {
        let d = dim as f64;
        let correction_dim = |rotations: f64| {
            d * (self.original_max_position_embeddings / (rotations * 2.0 * std::f64::consts::PI)).ln()
                / (2.0 * theta.ln())
        };
        let (mut low, mut high) = (correction_dim(self.beta_fast), correction_dim(self.beta_slow));
        if self.truncate {
            low = low.floor();
            high = high.ceil();
        }
        let (low, mut high) = (low.max(0.0), high.min(d - 1.0));
        if low == high {
            high += 0.001; // transformers' guard against a zero-width ramp
        }
        (0..dim / 2)
            .map(|i| {
                let pos_freq = theta.powf((2 * i) as f64 / d);
                let (extrapolation, interpolation) = (1.0 / pos_freq, 1.0 / (self.factor * pos_freq));
                let ramp = ((i as f64 - low) / (high - low)).clamp(0.0, 1.0);
                let keep = 1.0 - ramp;
                interpolation * (1.0 - keep) + extrapolation * keep
            })
            .collect()
    }
}

/// How the rotary frequencies are scaled (`rope_scaling` / `rope_parameters`).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
#[serde(tag = "rope_type", rename_all = "lowercase")]
pub enum RopeScaling {
    Llama3(Llama3RopeScaling),
    /// Position interpolation: every inverse frequency divided by `factor`.
    Linear {
        factor: f64,
    },
    Yarn(YarnRopeScaling),
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
    pub rope_scaling: Option<RopeScaling>,
    pub max_position_embeddings: usize,
    /// Bias on the q/k/v projections (always for Qwen2; `attention_bias` for Llama and Qwen3, which then also bias
    /// o_proj).
    pub qkv_bias: bool,
    /// Per-head RMSNorm of q and k after the projection, before RoPE (`self_attn.{q,k}_norm.weight`, [head_dim]).
    pub qk_norm: bool,
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
            "Qwen3ForCausalLM" | "qwen3" => Architecture::Qwen3,
            "LlamaForCausalLM" | "llama" => Architecture::Llama,
            other => {
                return Err(LarkError::Unsupported(format!(
                    "{origin}: architecture `{other}` (supported: Qwen2ForCausalLM, Qwen3ForCausalLM, LlamaForCausalLM)"
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
        let scaling_field = if rope_obj.is_some() { "rope_parameters" } else { "rope_scaling" };
        let rope_scaling = match scaling_obj {
            None => None,
            Some(s) => parse_rope_scaling(s, origin, scaling_field)?,
        };
        let attention_bias = get_bool("attention_bias", false)?;
        let (qkv_bias, o_bias) = match architecture {
            Architecture::Qwen2 => (true, false),
            Architecture::Qwen3 => (attention_bias, attention_bias),
            Architecture::Llama => (attention_bias, attention_bias),
        };
        let qk_norm = architecture == Architecture::Qwen3;
        // Qwen2/Qwen3 configs carry sliding-window fields; only full attention is implemented, so a config that
        // turns the window on is refused rather than scored with the wrong attention.
        if matches!(architecture, Architecture::Qwen2 | Architecture::Qwen3) && get_bool("use_sliding_window", false)? {
            return Err(LarkError::Unsupported(format!(
                "{origin}: field `use_sliding_window`: sliding-window attention (only full causal attention is \
                 supported)"
            )));
        }
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
            qk_norm,
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

    /// The rotary inverse frequencies (one per pair of dimensions), scaling applied, in f64 (rounded to f32 by the
    /// backends, where transformers keeps them).
    pub fn rope_inv_freq(&self) -> Vec<f64> {
        let d = self.head_dim;
        let base: Vec<f64> = (0..d / 2).map(|i| 1.0 / self.rope_theta.powf((2 * i) as f64 / d as f64)).collect();
        match &self.rope_scaling {
            None => base,
            Some(RopeScaling::Linear { factor }) => base.into_iter().map(|f| f / factor).collect(),
            Some(RopeScaling::Llama3(s)) => {
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
            Some(RopeScaling::Yarn(y)) => y.inv_freq(self.rope_theta, d),
        }
    }

    /// The factor cos and sin are multiplied by (YaRN's attention factor; 1 otherwise).
    pub fn rope_attention_factor(&self) -> f64 {
        match &self.rope_scaling {
            Some(RopeScaling::Yarn(y)) => y.attention_factor(),
            _ => 1.0,
        }
    }

    /// The longest sequence the configuration is meant for: `max_position_embeddings`, or the scaled context
    /// (`factor × original_max_position_embeddings`) of a YaRN or llama3 configuration when that is larger.
    pub fn context_length(&self) -> usize {
        let scaled = match &self.rope_scaling {
            Some(RopeScaling::Yarn(y)) => y.factor * y.original_max_position_embeddings,
            Some(RopeScaling::Llama3(s)) => s.factor * s.original_max_position_embeddings,
            Some(RopeScaling::Linear { factor }) => factor * self.max_position_embeddings as f64,
            None => 0.0,
        };
        self.max_position_embeddings.max(scaled as usize)
    }

    /// One line describing the rope (for `lark inspect`).
    pub fn rope_description(&self) -> String {
        let theta = self.rope_theta;
        match &self.rope_scaling {
            None => format!("theta {theta}"),
            Some(RopeScaling::Linear { factor }) => format!("theta {theta}, linear scaling factor {factor}"),
            Some(RopeScaling::Llama3(s)) => format!(
                "theta {theta}, llama3 scaling factor {} low {} high {} original {}",
                s.factor, s.low_freq_factor, s.high_freq_factor, s.original_max_position_embeddings
            ),
            Some(RopeScaling::Yarn(y)) => format!(
                "theta {theta}, yarn scaling factor {} original {} beta_fast {} beta_slow {} truncate {}, \
                 attention factor {:.6}",
                y.factor,
                y.original_max_position_embeddings,
                y.beta_fast,
                y.beta_slow,
                y.truncate,
                self.rope_attention_factor()
            ),
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
        if self.qk_norm {
            layer += 2 * self.head_dim as u64;
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
            "model_type": self.architecture.model_type(),
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
        match self.architecture {
            Architecture::Llama => {
                m["attention_bias"] = Value::Bool(self.qkv_bias);
                m["mlp_bias"] = Value::Bool(self.mlp_bias);
            }
            Architecture::Qwen3 => m["attention_bias"] = Value::Bool(self.qkv_bias),
            Architecture::Qwen2 => {}
        }
        if let Some(s) = &self.rope_scaling {
            m["rope_scaling"] = rope_scaling_json(s);
        }
        if let Some(d) = &self.declared_dtype {
            m["torch_dtype"] = Value::String(d.clone());
        }
        m
    }
}

/// The `rope_scaling` object of a config file, as transformers reads it. `field` is where it was found
/// (`rope_scaling` or `rope_parameters`), for error messages.
fn parse_rope_scaling(s: &serde_json::Map<String, Value>, origin: &str, field: &str) -> Result<Option<RopeScaling>> {
    let err = |name: &str, msg: String| LarkError::input(format!("{origin}: field `{field}.{name}`"), msg);
    let num = |name: &str| -> Result<Option<f64>> {
        match s.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(x) => x.as_f64().map(Some).ok_or_else(|| err(name, format!("expected a number, got {x}"))),
        }
    };

    let positive = |name: &str, x: f64| -> Result<f64> {
        if x.is_finite() && x > 0.0 {
            Ok(x)
        } else {
            Err(err(name, format!("{x} must be a positive number")))
        }
    };
    let kind = match s.get("rope_type").or_else(|| s.get("type")) {
        None | Some(Value::Null) => "default",
        Some(Value::String(t)) => t.as_str(),
        Some(x) => return Err(err("rope_type", format!("expected a string, got {x}"))),
    };
    let required = |name: &str| -> Result<f64> {
        num(name)?.ok_or_else(|| err(name, format!("missing (rope type `{kind}` needs it)")))
    };
    Ok(match kind {
        "default" => None,
        "llama3" => {
            let factor = positive("factor", required("factor")?)?;
            Some(RopeScaling::Llama3(Llama3RopeScaling {
                factor,
                low_freq_factor: required("low_freq_factor")?,
                high_freq_factor: required("high_freq_factor")?,
                original_max_position_embeddings: required("original_max_position_embeddings")?,
            }))
        }
        "linear" => Some(RopeScaling::Linear { factor: positive("factor", required("factor")?)? }),
        "yarn" => {
            let factor = positive("factor", required("factor")?)?;
            let original = positive("original_max_position_embeddings", required("original_max_position_embeddings")?)?;
            // transformers: `rope_parameters_dict.get("beta_fast") or 32`, so 0 and null mean the default too.
            let beta =
                |name: &str, default: f64| -> Result<f64> { Ok(num(name)?.filter(|&x| x != 0.0).unwrap_or(default)) };
            let truncate = match s.get("truncate") {
                None | Some(Value::Null) => true,
                Some(Value::Bool(b)) => *b,
                Some(x) => return Err(err("truncate", format!("expected true/false, got {x}"))),
            };
            let attention_factor = match num("attention_factor")? {
                Some(a) => Some(positive("attention_factor", a)?),
                None => None,
            };
            Some(RopeScaling::Yarn(YarnRopeScaling {
                factor,
                original_max_position_embeddings: original,
                beta_fast: beta("beta_fast", 32.0)?,
                beta_slow: beta("beta_slow", 1.0)?,
                attention_factor,
                mscale: num("mscale")?,
                mscale_all_dim: num("mscale_all_dim")?,
                truncate,
            }))
        }
        other => {
            return Err(LarkError::Unsupported(format!(
                "{origin}: field `{field}.rope_type`: rope scaling type `{other}` (supported: default, linear, llama3, \
                 yarn)"
            )))
        }
    })
}

/// The `rope_scaling` object of [`ModelConfig::to_hf_json`].
fn rope_scaling_json(s: &RopeScaling) -> Value {
    match s {
        RopeScaling::Llama3(s) => serde_json::json!({
            "rope_type": "llama3", "factor": s.factor, "low_freq_factor": s.low_freq_factor,
            "high_freq_factor": s.high_freq_factor,
            "original_max_position_embeddings": s.original_max_position_embeddings,
        }),
        RopeScaling::Linear { factor } => serde_json::json!({"rope_type": "linear", "factor": factor}),
        RopeScaling::Yarn(y) => {
            let mut m = serde_json::json!({
                "rope_type": "yarn", "factor": y.factor,
                "original_max_position_embeddings": y.original_max_position_embeddings,
                "beta_fast": y.beta_fast, "beta_slow": y.beta_slow, "truncate": y.truncate,
            });
            for (k, v) in
                [("attention_factor", y.attention_factor), ("mscale", y.mscale), ("mscale_all_dim", y.mscale_all_dim)]
            {
                if let Some(v) = v {
                    m[k] = serde_json::json!(v);
                }
            }
            m
        }
    }
}
