//! llama.cpp tensor names → Hugging Face names, and the inverse of llama.cpp's Q/K row permutation.

/// The HF name of a llama-architecture GGUF tensor, or None when it has no HF counterpart.
pub fn hf_tensor_name(gguf: &str) -> Option<String> {
    match gguf {
        "token_embd.weight" => return Some("model.embed_tokens.weight".into()),
        "output_norm.weight" => return Some("model.norm.weight".into()),
        "output.weight" => return Some("lm_head.weight".into()),
        _ => {}
    }
    let rest = gguf.strip_prefix("blk.")?;
    let (layer, rest) = rest.split_once('.')?;
    // Only a plain decimal layer number ("07" or "+7" would alias another layer).
    if layer.is_empty() || !layer.bytes().all(|b| b.is_ascii_digit()) || (layer.len() > 1 && layer.starts_with('0')) {
        return None;
    }
    let (module, kind) = rest.rsplit_once('.')?;
    if kind != "weight" && kind != "bias" {
        return None;
    }
    let hf = match module {
        "attn_norm" => "input_layernorm",
        "attn_q" => "self_attn.q_proj",
        "attn_k" => "self_attn.k_proj",
        "attn_v" => "self_attn.v_proj",
        "attn_output" => "self_attn.o_proj",
        "ffn_norm" => "post_attention_layernorm",
        "ffn_gate" => "mlp.gate_proj",
        "ffn_up" => "mlp.up_proj",
        "ffn_down" => "mlp.down_proj",
        _ => return None,
    };
    Some(format!("model.layers.{layer}.{hf}.{kind}"))
}

/// Undo llama.cpp's rotary permutation of Q or K rows.
///
/// llama.cpp's converter stores `w.reshape(n_head, 2, half, rest).swapaxes(1, 2)`: within each head, HF row
/// `s * half + j` (the two rotate-half halves) becomes GGUF row `j * 2 + s` (interleaved pairs). This maps back:
/// `hf[h, s, j] = gguf[h, j, s]`, the same as transformers' `_reverse_permute_weights`. `n_head` is the number
/// of query heads for Q and of key/value heads for K; `row_len` is 1 for a bias. Returns None when the rows do
/// not split into `n_head` heads of even size.
pub fn unpermute_rows<T: Copy>(data: &[T], row_len: usize, n_head: usize) -> Option<Vec<T>> {
    if row_len == 0 || n_head == 0 || !data.len().is_multiple_of(row_len) {
        return None;
    }
    let rows = data.len() / row_len;
    if !rows.is_multiple_of(n_head) || !(rows / n_head).is_multiple_of(2) {
        return None;
    }
    let head = rows / n_head;
    let half = head / 2;
    let mut out = Vec::with_capacity(data.len());
    for h in 0..n_head {
        for s in 0..2 {
            for j in 0..half {
                let src = h * head + j * 2 + s;
                out.extend_from_slice(&data[src * row_len..(src + 1) * row_len]);
            }
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// llama.cpp's forward permutation, written as its Python reads.
    fn permute<T: Copy>(w: &[T], row_len: usize, n_head: usize) -> Vec<T> {
        let rows = w.len() / row_len;
        let half = rows / n_head / 2;
        // reshape(n_head, 2, half, row_len).swapaxes(1, 2) → index [h][j][s] reads source [h][s][j].
        let mut out = Vec::new();
        for h in 0..n_head {
            for j in 0..half {
                for s in 0..2 {
                    let src = (h * 2 + s) * half + j;
                    out.extend_from_slice(&w[src * row_len..(src + 1) * row_len]);
                }
            }
        }
        out
    }

    #[test]
    fn unpermute_inverts_llama_cpp_permute() {
        for (n_head, head_dim, row_len) in [(1, 2, 1), (3, 8, 5), (2, 64, 3), (9, 64, 1)] {
            let w: Vec<u32> = (0..(n_head * head_dim * row_len) as u32).collect();
            let p = permute(&w, row_len, n_head);
            assert_ne!(head_dim > 2, p == w, "permutation should move rows when head_dim > 2");
            assert_eq!(unpermute_rows(&p, row_len, n_head).unwrap(), w);
        }
    }

    #[test]
    fn unpermute_known_small_case() {
        // One head of 4 rows: HF rows [a0 a1 | b0 b1] are stored interleaved as [a0 b0 a1 b1].
        let gguf = ['a', 'c', 'b', 'd'];
        assert_eq!(unpermute_rows(&gguf, 1, 1).unwrap(), vec!['a', 'b', 'c', 'd']);
    }

    #[test]
    fn unpermute_rejects_bad_shapes() {
        assert!(unpermute_rows(&[0u8; 6], 1, 4).is_none());
        assert!(unpermute_rows(&[0u8; 6], 1, 2).is_none()); // head of 3 rows: odd
        assert!(unpermute_rows(&[0u8; 7], 2, 1).is_none());
        assert!(unpermute_rows(&[0u8; 4], 1, 0).is_none());
    }

    #[test]
    fn names_map_to_hf() {
        assert_eq!(hf_tensor_name("token_embd.weight").unwrap(), "model.embed_tokens.weight");
        assert_eq!(hf_tensor_name("output.weight").unwrap(), "lm_head.weight");
        assert_eq!(hf_tensor_name("output_norm.weight").unwrap(), "model.norm.weight");
        assert_eq!(hf_tensor_name("blk.12.attn_q.bias").unwrap(), "model.layers.12.self_attn.q_proj.bias");
        assert_eq!(hf_tensor_name("blk.0.attn_output.weight").unwrap(), "model.layers.0.self_attn.o_proj.weight");
        assert_eq!(hf_tensor_name("blk.3.ffn_norm.weight").unwrap(), "model.layers.3.post_attention_layernorm.weight");
        assert_eq!(hf_tensor_name("blk.3.ffn_down.weight").unwrap(), "model.layers.3.mlp.down_proj.weight");
        for bad in ["blk.x.attn_q.weight", "blk.01.attn_q.weight", "blk.1.attn_q.scale", "rope_freqs.weight", "blk.1"] {
            assert!(hf_tensor_name(bad).is_none(), "{bad}");
        }
    }
}
