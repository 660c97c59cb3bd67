//! How much arithmetic a forward pass is: what `lark bench` divides by time, and what bounds a scoring job's
//! journal chunks by work as well as by tokens (`run::schedule::Chunker`).

use super::ModelConfig;

/// Causal attention FLOPs of one layer over sequences of `lens` tokens: QKᵀ and PV over t(t+1)/2 pairs per
/// head, 2 FLOPs per multiply-add.
pub fn causal_attention_flops(lens: &[usize], num_heads: usize, head_dim: usize) -> f64 {
    lens.iter().map(|&t| 4.0 * (t as f64) * (t as f64 + 1.0) / 2.0 * (head_dim * num_heads) as f64).sum()
}

/// The forward FLOPs of one sequence as a function of its length t: `constant + linear·t + quadratic·t²`
/// (projections and MLP grow with t, causal attention with t(t+1)/2, the LM head with t − 1).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WorkModel {
    pub constant: f64,
    pub linear: f64,
    pub quadratic: f64,
}

impl WorkModel {
    /// Scoring with every position through the LM head.
    pub fn of(c: &ModelConfig) -> WorkModel {
        let (h, d) = (c.hidden_size as f64, c.head_dim as f64);
        let q = c.num_heads as f64 * d;
        let kv = c.num_kv_heads as f64 * d;
        let i = c.intermediate_size as f64;
        let layers = c.num_layers as f64;
        let per_token_layer = 2.0 * (h * (q + 2.0 * kv) + q * h + 3.0 * h * i);
        // causal_attention_flops per layer: 2·q·t(t+1).
        let attention = 2.0 * q * layers;
        let head = 2.0 * h * c.vocab_size as f64;
        WorkModel { constant: -head, linear: layers * per_token_layer + attention + head, quadratic: attention }
    }

    /// FLOPs of one sequence of `t` tokens (0 for none).
    pub fn flops(&self, t: usize) -> f64 {
        let t = t as f64;
        (self.constant + self.linear * t + self.quadratic * t * t).max(0.0)
    }
}

/// Forward FLOPs for scoring one sequence of `t` tokens with every position through the LM head.
pub fn forward_flops(c: &ModelConfig, t: usize) -> f64 {
    WorkModel::of(c).flops(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn work_model_counts_every_term() {
        assert_eq!(forward_flops(&crate::model::random::tiny_config(crate::model::Architecture::Llama), 0), 0.0);
        let c = crate::model::random::tiny_config(crate::model::Architecture::Qwen2);
        let (h, d) = (c.hidden_size as f64, c.head_dim as f64);
        let (q, kv, i) = (c.num_heads as f64 * d, c.num_kv_heads as f64 * d, c.intermediate_size as f64);
        for t in [1usize, 2, 17, 300] {
            let per_layer = 2.0 * (h * (q + 2.0 * kv) + q * h + 3.0 * h * i) * t as f64
                + causal_attention_flops(&[t], c.num_heads, c.head_dim);
            let want = c.num_layers as f64 * per_layer + 2.0 * h * c.vocab_size as f64 * (t as f64 - 1.0);
            let got = forward_flops(&c, t);
            assert!((got - want).abs() <= 1e-9 * want, "t={t}: {got} vs {want}");
        }
    }
}
