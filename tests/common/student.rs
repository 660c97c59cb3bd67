//! A small random-weight Llama carrying SmolLM2's real tokenizer and chat template: the text path is real and a
//! whole `lark run` over the example pool takes seconds. Real-model numbers are checked by golden_parity.rs.
#![allow(dead_code)]

use lark::model::random::{tiny_config, write_random_model};
use lark::model::{Architecture, StoredDtype};

pub fn student() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    write_student(dir.path());
    dir
}

/// Write the student model into `dir` (created if needed).
pub fn write_student(dir: &std::path::Path) {
    std::fs::create_dir_all(dir).unwrap();
    let mut cfg = tiny_config(Architecture::Llama);
    cfg.vocab_size = 49152;
    write_random_model(dir, &cfg, StoredDtype::BF16, 5).unwrap();
    let smol = super::fixtures::smollm2_dir();
    for f in ["tokenizer.json", "tokenizer_config.json"] {
        std::fs::copy(smol.join(f), dir.join(f)).unwrap();
    }
}

/// The student with the Qwen3 chat template (tools, tool calls, thinking) as its `chat_template.jinja`: SmolLM2's
/// tokenizer has the ChatML tokens it writes.
pub fn tool_student() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    write_student(dir.path());
    let cfg: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(super::fixtures::qwen3_tokenizer_dir().join("tokenizer_config.json")).unwrap(),
    )
    .unwrap();
    std::fs::write(dir.path().join("chat_template.jinja"), cfg["chat_template"].as_str().unwrap()).unwrap();
    dir
}
