//! Chat rendering, tokenisation and both scored spans against HF transformers, for real tokenizers.
//!
//! Expected values: tests/fixtures/chat_parity.json, written by scripts/make_chat_parity.py (transformers'
//! `apply_chat_template` + `tokenizer(text)`, the LARK authors' `tokenise_record` and the RSR authors'
//! `_scan_response_positions`). Everything must be equal exactly: strings, ids, spans, skip decisions.

use std::path::Path;

use lark::text::{parse_messages, Prepared, SkipReason, SpanMode, TemplateFamily, TextPipeline, DEFAULT_MAX_LEN};
use serde_json::Value;

mod common;
use common::fixtures::{llama3_tokenizer_dir, qwen3_tokenizer_dir, smollm2_dir};

fn fixture() -> Value {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/chat_parity.json");
    serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap()
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect()
}

fn check_tokenizer(name: &str, dir: &Path) {
    let fx = fixture();
    let t = &fx["tokenizers_under_test"][name];
    let pipe = TextPipeline::open(dir).unwrap();
    let family = match t["family"].as_str().unwrap() {
        "chatml" => TemplateFamily::ChatMl,
        "llama3" => TemplateFamily::Llama3,
        f => panic!("family {f}"),
    };
    assert_eq!(pipe.family().unwrap(), family, "{name}: template family");

    for case in t["cases"].as_array().unwrap() {
        let cname = format!("{name}/{}", case["name"].as_str().unwrap());
        let messages = parse_messages(&case["messages"], &cname).unwrap();
        let prompt_msgs = lark::text::without_assistant(&messages);

        // The four renderings and their ids.
        for (key, msgs, agp) in [
            ("full", &messages, false),
            ("full_gen", &messages, true),
            ("prompt", &prompt_msgs, true),
            ("prompt_nogen", &prompt_msgs, false),
        ] {
            let want = &case["renders"][key];
            let text = pipe.render(msgs, agp).unwrap();
            assert_eq!(text, want["text"].as_str().unwrap(), "{cname}: rendering `{key}`");
            assert_eq!(pipe.encode(&text).unwrap(), ids(&want["ids"]), "{cname}: ids of `{key}`");
        }
        let full_ids = ids(&case["renders"]["full"]["ids"]);

        // LARK authors' span at each recorded max length.
        for want in case["lark"].as_array().unwrap() {
            let max_len = want["max_length"].as_u64().unwrap() as usize;
            let ctx = format!("{cname}: turn span at max_len {max_len}");
            let (prompt_len, full_len) =
                (want["prompt_len"].as_u64().unwrap() as usize, want["full_len"].as_u64().unwrap() as usize);
            match pipe.trajectory(&messages, SpanMode::Turn, max_len).unwrap() {
                Prepared::Ready(tr) => {
                    assert!(!want["skipped"].as_bool().unwrap(), "{ctx}: HF skips it");
                    assert_eq!((tr.score_from, tr.score_to), (prompt_len, full_len), "{ctx}");
                    assert_eq!((tr.prompt_len, tr.full_len), (prompt_len, full_len), "{ctx}");
                    assert_eq!(tr.prompt_is_prefix, want["prompt_is_prefix"].as_bool().unwrap(), "{ctx}: prefix flag");
                    let expect_ids = if want["full_ids"].is_null() { full_ids.clone() } else { ids(&want["full_ids"]) };
                    assert_eq!(tr.ids, expect_ids, "{ctx}: ids");
                    assert_eq!(tr.truncated, full_ids.len() > max_len, "{ctx}: truncated flag");
                    assert_eq!(tr.untruncated_len, full_ids.len(), "{ctx}");
                    assert_eq!(tr.request().ids.len(), full_len);
                }
                Prepared::Skipped(r) => {
                    assert!(want["skipped"].as_bool().unwrap(), "{ctx}: HF scores it, we skip: {r}");
                    assert_eq!(
                        r,
                        SkipReason::PromptNotShorter { prompt_len, full_len, truncated: full_ids.len() > max_len },
                        "{ctx}"
                    );
                }
            }
        }

        // RSR authors' span: no truncation (recorded with max_length null), then the two short lengths.
        let rsr_full = if case["rsr_ids"].is_null() { full_ids.clone() } else { ids(&case["rsr_ids"]) };
        for want in case["rsr"].as_array().unwrap() {
            let max_len = want["max_length"].as_u64().map(|m| m as usize).unwrap_or(DEFAULT_MAX_LEN);
            let ctx = format!("{cname}: content span at max_len {max_len}");
            let ranges: Vec<(usize, usize)> = want["ranges"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| (r[0].as_u64().unwrap() as usize, r[1].as_u64().unwrap() as usize))
                .collect();
            let expect_ids = if want["ids"].is_null() { rsr_full.clone() } else { ids(&want["ids"]) };
            assert_eq!(expect_ids.len(), want["ids_len"].as_u64().unwrap() as usize);
            match pipe.trajectory(&messages, SpanMode::Content, max_len).unwrap() {
                Prepared::Ready(tr) => {
                    assert_eq!(ranges.len(), tr.other_spans + 1, "{ctx}: span count");
                    assert_eq!(Some(&(tr.score_from, tr.score_to)), ranges.last(), "{ctx}");
                    assert_eq!(tr.ids, expect_ids, "{ctx}: ids");
                    assert_eq!(tr.truncated, rsr_full.len() > max_len, "{ctx}");
                }
                Prepared::Skipped(r) => {
                    assert!(ranges.is_empty(), "{ctx}: HF scores {ranges:?}, we skip: {r}");
                    assert_eq!(r.code(), "no_assistant_content");
                }
            }
        }
    }
}

