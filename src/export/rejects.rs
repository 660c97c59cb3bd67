//! `rejects.jsonl`: the pool entries skipped under `--skip-invalid`, one
//! `{file, line, index, field, reason}` object a line.

use super::atomic::write_jsonl;
use crate::error::Result;
use crate::io::Reject;
use std::path::Path;

pub fn write_rejects_jsonl(path: &Path, rejects: &[Reject]) -> Result<()> {
    write_jsonl(path, rejects)
}
