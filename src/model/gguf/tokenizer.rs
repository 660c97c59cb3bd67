//! `tokenizer.json` and `tokenizer_config.json` rebuilt from a GGUF's `tokenizer.*` metadata.
//!
//! A GGUF carries no `tokenizer.json`, only llama.cpp's description of the vocabulary. The reference for what
//! that description means is HF transformers loading the same file (`AutoTokenizer.from_pretrained(dir,
//! gguf_file=...)`, integrations/gguf/gguf_tokenizer_mapping.py): for `tokenizer.ggml.model = gpt2` it builds
//! a `GPT2Tokenizer` (byte-level BPE) from the tokens and merges, adds the CONTROL tokens and the named
//! bos/eos/unk/pad tokens as special added tokens and the USER_DEFINED ones as plain added tokens, swaps in a
//! split regex for the pre-tokenizer types it knows, and sets a post-processor from `add_bos_token` /
//! `add_eos_token`. We write exactly the tokenizer that produces, so ids agree token for token.

use super::reader::{GgufArray, GgufFile, GgufValue};
use crate::error::{LarkError, Result};
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, HashMap, HashSet};

/// llama.cpp token types (`tokenizer.ggml.token_type`).
const TOKEN_CONTROL: i64 = 3;
const TOKEN_USER_DEFINED: i64 = 4;

/// Split regexes transformers uses for the `tokenizer.ggml.pre` values it recognises
/// (`GGUF_PRE_TOKENIZER_SPLITS`); any other value keeps GPT-2's own byte-level regex.
const LLAMA3_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const QWEN2_SPLIT: &str =
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const TEKKEN_SPLIT: &str = concat!(
    r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+",
    r"|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*",
    r"|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+"
);
const GPT4O_SPLIT: &str = concat!(
    r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?",
    r"|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?",
    r"|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+"
);

fn pre_tokenizer_split(pre: &str) -> Option<&'static str> {
    Some(match pre {
        "llama3" | "llama-v3" | "llama-bpe" | "falcon3" | "falcon-h1" | "pixtral" | "midm-2.0" | "lfm2"
        | "jina-v5-nano" | "dbrx" | "smaug-bpe" => LLAMA3_SPLIT,
        "tekken" => TEKKEN_SPLIT,
        "qwen2" | "deepseek-r1-qwen" | "kormo" | "f2llmv2" | "megrez" => QWEN2_SPLIT,
        "gpt-4o" | "llama4" | "kanana2" | "talkie" | "minimax-m2" => GPT4O_SPLIT,
        _ => return None,
    })
}

/// GPT-2's byte → printable character table (`bytes_to_unicode`).
fn bytes_to_unicode() -> [char; 256] {
    let mut table = ['\0'; 256];
    let mut extra = 0u32;
    for b in 0..256u32 {
        let printable = (0x21..=0x7E).contains(&b) || (0xA1..=0xAC).contains(&b) || (0xAE..=0xFF).contains(&b);
        table[b as usize] = if printable {
            char::from_u32(b).unwrap_or('\0')
        } else {
            extra += 1;
            char::from_u32(255 + extra).unwrap_or('\0')
        };
    }
    table
}

/// The tokenizer description read from the metadata.
struct GgufTokenizer {
    tokens: Vec<String>,
    token_types: Option<Vec<i64>>,
    merges: Vec<String>,
    pre: Option<String>,
    bos: Option<String>,
    eos: Option<String>,
    unk: Option<String>,
    pad: Option<String>,
    add_bos: bool,
    add_eos: bool,
    chat_template: Option<String>,
}

fn meta_err(f: &GgufFile, key: &str, msg: impl Into<String>) -> LarkError {
    LarkError::input(format!("{}: metadata `{key}`", f.origin), msg)
}

fn string_array<'a>(f: &'a GgufFile, key: &str) -> Result<Option<&'a Vec<String>>> {
    match f.get(key) {
        None => Ok(None),
        Some(GgufValue::Array(GgufArray::String(v))) => Ok(Some(v)),
        Some(v) => Err(meta_err(f, key, format!("expected an array of strings, found {}", v.type_name()))),
    }
}

