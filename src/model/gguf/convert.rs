//! GGUF (llama architecture) → HF model directory: `config.json`, `model.safetensors`, `tokenizer.json`,
//! `tokenizer_config.json`.
//!
//! Everything is validated before anything is written (architecture, sizes, every tensor's name, type and
//! shape); the files are written under temporary names and renamed at the end, `config.json` last, so an
//! interrupted conversion never leaves a directory that looks complete.

use super::dequant::{dequantize, is_supported};
use super::layout::{hf_tensor_name, unpermute_rows};
use super::reader::{GgmlType, GgufFile, TensorInfo};
use super::tokenizer::tokenizer_files;
use crate::error::{LarkError, Result};
use crate::model::{tensor_specs, Architecture, Llama3RopeScaling, ModelConfig, RopeScaling, StoredDtype};
use std::borrow::Cow;
use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

/// Bumped whenever the files `convert-gguf` writes change for the same input (scripts/fetch-fixtures.sh keys
/// its cache on it).
pub const CONVERT_FORMAT_VERSION: u32 = 1;

/// What a conversion produced.
#[derive(Debug)]
pub struct ConvertSummary {
    pub out_dir: PathBuf,
    pub config: ModelConfig,
    /// GGUF tensor type name → number of tensors of that type.
    pub tensor_types: BTreeMap<String, usize>,
    pub n_tensors: usize,
    /// Things the user should know (the conversion still succeeded).
    pub warnings: Vec<String>,
}

/// A tensor to write: where it comes from and what it becomes.
struct Planned<'a> {
    hf_name: String,
    info: &'a TensorInfo,
    shape: Vec<usize>,
    /// Heads to un-permute Q/K rows over (None for every other tensor).
    unpermute_heads: Option<usize>,
}

/// Convert `gguf_path` into `out_dir` with weights stored as `dtype` (F32 or BF16).
pub fn convert_gguf(gguf_path: &Path, out_dir: &Path, dtype: StoredDtype) -> Result<ConvertSummary> {
    if dtype == StoredDtype::F16 {
        return Err(LarkError::Unsupported("convert-gguf --dtype f16 (use f32 or bf16)".into()));
    }
    let f = GgufFile::open(gguf_path)?;
    let config = model_config(&f, dtype)?;
    let plan = plan_tensors(&f, &config)?;
    let tok = tokenizer_files(&f)?;
    let (tok_json, tok_cfg) = (&tok.tokenizer, &tok.config);
    // Never write a model directory whose tokenizer does not load: build it once as every command will.
    let tok_text = serde_json::to_string(tok_json).unwrap_or_default();
    if let Err(e) = crate::text::Tokenizer::from_bytes(tok_text.as_bytes(), "tokenizer.json") {
        return Err(LarkError::input(
            format!("{}: tokenizer.ggml.*", f.origin),
            format!("the tokenizer rebuilt from this metadata does not load: {e}"),
        ));
    }
    if tok.model_vocab_len > config.vocab_size {
        return Err(LarkError::input(
            f.origin.clone(),
            format!("tokenizer has {} tokens but the embedding only {} rows", tok.model_vocab_len, config.vocab_size),
        ));
    }
    let warnings: Vec<String> = tok
        .beyond_vocab
        .iter()
        .filter(|(_, id)| *id as usize >= config.vocab_size)
        .map(|(t, id)| {
            format!(
                "token {t:?} is not in the file's vocabulary; like transformers, the tokenizer maps it to id {id}, \
                 which the model (vocabulary {}) cannot embed",
                config.vocab_size
            )
        })
        .collect();

    std::fs::create_dir_all(out_dir).map_err(|e| LarkError::io(out_dir, e))?;
    let mut cfg_json = config.to_hf_json();
    for (key, meta) in [
        ("bos_token_id", "tokenizer.ggml.bos_token_id"),
        ("eos_token_id", "tokenizer.ggml.eos_token_id"),
        ("pad_token_id", "tokenizer.ggml.padding_token_id"),
    ] {
        if let Some(id) = f.get(meta).and_then(|v| v.as_u64()) {
            cfg_json[key] = serde_json::json!(id);
        }
    }
    let pretty = |v: &serde_json::Value| serde_json::to_string_pretty(v).unwrap_or_default() + "\n";
    let staged = [
        ("model.safetensors", None),
        ("tokenizer.json", Some(tok_text)),
        ("tokenizer_config.json", Some(pretty(tok_cfg))),
        ("config.json", Some(pretty(&cfg_json))),
    ];
    let tmp = |name: &str| out_dir.join(format!(".{name}.partial"));
    let result = (|| -> Result<()> {
        write_safetensors(&f, &plan, dtype, &tmp("model.safetensors"))?;
        for (name, text) in &staged {
            if let Some(text) = text {
                std::fs::write(tmp(name), text).map_err(|e| LarkError::io(tmp(name), e))?;
            }
        }
        for (name, _) in &staged {
            std::fs::rename(tmp(name), out_dir.join(name)).map_err(|e| LarkError::io(out_dir.join(name), e))?;
        }
        Ok(())
    })();
    if result.is_err() {
        for (name, _) in &staged {
            let _ = std::fs::remove_file(tmp(name));
        }
    }
    result?;
    let mut tensor_types = BTreeMap::new();
    for t in &f.tensors {
        *tensor_types.entry(t.ggml_type.name()).or_insert(0) += 1;
    }
    Ok(ConvertSummary { out_dir: out_dir.to_path_buf(), config, tensor_types, n_tensors: plan.len(), warnings })
}