#[test]
fn qwen3_matches_hf() {
    check_tokenizer("qwen3", &qwen3_tokenizer_dir());
}

#[test]
fn llama3_matches_hf() {
    check_tokenizer("llama3", &llama3_tokenizer_dir());
}

#[test]
fn smollm2_converted_matches_hf_gguf() {
    check_tokenizer("smollm2", &smollm2_dir());
}

#[test]
fn fixture_is_small_and_covers_the_three_tokenizers() {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/chat_parity.json");
    assert!(std::fs::metadata(&p).unwrap().len() < 300_000);
    let fx = fixture();
    for name in ["qwen3", "llama3", "smollm2"] {
        assert!(fx["tokenizers_under_test"][name]["cases"].as_array().is_some_and(|c| c.len() >= 8), "{name}");
    }
}

#[test]
fn content_span_needs_a_known_family() {
    // A template that writes neither ChatML nor Llama 3 markers: --span content is a clear error, turn works.
    let d = tempfile::tempdir().unwrap();
    std::fs::copy(qwen3_tokenizer_dir().join("tokenizer.json"), d.path().join("tokenizer.json")).unwrap();
    std::fs::write(
        d.path().join("chat_template.jinja"),
        "{% for m in messages %}### {{ m.role }}:\n{{ m.content }}\n{% endfor %}{% if add_generation_prompt %}### assistant:\n{% endif %}",
    )
    .unwrap();
    let pipe = TextPipeline::open(d.path()).unwrap();
    let msgs = vec![lark::text::Message::user("What is 2+2?"), lark::text::Message::assistant("It is 4, since 2+2=4.")];
    let e = pipe.trajectory(&msgs, SpanMode::Content, 100).unwrap_err().to_string();
    assert!(e.contains("--span content needs a ChatML") && e.contains("chat_template.jinja"), "{e}");
    let tr = pipe.trajectory(&msgs, SpanMode::Turn, 100).unwrap().into_ready().unwrap();
    assert_eq!(pipe.tokenizer().decode(&tr.scored_ids(), false).unwrap(), "It is 4, since 2+2=4.\n");
}

#[test]
fn validation_errors_come_before_rendering() {
    let pipe = TextPipeline::open(qwen3_tokenizer_dir()).unwrap();
    let msgs = vec![lark::text::Message::user("q")];
    let e = pipe.trajectory(&msgs, SpanMode::Turn, 100).unwrap_err().to_string();
    assert!(e.contains("missing assistant turn"), "{e}");
    assert!(pipe.trajectory(&[], SpanMode::Content, 100).unwrap_err().to_string().contains("empty conversation"));
}

#[test]
fn truncation_flags_and_request() {
    let pipe = TextPipeline::open(qwen3_tokenizer_dir()).unwrap();
    let msgs = vec![
        lark::text::Message::system("Be brief."),
        lark::text::Message::user("Count to twenty."),
        lark::text::Message::assistant((1..=20).map(|i| i.to_string()).collect::<Vec<_>>().join(", ")),
    ];
    let whole = pipe.trajectory(&msgs, SpanMode::Turn, DEFAULT_MAX_LEN).unwrap().into_ready().unwrap();
    assert!(!whole.truncated && whole.prompt_is_prefix);
    let cut = pipe.trajectory(&msgs, SpanMode::Turn, whole.prompt_len + 3).unwrap().into_ready().unwrap();
    assert!(cut.truncated);
    assert_eq!(cut.untruncated_len, whole.full_len);
    assert_eq!(cut.ids[..], whole.ids[..whole.prompt_len + 3]);
    assert_eq!((cut.score_from, cut.score_to), (whole.prompt_len, whole.prompt_len + 3));
    // One token of assistant turn left: the authors' rule skips it.
    let r = pipe.trajectory(&msgs, SpanMode::Turn, whole.prompt_len + 1).unwrap();
    assert!(matches!(r, Prepared::Skipped(SkipReason::PromptNotShorter { truncated: true, .. })), "{r:?}");
    // Content mode: the end marker is not scored; truncated content runs to the cut.
    let c = pipe.trajectory(&msgs, SpanMode::Content, DEFAULT_MAX_LEN).unwrap().into_ready().unwrap();
    let im_end = pipe.tokenizer().token_to_id("<|im_end|>").unwrap();
    assert_eq!(c.ids[c.score_to], im_end);
    assert!(!c.scored_ids().contains(&im_end));
    let c2 = pipe.trajectory(&msgs, SpanMode::Content, c.score_from + 2).unwrap().into_ready().unwrap();
    assert_eq!((c2.score_from, c2.score_to, c2.truncated), (c.score_from, c.score_from + 2, true));
    let req = c2.request();
    assert_eq!((req.ids.len(), req.score_from), (c.score_from + 2, c.score_from));
}
