//! Parquet pools, as HF `datasets` writes them: one file, or a directory of shards (every `*.parquet` below it,
//! in path order). A row is one trajectory: a `messages` column (a list of `{role, content, ...}` structs) or a
//! ShareGPT `conversations` column (a list of `{from, value}` structs), and optional `problem_id`,
//! `candidate_id` (integers), `teacher` (a string) and `tools` (a list of structs, or a string holding their
//! JSON) columns; other columns are ignored. A `messages` / `conversations` column of strings is read as the
//! JSON of the list. Without `problem_id`, every row is its own problem (its row number across the pool); without
//! `candidate_id`, candidates are numbered in reading order within their problem.
//!
//! Files are read row group by row group (the `parquet` crate's record reader, which decodes one row group's
//! pages at a time), so the reader's memory is bounded by a row group, not the file. Each row is turned into the
//! JSON object the JSONL reader parses ([`parquet::record::Row::to_json_value`]) and checked by the same code,
//! so errors name the file, the row and the field (`pool.parquet: row 17: field `messages[2].content``).

use super::pool::Sink;
use super::record::{Invalid, Origin, Record};
use super::validate::{conversation_field, int_value, opt_string_field, tools_field, type_name};
use crate::error::{LarkError, Result};
use ::parquet::file::reader::{FileReader, SerializedFileReader};
use ::parquet::schema::types::Type;
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The files of a Parquet pool: `path` itself, or every `*.parquet` under the directory `path`, sorted.
pub fn files(path: &Path) -> Result<Vec<PathBuf>> {
    if !path.is_dir() {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut out = Vec::new();
    let mut stack = vec![path.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).map_err(|e| LarkError::io(&dir, e))? {
            let e = e.map_err(|e| LarkError::io(&dir, e))?;
            let p = e.path();
            let ft = e.file_type().map_err(|e| LarkError::io(&p, e))?;
            // Symlinked directories are not followed (a loop must not hang the reader).
            if ft.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "parquet") {
                out.push(p);
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Whether `path` is a Parquet pool for `--format auto`: a `.parquet` file, or a directory with `*.parquet`
/// files below it.
pub fn looks_like(path: &Path) -> bool {
    if path.is_dir() {
        files(path).is_ok_and(|f| !f.is_empty())
    } else {
        path.extension().is_some_and(|x| x == "parquet")
    }
}

/// Read the pool's paths in order (each a file or a directory of shards), numbering id-less rows over all of
/// them as over one dataset.
pub(super) fn read<F: FnMut(Record) -> Result<()>>(paths: &[PathBuf], sink: &mut Sink<F>) -> Result<()> {
    let mut ids = Ids::default();
    for path in paths {
        let files = files(path)?;
        if files.is_empty() {
            return Err(LarkError::input(path.display().to_string(), "no *.parquet files in this directory"));
        }
        for f in &files {
            read_file(f, sink, &mut ids)?;
        }
    }
    Ok(())
}

/// Problem and candidate ids for rows that lack them.
#[derive(Default)]
struct Ids {
    /// Rows read so far, over every file (a row's problem id when there is no `problem_id` column).
    rows: usize,
    /// Candidates numbered so far per problem (when there is no `candidate_id` column).
    next_candidate: HashMap<i64, i64>,
}

fn file_err(path: &Path, what: impl std::fmt::Display) -> LarkError {
    let what = what.to_string();
    let hint = if what.contains("Disabled feature at compile time") {
        " (lark reads uncompressed, snappy and lz4 Parquet: rewrite the file with one of them, e.g. pyarrow's \
         default snappy)"
    } else {
        ""
    };
    LarkError::input(path.display().to_string(), format!("not a readable Parquet file: {what}{hint}"))
}

/// The kind of a top-level column, for messages.
fn describe(t: &Type) -> String {
    if t.is_group() {
        let info = t.get_basic_info();
        match info.logical_type_ref() {
            Some(l) => format!("a group ({l:?})"),
            None => format!("a group ({:?})", info.converted_type()),
        }
    } else {
        let info = t.get_basic_info();
        match info.logical_type_ref() {
            Some(l) => format!("{} ({l:?})", t.get_physical_type()),
            None => format!("{}", t.get_physical_type()),
        }
    }
}

fn is_list(t: &Type) -> bool {
    t.is_group() || t.get_basic_info().repetition() == ::parquet::basic::Repetition::REPEATED
}

fn is_string(t: &Type) -> bool {
    !t.is_group() && t.get_physical_type() == ::parquet::basic::Type::BYTE_ARRAY
}

fn is_int(t: &Type) -> bool {
    !t.is_group() && matches!(t.get_physical_type(), ::parquet::basic::Type::INT32 | ::parquet::basic::Type::INT64)
}

/// Check the columns once per file, so a wrong schema is one clear error rather than one per row.
fn check_schema(path: &Path, root: &Type) -> Result<()> {
    let fields: Vec<&Arc<Type>> = root.get_fields().iter().collect();
    let get = |n: &str| fields.iter().find(|f| f.name() == n).map(|f| f.as_ref());
    let bad = |col: &str, want: &str, t: &Type| {
        LarkError::input(
            format!("{}: column `{col}`", path.display()),
            format!("expected {want}, found {}", describe(t)),
        )
    };
    match (get("messages"), get("conversations")) {
        (None, None) => {
            let names: Vec<&str> = fields.iter().map(|f| f.name()).collect();
            return Err(LarkError::input(
                path.display().to_string(),
                format!(
                    "no `messages` or `conversations` column (columns: {}): a trajectory pool needs one",
                    names.join(", ")
                ),
            ));
        }
        (Some(t), _) | (None, Some(t)) if !is_list(t) && !is_string(t) => {
            let col = if get("messages").is_some() { "messages" } else { "conversations" };
            return Err(bad(col, "a list of structs (or a string holding its JSON)", t));
        }
        _ => {}
    }
    for col in ["problem_id", "candidate_id"] {
        if let Some(t) = get(col) {
            if !is_int(t) {
                return Err(bad(col, "an integer column (INT32 or INT64)", t));
            }
        }
    }
    if let Some(t) = get("teacher") {
        if !is_string(t) {
            return Err(bad("teacher", "a string column", t));
        }
    }
    if let Some(t) = get("tools") {
        if !is_list(t) && !is_string(t) {
            return Err(bad("tools", "a list of structs (or a string holding its JSON)", t));
        }
    }
    Ok(())
}

fn read_file<F: FnMut(Record) -> Result<()>>(path: &Path, sink: &mut Sink<F>, ids: &mut Ids) -> Result<()> {
    let file = std::fs::File::open(path).map_err(|e| LarkError::io(path, e))?;
    let reader = SerializedFileReader::new(file).map_err(|e| file_err(path, e))?;
    let meta = reader.metadata();
    check_schema(path, meta.file_metadata().schema_descr().root_schema())?;
    let shared: Arc<Path> = Arc::from(path);
    let mut row_no = 0usize;
    for g in 0..meta.num_row_groups() {
        let group = reader.get_row_group(g).map_err(|e| file_err(path, format!("row group {g}: {e}")))?;
        let rows = group.get_row_iter(None).map_err(|e| file_err(path, format!("row group {g}: {e}")))?;
        for row in rows {
            let origin = Origin { file: shared.clone(), line: None, index: None, row: Some(row_no) };
            let row = row.map_err(|e| file_err(path, format!("row group {g}, at row {row_no}: {e}")))?;
            let value = row.to_json_value();
            match parse_row(value, ids) {
                Ok(r) => sink.record(Record { origin, ..r })?,
                Err(inv) => sink.invalid(&origin, inv)?,
            }
            ids.rows += 1;
            row_no += 1;
        }
    }
    Ok(())
}

/// A list column stored as a string: the JSON of the list.
fn unstring(obj: &mut Map<String, Value>, col: &str) -> std::result::Result<(), Invalid> {
    if let Some(Value::String(s)) = obj.get(col) {
        let v: Value = serde_json::from_str(s)
            .map_err(|e| Invalid::new(col, format!("a string column must hold the JSON of the list: {e}")))?;
        obj.insert(col.to_string(), v);
    }
    Ok(())
}

fn parse_row(value: Value, ids: &mut Ids) -> std::result::Result<Record, Invalid> {
    let Value::Object(mut obj) = value else {
        return Err(Invalid::new("(record)", format!("expected a row of columns, found {}", type_name(&value))));
    };
    unstring(&mut obj, "messages")?;
    unstring(&mut obj, "conversations")?;
    // Null ids are as absent.
    let id = |obj: &Map<String, Value>, col: &str| -> std::result::Result<Option<i64>, Invalid> {
        match obj.get(col) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => {
                int_value(v).map(Some).ok_or_else(|| Invalid::new(col, format!("expected an integer, found {v}")))
            }
        }
    };
    let problem_id = id(&obj, "problem_id")?.unwrap_or(ids.rows as i64);
    let candidate_id = match id(&obj, "candidate_id")? {
        Some(c) => c,
        None => {
            let n = ids.next_candidate.entry(problem_id).or_insert(0);
            *n += 1;
            *n - 1
        }
    };
    if obj.get("teacher").is_some_and(Value::is_null) {
        obj.remove("teacher");
    }
    let teacher = opt_string_field(&obj, "teacher")?.unwrap_or_else(|| "unknown".to_string());
    let messages = conversation_field(&obj, false)?;
    let tools = tools_field(&obj)?;
    let origin = Origin { file: Arc::from(Path::new("")), line: None, index: None, row: None };
    Ok(Record { problem_id, candidate_id, teacher, messages, tools, origin })
}
