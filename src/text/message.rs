//! Chat messages as they come from a pool, and the shape a scorable trajectory must have.
//!
//! A trajectory is `[system?, user..., assistant]`: an optional system prompt first, at least one user turn, and
//! exactly one assistant turn, last. Every `content` is a string. Keys other than `role` and `content` are kept
//! (`extra`) and passed to the chat template, as HF's `apply_chat_template` passes the whole message dict.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::{LarkError, Result};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Message {
    pub role: String,
    pub content: String,
    /// Any other keys of the message object (e.g. `reasoning_content`), rendered as HF would.
    #[serde(flatten, default, skip_serializing_if = "Map::is_empty")]
    pub extra: Map<String, Value>,
}

impl Message {
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        Message { role: role.into(), content: content.into(), extra: Map::new() }
    }
    pub fn system(content: impl Into<String>) -> Self {
        Self::new("system", content)
    }
    pub fn user(content: impl Into<String>) -> Self {
        Self::new("user", content)
    }
    pub fn assistant(content: impl Into<String>) -> Self {
        Self::new("assistant", content)
    }
}

fn kind_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Parse a JSON `messages` array with errors that name the offending field: `location` is where the array sits
/// (e.g. `pool.jsonl:17`), and the error reads `pool.jsonl:17: messages[2].content: ...`.
pub fn parse_messages(value: &Value, location: &str) -> Result<Vec<Message>> {
    let arr = value.as_array().ok_or_else(|| {
        LarkError::input(format!("{location}: messages"), format!("expected an array, found {}", kind_name(value)))
    })?;
    let mut out = Vec::with_capacity(arr.len());
    for (i, m) in arr.iter().enumerate() {
        let obj = m.as_object().ok_or_else(|| {
            LarkError::input(
                format!("{location}: messages[{i}]"),
                format!("expected an object, found {}", kind_name(m)),
            )
        })?;
        let field = |name: &str| -> Result<String> {
            match obj.get(name) {
                Some(Value::String(s)) => Ok(s.clone()),
                Some(other) => Err(LarkError::input(
                    format!("{location}: messages[{i}].{name}"),
                    format!("expected a string, found {}", kind_name(other)),
                )),
                None => Err(LarkError::input(format!("{location}: messages[{i}]"), format!("missing field `{name}`"))),
            }
        };
        let role = field("role")?;
        let content = field("content")?;
        // HF drops None-valued keys before rendering; do the same so templates see the same message.
        let extra = obj
            .iter()
            .filter(|(k, v)| k.as_str() != "role" && k.as_str() != "content" && !v.is_null())
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        out.push(Message { role, content, extra });
    }
    Ok(out)
}

/// Check that `messages` is `[system?, user..., assistant]` (see the module doc). `location` prefixes errors.
pub fn validate_chat(messages: &[Message], location: &str) -> Result<()> {
    let err = |field: String, msg: String| LarkError::input(format!("{location}: {field}"), msg);
    if messages.is_empty() {
        return Err(err("messages".into(), "empty conversation: expected [system?, user, assistant]".into()));
    }
    let last = messages.len() - 1;
    let mut n_user = 0;
    for (i, m) in messages.iter().enumerate() {
        match m.role.as_str() {
            "system" if i == 0 => {}
            "system" => {
                return Err(err(format!("messages[{i}].role"), "a system message is only allowed first".into()));
            }
            "user" => n_user += 1,
            "assistant" if i == last => {}
            "assistant" => {
                return Err(err(
                    format!("messages[{i}].role"),
                    "an assistant message before the end: expected exactly one assistant turn, last".into(),
                ));
            }
            other => {
                return Err(err(
                    format!("messages[{i}].role"),
                    format!("unsupported role `{other}` (expected system, user or assistant)"),
                ));
            }
        }
    }
    if messages[last].role != "assistant" {
        return Err(err(
            format!("messages[{last}].role"),
            format!("missing assistant turn: the last message has role `{}`", messages[last].role),
        ));
    }
    if n_user == 0 {
        return Err(err("messages".into(), "no user message before the assistant turn".into()));
    }
    Ok(())
}

