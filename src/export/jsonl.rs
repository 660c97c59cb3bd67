//! Reading JSON Lines written by this crate (scores.jsonl, selection.jsonl), with `file:line` errors.

use crate::error::{LarkError, Result};
use serde::de::DeserializeOwned;
use std::io::BufRead;
use std::path::Path;

/// Every non-blank line of `path` parsed as a `T`.
pub fn read_jsonl<T: DeserializeOwned>(path: &Path) -> Result<Vec<T>> {
    let f = std::fs::File::open(path).map_err(|e| LarkError::io(path, e))?;
    let mut out = Vec::new();
    for (i, line) in std::io::BufReader::new(f).lines().enumerate() {
        let line = line.map_err(|e| LarkError::io(path, e))?;
        if line.trim().is_empty() {
            continue;
        }
        let v = serde_json::from_str(&line).map_err(|e| LarkError::at_line(path, i + 1, e.to_string()))?;
        out.push(v);
    }
    Ok(out)
}
