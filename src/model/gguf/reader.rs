//! The GGUF container (versions 2 and 3, little-endian): header, metadata key/values, tensor table, data.
//!
//! Everything read from the file is bounded before it is allocated: a count can never exceed what the bytes
//! left in the file could hold, and tensor data must lie inside the file without overlapping. Any violation is
//! an error naming the file and the key or tensor, never a panic.

use crate::error::{LarkError, Result};
use memmap2::Mmap;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

const MAGIC: &[u8; 4] = b"GGUF";
/// ggml's `GGML_MAX_DIMS`.
const MAX_DIMS: u32 = 4;
/// Nesting depth of arrays of arrays; real files use one level.
const MAX_ARRAY_DEPTH: usize = 4;
const DEFAULT_ALIGNMENT: u64 = 32;

/// A ggml tensor type, by its numeric id. Known ids have a block layout; only some can be dequantised.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GgmlType(pub u32);

impl GgmlType {
    pub const F32: GgmlType = GgmlType(0);
    pub const F16: GgmlType = GgmlType(1);
    pub const Q4_0: GgmlType = GgmlType(2);
    pub const Q4_1: GgmlType = GgmlType(3);
    pub const Q8_0: GgmlType = GgmlType(8);
    pub const BF16: GgmlType = GgmlType(30);

    /// (name, elements per block, bytes per block), from ggml's type traits (`GGML_QUANT_SIZES` in gguf-py).
    fn traits(self) -> Option<(&'static str, usize, usize)> {
        const QK_K: usize = 256;
        Some(match self.0 {
            0 => ("F32", 1, 4),
            1 => ("F16", 1, 2),
            2 => ("Q4_0", 32, 18),
            3 => ("Q4_1", 32, 20),
            6 => ("Q5_0", 32, 22),
            7 => ("Q5_1", 32, 24),
            8 => ("Q8_0", 32, 34),
            9 => ("Q8_1", 32, 40),
            10 => ("Q2_K", QK_K, 2 + 2 + QK_K / 16 + QK_K / 4),
            11 => ("Q3_K", QK_K, 2 + QK_K / 4 + QK_K / 8 + 12),
            12 => ("Q4_K", QK_K, 2 + 2 + QK_K / 2 + 12),
            13 => ("Q5_K", QK_K, 2 + 2 + QK_K / 2 + QK_K / 8 + 12),
            14 => ("Q6_K", QK_K, 2 + QK_K / 2 + QK_K / 4 + QK_K / 16),
            15 => ("Q8_K", QK_K, 4 + QK_K + QK_K / 8),
            16 => ("IQ2_XXS", QK_K, 2 + QK_K / 4),
            17 => ("IQ2_XS", QK_K, 2 + QK_K / 4 + QK_K / 32),
            18 => ("IQ3_XXS", QK_K, 2 + QK_K / 4 + QK_K / 8),
            19 => ("IQ1_S", QK_K, 2 + QK_K / 8 + QK_K / 16),
            20 => ("IQ4_NL", 32, 18),
            21 => ("IQ3_S", QK_K, 2 + QK_K / 4 + QK_K / 8 + QK_K / 32 + 4),
            22 => ("IQ2_S", QK_K, 2 + QK_K / 4 + QK_K / 16),
            23 => ("IQ4_XS", QK_K, 2 + 2 + QK_K / 2 + QK_K / 64),
            24 => ("I8", 1, 1),
            25 => ("I16", 1, 2),
            26 => ("I32", 1, 4),
            27 => ("I64", 1, 8),
            28 => ("F64", 1, 8),
            29 => ("IQ1_M", QK_K, QK_K / 8 + QK_K / 16 + QK_K / 32),
            30 => ("BF16", 1, 2),
            34 => ("TQ1_0", QK_K, 2 + 4 * 13),
            35 => ("TQ2_0", QK_K, 2 + 64),
            39 => ("MXFP4", 32, 17),
            _ => return None,
        })
    }

    pub fn is_known(self) -> bool {
        self.traits().is_some()
    }

    pub fn name(self) -> String {
        match self.traits() {
            Some((n, _, _)) => n.to_string(),
            None => format!("type id {}", self.0),
        }
    }