impl GgufTokenizer {
    fn read(f: &GgufFile) -> Result<Self> {
        let model = f.get("tokenizer.ggml.model").and_then(|v| v.as_str()).unwrap_or("");
        if model != "gpt2" {
            return Err(LarkError::Unsupported(format!(
                "{}: tokenizer.ggml.model `{model}` (convert-gguf rebuilds byte-level BPE tokenizers, `gpt2`)",
                f.origin
            )));
        }
        let tokens = string_array(f, "tokenizer.ggml.tokens")?
            .ok_or_else(|| meta_err(f, "tokenizer.ggml.tokens", "missing"))?
            .clone();
        if tokens.is_empty() {
            return Err(meta_err(f, "tokenizer.ggml.tokens", "is empty"));
        }
        let token_types = match f.get("tokenizer.ggml.token_type") {
            None => None,
            Some(v) => {
                let t = v
                    .as_array()
                    .and_then(|a| a.to_i64_vec())
                    .ok_or_else(|| meta_err(f, "tokenizer.ggml.token_type", "expected an array of integers"))?;
                if t.len() != tokens.len() {
                    return Err(meta_err(
                        f,
                        "tokenizer.ggml.token_type",
                        format!("{} entries for {} tokens", t.len(), tokens.len()),
                    ));
                }
                Some(t)
            }
        };
        let merges = string_array(f, "tokenizer.ggml.merges")?
            .ok_or_else(|| {
                LarkError::Unsupported(format!(
                    "{}: a byte-level BPE vocabulary without tokenizer.ggml.merges",
                    f.origin
                ))
            })?
            .clone();
        let token_of = |key: &str| -> Result<Option<String>> {
            match f.get(key) {
                None => Ok(None),
                Some(v) => {
                    let id = v.as_u64().ok_or_else(|| meta_err(f, key, "expected a token id"))?;
                    let tok = tokens.get(id as usize).ok_or_else(|| {
                        meta_err(f, key, format!("token id {id} is outside the vocabulary of {}", tokens.len()))
                    })?;
                    Ok(Some(tok.clone()))
                }
            }
        };
        let flag = |key: &str| -> Result<Option<bool>> {
            match f.get(key) {
                None => Ok(None),
                Some(v) => v.as_bool().map(Some).ok_or_else(|| meta_err(f, key, "expected a boolean")),
            }
        };
        let chat_template = match f.get("tokenizer.chat_template") {
            None => None,
            Some(v) => {
                Some(v.as_str().ok_or_else(|| meta_err(f, "tokenizer.chat_template", "expected a string"))?.to_string())
            }
        };
        Ok(GgufTokenizer {
            pre: f.get("tokenizer.ggml.pre").and_then(|v| v.as_str()).map(str::to_string),
            bos: token_of("tokenizer.ggml.bos_token_id")?,
            eos: token_of("tokenizer.ggml.eos_token_id")?,
            unk: token_of("tokenizer.ggml.unknown_token_id")?,
            pad: token_of("tokenizer.ggml.padding_token_id")?,
            // transformers defaults both to false for a byte-level vocabulary (only sentencepiece defaults BOS on).
            add_bos: flag("tokenizer.ggml.add_bos_token")?.unwrap_or(false),
            add_eos: flag("tokenizer.ggml.add_eos_token")?.unwrap_or(false),
            tokens,
            token_types,
            merges,
            chat_template,
        })
    }
}

/// The vocabulary, the added tokens and the post-processor: what both files need.
struct Built {
    vocab: HashMap<String, u32>,
    /// id → (content, special), ascending by id.
    added: BTreeMap<u32, (String, bool)>,
    /// Added tokens that got ids past the model vocabulary: (content, id).
    beyond_vocab: Vec<(String, u32)>,
    tok: GgufTokenizer,
}

