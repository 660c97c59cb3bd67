//! Multi-turn and agentic conversations against HF transformers: rendering (tools, tool calls with nested JSON
//! arguments and unicode, thinking blocks, a template that rewrites earlier turns), token ids, the scored
//! positions of every assistant turn under both span conventions and both `--turns`, truncation, and for SmolLM2
//! the per-token log-probabilities of lark's CPU backend at those positions.
//!
//! Expected values: tests/fixtures/conv_parity.json, written by scripts/make_conv_parity.py (transformers'
//! `apply_chat_template(messages, tools=...)`, `tokenizer(text)`, and the real SmolLM2-135M in float32). Strings,
//! ids and ranges must be equal exactly; log-probabilities within 1e-4 (the float32 noise floor documented in
//! tests/golden_parity.rs).

use std::path::{Path, PathBuf};

use lark::backend::cpu::CpuBackend;
use lark::backend::Backend;
use lark::model::Model;
use lark::stats::StatsOptions;
use lark::text::chat_template::load_special_tokens;
use lark::text::{parse_messages, ChatTemplate, Prepared, SpanMode, TextPipeline, Tokenizer, Turns};
use serde_json::Value;

mod common;
use common::fixtures::{llama3_tokenizer_dir, qwen3_tokenizer_dir, smollm2_dir};

fn fixture() -> Value {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/conv_parity.json");
    serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap()
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect()
}

/// The pipeline of fixture tokenizer `name`: `llama31` is the Llama 3 tokenizer with the committed Llama 3.1-style
/// tool template, `smolgen` SmolLM2's with a ChatML template whose `{% generation %}` blocks define the turns.
fn pipeline(name: &str) -> TextPipeline {
    match name {
        "qwen3" => TextPipeline::open(qwen3_tokenizer_dir()).unwrap(),
        "smollm2" => TextPipeline::open(smollm2_dir()).unwrap(),
        "llama31" | "smolgen" => {
            let (dir, file) = match name {
                "llama31" => (llama3_tokenizer_dir(), "llama31_tools.jinja"),
                _ => (smollm2_dir(), "chatml_generation.jinja"),
            };
            let tmpl_path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/templates").join(file);
            let config: Value =
                serde_json::from_str(&std::fs::read_to_string(dir.join("tokenizer_config.json")).unwrap()).unwrap();
            let special = load_special_tokens(&dir, Some(&config)).unwrap();
            let source = std::fs::read_to_string(&tmpl_path).unwrap();
            let template = ChatTemplate::from_source(source, tmpl_path.display().to_string(), special).unwrap();
            let tokenizer = Tokenizer::open(dir.join("tokenizer.json")).unwrap();
            TextPipeline::from_parts(dir, tokenizer, template)
        }
        other => panic!("fixture tokenizer {other}"),
    }
}

