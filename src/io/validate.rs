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

/// The `messages` list: objects with string `role` and string `content` (optional on an assistant message with
/// `tool_calls`), with at least one assistant turn; messages after the last one are dropped.
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
            Some(Value::String(s)) => Some(s.clone()),
            // An assistant message that only calls tools may have no content (the shape rules check it has
            // tool calls then).
            None | Some(Value::Null) if role == "assistant" => None,
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
    finish(out, "messages", 0)
}

/// The conversation of a record: `messages`, or else a ShareGPT `conversations` list ([`sharegpt_field`]);
/// `sharegpt` forces the latter (`--format sharegpt`).
pub fn conversation_field(obj: &Map<String, Value>, sharegpt: bool) -> Result<Vec<Message>, Invalid> {
    if sharegpt || (!obj.contains_key("messages") && obj.contains_key("conversations")) {
        sharegpt_field(obj)
    } else {
        messages_field(obj)
    }
}

/// A ShareGPT record: `conversations: [{"from": ..., "value": ...}]`, `from` one of human/user, gpt/assistant/
/// chatgpt/model, system, tool/observation/function_response/ipython (a tool result) and function_call (an
/// assistant turn calling a tool: `value` is the JSON of `{"name", "arguments"}` or a list of them, as
/// LLaMA-Factory writes it; it becomes an assistant message with `tool_calls` and content ""); an optional
/// top-level `system` string becomes the first message. Other keys of a
/// turn are dropped.
pub fn sharegpt_field(obj: &Map<String, Value>) -> Result<Vec<Message>, Invalid> {
    let list = match obj.get("conversations") {
        None => return Err(Invalid::new("conversations", "missing (a ShareGPT record needs a `conversations` list)")),
        Some(Value::Array(a)) => a,
        Some(v) => {
            return Err(Invalid::new(
                "conversations",
                format!("expected a list of {{from, value}} objects, found {}", type_name(v)),
            ))
        }
    };
    if list.is_empty() {
        return Err(Invalid::new("conversations", "empty list: a trajectory needs at least an assistant turn"));
    }
    let mut out = Vec::with_capacity(list.len() + 1);
    let mut offset = 0;
    match obj.get("system") {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) if s.is_empty() => {}
        Some(Value::String(s)) => {
            out.push(Message::system(s.clone()));
            offset = 1;
        }
        Some(v) => return Err(Invalid::new("system", format!("expected a string, found {}", type_name(v)))),
    }
    for (i, t) in list.iter().enumerate() {
        let field = |k: &str| format!("conversations[{i}].{k}");
        let t = t.as_object().ok_or_else(|| {
            Invalid::new(format!("conversations[{i}]"), format!("expected an object, found {}", type_name(t)))
        })?;
        let get = |k: &str| -> Result<String, Invalid> {
            match t.get(k) {
                Some(Value::String(s)) => Ok(s.clone()),
                None => Err(Invalid::new(field(k), "missing")),
                Some(v) => Err(Invalid::new(field(k), format!("expected a string, found {}", type_name(v)))),
            }
        };
        let from = get("from")?;
        let value = get("value")?;
        let role = match from.as_str() {
            "human" | "user" => "user",
            "gpt" | "assistant" | "chatgpt" | "model" => "assistant",
            "system" => "system",
            "tool" | "observation" | "function_response" | "ipython" => "tool",
            "function_call" => {
                let calls = parse_function_call(&value).map_err(|why| Invalid::new(field("value"), why))?;
                // Content "": templates such as Qwen3's concatenate the content of every assistant message (as
                // HF's would fail on a missing one), and "" renders as nothing in the others.
                let mut m = Message::assistant("");
                m.extra.insert("tool_calls".into(), Value::Array(calls));
                out.push(m);
                continue;
            }
            other => {
                return Err(Invalid::new(
                    field("from"),
                    format!(
                        "unknown ShareGPT speaker {other:?} (human/user, gpt/assistant, system, tool/observation, \
                         function_call)"
                    ),
                ))
            }
        };
        out.push(Message::new(role, value));
    }
    finish(out, "conversations", offset)
}

