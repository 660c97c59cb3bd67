//! `tokenizer.json` through the `tokenizers` crate, encoding as HF's fast tokenizer does for `tokenizer(text)`.
//!
//! HF semantics reproduced here:
//! - `add_special_tokens=True` by default: whatever the post-processor adds (a BOS for Llama 3.2's
//!   `TemplateProcessing`; nothing for Qwen's `ByteLevel`) is added.
//! - `truncation=True, max_length=M` keeps the first `M - n_added` content tokens, then post-processes, so the
//!   result has at most M ids and keeps its special tokens.
//! - Truncation/padding settings stored in `tokenizer.json` are ignored: HF clears them unless asked.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use tokenizers::{PostProcessor, TruncationDirection};

use crate::error::{LarkError, Result};

pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    path: PathBuf,
    sha256: String,
    /// Tokens the post-processor adds to a single sequence when `add_special_tokens` is on.
    n_added: usize,
    /// One more than the largest id the tokenizer can produce (see [`Tokenizer::vocab_size`]).
    id_bound: usize,
}

/// Ids of one encoded text, with the length it had before truncation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encoded {
    pub ids: Vec<u32>,
    /// Length without truncation (special tokens included).
    pub untruncated_len: usize,
}

impl Encoded {
    pub fn truncated(&self) -> bool {
        self.ids.len() < self.untruncated_len
    }
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer").field("path", &self.path).field("vocab", &self.vocab_size()).finish()
    }
}

