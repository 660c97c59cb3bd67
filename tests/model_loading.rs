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
    let s = a.rope_scaling.unwrap();
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
