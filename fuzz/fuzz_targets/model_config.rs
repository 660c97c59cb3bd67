//! `config.json` parsing on arbitrary text: never a panic, and an accepted configuration's derived sizes
//! (tensor shapes, parameter count, rotary frequencies) can be computed without overflow.
#![no_main]

use lark::model::{tensor_specs, ModelConfig};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(c) = ModelConfig::from_json_str(text, "config.json") else { return };
    assert!(c.vocab_size > 0 && c.hidden_size > 0 && c.num_layers > 0 && c.num_kv_heads > 0);
    assert_eq!(c.num_heads % c.num_kv_heads, 0);
    let specs = tensor_specs(&c);
    assert!(specs.iter().all(|(_, shape)| shape.iter().all(|&d| d > 0)));
    let _ = c.parameter_count();
    let _ = c.qkv_width();
    assert_eq!(c.rope_inv_freq().len(), c.head_dim / 2);
    let _ = c.to_hf_json();
});