/// A ShareGPT `function_call` value as `tool_calls`: `{"name", "arguments"}` or a list of them, the arguments an
/// object or a JSON string holding one.
fn parse_function_call(value: &str) -> Result<Vec<Value>, String> {
    let v: Value = serde_json::from_str(value).map_err(|e| format!("a function_call value must be JSON: {e}"))?;
    let calls = match v {
        Value::Array(a) => a,
        one @ Value::Object(_) => vec![one],
        other => {
            return Err(format!("expected a {{name, arguments}} object or a list of them, found {}", type_name(&other)))
        }
    };
    calls
        .into_iter()
        .map(|c| {
            let Value::Object(mut c) = c else {
                return Err("each call must be a {name, arguments} object".to_string());
            };
            let name = match c.remove("name") {
                Some(Value::String(s)) => s,
                _ => return Err("each call needs a string `name`".to_string()),
            };
            let arguments = match c.remove("arguments") {
                None | Some(Value::Null) => Value::Object(Map::new()),
                Some(Value::String(s)) => serde_json::from_str(&s).unwrap_or(Value::String(s)),
                Some(a) => a,
            };
            let mut f = Map::new();
            f.insert("name".into(), Value::String(name));
            f.insert("arguments".into(), arguments);
            let mut call = Map::new();
            call.insert("type".into(), Value::String("function".into()));
            call.insert("function".into(), Value::Object(f));
            Ok(Value::Object(call))
        })
        .collect()
}

/// The record-level `tools` list (handed to the chat template as `apply_chat_template(tools=...)`): a list of
/// objects, or a string holding one (LLaMA-Factory's ShareGPT); absent, null or an empty string: no tools.
pub fn tools_field(obj: &Map<String, Value>) -> Result<Option<Vec<Value>>, Invalid> {
    let list = match obj.get("tools") {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::String(s)) if s.trim().is_empty() => return Ok(None),
        Some(Value::String(s)) => match serde_json::from_str::<Value>(s) {
            Ok(Value::Array(a)) => a,
            Ok(other) => {
                return Err(Invalid::new("tools", format!("a string that holds {}, not a list", type_name(&other))))
            }
            Err(e) => return Err(Invalid::new("tools", format!("a string that is not JSON: {e}"))),
        },
        Some(Value::Array(a)) => a.clone(),
        Some(v) => {
            return Err(Invalid::new("tools", format!("expected a list of tool schemas, found {}", type_name(v))))
        }
    };
    if let Some(i) = list.iter().position(|t| !t.is_object()) {
        return Err(Invalid::new(format!("tools[{i}]"), format!("expected an object, found {}", type_name(&list[i]))));
    }
    // An explicit empty list stays one: HF passes `tools=[]` as a list, and some templates (Llama 3.1) tell it
    // from none.
    Ok(Some(list))
}

/// The checks every conversation gets once parsed: size, at least one assistant turn, the shape rules; messages
/// after the last assistant turn dropped. `field` names the list in errors; its element `i` is message
/// `i + offset`.
fn finish(mut out: Vec<Message>, field: &str, offset: usize) -> Result<Vec<Message>, Invalid> {
    check_text_size(&out)?;
    if !out.iter().any(|m| m.role == "assistant") {
        let last = out.last().map(|m| m.role.as_str()).unwrap_or("");
        return Err(Invalid::new(
            field,
            format!("no assistant turn: no message has role \"assistant\" (the last has role {last:?})"),
        ));
    }
    // The shape rules live in one place, the text pipeline; its error reads "<location>: <field>: <reason>", so
    // with an empty location the field is what follows ": ".
    if let Err(e) = crate::text::validate_chat(&out, "") {
        return Err(match e {
            crate::error::LarkError::Input { location, message } => {
                let f = location.trim_start_matches(':').trim_start();
                Invalid::new(rename_field(f, field, offset), message)
            }
            other => Invalid::new(field, other.to_string()),
        });
    }
    // Messages after the last assistant turn cannot influence a scored token: dropped.
    let keep = crate::text::message::scored_prefix(&out).len();
    out.truncate(keep);
    Ok(out)
}

/// `messages[i].x` as the input spells it: `conversations[i - offset].x` for a ShareGPT record.
fn rename_field(f: &str, field: &str, offset: usize) -> String {
    if field == "messages" {
        return f.to_string();
    }
    let Some(rest) = f.strip_prefix("messages") else { return f.to_string() };
    if let Some(inner) = rest.strip_prefix('[') {
        if let Some((n, tail)) = inner.split_once(']') {
            if let Ok(n) = n.parse::<usize>() {
                return match n.checked_sub(offset) {
                    Some(k) => format!("{field}[{k}]{tail}"),
                    None => format!("system{tail}"),
                };
            }
        }
    }
    format!("{field}{rest}")
}

/// Refuse a trajectory holding more than [`MAX_TRAJECTORY_TEXT`] bytes of text, naming its largest message.
fn check_text_size(messages: &[Message]) -> Result<(), Invalid> {
    let size = |m: &Message| {
        m.text().len()
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
            m.text().len(),
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
