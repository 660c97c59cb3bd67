//! Field-by-field checks of one parsed JSON pool entry, so that every failure names the field at fault
//! (`messages[2].content`) instead of a generic "invalid type" from a derived deserializer.

use super::record::{Invalid, Message};
use serde_json::{Map, Value};

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
