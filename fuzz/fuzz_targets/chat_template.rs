//! Chat messages from a pool through the text pipeline: validation, chat-template rendering (three templates
//! in the styles of Qwen2.5, Qwen3 with `<think>` splitting, and Llama 3, using the Python string methods and
//! filters real templates call), tokenisation, truncation and both scored-span conventions. Never a panic; a
//! trajectory that is ready has a scored span inside its (truncated) ids.
//!
//! Input: byte 0 picks the template, the span mode and the input form; byte 1 is `--max-len`; the rest is
//! either a JSON `messages` array or, to reach contents a byte fuzzer would rarely spell as JSON, raw text cut
//! at NUL bytes into [system, user, assistant] contents. With the top bit of byte 0 set, the rest is instead
//! compiled as a template source (compiled only: rendering an arbitrary template may loop for ever).
#![no_main]

use lark::text::{parse_messages, ChatTemplate, Message, Prepared, SpanMode, TextPipeline, Tokenizer};
use libfuzzer_sys::fuzz_target;
use std::collections::BTreeMap;
use std::sync::OnceLock;

const CHATML: &str = "{%- for message in messages %}{%- if loop.first and message.role != 'system' %}\
<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}<|im_start|>{{ message.role }}\n\
{{ message.content }}{% if message.tool_calls %}{{ message.tool_calls | tojson }}{% endif %}<|im_end|>\n\
{% endfor %}{%- if add_generation_prompt %}<|im_start|>assistant\n{% endif %}";

const THINK: &str = "{%- for message in messages %}\
{%- if message.role == 'assistant' %}\
{%- set content = message.content %}{%- set reasoning = '' %}\
{%- if message.reasoning_content is string %}{%- set reasoning = message.reasoning_content %}\
{%- elif '</think>' in content %}\
{%- set reasoning = content.split('</think>')[0].rstrip('\\n').split('<think>')[-1].lstrip('\\n') %}\
{%- set content = content.split('</think>')[-1].lstrip('\\n') %}\
{%- endif %}\
{{- '<|im_start|>assistant\\n<think>\\n' + reasoning.strip('\\n') + '\\n</think>\\n\\n' + content.lstrip('\\n') + '<|im_end|>\\n' }}\
{%- elif message.role in ['system', 'user'] %}\
{{- '<|im_start|>' + message.role + '\\n' + message.content | trim + '<|im_end|>\\n' }}\
{%- else %}{{ raise_exception('unexpected role ' + message.role) }}{%- endif %}\
{%- endfor %}{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}";

const LLAMA3: &str = "{{- bos_token }}{%- for message in messages %}\
{%- if message['content'].startswith(' ') and message['content'].endswith(' ') %}{%- endif %}\
{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' + message['content'] | trim + '<|eot_id|>' }}\
{%- endfor %}{%- if add_generation_prompt %}{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{%- endif %}";

/// A word-level tokenizer with the ChatML and Llama 3 markers as special tokens, and a BOS-adding
/// post-processor (as Llama 3's), so both span conventions and their truncation rules are reachable.
const TOKENIZER: &str = r#"{"version": "1.0", "truncation": null, "padding": null,
 "added_tokens": [
  {"id": 1, "content": "<|im_start|>", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true},
  {"id": 2, "content": "<|im_end|>", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true},
  {"id": 3, "content": "<|start_header_id|>", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true},
  {"id": 4, "content": "<|end_header_id|>", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true},
  {"id": 5, "content": "<|eot_id|>", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true},
  {"id": 6, "content": "<s>", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true}],
 "normalizer": null, "pre_tokenizer": {"type": "Whitespace"},
 "post_processor": {"type": "TemplateProcessing", "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}},
   {"Sequence": {"id": "A", "type_id": 0}}], "pair": [{"Sequence": {"id": "A", "type_id": 0}},
   {"Sequence": {"id": "B", "type_id": 1}}], "special_tokens": {"<s>": {"id": "<s>", "ids": [6], "tokens": ["<s>"]}}},
 "decoder": null,
 "model": {"type": "WordLevel", "unk_token": "<unk>", "vocab": {"<unk>": 0, "<|im_start|>": 1, "<|im_end|>": 2,
   "<|start_header_id|>": 3, "<|end_header_id|>": 4, "<|eot_id|>": 5, "<s>": 6, "assistant": 7, "user": 8,
   "system": 9, "<": 10, ">": 11, "think": 12, "/": 13, "x": 14, "the": 15, "answer": 16, "is": 17, "42": 18}}}"#;

fn pipelines() -> &'static [TextPipeline; 3] {
    static P: OnceLock<[TextPipeline; 3]> = OnceLock::new();
    P.get_or_init(|| {
        let make = |src: &str| {
            let tok = Tokenizer::from_bytes(TOKENIZER.as_bytes(), "fuzz/tokenizer.json").expect("tokenizer");
            let special = BTreeMap::from([("bos_token".to_string(), "<s>".to_string())]);
            let t = ChatTemplate::from_source(src, "fuzz/chat_template", special).expect("template");
            TextPipeline::from_parts("fuzz", tok, t)
        };
        [make(CHATML), make(THINK), make(LLAMA3)]
    })
}

fn messages(raw: bool, body: &[u8]) -> Option<Vec<Message>> {
    if raw {
        let text = String::from_utf8_lossy(body);
        let mut parts = text.split('\0');
        let mut out = Vec::new();
        for role in ["system", "user", "assistant"] {
            out.push(Message::new(role, parts.next().unwrap_or("")));
        }
        if let Some(extra) = parts.next() {
            out[2].extra.insert("reasoning_content".into(), extra.into());
        }
        return Some(out);
    }
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    parse_messages(&v, "fuzz").ok()
}

fuzz_target!(|data: &[u8]| {
    let [knobs, max_len, body @ ..] = data else { return };
    if knobs & 0x80 != 0 {
        let _ = ChatTemplate::from_source(String::from_utf8_lossy(body), "fuzz", BTreeMap::new());
        return;
    }
    let p = &pipelines()[(knobs % 3) as usize];
    let mode = if knobs & 4 != 0 { SpanMode::Content } else { SpanMode::Turn };
    let max_len = 2 + *max_len as usize;
    let Some(msgs) = messages(knobs & 8 != 0, body) else { return };
    // Any chat, valid or not, renders or fails cleanly (Local Naturalness renders prompts without validation).
    let _ = p.render(&msgs, knobs & 16 != 0);
    let Ok(prepared) = p.trajectory(&msgs, mode, max_len) else { return };
    if let Prepared::Ready(t) = prepared {
        assert!(1 <= t.score_from && t.score_from < t.score_to && t.score_to <= t.ids.len(), "{t:?}");
        assert!(t.ids.len() <= max_len && t.full_len == t.ids.len());
        assert_eq!(t.truncated, t.untruncated_len > t.ids.len());
        assert!(t.ids.iter().all(|&id| (id as usize) < p.tokenizer().vocab_size()));
        let r = t.request();
        assert_eq!(r.ids.len(), t.score_to);
    }
});