fn build(f: &GgufFile) -> Result<Built> {
    let tok = GgufTokenizer::read(f)?;
    let spelling = bytes_to_unicode();
    let alphabet: HashSet<char> = spelling.iter().copied().collect();
    let in_alphabet = |s: &str| s.chars().all(|c| alphabet.contains(&c));
    // A token already spelled in the byte alphabet is kept; any other is respelled from its UTF-8 bytes. As in
    // Python's dict comprehension, a later duplicate overrides an earlier one.
    let mut vocab: HashMap<String, u32> = HashMap::with_capacity(tok.tokens.len());
    for (i, t) in tok.tokens.iter().enumerate() {
        let key = if in_alphabet(t) { t.clone() } else { t.bytes().map(|b| spelling[b as usize]).collect() };
        vocab.insert(key, i as u32);
    }
    let mut added: BTreeMap<u32, (String, bool)> = BTreeMap::new();
    let mut seen: HashSet<String> = HashSet::new();
    let mut beyond_vocab = Vec::new();
    // tokenizers gives an added token that is not in the model vocabulary the next free id.
    let mut next_id = vocab.len() as u32;
    let mut add = |content: &str, special: bool| {
        if !seen.insert(content.to_string()) {
            return; // the first registration wins, as in transformers
        }
        let id = match vocab.get(content) {
            Some(&id) => id,
            None => {
                next_id += 1;
                beyond_vocab.push((content.to_string(), next_id - 1));
                next_id - 1
            }
        };
        added.insert(id, (content.to_string(), special));
    };
    // The order below is transformers' order of registration. First, GPT2Tokenizer's own defaults for its
    // bos/eos/unk tokens: `<|endoftext|>` becomes special, and is appended past the vocabulary when the file
    // does not have it (transformers does that too; such an id cannot be embedded and is reported).
    add("<|endoftext|>", true);
    if let Some(types) = &tok.token_types {
        // CONTROL tokens spelled in the byte alphabet become special (others are llama.cpp mislabels and skipped).
        for (t, &ty) in tok.tokens.iter().zip(types) {
            if ty == TOKEN_CONTROL && in_alphabet(t) {
                add(t, true);
            }
        }
        // USER_DEFINED tokens that exist under their own spelling stay whole but are not special.
        for (t, &ty) in tok.tokens.iter().zip(types) {
            if ty == TOKEN_USER_DEFINED && vocab.contains_key(t.as_str()) {
                add(t, false);
            }
        }
    }
    // Then the tokens the file names as bos/eos/unk/pad, special whatever their type.
    for t in [&tok.bos, &tok.eos, &tok.unk, &tok.pad].into_iter().flatten() {
        add(t, true);
    }
    Ok(Built { vocab, added, beyond_vocab, tok })
}

fn added_token_json(id: u32, content: &str, special: bool) -> Value {
    json!({
        "id": id, "content": content, "single_word": false, "lstrip": false, "rstrip": false,
        "normalized": false, "special": special,
    })
}

/// transformers' `update_post_processor`: `[bos] $A [eos]` as the flags say.
fn post_processor(b: &Built) -> Value {
    let bos = if b.tok.add_bos { b.tok.bos.as_ref() } else { None };
    let eos = if b.tok.add_eos { b.tok.eos.as_ref() } else { None };
    let special = |t: &str, type_id: u32| json!({"SpecialToken": {"id": t, "type_id": type_id}});
    let seq = |id: &str, type_id: u32| json!({"Sequence": {"id": id, "type_id": type_id}});
    let mut single = Vec::new();
    let mut pair = Vec::new();
    for (part, type_id, out) in [("A", 0, &mut single), ("B", 1, &mut pair)] {
        if let Some(t) = bos {
            out.push(special(t, type_id));
        }
        out.push(seq(part, type_id));
        if let Some(t) = eos {
            out.push(special(t, type_id));
        }
    }
    let pair: Vec<Value> = single.iter().cloned().chain(pair).collect();
    let mut tokens = Map::new();
    for t in [bos, eos].into_iter().flatten() {
        // Named tokens are always registered as added tokens (see `build`).
        let id = b.added.iter().find(|(_, (c, _))| c == t).map(|(&id, _)| id).unwrap_or(0);
        tokens.insert(t.clone(), json!({"id": t, "ids": [id], "tokens": [t]}));
    }
    json!({"type": "TemplateProcessing", "single": single, "pair": pair, "special_tokens": tokens})
}