/// The conversation without its (final) assistant turn: what the LARK authors render as the prompt.
pub fn without_assistant(messages: &[Message]) -> Vec<Message> {
    messages.iter().filter(|m| m.role != "assistant").cloned().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn chat() -> Vec<Message> {
        vec![Message::system("s"), Message::user("u"), Message::assistant("a")]
    }

    #[test]
    fn valid_shapes() {
        validate_chat(&chat(), "t").unwrap();
        validate_chat(&chat()[1..], "t").unwrap();
        validate_chat(&[Message::user("u1"), Message::user("u2"), Message::assistant("a")], "t").unwrap();
    }

    #[test]
    fn empty_is_an_error() {
        let e = validate_chat(&[], "pool.jsonl:3").unwrap_err().to_string();
        assert!(e.starts_with("pool.jsonl:3: messages: empty"), "{e}");
    }

    #[test]
    fn missing_assistant_is_an_error() {
        let e = validate_chat(&chat()[..2], "f:1").unwrap_err().to_string();
        assert!(e.contains("messages[1].role") && e.contains("missing assistant turn"), "{e}");
    }

    #[test]
    fn assistant_not_last_or_twice_is_an_error() {
        let mut m = chat();
        m.push(Message::user("again"));
        let e = validate_chat(&m, "f").unwrap_err().to_string();
        assert!(e.contains("messages[2].role") && e.contains("before the end"), "{e}");
        let m = vec![Message::user("u"), Message::assistant("a"), Message::assistant("b")];
        assert!(validate_chat(&m, "f").unwrap_err().to_string().contains("messages[1].role"));
    }

    #[test]
    fn bad_roles_are_errors() {
        let m = vec![Message::user("u"), Message::system("late"), Message::assistant("a")];
        assert!(validate_chat(&m, "f").unwrap_err().to_string().contains("only allowed first"));
        let m = vec![Message::new("tool", "x"), Message::user("u"), Message::assistant("a")];
        assert!(validate_chat(&m, "f").unwrap_err().to_string().contains("unsupported role `tool`"));
        let m = vec![Message::system("s"), Message::assistant("a")];
        assert!(validate_chat(&m, "f").unwrap_err().to_string().contains("no user message"));
    }

    #[test]
    fn parse_reports_non_string_content() {
        let v = json!([{"role": "user", "content": "q"}, {"role": "assistant", "content": [{"type": "text"}]}]);
        let e = parse_messages(&v, "pool.jsonl:9").unwrap_err().to_string();
        assert_eq!(e, "pool.jsonl:9: messages[1].content: expected a string, found an array");
        let v = json!([{"role": "user"}]);
        let e = parse_messages(&v, "p").unwrap_err().to_string();
        assert_eq!(e, "p: messages[0]: missing field `content`");
        let v = json!([{"role": 3, "content": "x"}]);
        assert!(parse_messages(&v, "p").unwrap_err().to_string().contains("messages[0].role: expected a string"));
        let v = json!({"role": "user"});
        assert!(parse_messages(&v, "p").unwrap_err().to_string().contains("expected an array, found an object"));
        let v = json!(["hi"]);
        assert!(parse_messages(&v, "p").unwrap_err().to_string().contains("messages[0]: expected an object"));
    }

    #[test]
    fn parse_keeps_extra_keys_and_drops_nulls() {
        let v = json!([{"role": "assistant", "content": "c", "reasoning_content": "r", "tool_calls": null}]);
        let m = parse_messages(&v, "p").unwrap();
        assert_eq!(m[0].extra.len(), 1);
        assert_eq!(m[0].extra["reasoning_content"], json!("r"));
        // Serde round trip keeps the same shape.
        let back: Message = serde_json::from_value(serde_json::to_value(&m[0]).unwrap()).unwrap();
        assert_eq!(back, m[0]);
    }

    #[test]
    fn prompt_drops_the_assistant() {
        let p = without_assistant(&chat());
        assert_eq!(p.len(), 2);
        assert!(p.iter().all(|m| m.role != "assistant"));
    }
}