impl Tokenizer {
    /// `path` is a `tokenizer.json` file or a directory holding one.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let file = if path.is_dir() { path.join("tokenizer.json") } else { path.to_path_buf() };
        let bytes = std::fs::read(&file).map_err(|e| LarkError::io(&file, e))?;
        Self::from_bytes(&bytes, &file)
    }

    /// Parse `tokenizer.json` content; `path` is only used to name it in errors and in [`Tokenizer::path`].
    pub fn from_bytes(bytes: &[u8], path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let mut inner = tokenizers::Tokenizer::from_bytes(bytes)
            .map_err(|e| LarkError::input(path.display().to_string(), format!("not a valid tokenizer.json: {e}")))?;
        inner.with_truncation(None).map_err(|e| LarkError::input(path.display().to_string(), e.to_string()))?;
        inner.with_padding(None);
        let n_added = inner.get_post_processor().map(|p| p.added_tokens(false)).unwrap_or(0);
        let sha256 = format!("{:x}", Sha256::digest(bytes));
        let vocab = inner.get_vocab(true);
        let id_bound = vocab.values().map(|&id| id as usize + 1).max().unwrap_or(0).max(vocab.len());
        Ok(Tokenizer { inner, path, sha256, n_added, id_bound })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// SHA-256 of the `tokenizer.json` bytes (hex), for run fingerprints.
    pub fn sha256(&self) -> &str {
        &self.sha256
    }

    /// The vocabulary a model needs for this tokenizer: one more than its largest id, added tokens included.
    /// For real tokenizers, whose ids are dense, this is the number of tokens; a tokenizer with a gap in its ids
    /// (a hostile or hand-edited `tokenizer.json`) must not pass a `vocab_size() <= model vocab` check while
    /// producing ids beyond the model's embedding.
    pub fn vocab_size(&self) -> usize {
        self.id_bound
    }

    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    pub fn id_to_token(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }

    /// Number of tokens the post-processor adds to one sequence with `add_special_tokens=True`.
    pub fn n_special_added(&self) -> usize {
        self.n_added
    }

    fn err(&self, what: &str, e: impl std::fmt::Display) -> LarkError {
        LarkError::input(self.path.display().to_string(), format!("{what}: {e}"))
    }

    /// HF `tokenizer(text)["input_ids"]` (special tokens added by the post-processor, no truncation).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        Ok(self.encode_with(text, true, None)?.ids)
    }

    /// HF `tokenizer(text, add_special_tokens=False)`: the ids and each token's byte range in `text`.
    pub fn encode_offsets(&self, text: &str) -> Result<(Vec<u32>, Vec<super::chat_template::ByteRange>)> {
        let enc = self.inner.encode(text, false).map_err(|e| self.err("encoding failed", e))?;
        Ok((enc.get_ids().to_vec(), enc.get_offsets().to_vec()))
    }

    /// HF `tokenizer(text, add_special_tokens=False)["input_ids"]`.
    pub fn encode_plain(&self, text: &str) -> Result<Vec<u32>> {
        Ok(self.encode_with(text, false, None)?.ids)
    }

    /// HF `tokenizer(text, add_special_tokens=..., truncation=max_len.is_some(), max_length=max_len)`:
    /// right truncation that keeps the post-processor's special tokens.
    pub fn encode_with(&self, text: &str, add_special_tokens: bool, max_len: Option<usize>) -> Result<Encoded> {
        let mut enc = self.inner.encode_fast(text, false).map_err(|e| self.err("encoding failed", e))?;
        let added = if add_special_tokens { self.n_added } else { 0 };
        let untruncated_len = enc.len() + added;
        if let Some(max_len) = max_len {
            if max_len <= added {
                return Err(LarkError::input(
                    self.path.display().to_string(),
                    format!("max length {max_len} leaves no room beside the {added} special tokens the tokenizer adds"),
                ));
            }
            enc.truncate(max_len - added, 0, TruncationDirection::Right);
        }
        let ids = if add_special_tokens && self.n_added > 0 {
            let enc = self.inner.post_process(enc, None, true).map_err(|e| self.err("post-processing failed", e))?;
            enc.get_ids().to_vec()
        } else {
            enc.get_ids().to_vec()
        };
        Ok(Encoded { ids, untruncated_len })
    }

    pub fn decode(&self, ids: &[u32], skip_special_tokens: bool) -> Result<String> {
        self.inner.decode(ids, skip_special_tokens).map_err(|e| self.err("decoding failed", e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A word-level tokenizer with a BOS-adding template post-processor, written inline so the test needs no
    /// fixture.
    fn tiny(post_processor: &str) -> Tokenizer {
        let json = format!(
            r#"{{
  "version": "1.0",
  "truncation": {{"direction": "Right", "max_length": 2, "strategy": "LongestFirst", "stride": 0}},
  "padding": null,
  "added_tokens": [
    {{"id": 0, "content": "<s>", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true}}
  ],
  "normalizer": null,
  "pre_tokenizer": {{"type": "Whitespace"}},
  "post_processor": {post_processor},
  "decoder": null,
  "model": {{"type": "WordLevel", "vocab": {{"<s>": 0, "<unk>": 1, "a": 2, "b": 3, "c": 4}}, "unk_token": "<unk>"}}
}}"#
        );
        Tokenizer::from_bytes(json.as_bytes(), "/virtual/tokenizer.json").unwrap()
    }

    const BOS: &str = r#"{"type": "TemplateProcessing", "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}},
        {"Sequence": {"id": "A", "type_id": 0}}], "pair": [{"Sequence": {"id": "A", "type_id": 0}},
        {"Sequence": {"id": "B", "type_id": 1}}], "special_tokens": {"<s>": {"id": "<s>", "ids": [0],
        "tokens": ["<s>"]}}}"#;

    #[test]
    fn bos_post_processor_is_honoured_and_file_truncation_ignored() {
        let t = tiny(BOS);
        assert_eq!(t.n_special_added(), 1);
        assert_eq!(t.encode("a b c a").unwrap(), vec![0, 2, 3, 4, 2]);
        assert_eq!(t.encode_plain("a b c a").unwrap(), vec![2, 3, 4, 2]);
    }

    #[test]
    fn truncation_keeps_special_tokens_like_hf() {
        let t = tiny(BOS);
        let e = t.encode_with("a b c a", true, Some(3)).unwrap();
        assert_eq!(e.ids, vec![0, 2, 3]);
        assert_eq!(e.untruncated_len, 5);
        assert!(e.truncated());
        let e = t.encode_with("a b c a", false, Some(3)).unwrap();
        assert_eq!((e.ids, e.untruncated_len), (vec![2, 3, 4], 4));
        let e = t.encode_with("a b", true, Some(3)).unwrap();
        assert!(!e.truncated());
        assert!(t.encode_with("a", true, Some(1)).unwrap_err().to_string().contains("no room"));
    }

    #[test]
    fn no_post_processor_adds_nothing() {
        let t = tiny("null");
        assert_eq!(t.n_special_added(), 0);
        assert_eq!(t.encode("a b").unwrap(), vec![2, 3]);
        assert_eq!(t.encode_with("a b c", true, Some(2)).unwrap().ids, vec![2, 3]);
    }

    #[test]
    fn vocab_size_bounds_every_id() {
        assert_eq!(tiny("null").vocab_size(), 5);
        // Five tokens, but one of them has id 70000: a model needs 70001 rows.
        let json = r#"{"version": "1.0", "added_tokens": [], "normalizer": null, "pre_tokenizer": {"type": "Whitespace"},
          "post_processor": null, "decoder": null, "model": {"type": "WordLevel",
          "vocab": {"<unk>": 0, "a": 1, "b": 2, "c": 3, "d": 70000}, "unk_token": "<unk>"}}"#;
        let t = Tokenizer::from_bytes(json.as_bytes(), "/virtual/tokenizer.json").unwrap();
        assert_eq!(t.encode("d").unwrap(), vec![70000]);
        assert_eq!(t.vocab_size(), 70001);
    }

    #[test]
    fn errors_name_the_file() {
        let e = Tokenizer::from_bytes(b"{not json", "/m/tokenizer.json").unwrap_err().to_string();
        assert!(e.starts_with("/m/tokenizer.json: not a valid tokenizer.json"), "{e}");
        let e = Tokenizer::open("/nonexistent/dir/tokenizer.json").unwrap_err().to_string();
        assert!(e.contains("/nonexistent/dir/tokenizer.json"), "{e}");
    }
}
