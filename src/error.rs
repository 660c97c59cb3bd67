//! One error type for the library. Every variant that comes from bad input names the file (and where it
//! applies the line, tensor or field) so the CLI can print it as is and exit non-zero.

use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum LarkError {
    /// An I/O failure on a named file.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Malformed or inconsistent input: `location` is "file", "file:line", "file: tensor X", etc.
    #[error("{location}: {message}")]
    Input { location: String, message: String },
    /// Something the engine does not support (an architecture, a tensor type, a rope scaling type).
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// A backend (CPU or CUDA) failed or is unavailable.
    #[error("{0}")]
    Backend(String),
    /// The device could not allocate `bytes` bytes. A scoring job treats it as "this batch is too large": it
    /// splits the batch and retries the halves (`run::schedule::score_splitting`); the backend stays usable.
    #[error("{device}: out of device memory allocating {bytes} bytes")]
    OutOfMemory { device: String, bytes: usize },
    /// The job stopped on a signal (SIGINT, SIGTERM) before it finished: its finished chunks are journaled.
    #[error("interrupted by {}{}", crate::run::interrupt::signal_name(*signal), crate::run::interrupt::resume_hint(journal.as_deref()))]
    Interrupted { signal: i32, journal: Option<PathBuf> },
    #[error("{0}")]
    Other(String),
}

pub type Result<T> = std::result::Result<T, LarkError>;

impl LarkError {
    /// The process exit code for this error: 128 + the signal for an interrupted job (the shell's convention),
    /// else 1.
    pub fn exit_code(&self) -> i32 {
        match self {
            LarkError::Interrupted { signal, .. } => 128 + signal,
            _ => 1,
        }
    }
    pub fn io(path: impl AsRef<Path>, source: std::io::Error) -> Self {
        LarkError::Io { path: path.as_ref().to_path_buf(), source }
    }
    pub fn input(location: impl Into<String>, message: impl Into<String>) -> Self {
        LarkError::Input { location: location.into(), message: message.into() }
    }
    /// An input error located at a file and a 1-based line number.
    pub fn at_line(path: impl AsRef<Path>, line: usize, message: impl Into<String>) -> Self {
        LarkError::Input { location: format!("{}:{}", path.as_ref().display(), line), message: message.into() }
    }
}
