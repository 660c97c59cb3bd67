//! Atomic file replacement, used for every final output: write `name.tmp` in the same directory, flush,
//! fsync, rename over `name`, then fsync the directory (best effort). A run that fails or is killed
//! leaves the old file (or none), never a truncated one that looks complete.

use crate::error::{LarkError, Result};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

/// A file being written; becomes visible under its final name only on [`AtomicFile::commit`].
/// Dropping it uncommitted removes the temporary file.
pub struct AtomicFile {
    path: PathBuf,
    tmp: PathBuf,
    out: Option<BufWriter<File>>,
}

impl AtomicFile {
    pub fn create(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let mut name = path
            .file_name()
            .ok_or_else(|| LarkError::input(path.display().to_string(), "not a file path"))?
            .to_os_string();
        name.push(".tmp");
        let tmp = path.with_file_name(name);
        let f = File::create(&tmp).map_err(|e| LarkError::io(&tmp, e))?;
        Ok(AtomicFile { path, tmp, out: Some(BufWriter::with_capacity(1 << 20, f)) })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Flush, fsync and rename into place.
    pub fn commit(mut self) -> Result<()> {
        let out = self.out.take().expect("present until commit");
        let f = out.into_inner().map_err(|e| LarkError::io(&self.tmp, e.into_error()))?;
        f.sync_all().map_err(|e| LarkError::io(&self.tmp, e))?;
        drop(f);
        if crate::crashpoint::any_armed() {
            let name = self.path.file_name().unwrap_or_default().to_string_lossy();
            crate::crashpoint::reach(&format!("before-rename:{name}"));
        }
        std::fs::rename(&self.tmp, &self.path).map_err(|e| LarkError::io(&self.path, e))?;
        // Make the rename itself durable; not every platform lets a directory be opened, hence best effort.
        if let Some(dir) = self.path.parent() {
            let dir = if dir.as_os_str().is_empty() { Path::new(".") } else { dir };
            if let Ok(d) = File::open(dir) {
                let _ = d.sync_all();
            }
        }
        Ok(())
    }

    /// An I/O error on this file, for writers that map `std::io::Error`.
    pub fn err(&self, e: std::io::Error) -> LarkError {
        LarkError::io(&self.tmp, e)
    }
}

impl Write for AtomicFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.out.as_mut().expect("present until commit").write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.out.as_mut().expect("present until commit").flush()
    }
}

impl Drop for AtomicFile {
    fn drop(&mut self) {
        if self.out.take().is_some() {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

/// Write `path` atomically with `f`; on error nothing replaces `path`.
pub fn write_atomic(path: impl AsRef<Path>, f: impl FnOnce(&mut AtomicFile) -> Result<()>) -> Result<()> {
    let mut file = AtomicFile::create(path)?;
    f(&mut file)?;
    file.commit()
}

/// Write each item as one line of compact JSON.
pub fn write_jsonl<T: serde::Serialize>(path: impl AsRef<Path>, items: impl IntoIterator<Item = T>) -> Result<()> {
    write_atomic(path, |w| {
        for it in items {
            serde_json::to_writer(&mut *w, &it)
                .map_err(|e| LarkError::Other(format!("{}: {e}", w.path().display())))?;
            w.write_all(b"\n").map_err(|e| w.err(e))?;
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commit_replaces_and_drop_discards() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("out.jsonl");
        std::fs::write(&p, "old\n").unwrap();
        {
            let mut f = AtomicFile::create(&p).unwrap();
            f.write_all(b"partial").unwrap();
            // dropped without commit
        }
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "old\n");
        assert!(!dir.path().join("out.jsonl.tmp").exists());
        let r: Result<()> = write_atomic(&p, |w| {
            w.write_all(b"half").map_err(|e| w.err(e))?;
            Err(LarkError::Other("boom".into()))
        });
        assert!(r.is_err());
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "old\n");
        write_jsonl(&p, [serde_json::json!({"a": 1}), serde_json::json!({"b": null})]).unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "{\"a\":1}\n{\"b\":null}\n");
        assert!(!dir.path().join("out.jsonl.tmp").exists());
    }
}
