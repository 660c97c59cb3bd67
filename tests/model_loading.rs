//! Config parsing in both rope styles, and loader errors that must name the file and tensor (never panic).

use lark::model::random::{tiny_config, write_random_model};
use lark::model::{Architecture, Model, ModelConfig, StoredDtype};
use std::path::Path;

fn cfg(json: &str) -> lark::Result<ModelConfig> {
    ModelConfig::from_json_str(json, "config.json")
}

const QWEN: &str = r#"{"architectures":["Qwen2ForCausalLM"],"vocab_size":151936,"hidden_size":1536,
 "intermediate_size":8960,"num_hidden_layers":28,"num_attention_heads":12,"num_key_value_heads":2,
 "rms_norm_eps":1e-6,"rope_theta":1000000.0,"tie_word_embeddings":true,"max_position_embeddings":32768}"#;

#[test]
fn qwen2_config() {
    let c = cfg(QWEN).unwrap();
    assert_eq!(c.architecture, Architecture::Qwen2);
    assert_eq!(c.head_dim, 128);
    assert!(c.qkv_bias && !c.o_bias && c.tie_word_embeddings);
    assert_eq!(c.rope_theta, 1e6);
    // Qwen2.5-1.5B has 1.54 B parameters.
    assert!((c.parameter_count() as f64 / 1e9 - 1.54).abs() < 0.01, "{}", c.parameter_count());
}

#[test]
fn llama3_rope_both_styles() {
    let top = r#"{"architectures":["LlamaForCausalLM"],"vocab_size":128256,"hidden_size":3072,"intermediate_size":8192,
      "num_hidden_layers":28,"num_attention_heads":24,"num_key_value_heads":8,"head_dim":128,"rope_theta":500000.0,
      "rope_scaling":{"factor":32.0,"high_freq_factor":4.0,"low_freq_factor":1.0,"original_max_position_embeddings":8192,
      "rope_type":"llama3"},"tie_word_embeddings":true}"#;
    let nested = r#"{"architectures":["LlamaForCausalLM"],"vocab_size":128256,"hidden_size":3072,"intermediate_size":8192,
      "num_hidden_layers":28,"num_attention_heads":24,"num_key_value_heads":8,"head_dim":128,
      "rope_parameters":{"rope_theta":500000.0,"factor":32.0,"high_freq_factor":4.0,"low_freq_factor":1.0,
      "original_max_position_embeddings":8192,"rope_type":"llama3"},"tie_word_embeddings":true}"#;
    let a = cfg(top).unwrap();
    let b = cfg(nested).unwrap();
    assert_eq!(a, b);
    let Some(lark::model::RopeScaling::Llama3(s)) = a.rope_scaling else { panic!("llama3 scaling expected") };
    assert_eq!((s.factor, s.low_freq_factor, s.high_freq_factor), (32.0, 1.0, 4.0));
    // High frequencies are untouched, the lowest are divided by the factor.
    let plain = ModelConfig { rope_scaling: None, ..a.clone() }.rope_inv_freq();
    let scaled = a.rope_inv_freq();
    assert_eq!(plain[0], scaled[0]);
    assert!((plain[63] / scaled[63] - 32.0).abs() < 1e-9);
    // Llama-3.2-3B: 3.21 B parameters.
    assert!((a.parameter_count() as f64 / 1e9 - 3.21).abs() < 0.01);
}

