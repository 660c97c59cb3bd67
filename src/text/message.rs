//! Chat messages as they come from a pool, and the shape a scorable conversation must have.
//!
//! A conversation is `[system?, user, ...]` with any number of assistant turns after the first user message,
//! interleaved with user and `tool` messages: an optional system prompt first (and only there), a user message
//! before the first assistant turn, every assistant message with `content` or `tool_calls` (a list), every tool
//! message after an assistant turn. Messages after the last assistant turn cannot influence any scored token and
//! are dropped ([`scored_prefix`]). `content` is a string, or absent/null (an assistant message that only calls
//! tools). Keys other than `role` and `content` (`tool_calls`, `name`, `tool_call_id`, `reasoning_content`, ...)
//! are kept (`extra`) in their input order and passed to the chat template, as HF's `apply_chat_template` passes
//! the whole message dict.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::{LarkError, Result};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Message {
    pub role: String,
    /// `None`: the message had no `content` or a null one (HF drops null keys; the template sees it undefined).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    /// Any other keys of the message object (e.g. `reasoning_content`, `tool_calls`), rendered as HF would.
    #[serde(flatten, default, skip_serializing_if = "Map::is_empty")]
    pub extra: Map<String, Value>,
}

impl Message {
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        Message { role: role.into(), content: Some(content.into()), extra: Map::new() }
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
    pub fn tool(content: impl Into<String>) -> Self {
        Self::new("tool", content)
    }
    /// The content, `""` when there is none.
    pub fn text(&self) -> &str {
        self.content.as_deref().unwrap_or("")
    }
    /// The `tool_calls` list, when the message has one.
    pub fn tool_calls(&self) -> Option<&Vec<Value>> {
        self.extra.get("tool_calls").and_then(Value::as_array)
    }
    pub fn is_assistant(&self) -> bool {
        self.role == "assistant"
    }
}

/// The indices of the assistant messages, in order.
pub fn assistant_indices(messages: &[Message]) -> Vec<usize> {
    messages.iter().enumerate().filter(|(_, m)| m.is_assistant()).map(|(i, _)| i).collect()
}

