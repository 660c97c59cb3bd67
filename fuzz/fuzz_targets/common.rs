//! Shared by the fuzz targets: a scratch directory of this process (the readers under test take paths).
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// `$TMPDIR/lark-fuzz-<pid>/<name>`, emptied: each target process owns its directory, so parallel jobs
/// never share files.
pub fn scratch(name: &str) -> PathBuf {
    static BASE: OnceLock<PathBuf> = OnceLock::new();
    let base = BASE.get_or_init(|| std::env::temp_dir().join(format!("lark-fuzz-{}", std::process::id())));
    let dir = base.join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch directory");
    dir
}

pub fn write(path: &Path, bytes: &[u8]) {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).expect("scratch directory");
    }
    std::fs::write(path, bytes).expect("scratch file");
}
