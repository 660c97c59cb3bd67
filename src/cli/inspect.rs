use crate::error::Result;
use crate::model::Model;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// Model directory (config.json + safetensors).
    #[arg(long)]
    pub model: PathBuf,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

pub fn run(a: Args) -> Result<()> {
    let model = Model::open(&a.model)?;
    let c = &model.config;
    let dtype = model.weights.dominant_dtype().map(|d| d.name()).unwrap_or("?");
    let rope = c.rope_description();
    if a.json {
        let v = serde_json::json!({
            "dir": model.dir, "config": c, "parameters": c.parameter_count(), "dtype": dtype,
        });
        println!("{}", serde_json::to_string_pretty(&v).expect("serialisable"));
        return Ok(());
    }
    println!("model          {}", model.dir.display());
    println!("architecture   {}", c.architecture.hf_name());
    println!("layers         {}", c.num_layers);
    println!("hidden size    {}", c.hidden_size);
    println!("intermediate   {}", c.intermediate_size);
    println!(
        "heads          {} query / {} key-value (GQA group {})",
        c.num_heads,
        c.num_kv_heads,
        c.num_heads / c.num_kv_heads
    );
    println!("head_dim       {}", c.head_dim);
    println!("vocab          {}", c.vocab_size);
    println!("parameters     {} ({:.1} M)", c.parameter_count(), c.parameter_count() as f64 / 1e6);
    println!("dtype          {dtype}");
    println!("context length {}", c.max_position_embeddings);
    println!("rope           {rope}");
    println!("tied embedding {}", if c.tie_word_embeddings { "yes" } else { "no" });
    println!("biases         qkv {} / o {} / mlp {}", c.qkv_bias, c.o_bias, c.mlp_bias);
    Ok(())
}