    /// Elements per block and bytes per block (None for an unknown id).
    pub fn block(self) -> Option<(usize, usize)> {
        self.traits().map(|(_, e, b)| (e, b))
    }
}

/// A typed metadata array (arrays are homogeneous in GGUF).
#[derive(Debug, Clone, PartialEq)]
pub enum GgufArray {
    U8(Vec<u8>),
    I8(Vec<i8>),
    U16(Vec<u16>),
    I16(Vec<i16>),
    U32(Vec<u32>),
    I32(Vec<i32>),
    F32(Vec<f32>),
    Bool(Vec<bool>),
    String(Vec<String>),
    U64(Vec<u64>),
    I64(Vec<i64>),
    F64(Vec<f64>),
    Array(Vec<GgufArray>),
}

impl GgufArray {
    pub fn len(&self) -> usize {
        match self {
            GgufArray::U8(v) => v.len(),
            GgufArray::I8(v) => v.len(),
            GgufArray::U16(v) => v.len(),
            GgufArray::I16(v) => v.len(),
            GgufArray::U32(v) => v.len(),
            GgufArray::I32(v) => v.len(),
            GgufArray::F32(v) => v.len(),
            GgufArray::Bool(v) => v.len(),
            GgufArray::String(v) => v.len(),
            GgufArray::U64(v) => v.len(),
            GgufArray::I64(v) => v.len(),
            GgufArray::F64(v) => v.len(),
            GgufArray::Array(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Integer elements as i64 (None for non-integer arrays or a u64 above i64::MAX).
    pub fn to_i64_vec(&self) -> Option<Vec<i64>> {
        Some(match self {
            GgufArray::U8(v) => v.iter().map(|&x| x as i64).collect(),
            GgufArray::I8(v) => v.iter().map(|&x| x as i64).collect(),
            GgufArray::U16(v) => v.iter().map(|&x| x as i64).collect(),
            GgufArray::I16(v) => v.iter().map(|&x| x as i64).collect(),
            GgufArray::U32(v) => v.iter().map(|&x| x as i64).collect(),
            GgufArray::I32(v) => v.iter().map(|&x| x as i64).collect(),
            GgufArray::I64(v) => v.clone(),
            GgufArray::U64(v) => v.iter().map(|&x| i64::try_from(x).ok()).collect::<Option<Vec<_>>>()?,
            _ => return None,
        })
    }

    fn type_name(&self) -> &'static str {
        match self {
            GgufArray::U8(_) => "u8",
            GgufArray::I8(_) => "i8",
            GgufArray::U16(_) => "u16",
            GgufArray::I16(_) => "i16",
            GgufArray::U32(_) => "u32",
            GgufArray::I32(_) => "i32",
            GgufArray::F32(_) => "f32",
            GgufArray::Bool(_) => "bool",
            GgufArray::String(_) => "string",
            GgufArray::U64(_) => "u64",
            GgufArray::I64(_) => "i64",
            GgufArray::F64(_) => "f64",
            GgufArray::Array(_) => "array",
        }
    }
}

/// One metadata value.
#[derive(Debug, Clone, PartialEq)]
pub enum GgufValue {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    F32(f32),
    Bool(bool),
    String(String),
    Array(GgufArray),
    U64(u64),
    I64(i64),
    F64(f64),
}

impl GgufValue {
    /// Any integer type, as u64 (None for negative values and non-integers).
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            GgufValue::U8(x) => Some(x as u64),
            GgufValue::U16(x) => Some(x as u64),
            GgufValue::U32(x) => Some(x as u64),
            GgufValue::U64(x) => Some(x),
            GgufValue::I8(x) => u64::try_from(x).ok(),
            GgufValue::I16(x) => u64::try_from(x).ok(),
            GgufValue::I32(x) => u64::try_from(x).ok(),
            GgufValue::I64(x) => u64::try_from(x).ok(),
            _ => None,
        }
    }

