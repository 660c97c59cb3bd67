//! From chat messages to token ids and a scored span.
//!
//! [`TextPipeline::open`] loads a model (or tokenizer) directory's `tokenizer.json` ([`Tokenizer`]) and chat
//! template ([`ChatTemplate`]); [`TextPipeline::trajectory`] validates a `[system?, user, assistant]` chat,
//! renders and tokenises it, and returns the ids with the span to score ([`Trajectory`]) under one of the two
//! reference conventions ([`SpanMode`]), or why there is nothing to score ([`SkipReason`]). Rendering and
//! tokenisation reproduce HF transformers' `apply_chat_template(..., tokenize=False)` and `tokenizer(text)`;
//! `tests/text_parity.rs` checks this against HF output for the Qwen3, Llama 3 and SmolLM2 tokenizers.

pub mod chat_template;
mod jinja_compat;
pub mod message;
pub mod span;
pub mod tokenizer;

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

pub use chat_template::ChatTemplate;
pub use message::{assistant_indices, parse_messages, scored_prefix, validate_chat, without_assistant, Message};
pub use span::{Prepared, SkipReason, SpanMode, TemplateFamily, Trajectory, Turns, DEFAULT_MAX_LEN};
pub use tokenizer::{Encoded, Tokenizer};

use crate::error::{LarkError, Result};

/// A tokenizer and its chat template: everything needed to turn chats into scored token sequences.
#[derive(Debug)]
pub struct TextPipeline {
    dir: PathBuf,
    tokenizer: Tokenizer,
    template: ChatTemplate,
}

impl TextPipeline {
    /// Load `DIR/tokenizer.json` and the chat template of `DIR` (see [`ChatTemplate::open`]).
    pub fn open(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref();
        if !dir.is_dir() {
            return Err(LarkError::input(dir.display().to_string(), "not a directory (expected a model directory)"));
        }
        let tokenizer = Tokenizer::open(dir.join("tokenizer.json"))?;
        let template = ChatTemplate::open(dir)?;
        Ok(TextPipeline { dir: dir.to_path_buf(), tokenizer, template })
    }

    pub fn from_parts(dir: impl Into<PathBuf>, tokenizer: Tokenizer, template: ChatTemplate) -> Self {
        TextPipeline { dir: dir.into(), tokenizer, template }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }
    pub fn template(&self) -> &ChatTemplate {
        &self.template
    }

    /// `apply_chat_template(messages, tokenize=False, add_generation_prompt=...)`. No validation: any chat the
    /// template accepts (Local Naturalness renders prompts with it).
    pub fn render(&self, messages: &[Message], add_generation_prompt: bool) -> Result<String> {
        self.template.render(messages, add_generation_prompt)
    }

    /// `tokenizer(text)["input_ids"]`.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        self.tokenizer.encode(text)
    }

    /// The template family [`SpanMode::Content`] would use, or why there is none.
    pub fn family(&self) -> Result<TemplateFamily> {
        TemplateFamily::detect(&self.tokenizer, self.template.source(), self.template.origin())
    }

    /// [`TextPipeline::conversation`] without tools, every assistant turn scored.
    pub fn trajectory(&self, messages: &[Message], mode: SpanMode, max_len: usize) -> Result<Prepared> {
        self.conversation(messages, None, mode, Turns::All, max_len)
    }

    /// `apply_chat_template(messages, tools=tools, tokenize=False, ...)`.
    pub fn render_with_tools(
        &self,
        messages: &[Message],
        tools: Option<&[serde_json::Value]>,
        add_generation_prompt: bool,
    ) -> Result<String> {
        self.template.render_with_tools(messages, tools, add_generation_prompt)
    }

    /// Validate `messages` (errors located at `messages[i]...`), drop what follows the last assistant turn,
    /// render the whole conversation once (with `tools`), tokenise, truncate at `max_len` and find the positions
    /// `mode` scores in the assistant turns `turns` selects. A single scored turn (one assistant message, or
    /// `Turns::Last`) is found exactly as the reference single-turn code finds it; several are located in the
    /// one rendering by the template family's markers ([`span::multi_turn_span`]), so each turn's context is
    /// exactly what that rendering shows (the Qwen3 template drops the thinking of turns before the last user
    /// query: so does the context here). A template without known markers is refused for several turns.
    pub fn conversation(
        &self,
        messages: &[Message],
        tools: Option<&[serde_json::Value]>,
        mode: SpanMode,
        turns: Turns,
        max_len: usize,
    ) -> Result<Prepared> {
        validate_chat(messages, "chat")?;
        let messages = scored_prefix(messages);
        // A template that marks assistant text with {% generation %} blocks: that mask defines the turns.
        if let Some((text, blocks)) = self.template.render_generation_ranges(messages, tools)? {
            return span::generation_span(&self.tokenizer, mode, turns, &text, &blocks, max_len);
        }
        let n_assistant = assistant_indices(messages).len();
        let full = self.render_with_tools(messages, tools, false)?;
        let prompt = match mode {
            SpanMode::Turn => Some(self.render_with_tools(&without_assistant(messages), tools, true)?),
            SpanMode::Content => None,
        };
        if n_assistant == 1 || turns == Turns::Last {
            return match prompt {
                Some(prompt) => span::turn_span(&self.tokenizer, &full, &prompt, max_len),
                None => span::content_span(&self.tokenizer, self.family()?, &full, max_len),
            };
        }
        let family = self.family().map_err(|e| {
            LarkError::Unsupported(format!(
                "{n_assistant} assistant turns to score, but their positions cannot be located in this template's \
                 rendering: {e} (use --turns last to score only the final turn)"
            ))
        })?;
        span::multi_turn_span(&self.tokenizer, family, mode, &full, prompt.as_deref(), n_assistant, max_len)
    }

    /// SHA-256 over `tokenizer.json`, the template text and the special tokens passed to it: two pipelines with
    /// the same fingerprint produce the same ids for the same chat.
    pub fn fingerprint(&self) -> String {
        let mut h = Sha256::new();
        h.update(self.tokenizer.sha256().as_bytes());
        h.update([0]);
        h.update(self.template.source().as_bytes());
        for (k, v) in self.template.special_tokens() {
            h.update([0]);
            h.update(k.as_bytes());
            h.update([1]);
            h.update(v.as_bytes());
        }
        format!("{:x}", h.finalize())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pipeline_is_shareable_across_threads() {
        fn send_sync<T: Send + Sync>() {}
        send_sync::<TextPipeline>();
    }

    #[test]
    fn open_needs_a_directory_with_a_tokenizer() {
        let e = TextPipeline::open("/nonexistent/model").unwrap_err().to_string();
        assert!(e.starts_with("/nonexistent/model: not a directory"), "{e}");
        let d = tempfile::tempdir().unwrap();
        let e = TextPipeline::open(d.path()).unwrap_err().to_string();
        assert!(e.contains("tokenizer.json"), "{e}");
    }
}
