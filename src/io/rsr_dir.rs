//! The RSR authors' released pool layout: `<root>/<teacher>/<name>_gen<N>.json`, each file a JSON list of
//! `{"messages": [...]}` objects (one rollout of one teacher over all problems). `.jsonl` files with one
//! such object a line are read the same way.
//!
//! Ids, chosen so that they are deterministic and do not depend on which other entries are valid:
//! - problem id: the element's `id` (or `_id`) field when present (an integer, or a string holding one),
//!   else its 0-based position in the list (as `rsr_cal.py` does: `sample.get("id", sample.get("_id", i))`);
//! - candidate id: the file's position in the list of all files sorted by teacher directory name (bytewise),
//!   then rollout index N, then file name. With 11 teachers × 3 rollouts this is `3·teacher + (N − 1)`,
//!   which matches the numbering of the LARK paper's Appendix D.3 (`y_16` = 6th teacher, rollout 2).
//! - teacher: the directory name.
//!
//! Hidden entries (".name") and files that are not `.json`/`.jsonl` are ignored; a `.json` file whose name
//! does not end in `_gen<N>` is an error (a whole-file reject under `--skip-invalid`).

use super::pool::Sink;
use super::record::{Invalid, Origin, Record};
use super::validate::{as_object, conversation_field, tools_field, type_name};
use crate::error::{LarkError, Result};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::sync::Arc;

struct PoolFile {
    teacher: String,
    rollout: u64,
    path: PathBuf,
}

pub(super) fn read<F: FnMut(Record) -> Result<()>>(root: &Path, sink: &mut Sink<F>) -> Result<()> {
    let files = list_files(root, sink)?;
    if files.is_empty() {
        return Err(LarkError::input(
            root.display().to_string(),
            "empty pool: no <teacher>/<name>_gen<N>.json files found (is this an RSR_data directory?)",
        ));
    }
    for (cid, f) in files.iter().enumerate() {
        read_file(f, cid as i64, sink)?;
    }
    Ok(())
}

fn sorted_entries(dir: &Path) -> Result<Vec<(String, PathBuf)>> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).map_err(|e| LarkError::io(dir, e))? {
        let e = e.map_err(|e| LarkError::io(dir, e))?;
        let name = e
            .file_name()
            .into_string()
            .map_err(|n| LarkError::input(dir.display().to_string(), format!("file name {n:?} is not valid UTF-8")))?;
        if !name.starts_with('.') {
            out.push((name, e.path()));
        }
    }
    out.sort();
    Ok(out)
}

/// The rollout index N of `<name>_gen<N>`, if the stem has that form.
fn rollout_index(stem: &str) -> Option<u64> {
    let (_, n) = stem.rsplit_once("_gen")?;
    if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    n.parse().ok()
}

fn list_files<F: FnMut(Record) -> Result<()>>(root: &Path, sink: &mut Sink<F>) -> Result<Vec<PoolFile>> {
    let mut files = Vec::new();
    for (teacher, tdir) in sorted_entries(root)? {
        if !tdir.is_dir() {
            continue; // a README or a listing next to the teacher directories
        }
        let mut mine = Vec::new();
        for (name, path) in sorted_entries(&tdir)? {
            let stem = match name.strip_suffix(".json").or_else(|| name.strip_suffix(".jsonl")) {
                Some(s) if path.is_file() => s,
                _ => continue,
            };
            match rollout_index(stem) {
                Some(rollout) => mine.push(PoolFile { teacher: teacher.clone(), rollout, path }),
                None => {
                    let origin = Origin { file: Arc::from(path.as_path()), line: None, index: None, row: None };
                    sink.invalid(
                        &origin,
                        Invalid::new("(file)", "expected a file name of the form <name>_gen<N>.json"),
                    )?;
                }
            }
        }
        mine.sort_by(|a, b| a.rollout.cmp(&b.rollout).then_with(|| a.path.cmp(&b.path)));
        files.extend(mine);
    }
    Ok(files)
}

