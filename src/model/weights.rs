//! Weights from `model.safetensors` or a sharded `model.safetensors.index.json`, memory-mapped.
//! Nothing is copied until a backend asks for a tensor in the precision it computes in.

use crate::error::{LarkError, Result};
use half::{bf16, f16};
use memmap2::Mmap;
use safetensors::{Dtype, SafeTensors};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Storage type of a tensor on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum StoredDtype {
    F32,
    F16,
    BF16,
}

impl StoredDtype {
    pub fn size(self) -> usize {
        match self {
            StoredDtype::F32 => 4,
            _ => 2,
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            StoredDtype::F32 => "f32",
            StoredDtype::F16 => "f16",
            StoredDtype::BF16 => "bf16",
        }
    }
}

/// A borrowed view of one tensor in a mapped file.
#[derive(Clone, Copy)]
pub struct TensorView<'a> {
    pub name: &'a str,
    pub dtype: StoredDtype,
    pub shape: &'a [usize],
    pub bytes: &'a [u8],
}

impl TensorView<'_> {
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
    /// Convert to f32 (the CPU backend's compute type). Unaligned bytes are handled.
    pub fn to_f32(&self) -> Vec<f32> {
        let n = self.numel();
        let mut out = Vec::with_capacity(n);
        match self.dtype {
            StoredDtype::F32 => {
                out.extend(self.bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])))
            }
            StoredDtype::F16 => {
                out.extend(self.bytes.chunks_exact(2).map(|c| f16::from_le_bytes([c[0], c[1]]).to_f32()))
            }
            StoredDtype::BF16 => {
                out.extend(self.bytes.chunks_exact(2).map(|c| bf16::from_le_bytes([c[0], c[1]]).to_f32()))
            }
        }
        out
    }
    /// Convert to bf16 (the GPU backend's storage type).
    pub fn to_bf16(&self) -> Vec<bf16> {
        match self.dtype {
            StoredDtype::BF16 => self.bytes.chunks_exact(2).map(|c| bf16::from_le_bytes([c[0], c[1]])).collect(),
            _ => self.to_f32().into_iter().map(bf16::from_f32).collect(),
        }
    }
}

struct Shard {
    path: PathBuf,
    mmap: Mmap,
}

/// Where one named tensor lives: shard index, dtype, shape, byte range in the shard's mapping.
#[derive(Debug, Clone)]
struct Entry {
    shard: usize,
    dtype: StoredDtype,
    shape: Vec<usize>,
    start: usize,
    end: usize,
}

/// All tensors of a model directory, memory-mapped.
pub struct WeightStore {
    shards: Vec<Shard>,
    entries: BTreeMap<String, Entry>,
}

