//! Content fingerprints of a job's inputs, recorded in `run.json` and checked by `--resume`: a model
//! directory, a pool (one path or several), a file.

use crate::error::{LarkError, Result};
use crate::io::PoolSource;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

pub fn sha256_file(path: &Path) -> Result<String> {
    let mut f = std::fs::File::open(path).map_err(|e| LarkError::io(path, e))?;
    let mut h = Sha256::new();
    std::io::copy(&mut f, &mut h).map_err(|e| LarkError::io(path, e))?;
    Ok(format!("{:x}", h.finalize()))
}

/// A cheap fingerprint of a model directory: config.json's hash and each weight file's name, size and header.
pub fn model_fingerprint(dir: &Path) -> Result<String> {
    let mut h = Sha256::new();
    h.update(sha256_file(&dir.join("config.json"))?.as_bytes());
    let mut names: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| LarkError::io(dir, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "safetensors"))
        .collect();
    names.sort();
    for p in names {
        let meta = std::fs::metadata(&p).map_err(|e| LarkError::io(&p, e))?;
        h.update(p.file_name().unwrap_or_default().as_encoded_bytes());
        h.update(meta.len().to_le_bytes());
        let mut head = vec![0u8; 1 << 16];
        let n = std::io::Read::read(&mut std::fs::File::open(&p).map_err(|e| LarkError::io(&p, e))?, &mut head)
            .map_err(|e| LarkError::io(&p, e))?;
        h.update(&head[..n]);
    }
    Ok(format!("{:x}", h.finalize()))
}

/// The content fingerprint of a pool: that of its one path (as before several paths were possible), or for
/// several paths a hash over each path's fingerprint in order (the order is part of the pool: it numbers
/// id-less rows). Paths themselves do not count: a moved pool resumes.
pub fn pool_fingerprint(source: &PoolSource) -> Result<String> {
    match source.paths() {
        [one] => path_fingerprint(one),
        many => {
            let mut h = Sha256::new();
            for (i, p) in many.iter().enumerate() {
                h.update(format!("{i}:{}\n", path_fingerprint(p)?).as_bytes());
            }
            Ok(format!("{:x}", h.finalize()))
        }
    }
}

fn path_fingerprint(path: &Path) -> Result<String> {
    if path.is_file() {
        return sha256_file(path);
    }
    // Symlinked directories are not followed (a link to `..` would loop forever); the pool reader reads only
    // <root>/<teacher>/<file>, which this walk covers.
    let mut files = Vec::new();
    let mut stack = vec![path.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).map_err(|e| LarkError::io(&d, e))? {
            let e = e.map_err(|e| LarkError::io(&d, e))?;
            let p = e.path();
            let link = e.file_type().map_err(|err| LarkError::io(&p, err))?.is_symlink();
            match (p.is_dir(), link) {
                (true, false) if d == path => stack.push(p),
                (true, _) => {}
                (false, _) => files.push(p),
            }
        }
    }
    files.sort();
    let mut h = Sha256::new();
    for f in files {
        h.update(f.strip_prefix(path).unwrap_or(&f).as_os_str().as_encoded_bytes());
        h.update(sha256_file(&f)?.as_bytes());
    }
    Ok(format!("{:x}", h.finalize()))
}