/// What `convert-gguf` writes for the tokenizer.
pub struct TokenizerFiles {
    /// `tokenizer.json`
    pub tokenizer: Value,
    /// `tokenizer_config.json`
    pub config: Value,
    /// Added tokens that transformers (and so we) give ids past the model's vocabulary: (content, id).
    pub beyond_vocab: Vec<(String, u32)>,
    /// Size of the BPE vocabulary (distinct tokens, without tokens appended past it).
    pub model_vocab_len: usize,
}

/// Both tokenizer files, as transformers builds them from this file's metadata.
pub fn tokenizer_files(f: &GgufFile) -> Result<TokenizerFiles> {
    let b = build(f)?;
    Ok(TokenizerFiles {
        tokenizer: tokenizer_json(f, &b)?,
        config: tokenizer_config_json(&b),
        beyond_vocab: b.beyond_vocab.clone(),
        model_vocab_len: b.vocab.len(),
    })
}

fn tokenizer_json(f: &GgufFile, b: &Built) -> Result<Value> {
    let mut merges = Vec::with_capacity(b.tok.merges.len());
    for (i, m) in b.tok.merges.iter().enumerate() {
        let parts: Vec<&str> = m.split(' ').collect();
        if parts.len() != 2 || !b.vocab.contains_key(parts[0]) || !b.vocab.contains_key(parts[1]) {
            return Err(meta_err(
                f,
                "tokenizer.ggml.merges",
                format!("merge #{i} {m:?} is not two vocabulary tokens separated by one space"),
            ));
        }
        // The BPE model (tokenizers, as transformers builds it) also needs the merged token in the vocabulary;
        // without this check convert-gguf wrote a tokenizer.json that does not load (found by fuzzing).
        let merged = format!("{}{}", parts[0], parts[1]);
        if !b.vocab.contains_key(&merged) {
            return Err(meta_err(
                f,
                "tokenizer.ggml.merges",
                format!("merge #{i} {m:?} makes {merged:?}, which is not in the vocabulary"),
            ));
        }
        merges.push(json!([parts[0], parts[1]]));
    }
    let mut vocab: Vec<(&String, &u32)> = b.vocab.iter().collect();
    vocab.sort_by_key(|(_, &id)| id);
    let vocab: Map<String, Value> = vocab.into_iter().map(|(t, &id)| (t.clone(), json!(id))).collect();
    let byte_level = |use_regex: bool, add_prefix_space: bool| json!({"type": "ByteLevel", "add_prefix_space": add_prefix_space, "trim_offsets": true, "use_regex": use_regex});
    let pre_tokenizer = match b.tok.pre.as_deref().and_then(pre_tokenizer_split) {
        None => byte_level(true, false),
        Some(split) => json!({"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": split}, "behavior": "Isolated", "invert": false},
            byte_level(false, false),
        ]}),
    };
    let added: Vec<Value> = b.added.iter().map(|(&id, (c, s))| added_token_json(id, c, *s)).collect();
    Ok(json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": null,
        "pre_tokenizer": pre_tokenizer,
        "post_processor": post_processor(b),
        "decoder": byte_level(true, true),
        "model": {
            "type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": "",
            "end_of_word_suffix": "", "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
            "vocab": vocab, "merges": merges,
        },
    }))
}

/// `tokenizer_config.json`: special tokens, BOS/EOS flags and the chat template, with the keys HF reads.
fn tokenizer_config_json(b: &Built) -> Value {
    let mut decoder = Map::new();
    for (id, (content, special)) in &b.added {
        decoder.insert(
            id.to_string(),
            json!({"content": content, "lstrip": false, "normalized": false, "rstrip": false,
                   "single_word": false, "special": special}),
        );
    }
    let t = &b.tok;
    let mut cfg = json!({
        "add_bos_token": t.add_bos,
        "add_eos_token": t.add_eos,
        "added_tokens_decoder": decoder,
        "bos_token": t.bos,
        "eos_token": t.eos,
        "unk_token": t.unk,
        "pad_token": t.pad,
        "clean_up_tokenization_spaces": false,
        "tokenizer_class": "PreTrainedTokenizerFast",
    });
    if let Some(ct) = &t.chat_template {
        cfg["chat_template"] = Value::String(ct.clone());
    }
    cfg
}
