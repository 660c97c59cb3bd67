//! Exact shapes of the students users distil into (REFERENCES.md), for `lark bench --random-weights`.

use super::{Architecture, Llama3RopeScaling, ModelConfig, RopeScaling};

pub const PRESET_NAMES: &[&str] =
    &["qwen2.5-1.5b", "qwen2.5-7b", "llama-3.2-3b", "smollm2", "qwen3-0.6b", "qwen3-1.7b", "qwen3-4b", "qwen3-8b"];

#[allow(clippy::too_many_arguments)]
fn shape(
    arch: Architecture,
    vocab: usize,
    hidden: usize,
    inter: usize,
    layers: usize,
    heads: usize,
    kv: usize,
    theta: f64,
    tied: bool,
) -> ModelConfig {
    ModelConfig {
        architecture: arch,
        vocab_size: vocab,
        hidden_size: hidden,
        intermediate_size: inter,
        num_layers: layers,
        num_heads: heads,
        num_kv_heads: kv,
        head_dim: hidden / heads,
        rms_norm_eps: 1e-6,
        rope_theta: theta,
        rope_scaling: None,
        max_position_embeddings: 32768,
        qkv_bias: arch == Architecture::Qwen2,
        qk_norm: arch == Architecture::Qwen3,
        o_bias: false,
        mlp_bias: false,
        tie_word_embeddings: tied,
        declared_dtype: Some("bfloat16".into()),
    }
}

/// The configuration of a named preset.
pub fn preset(name: &str) -> Option<ModelConfig> {
    Some(match name {
        "qwen2.5-1.5b" => shape(Architecture::Qwen2, 151936, 1536, 8960, 28, 12, 2, 1e6, true),
        "qwen2.5-7b" => shape(Architecture::Qwen2, 152064, 3584, 18944, 28, 28, 4, 1e6, false),
        "llama-3.2-3b" => {
            let mut c = shape(Architecture::Llama, 128256, 3072, 8192, 28, 24, 8, 5e5, true);
            c.rms_norm_eps = 1e-5;
            c.rope_scaling = Some(RopeScaling::Llama3(Llama3RopeScaling {
                factor: 32.0,
                low_freq_factor: 1.0,
                high_freq_factor: 4.0,
                original_max_position_embeddings: 8192.0,
            }));
            c.max_position_embeddings = 131072;
            c
        }
        "smollm2" => {
            let mut c = shape(Architecture::Llama, 49152, 576, 1536, 30, 9, 3, 1e5, true);
            c.rms_norm_eps = 1e-5;
            c.max_position_embeddings = 8192;
            c
        }
        // Qwen3 dense (the published config.json files): head_dim 128 whatever hidden/heads is, 8 kv heads,
        // rope_theta 1e6, rms_norm_eps 1e-6, max_position_embeddings 40960, no attention bias.
        "qwen3-0.6b" => qwen3(1024, 3072, 28, 16, true),
        "qwen3-1.7b" => qwen3(2048, 6144, 28, 16, true),
        "qwen3-4b" => qwen3(2560, 9728, 36, 32, true),
        "qwen3-8b" => qwen3(4096, 12288, 36, 32, false),
        _ => return None,
    })
}

fn qwen3(hidden: usize, inter: usize, layers: usize, heads: usize, tied: bool) -> ModelConfig {
    let mut c = shape(Architecture::Qwen3, 151936, hidden, inter, layers, heads, 8, 1e6, tied);
    c.head_dim = 128;
    c.max_position_embeddings = 40960;
    c
}

/// Mean trajectory lengths (tokens) of the 11 teachers of the released RSR pool (REFERENCES.md); a problem
/// has 3 rollouts of each: 33 trajectories, 294,105 tokens.
pub const RSR_TEACHER_MEAN_LENGTHS: [usize; 11] =
    [12078, 12571, 2552, 8798, 9070, 10887, 10993, 3823, 3643, 10474, 13146];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preset_parameter_counts() {
        let b = |n: &str| preset(n).unwrap().parameter_count() as f64 / 1e9;
        assert!((b("qwen2.5-1.5b") - 1.54).abs() < 0.01);
        assert!((b("qwen2.5-7b") - 7.62).abs() < 0.01);
        assert!((b("llama-3.2-3b") - 3.21).abs() < 0.01);
        assert!((b("smollm2") - 0.1348).abs() < 0.001);
        // Qwen3's model cards: 0.6B, 1.7B, 4B, 8.2B parameters (embedding counted once when tied).
        assert!((b("qwen3-0.6b") - 0.596).abs() < 0.001, "{}", b("qwen3-0.6b"));
        assert!((b("qwen3-1.7b") - 1.721).abs() < 0.001, "{}", b("qwen3-1.7b"));
        assert!((b("qwen3-4b") - 4.022).abs() < 0.001, "{}", b("qwen3-4b"));
        assert!((b("qwen3-8b") - 8.191).abs() < 0.001, "{}", b("qwen3-8b"));
        assert_eq!(RSR_TEACHER_MEAN_LENGTHS.iter().sum::<usize>() * 3, 294_105);
    }
}