impl WeightStore {
    /// Open `dir/model.safetensors`, or the shards listed in `dir/model.safetensors.index.json`.
    pub fn open_dir(dir: &Path) -> Result<Self> {
        let single = dir.join("model.safetensors");
        let index = dir.join("model.safetensors.index.json");
        if index.exists() {
            let text = std::fs::read_to_string(&index).map_err(|e| LarkError::io(&index, e))?;
            let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| {
                LarkError::input(format!("{}:{}", index.display(), e.line()), format!("invalid JSON: {e}"))
            })?;
            let map = v.get("weight_map").and_then(|m| m.as_object()).ok_or_else(|| {
                LarkError::input(format!("{}: field `weight_map`", index.display()), "missing or not an object")
            })?;
            let mut files: Vec<String> = Vec::new();
            for (name, f) in map {
                let f = f.as_str().ok_or_else(|| {
                    LarkError::input(format!("{}: weight_map.{name}", index.display()), "expected a file name")
                })?;
                if f.contains('/') || f.contains("..") {
                    return Err(LarkError::input(
                        format!("{}: weight_map.{name}", index.display()),
                        format!("shard name `{f}` must be a plain file name in the model directory"),
                    ));
                }
                if !files.iter().any(|x| x == f) {
                    files.push(f.to_string());
                }
            }
            files.sort();
            let paths: Vec<PathBuf> = files.iter().map(|f| dir.join(f)).collect();
            let store = Self::open_files(&paths)?;
            for (name, f) in map {
                let shard_path = dir.join(f.as_str().unwrap_or_default());
                match store.entries.get(name) {
                    Some(e) if store.shards[e.shard].path == shard_path => {}
                    _ => {
                        return Err(LarkError::input(
                            format!("{}: tensor {name}", index.display()),
                            format!("listed in {} but not found there", shard_path.display()),
                        ))
                    }
                }
            }
            Ok(store)
        } else if single.exists() {
            Self::open_files(&[single])
        } else {
            Err(LarkError::input(
                dir.display().to_string(),
                "no model.safetensors or model.safetensors.index.json in this directory",
            ))
        }
    }

    /// Map and index the given safetensors files. A malformed header, overlapping or out-of-range offsets, a
    /// truncated file or an unsupported dtype is an error naming the file (and tensor).
    pub fn open_files(paths: &[PathBuf]) -> Result<Self> {
        let mut shards = Vec::new();
        let mut entries = BTreeMap::new();
        for (si, path) in paths.iter().enumerate() {
            let file = std::fs::File::open(path).map_err(|e| LarkError::io(path, e))?;
            // SAFETY: the mapping is read-only; a file modified under us is outside what we can defend against.
            let mmap = unsafe { Mmap::map(&file) }.map_err(|e| LarkError::io(path, e))?;
            let st = SafeTensors::deserialize(&mmap).map_err(|e| {
                LarkError::input(path.display().to_string(), format!("not a valid safetensors file: {e}"))
            })?;
            // Offsets relative to the data section start, which begins after the 8-byte length and the header.
            let header_len = u64::from_le_bytes(mmap[..8].try_into().expect("8 bytes checked by deserialize")) as usize;
            let data_start = 8 + header_len;
            for (name, view) in st.tensors() {
                let dtype = match view.dtype() {
                    Dtype::F32 => StoredDtype::F32,
                    Dtype::F16 => StoredDtype::F16,
                    Dtype::BF16 => StoredDtype::BF16,
                    other => {
                        return Err(LarkError::input(
                            format!("{}: tensor {name}", path.display()),
                            format!("dtype {other:?} is not supported (f32, f16, bf16)"),
                        ))
                    }
                };
                let data = view.data();
                let start = data.as_ptr() as usize - mmap.as_ptr() as usize;
                debug_assert!(start >= data_start);
                let end = start + data.len();
                if entries.contains_key(&name) {
                    return Err(LarkError::input(
                        format!("{}: tensor {name}", path.display()),
                        "appears in more than one shard",
                    ));
                }
                entries.insert(name, Entry { shard: si, dtype, shape: view.shape().to_vec(), start, end });
            }
            shards.push(Shard { path: path.clone(), mmap });
        }
        Ok(WeightStore { shards, entries })
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.entries.keys().map(|s| s.as_str())
    }

    pub fn contains(&self, name: &str) -> bool {
        self.entries.contains_key(name)
    }

    /// The file a tensor lives in (or the first shard), for error messages.
    pub fn file_of(&self, name: &str) -> String {
        let shard = self.entries.get(name).map(|e| e.shard).unwrap_or(0);
        self.shards.get(shard).map(|s| s.path.display().to_string()).unwrap_or_default()
    }

    /// The tensor `name`, which must have exactly `shape`.
    pub fn get(&self, name: &str, shape: &[usize]) -> Result<TensorView<'_>> {
        let (key, e) = self.entries.get_key_value(name).ok_or_else(|| {
            let files: Vec<String> = self.shards.iter().map(|s| s.path.display().to_string()).collect();
            LarkError::input(format!("{}: tensor {name}", files.join(", ")), "missing")
        })?;
        let shard = &self.shards[e.shard];
        if e.shape != shape {
            return Err(LarkError::input(
                format!("{}: tensor {name}", shard.path.display()),
                format!("shape {:?}, expected {:?}", e.shape, shape),
            ));
        }
        Ok(TensorView { name: key, dtype: e.dtype, shape: &e.shape, bytes: &shard.mmap[e.start..e.end] })
    }

    /// The most common storage dtype (for `lark inspect`).
    pub fn dominant_dtype(&self) -> Option<StoredDtype> {
        let mut counts: BTreeMap<&'static str, (usize, StoredDtype)> = BTreeMap::new();
        for e in self.entries.values() {
            let n: usize = e.shape.iter().product();
            counts.entry(e.dtype.name()).or_insert((0, e.dtype)).0 += n;
        }
        counts.values().max_by_key(|(n, _)| *n).map(|(_, d)| *d)
    }

    pub fn total_elements(&self) -> u64 {
        self.entries.values().map(|e| e.shape.iter().product::<usize>() as u64).sum()
    }
}