#[test]
fn config_errors_name_the_field() {
    let e = cfg(r#"{"architectures":["MistralForCausalLM"]}"#).unwrap_err().to_string();
    assert!(e.contains("MistralForCausalLM") && e.contains("config.json"), "{e}");
    let e = cfg(&QWEN.replace("\"hidden_size\":1536", "\"hidden_size\":\"big\"")).unwrap_err().to_string();
    assert!(e.contains("hidden_size"), "{e}");
    let e = cfg(&QWEN.replace("\"num_hidden_layers\":28", "\"num_hidden_layers\":100000000")).unwrap_err().to_string();
    assert!(e.contains("num_hidden_layers") && e.contains("out of range"), "{e}");
    let e = cfg(&QWEN.replace("\"num_key_value_heads\":2", "\"num_key_value_heads\":5")).unwrap_err().to_string();
    assert!(e.contains("num_key_value_heads"), "{e}");
    let e = cfg("{not json").unwrap_err().to_string();
    assert!(e.contains("config.json:1"), "{e}");
    let e = cfg(&QWEN.replace("\"rope_theta\":1000000.0", "\"rope_scaling\":{\"rope_type\":\"yarn\",\"factor\":4}"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("yarn"), "{e}");
}

fn tiny(dir: &Path, dtype: StoredDtype) {
    write_random_model(dir, &tiny_config(Architecture::Qwen2), dtype, 3).unwrap();
}

#[test]
fn opens_every_stored_dtype() {
    for dtype in [StoredDtype::F32, StoredDtype::F16, StoredDtype::BF16] {
        let d = tempfile::tempdir().unwrap();
        tiny(d.path(), dtype);
        let m = Model::open(d.path()).unwrap();
        assert_eq!(m.weights.dominant_dtype(), Some(dtype));
        assert_eq!(m.weights.total_elements(), m.config.parameter_count());
    }
}

#[test]
fn missing_tensor_and_wrong_shape_are_named() {
    let d = tempfile::tempdir().unwrap();
    tiny(d.path(), StoredDtype::F32);
    // Declare one more layer than the file has.
    let cfg_path = d.path().join("config.json");
    let text = std::fs::read_to_string(&cfg_path).unwrap();
    std::fs::write(&cfg_path, text.replace("\"num_hidden_layers\": 2", "\"num_hidden_layers\": 3")).unwrap();
    let e = Model::open(d.path()).err().unwrap().to_string();
    assert!(e.contains("model.layers.2.") && e.contains("missing") && e.contains("model.safetensors"), "{e}");
    // A wrong hidden size gives a shape error naming the tensor.
    std::fs::write(&cfg_path, text.replace("\"intermediate_size\": 83", "\"intermediate_size\": 84")).unwrap();
    let e = Model::open(d.path()).err().unwrap().to_string();
    assert!(e.contains("mlp.gate_proj.weight") && e.contains("shape"), "{e}");
}

#[test]
fn truncated_and_malformed_files_are_errors() {
    let d = tempfile::tempdir().unwrap();
    tiny(d.path(), StoredDtype::BF16);
    let st = d.path().join("model.safetensors");
    let bytes = std::fs::read(&st).unwrap();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("truncated", bytes[..bytes.len() - 100].to_vec()),
        ("empty", vec![]),
        ("header length beyond file", {
            let mut b = bytes.clone();
            b[..8].copy_from_slice(&(1u64 << 40).to_le_bytes());
            b
        }),
        ("garbage header", {
            let mut b = bytes.clone();
            b[8..16].copy_from_slice(b"!!!!!!!!");
            b
        }),
    ];
    for (what, data) in cases {
        std::fs::write(&st, &data).unwrap();
        let e = Model::open(d.path()).err().unwrap_or_else(|| panic!("{what}: accepted")).to_string();
        assert!(e.contains("model.safetensors"), "{what}: {e}");
    }
    // Overlapping offsets: two tensors pointing at the same bytes.
    let header = r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#;
    let mut b = (header.len() as u64).to_le_bytes().to_vec();
    b.extend_from_slice(header.as_bytes());
    b.extend_from_slice(&[0u8; 16]);
    std::fs::write(&st, &b).unwrap();
    let e = Model::open(d.path()).err().unwrap().to_string();
    assert!(e.contains("model.safetensors"), "{e}");
}

#[test]
fn sharded_index() {
    let d = tempfile::tempdir().unwrap();
    tiny(d.path(), StoredDtype::F32);
    // Re-shard: move the file and write an index that points every tensor at it.
    std::fs::rename(d.path().join("model.safetensors"), d.path().join("model-00001-of-00001.safetensors")).unwrap();
    let m = {
        let store = lark::model::WeightStore::open_files(&[d.path().join("model-00001-of-00001.safetensors")]).unwrap();
        let map: serde_json::Map<String, serde_json::Value> =
            store.names().map(|n| (n.to_string(), "model-00001-of-00001.safetensors".into())).collect();
        serde_json::json!({"metadata": {}, "weight_map": map})
    };
    std::fs::write(d.path().join("model.safetensors.index.json"), m.to_string()).unwrap();
    Model::open(d.path()).unwrap();
    // An index naming a tensor that is not in its shard.
    let mut bad = m.clone();
    bad["weight_map"]["model.extra.weight"] = "model-00001-of-00001.safetensors".into();
    std::fs::write(d.path().join("model.safetensors.index.json"), bad.to_string()).unwrap();
    let e = Model::open(d.path()).err().unwrap().to_string();
    assert!(e.contains("model.extra.weight"), "{e}");
}

#[test]
fn unsupported_dtype_is_named() {
    let d = tempfile::tempdir().unwrap();
    tiny(d.path(), StoredDtype::F32);
    let header = r#"{"model.embed_tokens.weight":{"dtype":"I64","shape":[1],"data_offsets":[0,8]}}"#;
    let mut b = (header.len() as u64).to_le_bytes().to_vec();
    b.extend_from_slice(header.as_bytes());
    b.extend_from_slice(&[0u8; 8]);
    std::fs::write(d.path().join("model.safetensors"), &b).unwrap();
    let e = Model::open(d.path()).err().unwrap().to_string();
    assert!(e.contains("embed_tokens") && e.contains("I64"), "{e}");
}

/// The published Qwen3-0.6B config.json (transformers 4.51 style: top-level rope_theta, `rope_scaling: null`).
const QWEN3_06B: &str = r#"{"architectures":["Qwen3ForCausalLM"],"attention_bias":false,"attention_dropout":0.0,
 "bos_token_id":151643,"eos_token_id":151645,"head_dim":128,"hidden_act":"silu","hidden_size":1024,
 "initializer_range":0.02,"intermediate_size":3072,"max_position_embeddings":40960,"max_window_layers":28,
 "model_type":"qwen3","num_attention_heads":16,"num_hidden_layers":28,"num_key_value_heads":8,"rms_norm_eps":1e-06,
 "rope_scaling":null,"rope_theta":1000000,"sliding_window":null,"tie_word_embeddings":true,"torch_dtype":"bfloat16",
 "transformers_version":"4.51.0","use_cache":true,"use_sliding_window":false,"vocab_size":151936}"#;