    /// Any float or integer type, as f64.
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            GgufValue::F32(x) => Some(x as f64),
            GgufValue::F64(x) => Some(x),
            GgufValue::I8(x) => Some(x as f64),
            GgufValue::I16(x) => Some(x as f64),
            GgufValue::I32(x) => Some(x as f64),
            GgufValue::I64(x) => Some(x as f64),
            _ => self.as_u64().map(|x| x as f64),
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            GgufValue::Bool(b) => Some(b),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            GgufValue::String(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_array(&self) -> Option<&GgufArray> {
        match self {
            GgufValue::Array(a) => Some(a),
            _ => None,
        }
    }

    /// The GGUF type name, for error messages.
    pub fn type_name(&self) -> String {
        match self {
            GgufValue::U8(_) => "u8".into(),
            GgufValue::I8(_) => "i8".into(),
            GgufValue::U16(_) => "u16".into(),
            GgufValue::I16(_) => "i16".into(),
            GgufValue::U32(_) => "u32".into(),
            GgufValue::I32(_) => "i32".into(),
            GgufValue::F32(_) => "f32".into(),
            GgufValue::Bool(_) => "bool".into(),
            GgufValue::String(_) => "string".into(),
            GgufValue::Array(a) => format!("array of {}", a.type_name()),
            GgufValue::U64(_) => "u64".into(),
            GgufValue::I64(_) => "i64".into(),
            GgufValue::F64(_) => "f64".into(),
        }
    }
}

/// One entry of the tensor table, validated: known type, whole blocks, data inside the file.
#[derive(Debug, Clone)]
pub struct TensorInfo {
    pub name: String,
    /// ggml order: `ne[0]` is the fastest-varying dimension (the reverse of the row-major shape).
    pub ne: Vec<u64>,
    pub ggml_type: GgmlType,
    /// Offset relative to the start of the data section.
    pub offset: u64,
    pub numel: usize,
    pub n_bytes: usize,
}

impl TensorInfo {
    /// Row-major (PyTorch / safetensors) shape: the reverse of `ne`.
    pub fn shape(&self) -> Vec<usize> {
        self.ne.iter().rev().map(|&d| d as usize).collect()
    }
}

enum Bytes {
    Mapped(Mmap),
    Owned(Vec<u8>),
}

impl Bytes {
    fn as_slice(&self) -> &[u8] {
        match self {
            Bytes::Mapped(m) => m,
            Bytes::Owned(v) => v,
        }
    }
}

/// A parsed GGUF file. Metadata is kept in file order; tensor data is borrowed from the mapping on demand.
pub struct GgufFile {
    pub origin: String,
    pub version: u32,
    pub alignment: u64,
    pub metadata: Vec<(String, GgufValue)>,
    pub tensors: Vec<TensorInfo>,
    key_index: HashMap<String, usize>,
    tensor_index: HashMap<String, usize>,
    data_start: usize,
    bytes: Bytes,
}

impl GgufFile {
    /// Map and parse a file.
    pub fn open(path: &Path) -> Result<Self> {
        let file = std::fs::File::open(path).map_err(|e| LarkError::io(path, e))?;
        // SAFETY: read-only mapping; a file changed under us is outside what we defend against.
        let mmap = unsafe { Mmap::map(&file) }.map_err(|e| LarkError::io(path, e))?;
        Self::parse(Bytes::Mapped(mmap), path.display().to_string())
    }

    /// Parse bytes already in memory (tests, fuzzing). `origin` names them in errors.
    pub fn from_bytes(bytes: Vec<u8>, origin: impl Into<String>) -> Result<Self> {
        Self::parse(Bytes::Owned(bytes), origin.into())
    }

    pub fn path(&self) -> PathBuf {
        PathBuf::from(&self.origin)
    }

    pub fn get(&self, key: &str) -> Option<&GgufValue> {
        self.key_index.get(key).map(|&i| &self.metadata[i].1)
    }

    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.tensor_index.get(name).map(|&i| &self.tensors[i])
    }

    /// The raw bytes of a tensor (bounds were checked when the file was parsed).
    pub fn tensor_bytes(&self, t: &TensorInfo) -> &[u8] {
        let start = self.data_start + t.offset as usize;
        &self.bytes.as_slice()[start..start + t.n_bytes]
    }