/// The model configuration from `general.architecture` and the `llama.*` keys, checked by parsing the HF
/// config it produces (which bounds every size).
pub fn model_config(f: &GgufFile, dtype: StoredDtype) -> Result<ModelConfig> {
    let arch = f.get("general.architecture").and_then(|v| v.as_str()).unwrap_or("(missing)");
    if arch != "llama" {
        return Err(LarkError::Unsupported(format!(
            "{}: general.architecture `{arch}` (convert-gguf reads llama-architecture files)",
            f.origin
        )));
    }
    let key_err = |key: &str, msg: String| LarkError::input(format!("{}: metadata `{key}`", f.origin), msg);
    let uint = |key: &str| -> Result<Option<usize>> {
        match f.get(key) {
            None => Ok(None),
            Some(v) => match v.as_u64() {
                Some(n) if n > 0 && n <= u32::MAX as u64 => Ok(Some(n as usize)),
                _ => Err(key_err(key, format!("expected a positive integer, found {v:?}"))),
            },
        }
    };
    let required = |key: &str| uint(key)?.ok_or_else(|| key_err(key, "missing".into()));
    let float = |key: &str| -> Result<Option<f64>> {
        match f.get(key) {
            None => Ok(None),
            Some(v) => v.as_f64().map(Some).ok_or_else(|| key_err(key, format!("expected a number, found {v:?}"))),
        }
    };
    let hidden = required("llama.embedding_length")?;
    let layers = required("llama.block_count")?;
    let inter = required("llama.feed_forward_length")?;
    let heads = required("llama.attention.head_count")?;
    let kv_heads = uint("llama.attention.head_count_kv")?.unwrap_or(heads);
    let head_dim = match uint("llama.attention.key_length")? {
        Some(d) => d,
        None if hidden % heads == 0 => hidden / heads,
        None => {
            return Err(key_err(
                "llama.attention.head_count",
                format!("{heads} does not divide embedding_length {hidden}"),
            ))
        }
    };
    if let Some(v) = uint("llama.attention.value_length")? {
        if v != head_dim {
            return Err(LarkError::Unsupported(format!(
                "{}: value head size {v} differs from key head size {head_dim}",
                f.origin
            )));
        }
    }
    if let Some(kind) = f.get("llama.rope.scaling.type").and_then(|v| v.as_str()) {
        if kind != "none" {
            return Err(LarkError::Unsupported(format!("{}: llama.rope.scaling.type `{kind}`", f.origin)));
        }
    }
    let vocab = match f.get("tokenizer.ggml.tokens").and_then(|v| v.as_array()) {
        Some(a) => a.len(),
        None => return Err(key_err("tokenizer.ggml.tokens", "missing".into())),
    };
    let rope_theta = float("llama.rope.freq_base")?.unwrap_or(10000.0);
    // Defaults are transformers' LlamaConfig defaults, which is what it uses for a file without the key.
    let cfg = ModelConfig {
        architecture: Architecture::Llama,
        vocab_size: vocab,
        hidden_size: hidden,
        intermediate_size: inter,
        num_layers: layers,
        num_heads: heads,
        num_kv_heads: kv_heads,
        head_dim,
        rms_norm_eps: float("llama.attention.layer_norm_rms_epsilon")?.unwrap_or(1e-6),
        rope_theta,
        rope_scaling: rope_scaling(f, head_dim, rope_theta)?.map(RopeScaling::Llama3),
        max_position_embeddings: uint("llama.context_length")?.unwrap_or(2048),
        qkv_bias: f.tensor("blk.0.attn_q.bias").is_some(),
        qk_norm: false,
        o_bias: f.tensor("blk.0.attn_q.bias").is_some(),
        mlp_bias: f.tensor("blk.0.ffn_gate.bias").is_some(),
        tie_word_embeddings: f.tensor("output.weight").is_none(),
        declared_dtype: Some(if dtype == StoredDtype::BF16 { "bfloat16" } else { "float32" }.into()),
    };
    // Round-trip through the HF parser: the same bounds and consistency checks as any config.json.
    let checked = ModelConfig::from_json(&cfg.to_hf_json(), &f.origin)?;
    if checked != cfg {
        return Err(LarkError::input(
            f.origin.clone(),
            "model hyper-parameters do not survive a config.json round trip",
        ));
    }
    Ok(cfg)
}

