//! The LARK authors' pool format: one JSON object a line,
//! `{"problem_id": int, "candidate_id": int, "teacher": str, "messages": [{role, content}, ...], "tools": [...]?}`,
//! or the same with a ShareGPT `conversations: [{from, value}, ...]` list instead of `messages`.
//! Blank lines are ignored; other fields are ignored; `teacher` may be absent (it becomes "unknown").
//! The file is streamed line by line; a line longer than [`MAX_LINE_BYTES`] is an invalid entry, found without
//! holding more than that in memory (a file with no newline at all must not be read into one buffer).

use super::pool::Sink;
use super::record::{Invalid, Origin, Record};
use super::validate::{as_object, conversation_field, int_field, opt_string_field, tools_field};
use crate::error::{LarkError, Result};
use std::io::{BufRead, Read};
use std::path::Path;
use std::sync::Arc;

/// Longest accepted line, in bytes: JSON escapes (`\n`, `\u0000`) may make a record's line several times its
/// text, which [`super::validate::MAX_TRAJECTORY_TEXT`] bounds.
pub const MAX_LINE_BYTES: usize = 64 << 20;

/// Records given as JSON texts in memory (a library caller's records, e.g. Python dicts): text i is named
/// `name (element i)` in errors.
pub(super) fn read_texts<F: FnMut(Record) -> Result<()>>(
    texts: &[String],
    name: &Path,
    sharegpt: bool,
    sink: &mut Sink<F>,
) -> Result<()> {
    let shared: Arc<Path> = Arc::from(name);
    for (i, text) in texts.iter().enumerate() {
        let origin = Origin { file: shared.clone(), line: None, index: Some(i), row: None };
        match parse_line(text.as_bytes(), &origin, sharegpt) {
            Ok(r) => sink.record(r)?,
            Err(inv) => sink.invalid(&origin, inv)?,
        }
    }
    Ok(())
}

/// `sharegpt`: every record must be ShareGPT-shaped (`--format sharegpt`); otherwise `messages`, or
/// `conversations` when a record has no `messages`.
pub(super) fn read<F: FnMut(Record) -> Result<()>>(path: &Path, sharegpt: bool, sink: &mut Sink<F>) -> Result<()> {
    let file = std::fs::File::open(path).map_err(|e| LarkError::io(path, e))?;
    let mut reader = std::io::BufReader::with_capacity(1 << 20, file);
    let shared: Arc<Path> = Arc::from(path);
    let mut buf = Vec::new();
    let mut line_no = 0usize;
    loop {
        buf.clear();
        let n = (&mut reader)
            .take(MAX_LINE_BYTES as u64 + 1)
            .read_until(b'\n', &mut buf)
            .map_err(|e| LarkError::io(path, e))?;
        if n == 0 {
            return Ok(());
        }
        line_no += 1;
        if buf.len() > MAX_LINE_BYTES && buf.last() != Some(&b'\n') {
            // Skip the rest of the line without buffering it, so that --skip-invalid can go on after it.
            reader.skip_until(b'\n').map_err(|e| LarkError::io(path, e))?;
            let origin = Origin { file: shared.clone(), line: Some(line_no), index: None, row: None };
            let why = format!("line longer than {} MiB: not read (no trajectory is that large)", MAX_LINE_BYTES >> 20);
            sink.invalid(&origin, Invalid::new("(record)", why))?;
            continue;
        }
        let mut bytes = &buf[..];
        if line_no == 1 {
            bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
        }
        if bytes.iter().all(|b| b.is_ascii_whitespace()) {
            continue;
        }
        let origin = Origin { file: shared.clone(), line: Some(line_no), index: None, row: None };
        match parse_line(bytes, &origin, sharegpt) {
            Ok(r) => sink.record(r)?,
            Err(inv) => sink.invalid(&origin, inv)?,
        }
    }
}

fn parse_line(bytes: &[u8], origin: &Origin, sharegpt: bool) -> std::result::Result<Record, Invalid> {
    let v: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| Invalid::new("(json)", format!("invalid JSON: {e}")))?;
    let obj = as_object(&v)?;
    let problem_id = int_field(obj, "problem_id")?;
    let candidate_id = int_field(obj, "candidate_id")?;
    let teacher = opt_string_field(obj, "teacher")?.unwrap_or_else(|| "unknown".to_string());
    let messages = conversation_field(obj, sharegpt)?;
    let tools = tools_field(obj)?;
    Ok(Record { problem_id, candidate_id, teacher, messages, tools, origin: origin.clone() })
}