    fn parse(bytes: Bytes, origin: String) -> Result<Self> {
        let data = bytes.as_slice();
        let mut r = Cursor { data, pos: 0, origin: &origin };
        let magic = r.take(4, "magic")?;
        if magic != MAGIC {
            return Err(LarkError::input(
                origin.clone(),
                format!("not a GGUF file (magic {:?}, expected \"GGUF\")", String::from_utf8_lossy(magic)),
            ));
        }
        let version = r.u32("version")?;
        match version {
            2 | 3 => {}
            1 => return Err(LarkError::Unsupported(format!("{origin}: GGUF version 1 (supported: 2, 3)"))),
            v if v.swap_bytes() == 2 || v.swap_bytes() == 3 => {
                return Err(LarkError::Unsupported(format!(
                    "{origin}: big-endian GGUF (only little-endian is supported)"
                )))
            }
            v => return Err(LarkError::input(origin.clone(), format!("GGUF version {v} is not supported (2, 3)"))),
        }
        let n_tensors = r.u64("tensor count")?;
        let n_kv = r.u64("metadata count")?;
        // A key/value pair takes at least 8 (key length) + 4 (type) + 1 bytes; a tensor entry at least
        // 8 + 4 + 8 + 4 + 8. Counts beyond what the file could hold are rejected before anything is allocated.
        r.check_count(n_kv, 13, "metadata count")?;
        let mut metadata = Vec::with_capacity(n_kv as usize);
        let mut key_index = HashMap::with_capacity(n_kv as usize);
        for i in 0..n_kv {
            let key = r.string(&format!("metadata key #{i}"))?;
            let ty = r.u32(&format!("metadata `{key}` type"))?;
            let value = r.value(ty, &key, 0)?;
            if key_index.insert(key.clone(), metadata.len()).is_some() {
                return Err(LarkError::input(format!("{origin}: metadata `{key}`"), "duplicate key"));
            }
            metadata.push((key, value));
        }
        let alignment = match key_index.get("general.alignment").map(|&i| &metadata[i].1) {
            None => DEFAULT_ALIGNMENT,
            Some(v) => match v.as_u64() {
                Some(a) if a.is_power_of_two() && a <= 1 << 20 => a,
                _ => {
                    return Err(LarkError::input(
                        format!("{origin}: metadata `general.alignment`"),
                        format!("{v:?} is not a power of two up to 2^20"),
                    ))
                }
            },
        };

        r.check_count(n_tensors, 32, "tensor count")?;
        let mut tensors = Vec::with_capacity(n_tensors as usize);
        let mut tensor_index = HashMap::with_capacity(n_tensors as usize);
        for i in 0..n_tensors {
            let name = r.string(&format!("tensor #{i} name"))?;
            let at = |msg: String| LarkError::input(format!("{origin}: tensor {name}"), msg);
            let n_dims = r.u32(&format!("tensor {name} dimension count"))?;
            if n_dims == 0 || n_dims > MAX_DIMS {
                return Err(at(format!("{n_dims} dimensions (1..={MAX_DIMS} allowed)")));
            }
            let mut ne = Vec::with_capacity(n_dims as usize);
            for _ in 0..n_dims {
                ne.push(r.u64(&format!("tensor {name} dimensions"))?);
            }
            let ggml_type = GgmlType(r.u32(&format!("tensor {name} type"))?);
            let offset = r.u64(&format!("tensor {name} offset"))?;
            let (block_elems, block_bytes) =
                ggml_type.block().ok_or_else(|| at(format!("unknown ggml tensor type id {}", ggml_type.0)))?;
            if ne.contains(&0) {
                return Err(at(format!("has a zero dimension (ne = {ne:?})")));
            }
            // Any product beyond the file size is absurd; checked arithmetic keeps a hostile shape from wrapping.
            let numel = ne
                .iter()
                .try_fold(1u64, |acc, &d| acc.checked_mul(d))
                .filter(|&n| n <= 1 << 48)
                .ok_or_else(|| at(format!("absurd shape ne = {ne:?}")))?;
            if ne[0] % block_elems as u64 != 0 {
                return Err(at(format!(
                    "first dimension {} is not a multiple of the {} block size {block_elems}",
                    ne[0],
                    ggml_type.name()
                )));
            }
            let n_bytes = (numel / block_elems as u64)
                .checked_mul(block_bytes as u64)
                .ok_or_else(|| at(format!("absurd shape ne = {ne:?}")))?;
            if offset % alignment != 0 {
                return Err(at(format!("data offset {offset} is not a multiple of the alignment {alignment}")));
            }
            if tensor_index.insert(name.clone(), tensors.len()).is_some() {
                return Err(at("duplicate tensor name".into()));
            }
            tensors.push(TensorInfo { name, ne, ggml_type, offset, numel: numel as usize, n_bytes: n_bytes as usize });
        }
        let data_start = align_up(r.pos as u64, alignment);
        let data_len = (data.len() as u64).saturating_sub(data_start);
        if n_tensors > 0 && data_start > data.len() as u64 {
            return Err(LarkError::input(origin.clone(), "truncated: the file ends before its tensor data section"));
        }
        // Data ranges must lie inside the file and must not overlap (sorted by offset, each must end before
        // the next begins).
        let mut order: Vec<usize> = (0..tensors.len()).collect();
        order.sort_by_key(|&i| tensors[i].offset);
        let mut prev: Option<&TensorInfo> = None;
        for &i in &order {
            let t = &tensors[i];
            let end = t.offset.checked_add(t.n_bytes as u64);
            match end {
                Some(end) if end <= data_len => {}
                _ => {
                    return Err(LarkError::input(
                        format!("{origin}: tensor {}", t.name),
                        format!(
                            "{} bytes of data at offset {} lie outside the file's data section ({data_len} bytes): \
                             truncated file or bad offset",
                            t.n_bytes, t.offset
                        ),
                    ))
                }
            }
            if let Some(p) = prev {
                if p.offset + p.n_bytes as u64 > t.offset {
                    return Err(LarkError::input(
                        format!("{origin}: tensor {}", t.name),
                        format!("data at offset {} overlaps tensor {}", t.offset, p.name),
                    ));
                }
            }
            prev = Some(t);
        }
        Ok(GgufFile {
            origin,
            version,
            alignment,
            metadata,
            tensors,
            key_index,
            tensor_index,
            data_start: data_start as usize,
            bytes,
        })
    }
}