/// llama.cpp stores Llama 3 rope scaling as a `rope_freqs` tensor of per-frequency divisors instead of
/// parameters. We accept it when it equals the divisors of Llama 3's published settings (low 1, high 4,
/// original context 8192) for its largest factor; anything else is refused rather than silently ignored.
fn rope_scaling(f: &GgufFile, head_dim: usize, theta: f64) -> Result<Option<Llama3RopeScaling>> {
    let Some(t) = f.tensor("rope_freqs.weight") else { return Ok(None) };
    let at = || format!("{}: tensor rope_freqs.weight", f.origin);
    if t.ggml_type != GgmlType::F32 || t.numel != head_dim / 2 {
        return Err(LarkError::input(at(), format!("expected {} f32 values", head_dim / 2)));
    }
    let v = dequantize(t, f.tensor_bytes(t), &f.origin)?;
    let factor = v.iter().copied().fold(f32::MIN, f32::max) as f64;
    if v.iter().all(|&x| x == 1.0) {
        return Ok(None);
    }
    let s = Llama3RopeScaling {
        factor,
        low_freq_factor: 1.0,
        high_freq_factor: 4.0,
        original_max_position_embeddings: 8192.0,
    };
    let (low_wl, high_wl) = (
        s.original_max_position_embeddings / s.low_freq_factor,
        s.original_max_position_embeddings / s.high_freq_factor,
    );
    for (i, &x) in v.iter().enumerate() {
        let freq = 1.0 / theta.powf((2 * i) as f64 / head_dim as f64);
        let wavelen = 2.0 * std::f64::consts::PI / freq;
        let expect = if wavelen < high_wl {
            1.0
        } else if wavelen > low_wl {
            factor
        } else {
            let smooth = (s.original_max_position_embeddings / wavelen - s.low_freq_factor)
                / (s.high_freq_factor - s.low_freq_factor);
            1.0 / ((1.0 - smooth) / factor + smooth)
        };
        if ((x as f64 - expect) / expect).abs() > 1e-4 {
            return Err(LarkError::Unsupported(format!(
                "{}: rope frequency factors that are not Llama 3 scaling (low 1, high 4, original 8192)",
                at()
            )));
        }
    }
    Ok(Some(s))
}