fn read_file<F: FnMut(Record) -> Result<()>>(f: &PoolFile, candidate_id: i64, sink: &mut Sink<F>) -> Result<()> {
    let file: Arc<Path> = Arc::from(f.path.as_path());
    let raw = std::fs::read(&f.path).map_err(|e| LarkError::io(&f.path, e))?;
    let bytes = raw.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(&raw);
    let at = |line: Option<usize>, index: Option<usize>| Origin { file: file.clone(), line, index, row: None };
    if f.path.extension().is_some_and(|e| e == "jsonl") {
        let mut index = 0usize;
        for (i, line) in bytes.split(|&b| b == b'\n').enumerate() {
            if line.iter().all(|b| b.is_ascii_whitespace()) {
                continue;
            }
            let origin = at(Some(i + 1), Some(index));
            index += 1;
            match serde_json::from_slice::<Value>(line) {
                Ok(v) => element(&v, &origin, &f.teacher, candidate_id, sink)?,
                Err(e) => sink.invalid(&origin, Invalid::new("(json)", format!("invalid JSON: {e}")))?,
            }
        }
        return Ok(());
    }
    let v: Value = match serde_json::from_slice(bytes) {
        Ok(v) => v,
        Err(e) => return sink.invalid(&at(Some(e.line()), None), Invalid::new("(json)", format!("invalid JSON: {e}"))),
    };
    let list = match v {
        Value::Array(a) => a,
        other => {
            let why = format!("expected a JSON list of {{\"messages\": [...]}} objects, found {}", type_name(&other));
            return sink.invalid(&at(Some(1), None), Invalid::new("(file)", why));
        }
    };
    let lines = element_lines(bytes);
    let lines = if lines.len() == list.len() { Some(lines) } else { None };
    for (i, v) in list.iter().enumerate() {
        let origin = at(lines.as_ref().map(|l| l[i]), Some(i));
        element(v, &origin, &f.teacher, candidate_id, sink)?;
    }
    Ok(())
}

fn element<F: FnMut(Record) -> Result<()>>(
    v: &Value,
    origin: &Origin,
    teacher: &str,
    candidate_id: i64,
    sink: &mut Sink<F>,
) -> Result<()> {
    match parse_element(v, origin.index.unwrap_or(0)) {
        Ok((problem_id, messages, tools)) => sink.record(Record {
            problem_id,
            candidate_id,
            teacher: teacher.to_string(),
            messages,
            tools,
            origin: origin.clone(),
        }),
        Err(inv) => sink.invalid(origin, inv),
    }
}

type Element = (i64, Vec<super::Message>, Option<Vec<Value>>);

fn parse_element(v: &Value, index: usize) -> std::result::Result<Element, Invalid> {
    let obj = as_object(v)?;
    let messages = conversation_field(obj, false)?;
    let tools = tools_field(obj)?;
    let key = if obj.contains_key("id") { "id" } else { "_id" };
    let problem_id = match obj.get(key) {
        None => index as i64,
        Some(Value::Number(n)) if n.as_i64().is_some() => n.as_i64().unwrap_or_default(),
        Some(Value::String(s)) if s.trim().parse::<i64>().is_ok() => s.trim().parse().unwrap_or_default(),
        Some(other) => {
            return Err(Invalid::new(
                key,
                format!("expected an integer problem id (or a string holding one), found {}", type_name(other)),
            ))
        }
    };
    Ok((problem_id, messages, tools))
}

/// The 1-based line on which each element of a top-level JSON list starts, found by a scan that tracks
/// strings and nesting (serde_json does not report element positions). Only called on text that parsed.
fn element_lines(bytes: &[u8]) -> Vec<usize> {
    let mut out = Vec::new();
    let (mut line, mut depth) = (1usize, 0i64);
    let (mut in_str, mut esc, mut expect) = (false, false, false);
    for &b in bytes {
        if b == b'\n' {
            line += 1;
        }
        if in_str {
            if esc {
                esc = false;
            } else if b == b'\\' {
                esc = true;
            } else if b == b'"' {
                in_str = false;
            }
            continue;
        }
        if expect && !b.is_ascii_whitespace() {
            if b != b']' {
                out.push(line);
            }
            expect = false;
        }
        match b {
            b'"' => in_str = true,
            b'[' | b'{' => {
                depth += 1;
                if depth == 1 && b == b'[' {
                    expect = true;
                }
            }
            b']' | b'}' => depth -= 1,
            b',' if depth == 1 => expect = true,
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn element_lines_track_strings_and_nesting() {
        let text = b"[\n  {\"a\": \"x,]\\\"[\"},\n  {\"b\": [1, 2]}\n  ,\n{}\n]";
        assert_eq!(element_lines(text), vec![2, 3, 5]);
        assert_eq!(element_lines(b"[]"), Vec::<usize>::new());
        assert_eq!(element_lines(b"[{}, {}]"), vec![1, 1]);
    }

    #[test]
    fn rollout_index_parses_suffix() {
        assert_eq!(rollout_index("numina_gen3"), Some(3));
        assert_eq!(rollout_index("a_gen12"), Some(12));
        assert_eq!(rollout_index("a_gen"), None);
        assert_eq!(rollout_index("a_genx"), None);
        assert_eq!(rollout_index("data"), None);
    }
}