fn align_up(x: u64, a: u64) -> u64 {
    x.div_ceil(a) * a
}

/// A bounds-checked little-endian reader over the file bytes.
struct Cursor<'a> {
    data: &'a [u8],
    pos: usize,
    origin: &'a str,
}

impl<'a> Cursor<'a> {
    fn remaining(&self) -> usize {
        self.data.len() - self.pos
    }

    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8]> {
        if n > self.remaining() {
            return Err(LarkError::input(
                self.origin.to_string(),
                format!("truncated: reading {what} at byte {} needs {n} bytes, {} left", self.pos, self.remaining()),
            ));
        }
        let s = &self.data[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N]> {
        let s = self.take(N, what)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    fn u32(&mut self, what: &str) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    fn u64(&mut self, what: &str) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    /// A count of items of at least `min_size` bytes each must fit in the rest of the file.
    fn check_count(&self, count: u64, min_size: u64, what: &str) -> Result<()> {
        if count.saturating_mul(min_size) > self.remaining() as u64 {
            return Err(LarkError::input(
                self.origin.to_string(),
                format!("{what} {count} is impossible: only {} bytes are left in the file", self.remaining()),
            ));
        }
        Ok(())
    }

    fn string(&mut self, what: &str) -> Result<String> {
        let len = self.u64(what)?;
        if len > self.remaining() as u64 {
            return Err(LarkError::input(
                self.origin.to_string(),
                format!("truncated or corrupt: {what} claims {len} bytes, {} left", self.remaining()),
            ));
        }
        let bytes = self.take(len as usize, what)?;
        String::from_utf8(bytes.to_vec())
            .map_err(|e| LarkError::input(self.origin.to_string(), format!("{what} is not valid UTF-8: {e}")))
    }

    fn value(&mut self, ty: u32, key: &str, depth: usize) -> Result<GgufValue> {
        let what = format!("metadata `{key}`");
        Ok(match ty {
            0 => GgufValue::U8(self.array::<1>(&what)?[0]),
            1 => GgufValue::I8(self.array::<1>(&what)?[0] as i8),
            2 => GgufValue::U16(u16::from_le_bytes(self.array(&what)?)),
            3 => GgufValue::I16(i16::from_le_bytes(self.array(&what)?)),
            4 => GgufValue::U32(u32::from_le_bytes(self.array(&what)?)),
            5 => GgufValue::I32(i32::from_le_bytes(self.array(&what)?)),
            6 => GgufValue::F32(f32::from_le_bytes(self.array(&what)?)),
            7 => GgufValue::Bool(self.bool(&what)?),
            8 => GgufValue::String(self.string(&what)?),
            9 => GgufValue::Array(self.array_value(key, depth)?),
            10 => GgufValue::U64(u64::from_le_bytes(self.array(&what)?)),
            11 => GgufValue::I64(i64::from_le_bytes(self.array(&what)?)),
            12 => GgufValue::F64(f64::from_le_bytes(self.array(&what)?)),
            t => {
                return Err(LarkError::input(
                    format!("{}: metadata `{key}`", self.origin),
                    format!("unknown value type {t}"),
                ))
            }
        })
    }

    fn bool(&mut self, what: &str) -> Result<bool> {
        match self.array::<1>(what)?[0] {
            0 => Ok(false),
            1 => Ok(true),
            b => Err(LarkError::input(self.origin.to_string(), format!("{what}: boolean byte {b} is neither 0 nor 1"))),
        }
    }

    fn array_value(&mut self, key: &str, depth: usize) -> Result<GgufArray> {
        let what = format!("metadata `{key}`");
        if depth >= MAX_ARRAY_DEPTH {
            return Err(LarkError::input(
                format!("{}: metadata `{key}`", self.origin),
                format!("arrays nested deeper than {MAX_ARRAY_DEPTH}"),
            ));
        }
        let elem_ty = self.u32(&what)?;
        let n = self.u64(&what)?;
        // Smallest encoded element of each type: strings and arrays carry an 8-byte length (and a 4-byte type).
        let min_size = match elem_ty {
            0 | 1 | 7 => 1,
            2 | 3 => 2,
            4..=6 => 4,
            8 | 10..=12 => 8,
            9 => 12,
            t => {
                return Err(LarkError::input(
                    format!("{}: metadata `{key}`", self.origin),
                    format!("unknown array element type {t}"),
                ))
            }
        };
        self.check_count(n, min_size, &format!("metadata `{key}` array length"))?;
        let n = n as usize;
        macro_rules! fixed {
            ($variant:ident, $t:ty) => {{
                let mut v = Vec::with_capacity(n);
                for _ in 0..n {
                    v.push(<$t>::from_le_bytes(self.array(&what)?));
                }
                GgufArray::$variant(v)
            }};
        }
        Ok(match elem_ty {
            0 => GgufArray::U8(self.take(n, &what)?.to_vec()),
            1 => GgufArray::I8(self.take(n, &what)?.iter().map(|&b| b as i8).collect()),
            2 => fixed!(U16, u16),
            3 => fixed!(I16, i16),
            4 => fixed!(U32, u32),
            5 => fixed!(I32, i32),
            6 => fixed!(F32, f32),
            7 => {
                let mut v = Vec::with_capacity(n);
                for _ in 0..n {
                    v.push(self.bool(&what)?);
                }
                GgufArray::Bool(v)
            }
            8 => {
                let mut v = Vec::with_capacity(n);
                for i in 0..n {
                    v.push(self.string(&format!("metadata `{key}`[{i}]"))?);
                }
                GgufArray::String(v)
            }
            9 => {
                let mut v = Vec::with_capacity(n);
                for _ in 0..n {
                    v.push(self.array_value(key, depth + 1)?);
                }
                GgufArray::Array(v)
            }
            10 => fixed!(U64, u64),
            11 => fixed!(I64, i64),
            12 => fixed!(F64, f64),
            _ => unreachable!("element type checked above"),
        })
    }
}