#[test]
fn qwen3_config_fields() {
    let c = cfg(QWEN3_06B).unwrap();
    assert_eq!(c.architecture, Architecture::Qwen3);
    assert_eq!((c.hidden_size, c.num_heads, c.num_kv_heads, c.head_dim), (1024, 16, 8, 128));
    assert!(c.qk_norm && !c.qkv_bias && !c.o_bias && c.tie_word_embeddings);
    assert_eq!(c.num_heads * c.head_dim, 2048, "q is wider than hidden");
    // Its weights: per-head q/k norms of [head_dim], q_proj [2048, 1024], o_proj [1024, 2048].
    let specs = lark::model::tensor_specs(&c);
    let shape = |n: &str| specs.iter().find(|(k, _)| k == n).map(|(_, s)| s.clone());
    assert_eq!(shape("model.layers.0.self_attn.q_norm.weight"), Some(vec![128]));
    assert_eq!(shape("model.layers.27.self_attn.k_norm.weight"), Some(vec![128]));
    assert_eq!(shape("model.layers.0.self_attn.q_proj.weight"), Some(vec![2048, 1024]));
    assert_eq!(shape("model.layers.0.self_attn.o_proj.weight"), Some(vec![1024, 2048]));
    assert_eq!(shape("model.layers.0.self_attn.q_proj.bias"), None);
    assert_eq!(c, lark::model::presets::preset("qwen3-0.6b").unwrap());
    // attention_bias biases q, k, v and o, as transformers' Qwen3Attention does.
    let b = cfg(&QWEN3_06B.replace("\"attention_bias\":false", "\"attention_bias\":true")).unwrap();
    assert!(b.qkv_bias && b.o_bias);
    // A config that turns the sliding window on is refused, naming the field.
    let e = cfg(&QWEN3_06B.replace("\"use_sliding_window\":false", "\"use_sliding_window\":true")).unwrap_err();
    assert!(e.to_string().contains("use_sliding_window"), "{e}");
}

