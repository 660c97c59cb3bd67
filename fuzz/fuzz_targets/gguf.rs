//! The GGUF reader and `convert-gguf` on arbitrary bytes: never a panic; every tensor of an accepted file
//! dequantises to its element count; and a file that converts gives a model directory that `Model::open` and
//! the tokenizer loader accept (fuzz/corpus/gguf has a tiny llama that converts).
#![no_main]

mod common;

use lark::model::gguf::{convert_gguf, dequantize, model_config, GgufFile};
use lark::model::{Model, StoredDtype};
use lark::text::Tokenizer;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(f) = GgufFile::from_bytes(data.to_vec(), "fuzz.gguf") else { return };
    for t in &f.tensors {
        if let Ok(v) = dequantize(t, f.tensor_bytes(t), &f.origin) {
            assert_eq!(v.len(), t.numel, "{}", t.name);
        }
    }
    if model_config(&f, StoredDtype::F32).is_err() {
        return;
    }
    let dir = common::scratch("gguf");
    let path = dir.join("model.gguf");
    common::write(&path, data);
    let out = dir.join("out");
    match convert_gguf(&path, &out, StoredDtype::BF16) {
        Ok(_) => {
            if let Err(e) = Model::open(&out) {
                panic!("converted but does not open: {e}");
            }
            if let Err(e) = Tokenizer::open(out.join("tokenizer.json")) {
                panic!("converted tokenizer does not load: {e}");
            }
        }
        Err(e) => {
            let e = e.to_string();
            assert!(!out.join("config.json").exists(), "a failed conversion left config.json: {e}");
        }
    }
});
