//! The safetensors loader on arbitrary bytes as `model.safetensors` of a fixed micro Llama (vocab 8, hidden 4,
//! one layer, tied embeddings; fuzz/corpus/safetensors has valid files of it in f32, f16 and bf16):
//! never a panic, and an accepted file yields every tensor the configuration needs with the right shape and
//! exactly as many bytes as its shape and dtype say.
#![no_main]

mod common;

use lark::model::{tensor_specs, Model, WeightStore};
use libfuzzer_sys::fuzz_target;

const CONFIG: &str = r#"{"architectures": ["LlamaForCausalLM"], "vocab_size": 8, "hidden_size": 4,
  "intermediate_size": 4, "num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 1,
  "head_dim": 2, "tie_word_embeddings": true, "max_position_embeddings": 64}"#;

fuzz_target!(|data: &[u8]| {
    let dir = common::scratch("safetensors");
    common::write(&dir.join("config.json"), CONFIG.as_bytes());
    let file = dir.join("model.safetensors");
    common::write(&file, data);
    if let Ok(store) = WeightStore::open_files(&[file]) {
        let _ = (store.dominant_dtype(), store.total_elements(), store.names().count());
    }
    match Model::open(&dir) {
        Ok(m) => {
            for (name, shape) in tensor_specs(&m.config) {
                let t = m.weights.get(&name, &shape).expect("checked by Model::open");
                assert_eq!(t.bytes.len(), t.numel() * t.dtype.size(), "{name}");
                assert_eq!(t.to_f32().len(), t.numel());
                assert_eq!(t.to_bf16().len(), t.numel());
            }
            m.lm_head().expect("tied: the embedding");
        }
        Err(e) => {
            let e = e.to_string();
            assert!(e.contains("model.safetensors"), "error does not name the file: {e}");
        }
    }
});