/// YaRN as the Qwen3 model cards tell users to add it, in both config styles, against transformers 5.24's
/// `_compute_yarn_parameters` for the same config (values printed by it, float32).
#[test]
fn yarn_rope_both_styles_match_transformers() {
    let yarn = r#"{"rope_type":"yarn","factor":4.0,"original_max_position_embeddings":32768}"#;
    let top = QWEN3_06B.replace("\"rope_scaling\":null", &format!("\"rope_scaling\":{yarn}"));
    let nested = QWEN3_06B.replace("\"rope_scaling\":null,", "").replace(
        "\"rope_theta\":1000000,",
        "\"rope_parameters\":{\"rope_type\":\"yarn\",\"rope_theta\":1000000.0,\"factor\":4.0,\
         \"original_max_position_embeddings\":32768},",
    );
    let (a, b) = (cfg(&top).unwrap(), cfg(&nested).unwrap());
    assert_eq!(a, b);
    let Some(lark::model::RopeScaling::Yarn(y)) = a.rope_scaling else { panic!("yarn expected") };
    assert_eq!((y.beta_fast, y.beta_slow, y.truncate), (32.0, 1.0, true), "defaults");
    assert!((a.rope_attention_factor() - 1.138629436111989).abs() < 1e-15);
    let hf: [(usize, f32); 7] = [
        (0, 1.0),
        (10, 0.115_478_2),
        (20, 0.013_335_215),
        (30, 0.001_064_361),
        (40, 4.445_698_5e-5),
        (50, 5.133_812_5e-6),
        (63, 3.102_344_4e-7),
    ];
    let ours = a.rope_inv_freq();
    for (i, want) in hf {
        assert!(((ours[i] as f32 - want) / want).abs() < 1e-6, "inv_freq[{i}]: {} vs {want}", ours[i]);
    }
    assert_eq!(a.context_length(), 131072);
    // truncate false moves the ramp's ends off whole dimensions; an explicit attention_factor is used as is.
    let c = cfg(&top.replace("32768}", "32768,\"truncate\":false,\"attention_factor\":0.8}")).unwrap();
    assert_eq!(c.rope_attention_factor(), 0.8);
    assert!(((c.rope_inv_freq()[30] as f32 - 0.001_079_237_7) / 0.001_079_237_7).abs() < 1e-6);
    // mscale and mscale_all_dim: get_mscale(4, 1) / get_mscale(4, 0.5).
    let m = cfg(&top.replace("32768}", "32768,\"mscale\":1.0,\"mscale_all_dim\":0.5}")).unwrap();
    let want = (0.1 * 4f64.ln() + 1.0) / (0.05 * 4f64.ln() + 1.0);
    assert!((m.rope_attention_factor() - want).abs() < 1e-15);
    let shown = a.rope_description();
    assert!(shown.contains("yarn") && shown.contains("factor 4") && shown.contains("original 32768"), "{shown}");
}

#[test]
fn linear_rope_and_refused_types() {
    let lin = cfg(&QWEN3_06B.replace("\"rope_scaling\":null", "\"rope_scaling\":{\"type\":\"linear\",\"factor\":2.0}"))
        .unwrap();
    let plain = cfg(QWEN3_06B).unwrap();
    for (a, b) in lin.rope_inv_freq().iter().zip(plain.rope_inv_freq()) {
        assert!((a * 2.0 - b).abs() <= 1e-15 * b);
    }
    assert_eq!(lin.rope_attention_factor(), 1.0);
    for kind in ["dynamic", "longrope", "ntk"] {
        let j = QWEN3_06B
            .replace("\"rope_scaling\":null", &format!("\"rope_scaling\":{{\"rope_type\":\"{kind}\",\"factor\":2.0}}"));
        let e = cfg(&j).unwrap_err().to_string();
        assert!(e.contains(&format!("`{kind}`")) && e.contains("supported: default, linear, llama3, yarn"), "{e}");
    }
}