/// Map every GGUF tensor to its HF name and shape and check the set against what the configuration needs.
fn plan_tensors<'a>(f: &'a GgufFile, config: &ModelConfig) -> Result<Vec<Planned<'a>>> {
    let specs: HashMap<String, Vec<usize>> = tensor_specs(config).into_iter().collect();
    let mut plan = Vec::with_capacity(f.tensors.len());
    let mut gguf_of: HashMap<String, &str> = HashMap::new();
    for t in &f.tensors {
        if t.name == "rope_freqs.weight" {
            continue; // folded into the config by `rope_scaling`
        }
        let at = || format!("{}: tensor {}", f.origin, t.name);
        let hf = hf_tensor_name(&t.name).ok_or_else(|| {
            LarkError::Unsupported(format!("{}: no Hugging Face Llama counterpart for this tensor", at()))
        })?;
        let shape = t.shape();
        match specs.get(&hf) {
            None => return Err(LarkError::input(at(), format!("{hf} is not part of a model with this configuration"))),
            Some(want) if *want != shape => {
                return Err(LarkError::input(at(), format!("shape {shape:?} (as {hf}), expected {want:?}")))
            }
            Some(_) => {}
        }
        if !is_supported(t.ggml_type) {
            return Err(LarkError::Unsupported(format!(
                "{}: ggml type {} (convert-gguf reads F32, F16, BF16, Q8_0, Q4_0, Q4_1)",
                at(),
                t.ggml_type.name()
            )));
        }
        let unpermute_heads = if hf.contains(".self_attn.q_proj.") {
            Some(config.num_heads)
        } else if hf.contains(".self_attn.k_proj.") {
            Some(config.num_kv_heads)
        } else {
            None
        };
        gguf_of.insert(hf.clone(), &t.name);
        plan.push(Planned { hf_name: hf, info: t, shape, unpermute_heads });
    }
    for (name, _) in tensor_specs(config) {
        if !gguf_of.contains_key(&name) {
            return Err(LarkError::input(
                f.origin.clone(),
                format!("no tensor for {name} (the configuration needs it)"),
            ));
        }
    }
    Ok(plan)
}

/// One output tensor, dequantised only when the writer asks for its bytes (one tensor in memory at a time).
struct LazyTensor<'a> {
    f: &'a GgufFile,
    p: &'a Planned<'a>,
    dtype: StoredDtype,
    error: &'a RefCell<Option<LarkError>>,
}

impl LazyTensor<'_> {
    fn values(&self) -> Result<Vec<f32>> {
        let t = self.p.info;
        let v = dequantize(t, self.f.tensor_bytes(t), &self.f.origin)?;
        match self.p.unpermute_heads {
            None => Ok(v),
            Some(heads) => {
                let row_len = if self.p.shape.len() == 2 { self.p.shape[1] } else { 1 };
                unpermute_rows(&v, row_len, heads).ok_or_else(|| {
                    LarkError::input(
                        format!("{}: tensor {}", self.f.origin, t.name),
                        format!("{} rows do not split into {heads} heads of even size", v.len() / row_len),
                    )
                })
            }
        }
    }
}

impl safetensors::View for LazyTensor<'_> {
    fn dtype(&self) -> safetensors::Dtype {
        match self.dtype {
            StoredDtype::BF16 => safetensors::Dtype::BF16,
            _ => safetensors::Dtype::F32,
        }
    }
    fn shape(&self) -> &[usize] {
        &self.p.shape
    }
    fn data(&self) -> Cow<'_, [u8]> {
        let n = self.data_len();
        match self.values() {
            Ok(v) => Cow::Owned(match self.dtype {
                StoredDtype::BF16 => v.iter().flat_map(|&x| half::bf16::from_f32(x).to_le_bytes()).collect(),
                _ => v.iter().flat_map(|&x| x.to_le_bytes()).collect(),
            }),
            Err(e) => {
                // The writer cannot fail from here: remember the error, write zeros, and discard the file after.
                self.error.borrow_mut().get_or_insert(e);
                Cow::Owned(vec![0u8; n])
            }
        }
    }
    fn data_len(&self) -> usize {
        self.p.info.numel * self.dtype.size()
    }
}

fn write_safetensors(f: &GgufFile, plan: &[Planned<'_>], dtype: StoredDtype, path: &Path) -> Result<()> {
    let error = RefCell::new(None);
    let views = plan.iter().map(|p| (p.hf_name.clone(), LazyTensor { f, p, dtype, error: &error }));
    let meta = HashMap::from([("format".to_string(), "pt".to_string())]);
    safetensors::serialize_to_file(views, Some(meta), path)
        .map_err(|e| LarkError::Other(format!("{}: writing safetensors: {e}", path.display())))?;
    if let Some(e) = error.into_inner() {
        let _ = std::fs::remove_file(path);
        return Err(e);
    }
    Ok(())
}
