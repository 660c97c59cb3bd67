use crate::error::{LarkError, Result};
use crate::model::gguf::convert_gguf;
use crate::model::StoredDtype;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// The .gguf file.
    pub file: PathBuf,
    /// Output model directory.
    pub out_dir: PathBuf,
    /// Storage dtype of the written weights.
    #[arg(long, default_value = "f32")]
    pub dtype: String,
}

pub fn run(a: Args) -> Result<()> {
    let dtype = match a.dtype.as_str() {
        "f32" | "float32" => StoredDtype::F32,
        "bf16" | "bfloat16" => StoredDtype::BF16,
        other => return Err(LarkError::input("--dtype", format!("`{other}` (expected f32 or bf16)"))),
    };
    let s = convert_gguf(&a.file, &a.out_dir, dtype)?;
    for w in &s.warnings {
        eprintln!("warning: {w}");
    }
    let types: Vec<String> = s.tensor_types.iter().map(|(t, n)| format!("{n} {t}")).collect();
    let c = &s.config;
    println!(
        "converted {} → {}: {} layers, hidden {}, {} heads / {} KV, vocab {}, {} tensors ({}) stored as {}",
        a.file.display(),
        s.out_dir.display(),
        c.num_layers,
        c.hidden_size,
        c.num_heads,
        c.num_kv_heads,
        c.vocab_size,
        s.n_tensors,
        types.join(", "),
        dtype.name()
    );
    Ok(())
}