fn check(name: &str, mut model: Option<&mut CpuBackend>) {
    let fx = fixture();
    let pipe = pipeline(name);
    let mut n_cases = 0;
    for case in fx["cases"].as_array().unwrap().iter().filter(|c| c["tokenizer"] == name) {
        n_cases += 1;
        let cname = format!("{name}/{}", case["name"].as_str().unwrap());
        let messages = parse_messages(&case["messages"], &cname).unwrap();
        let tools: Option<Vec<Value>> = case["tools"].as_array().cloned();
        let scored = lark::text::scored_prefix(&messages);
        assert_eq!(
            pipe.render_with_tools(scored, tools.as_deref(), false).unwrap(),
            case["full_text"].as_str().unwrap(),
            "{cname}: full rendering"
        );
        assert_eq!(
            pipe.render_with_tools(&lark::text::without_assistant(scored), tools.as_deref(), true).unwrap(),
            case["prompt_text"].as_str().unwrap(),
            "{cname}: prompt of the final turn"
        );
        let max_len = case["max_len"].as_u64().map_or(lark::text::DEFAULT_MAX_LEN, |m| m as usize);
        for (key, want) in case["expect"].as_object().unwrap() {
            let (mode, turns) = key.split_once('/').unwrap();
            let (mode, turns): (SpanMode, Turns) = (mode.parse().unwrap(), turns.parse().unwrap());
            let at = format!("{cname} {key}");
            let got = pipe.conversation(&messages, tools.as_deref(), mode, turns, max_len).unwrap();
            let want_turns: Vec<(usize, usize)> = want["turns"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| (r[0].as_u64().unwrap() as usize, r[1].as_u64().unwrap() as usize))
                .collect();
            let t = match got {
                Prepared::Skipped(why) => {
                    assert!(want["skipped"].as_bool().unwrap(), "{at}: skipped ({why}), HF scores {want_turns:?}");
                    continue;
                }
                Prepared::Ready(t) => t,
            };
            assert!(!want["skipped"].as_bool().unwrap(), "{at}: scored, HF skips");
            assert_eq!(t.ids, ids(&want["ids"]), "{at}: ids");
            assert_eq!(t.turns, want_turns, "{at}: scored turns");
            assert_eq!((t.score_from, t.score_to), (want_turns[0].0, want_turns.last().unwrap().1), "{at}");
            if let (Some(backend), Some(lp)) = (model.as_deref_mut(), want.get("logprobs")) {
                let covered = backend.score(&[t.request()], &StatsOptions::default()).unwrap().pop().unwrap();
                assert_eq!(covered.len(), t.n_covered(), "{at}");
                let kept = t.keep_scored(covered);
                let lp: Vec<f64> = lp.as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect();
                assert_eq!(kept.len(), lp.len(), "{at}: scored positions");
                for (k, (s, want)) in kept.iter().zip(&lp).enumerate() {
                    let d = (s.logprob as f64 - want).abs();
                    assert!(d <= 1e-4, "{at}: scored token {k}: log p {} vs HF {want} (|Δ| = {d:.2e})", s.logprob);
                }
            }
        }
    }
    assert!(n_cases > 0, "no fixture cases for {name}");
}

#[test]
fn qwen3_agentic_conversations_match_hf() {
    check("qwen3", None);
}

#[test]
fn llama31_style_tool_template_matches_hf() {
    check("llama31", None);
}

#[test]
fn smollm2_multi_turn_spans_and_per_token_numbers_match_hf() {
    let dir = smollm2_dir();
    let model = Model::open(&dir).unwrap();
    let mut backend = CpuBackend::new(&model).unwrap();
    check("smollm2", Some(&mut backend));
}

#[test]
fn generation_blocks_define_the_turns_as_hfs_assistant_mask() {
    assert!(pipeline("smolgen").template().has_generation_blocks());
    let dir = smollm2_dir();
    let model = Model::open(&dir).unwrap();
    let mut backend = CpuBackend::new(&model).unwrap();
    check("smolgen", Some(&mut backend));
}

#[test]
fn a_template_without_markers_is_refused_for_several_turns() {
    // Plain text turns: no ChatML or Llama 3 markers, so the turns cannot be located: refused, never guessed.
    let dir = smollm2_dir();
    let tokenizer = Tokenizer::open(dir.join("tokenizer.json")).unwrap();
    let template = ChatTemplate::from_source(
        "{% for m in messages %}{{ m.role }}: {{ m.content }}\n{% endfor %}{% if add_generation_prompt %}assistant: {% endif %}",
        "plain.jinja",
        Default::default(),
    )
    .unwrap();
    let pipe = TextPipeline::from_parts(&dir, tokenizer, template);
    let m = parse_messages(
        &serde_json::json!([{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"},
                            {"role": "user", "content": "c"}, {"role": "assistant", "content": "the final answer"}]),
        "t",
    )
    .unwrap();
    let e = pipe.conversation(&m, None, SpanMode::Turn, Turns::All, 4096).unwrap_err().to_string();
    assert!(e.contains("2 assistant turns to score") && e.contains("--turns last"), "{e}");
    // The final turn alone is the single-turn convention, which needs no markers.
    assert!(pipe.conversation(&m, None, SpanMode::Turn, Turns::Last, 4096).unwrap().ready().is_some());
}