/// The conversation up to and including its last assistant turn (what is scored; later messages cannot
/// influence it). The whole slice when there is no assistant turn (validation reports that).
pub fn scored_prefix(messages: &[Message]) -> &[Message] {
    match messages.iter().rposition(Message::is_assistant) {
        Some(i) => &messages[..=i],
        None => messages,
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
        let role = match obj.get("role") {
            Some(Value::String(s)) => s.clone(),
            Some(other) => {
                return Err(LarkError::input(
                    format!("{location}: messages[{i}].role"),
                    format!("expected a string, found {}", kind_name(other)),
                ))
            }
            None => return Err(LarkError::input(format!("{location}: messages[{i}]"), "missing field `role`")),
        };
        let content = match obj.get("content") {
            Some(Value::String(s)) => Some(s.clone()),
            // An assistant message that only calls tools may have no content (checked by validate_chat).
            None | Some(Value::Null) if role == "assistant" => None,
            Some(other) if !other.is_null() => {
                return Err(LarkError::input(
                    format!("{location}: messages[{i}].content"),
                    format!("expected a string, found {}", kind_name(other)),
                ))
            }
            _ => return Err(LarkError::input(format!("{location}: messages[{i}]"), "missing field `content`")),
        };
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

/// Check the conversation's shape (see the module doc); `location` prefixes errors. Messages after the last
/// assistant turn are allowed (callers drop them with [`scored_prefix`]).
pub fn validate_chat(messages: &[Message], location: &str) -> Result<()> {
    let err = |field: String, msg: String| LarkError::input(format!("{location}: {field}"), msg);
    if messages.is_empty() {
        return Err(err("messages".into(), "empty conversation: expected [system?, user, assistant]".into()));
    }
    let Some(last_assistant) = messages.iter().rposition(Message::is_assistant) else {
        let last = messages.len() - 1;
        return Err(err(
            format!("messages[{last}].role"),
            format!(
                "missing assistant turn: no message has role `assistant` (the last has role `{}`)",
                messages[last].role
            ),
        ));
    };
    let (mut seen_user, mut seen_assistant) = (false, false);
    for (i, m) in messages[..=last_assistant].iter().enumerate() {
        match m.role.as_str() {
            "system" if i == 0 => {}
            "system" => {
                return Err(err(format!("messages[{i}].role"), "a system message is only allowed first".into()));
            }
            "user" => seen_user = true,
            "assistant" => {
                if !seen_user {
                    return Err(err("messages".into(), "no user message before the first assistant turn".into()));
                }
                match m.extra.get("tool_calls") {
                    None => {}
                    Some(Value::Array(calls)) => {
                        if let Some(k) = calls.iter().position(|c| !c.is_object()) {
                            return Err(err(
                                format!("messages[{i}].tool_calls[{k}]"),
                                format!("expected an object, found {}", kind_name(&calls[k])),
                            ));
                        }
                    }
                    Some(other) => {
                        return Err(err(
                            format!("messages[{i}].tool_calls"),
                            format!("expected a list of tool calls, found {}", kind_name(other)),
                        ));
                    }
                }
                if m.content.is_none() && m.tool_calls().is_none_or(|c| c.is_empty()) {
                    return Err(err(
                        format!("messages[{i}].content"),
                        "an assistant message needs `content` or `tool_calls`: it has neither".into(),
                    ));
                }
                seen_assistant = true;
            }
            "tool" => {
                if !seen_user {
                    return Err(err(
                        format!("messages[{i}].role"),
                        "a tool message before any user message (tool results answer an assistant's tool calls)".into(),
                    ));
                }
                if !seen_assistant {
                    return Err(err(
                        format!("messages[{i}].role"),
                        "a tool message before any assistant turn (tool results answer an assistant's tool calls)"
                            .into(),
                    ));
                }
            }
            other => {
                return Err(err(
                    format!("messages[{i}].role"),
                    format!("unsupported role `{other}` (expected system, user, assistant or tool)"),
                ));
            }
        }
    }
    Ok(())
}

/// The conversation before its last assistant turn: the prompt of the final turn, as the LARK authors render it
/// (for a single-turn chat, the chat without its assistant message).
pub fn without_assistant(messages: &[Message]) -> Vec<Message> {
    match messages.iter().rposition(Message::is_assistant) {
        Some(i) => messages[..i].to_vec(),
        None => messages.to_vec(),
    }
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
    fn several_assistant_turns_and_tools_are_valid() {
        let mut call = Message::assistant("");
        call.content = None;
        call.extra
            .insert("tool_calls".into(), json!([{"type": "function", "function": {"name": "f", "arguments": {}}}]));
        let m = vec![
            Message::system("s"),
            Message::user("u"),
            call,
            Message::tool("42"),
            Message::assistant("a"),
            Message::user("again"),
            Message::assistant("b"),
            Message::user("trailing"),
        ];
        validate_chat(&m, "f").unwrap();
        assert_eq!(assistant_indices(&m), vec![2, 4, 6]);
        assert_eq!(scored_prefix(&m).len(), 7);
        assert_eq!(without_assistant(scored_prefix(&m)).len(), 6);
    }

    #[test]
    fn bad_roles_are_errors() {
        let m = vec![Message::user("u"), Message::system("late"), Message::assistant("a")];
        assert!(validate_chat(&m, "f").unwrap_err().to_string().contains("only allowed first"));
        let m = vec![Message::new("critic", "x"), Message::user("u"), Message::assistant("a")];
        assert!(validate_chat(&m, "f").unwrap_err().to_string().contains("unsupported role `critic`"));
        let m = vec![Message::system("s"), Message::assistant("a")];
        assert!(validate_chat(&m, "f").unwrap_err().to_string().contains("no user message"));
        // A late system message after the last assistant turn is dropped, not checked.
        validate_chat(&[Message::user("u"), Message::assistant("a"), Message::system("x")], "f").unwrap();
    }

    #[test]
    fn tool_messages_and_tool_calls_are_checked() {
        let m = vec![Message::tool("r"), Message::user("u"), Message::assistant("a")];
        let e = validate_chat(&m, "f:3").unwrap_err().to_string();
        assert_eq!(e, "f:3: messages[0].role: a tool message before any user message (tool results answer an assistant's tool calls)");
        let m = vec![Message::user("u"), Message::tool("r"), Message::assistant("a")];
        assert!(validate_chat(&m, "f").unwrap_err().to_string().contains("before any assistant turn"));
        let mut a = Message::assistant("");
        a.content = None;
        let m = vec![Message::user("u"), a.clone()];
        let e = validate_chat(&m, "f").unwrap_err().to_string();
        assert_eq!(e, "f: messages[1].content: an assistant message needs `content` or `tool_calls`: it has neither");
        a.extra.insert("tool_calls".into(), json!([]));
        assert!(validate_chat(&[Message::user("u"), a.clone()], "f").unwrap_err().to_string().contains("neither"));
        a.extra.insert("tool_calls".into(), json!({"name": "f"}));
        let e = validate_chat(&[Message::user("u"), a.clone()], "f").unwrap_err().to_string();
        assert_eq!(e, "f: messages[1].tool_calls: expected a list of tool calls, found an object");
        a.extra.insert("tool_calls".into(), json!(["f"]));
        let e = validate_chat(&[Message::user("u"), a], "f").unwrap_err().to_string();
        assert!(e.contains("messages[1].tool_calls[0]: expected an object, found a string"), "{e}");
    }

    #[test]
    fn parse_reports_non_string_content() {
        let v = json!([{"role": "user", "content": "q"}, {"role": "assistant", "content": [{"type": "text"}]}]);
        let e = parse_messages(&v, "pool.jsonl:9").unwrap_err().to_string();
        assert_eq!(e, "pool.jsonl:9: messages[1].content: expected a string, found an array");
        let v = json!([{"role": "user"}]);
        let e = parse_messages(&v, "p").unwrap_err().to_string();
        assert_eq!(e, "p: messages[0]: missing field `content`");
        // An assistant may have no content (a tool-calling turn); validate_chat decides whether that is allowed.
        let v = json!([{"role": "assistant", "content": null, "tool_calls": [{"id": "1"}]}]);
        assert_eq!(parse_messages(&v, "p").unwrap()[0].content, None);
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
