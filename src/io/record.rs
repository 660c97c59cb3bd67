//! What one pool entry is once read: a chat (`messages`) ending with the teacher's assistant turn, plus the
//! ids that place it in the pool. Also where it came from (for error messages) and what a rejected entry
//! looks like in `rejects.jsonl`.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::path::Path;
use std::sync::Arc;

/// The chat message type is the text pipeline's (it keeps extra keys such as `reasoning_content`, which
/// chat templates may render and `train.jsonl` must carry through).
pub use crate::text::Message;

/// Where a record was read from: the file, the 1-based line its JSON value starts on, for the RSR layout the
/// 0-based index of the element in the file's list, and for a Parquet file the 0-based row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub file: Arc<Path>,
    pub line: Option<usize>,
    pub index: Option<usize>,
    pub row: Option<usize>,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(l) = self.line {
            write!(f, ":{l}")?;
        }
        if let Some(i) = self.index {
            write!(f, " (element {i})")?;
        }
        if let Some(r) = self.row {
            write!(f, ": row {r}")?;
        }
        Ok(())
    }
}

/// One candidate trajectory for one problem.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    pub problem_id: i64,
    pub candidate_id: i64,
    pub teacher: String,
    /// Non-empty; the last message has role "assistant" (checked by the readers, which drop later messages).
    pub messages: Vec<Message>,
    /// The record-level `tools` list handed to the chat template (`apply_chat_template(tools=...)`).
    pub tools: Option<Vec<serde_json::Value>>,
    pub origin: Origin,
}

impl Record {
    /// The teacher's answer: the content of the final (assistant) message.
    pub fn assistant_content(&self) -> &str {
        self.messages.last().map(|m| m.text()).unwrap_or("")
    }
    /// The contents of the assistant turns `turns` scores (all of them, or the last), joined by a blank line:
    /// the text the text-only baselines (length, rule quality) read.
    pub fn scored_text(&self, turns: crate::text::Turns) -> std::borrow::Cow<'_, str> {
        let asst: Vec<&str> = self.messages.iter().filter(|m| m.is_assistant()).map(|m| m.text()).collect();
        match (turns, asst.len()) {
            (crate::text::Turns::Last, _) | (_, 0 | 1) => self.assistant_content().into(),
            (crate::text::Turns::All, _) => asst.join("\n\n").into(),
        }
    }
    /// Everything before the final assistant turn (the prompt the student is conditioned on).
    pub fn prompt_messages(&self) -> &[Message] {
        &self.messages[..self.messages.len().saturating_sub(1)]
    }
}

/// A pool entry that failed validation under `--skip-invalid`; one line of `rejects.jsonl`.
/// `field` is a path such as `messages[2].content`, or `(json)` when the text is not JSON at all, or
/// `(file)` when a whole file was unusable.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reject {
    pub file: String,
    pub line: Option<usize>,
    pub index: Option<usize>,
    /// Parquet: the 0-based row in the file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub row: Option<usize>,
    pub field: String,
    pub reason: String,
}

impl Reject {
    pub fn new(origin: &Origin, invalid: Invalid) -> Self {
        Reject {
            file: origin.file.display().to_string(),
            line: origin.line,
            index: origin.index,
            row: origin.row,
            field: invalid.field,
            reason: invalid.reason,
        }
    }
}

/// A validation failure before it is located: which field and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    pub field: String,
    pub reason: String,
}

impl Invalid {
    pub fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Invalid { field: field.into(), reason: reason.into() }
    }
    /// The library error for this failure at `origin`: "file:line (element i): field `f`: reason".
    pub fn at(self, origin: &Origin) -> crate::error::LarkError {
        crate::error::LarkError::input(origin.to_string(), format!("field `{}`: {}", self.field, self.reason))
    }
}
