//! Field-by-field checks of one parsed JSON pool entry, so that every failure names the field at fault
//! (`messages[2].content`) instead of a generic "invalid type" from a derived deserializer.

use super::record::{Invalid, Message};
use serde_json::{Map, Value};

/// The most text one trajectory may hold (all its messages together), in bytes. The whole chat is rendered and
/// tokenised before `--max-len` cuts the ids, and the tokenizer needs about 150 bytes of memory per byte of text,
/// so an absurd record (a 50 MB message) must be refused by size rather than attempted. 8 MiB is some 2 M tokens,
/// far beyond any real reasoning trace (the longest are a few hundred KB).
pub const MAX_TRAJECTORY_TEXT: usize = 8 << 20;

/// A short name for a JSON value's type, for messages.
pub fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

pub fn as_object(v: &Value) -> Result<&Map<String, Value>, Invalid> {
    v.as_object().ok_or_else(|| Invalid::new("(record)", format!("expected a JSON object, found {}", type_name(v))))
}

/// An integer field (JSON integers only: `1.0` and `"1"` are rejected, as the authors' ids are ints).
pub fn int_field(obj: &Map<String, Value>, name: &str) -> Result<i64, Invalid> {
    match obj.get(name) {
        None => Err(Invalid::new(name, "missing")),
        Some(v) => int_value(v).ok_or_else(|| Invalid::new(name, format!("expected an integer, found {}", show(v)))),
    }
}

pub fn int_value(v: &Value) -> Option<i64> {
    v.as_i64()
}

/// An optional string field; `None` when absent.
pub fn opt_string_field(obj: &Map<String, Value>, name: &str) -> Result<Option<String>, Invalid> {
    match obj.get(name) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(v) => Err(Invalid::new(name, format!("expected a string, found {}", type_name(v)))),
    }
}

/// The `messages` list: objects with string `role` and string `content`, ending with an assistant turn.
pub fn messages_field(obj: &Map<String, Value>) -> Result<Vec<Message>, Invalid> {
    let list = match obj.get("messages") {
        None => return Err(Invalid::new("messages", "missing")),
        Some(Value::Array(a)) => a,
        Some(v) => {
            return Err(Invalid::new(
                "messages",
                format!("expected a list of {{role, content}} objects, found {}", type_name(v)),
            ))
        }
    };
    if list.is_empty() {
        return Err(Invalid::new("messages", "empty list: a trajectory needs at least an assistant message"));
    }
    let mut out = Vec::with_capacity(list.len());
    for (i, m) in list.iter().enumerate() {
        let m = m.as_object().ok_or_else(|| {
            Invalid::new(format!("messages[{i}]"), format!("expected an object, found {}", type_name(m)))
        })?;
        let role = match m.get("role") {
            Some(Value::String(s)) => s.clone(),
            None => return Err(Invalid::new(format!("messages[{i}].role"), "missing")),
            Some(v) => {
                return Err(Invalid::new(
                    format!("messages[{i}].role"),
                    format!("expected a string, found {}", type_name(v)),
                ))
            }
        };
        let content = match m.get("content") {
            Some(Value::String(s)) => s.clone(),
            None => return Err(Invalid::new(format!("messages[{i}].content"), "missing")),
            Some(v) => {
                return Err(Invalid::new(
                    format!("messages[{i}].content"),
                    format!("expected a string, found {} (only plain-text content is supported)", type_name(v)),
                ))
            }
        };
        // Other keys are kept for the chat template, null ones dropped, as HF's apply_chat_template does.
        let extra = m
            .iter()
            .filter(|(k, v)| k.as_str() != "role" && k.as_str() != "content" && !v.is_null())
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        out.push(Message { role, content, extra });
    }
    check_text_size(&out)?;
    let last = out.last().map(|m| m.role.as_str()).unwrap_or("");
    if last != "assistant" {
        return Err(Invalid::new(
            "messages",
            format!("no assistant turn: the last message must have role \"assistant\" (it has role {last:?})"),
        ));
    }
    // The shape rules ([system?, user..., assistant]) live in one place, the text pipeline; its error reads
    // "<location>: <field>: <reason>", so with an empty location the field is what follows ": ".
    if let Err(e) = crate::text::validate_chat(&out, "") {
        return Err(match e {
            crate::error::LarkError::Input { location, message } => {
                Invalid::new(location.trim_start_matches(':').trim_start(), message)
            }
            other => Invalid::new("messages", other.to_string()),
        });
    }
    Ok(out)
}

/// Refuse a trajectory holding more than [`MAX_TRAJECTORY_TEXT`] bytes of text, naming its largest message.
fn check_text_size(messages: &[Message]) -> Result<(), Invalid> {
    let size = |m: &Message| {
        m.content.len()
            + m.extra.values().map(|v| v.as_str().map_or_else(|| v.to_string().len(), str::len)).sum::<usize>()
    };
    let total: usize = messages.iter().map(size).sum();
    if total <= MAX_TRAJECTORY_TEXT {
        return Ok(());
    }
    let (i, m) = messages.iter().enumerate().max_by_key(|(_, m)| size(m)).expect("total > 0: not empty");
    Err(Invalid::new(
        format!("messages[{i}].content"),
        format!(
            "{} bytes of text in this trajectory ({} in this message), above the limit of {} MiB per trajectory \
             (the whole chat is tokenised before --max-len cuts it)",
            total,
            m.content.len(),
            MAX_TRAJECTORY_TEXT >> 20
        ),
    ))
}

/// A value for a message, shortened so one bad record cannot flood the terminal.
fn show(v: &Value) -> String {
    let s = v.to_string();
    if s.chars().count() > 40 {
        let short: String = s.chars().take(40).collect();
        format!("{short}…")
    } else {
        s
    }
}
