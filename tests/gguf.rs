//! GGUF import: the reader, dequantisation, Q/K un-permutation and `convert-gguf`, on tiny GGUF files built
//! here byte by byte (and corrupted on purpose), and on the real SmolLM2 file against what HF transformers and
//! gguf-py make of it (tests/fixtures/gguf_smollm2.json, written by scripts/make_gguf_fixtures.py).

mod common;

use common::fixtures;
use half::{bf16, f16};
use lark::model::gguf::{convert_gguf, dequantize, GgmlType, GgufArray, GgufFile, GgufValue};
use lark::model::random::SplitMix;
use lark::model::{Model, StoredDtype};
use serde_json::Value;
use std::path::Path;

// ---------------------------------------------------------------------------------------------------------
// A small GGUF writer (v3, little-endian), with knobs to write broken files.

const T_U8: u32 = 0;
const T_I8: u32 = 1;
const T_U16: u32 = 2;
const T_I16: u32 = 3;
const T_U32: u32 = 4;
const T_I32: u32 = 5;
const T_F32: u32 = 6;
const T_BOOL: u32 = 7;
const T_STRING: u32 = 8;
const T_ARRAY: u32 = 9;
const T_U64: u32 = 10;
const T_I64: u32 = 11;
const T_F64: u32 = 12;

struct TensorSpec {
    name: String,
    ne: Vec<u64>,
    ty: u32,
    data: Vec<u8>,
    /// Write this offset instead of the computed one.
    offset: Option<u64>,
}

struct Writer {
    version: u32,
    kv: Vec<u8>,
    n_kv: u64,
    tensors: Vec<TensorSpec>,
    alignment: u64,
    /// Write these counts instead of the real ones.
    n_kv_override: Option<u64>,
    n_tensors_override: Option<u64>,
}

fn put_str(out: &mut Vec<u8>, s: &[u8]) {
    out.extend((s.len() as u64).to_le_bytes());
    out.extend(s);
}

impl Writer {
    fn new() -> Self {
        Writer {
            version: 3,
            kv: Vec::new(),
            n_kv: 0,
            tensors: Vec::new(),
            alignment: 32,
            n_kv_override: None,
            n_tensors_override: None,
        }
    }

    /// A key with an already-encoded value of type `ty`.
    fn raw(&mut self, key: &str, ty: u32, value: &[u8]) -> &mut Self {
        put_str(&mut self.kv, key.as_bytes());
        self.kv.extend(ty.to_le_bytes());
        self.kv.extend(value);
        self.n_kv += 1;
        self
    }
    fn u32(&mut self, key: &str, v: u32) -> &mut Self {
        self.raw(key, T_U32, &v.to_le_bytes())
    }
    fn f32(&mut self, key: &str, v: f32) -> &mut Self {
        self.raw(key, T_F32, &v.to_le_bytes())
    }
    fn bool(&mut self, key: &str, v: bool) -> &mut Self {
        self.raw(key, T_BOOL, &[v as u8])
    }
    fn str(&mut self, key: &str, v: &str) -> &mut Self {
        let mut b = Vec::new();
        put_str(&mut b, v.as_bytes());
        self.raw(key, T_STRING, &b)
    }
    fn str_array(&mut self, key: &str, items: &[String]) -> &mut Self {
        let mut b = Vec::new();
        b.extend(T_STRING.to_le_bytes());
        b.extend((items.len() as u64).to_le_bytes());
        for s in items {
            put_str(&mut b, s.as_bytes());
        }
        self.raw(key, T_ARRAY, &b)
    }
    fn i32_array(&mut self, key: &str, items: &[i32]) -> &mut Self {
        let mut b = Vec::new();
        b.extend(T_I32.to_le_bytes());
        b.extend((items.len() as u64).to_le_bytes());
        for v in items {
            b.extend(v.to_le_bytes());
        }
        self.raw(key, T_ARRAY, &b)
    }
    fn tensor(&mut self, name: &str, ne: &[u64], ty: GgmlType, data: Vec<u8>) -> &mut Self {
        self.tensors.push(TensorSpec { name: name.into(), ne: ne.to_vec(), ty: ty.0, data, offset: None });
        self
    }

    fn build(&self) -> Vec<u8> {
        let align = |x: usize| x.div_ceil(self.alignment as usize) * self.alignment as usize;
        let mut out = Vec::new();
        out.extend(b"GGUF");
        out.extend(self.version.to_le_bytes());
        out.extend(self.n_tensors_override.unwrap_or(self.tensors.len() as u64).to_le_bytes());
        out.extend(self.n_kv_override.unwrap_or(self.n_kv).to_le_bytes());
        out.extend(&self.kv);
        let mut offset = 0usize;
        let mut offsets = Vec::new();
        for t in &self.tensors {
            put_str(&mut out, t.name.as_bytes());
            out.extend((t.ne.len() as u32).to_le_bytes());
            for d in &t.ne {
                out.extend(d.to_le_bytes());
            }
            out.extend(t.ty.to_le_bytes());
            out.extend(t.offset.unwrap_or(offset as u64).to_le_bytes());
            offsets.push(offset);
            offset = align(offset + t.data.len());
        }
        out.resize(align(out.len()), 0);
        let data_start = out.len();
        for (t, off) in self.tensors.iter().zip(offsets) {
            out.resize(data_start + off, 0);
            out.extend(&t.data);
        }
        out
    }
}

fn parse(bytes: Vec<u8>) -> Result<GgufFile, String> {
    GgufFile::from_bytes(bytes, "test.gguf").map_err(|e| e.to_string())
}

fn parse_err(bytes: Vec<u8>) -> String {
    match parse(bytes) {
        Ok(_) => panic!("expected an error"),
        Err(e) => e,
    }
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

// ---------------------------------------------------------------------------------------------------------
// Block encoders with their reference decoders, written from the ggml block layouts (not from lark's code).

/// Q8_0: f16 d, then 32 i8; value q * d.
fn q8_0_block(d: f32, q: &[i8; 32]) -> (Vec<u8>, Vec<f32>) {
    let dh = f16::from_f32(d);
    let mut b = dh.to_le_bytes().to_vec();
    b.extend(q.iter().map(|&x| x as u8));
    (b, q.iter().map(|&x| x as f32 * dh.to_f32()).collect())
}

/// Q4_0: f16 d, then 16 bytes; element j < 16 is the low nibble of byte j, element 16 + j its high nibble;
/// value (q - 8) * d.
fn q4_0_block(d: f32, q: &[u8; 32]) -> (Vec<u8>, Vec<f32>) {
    let dh = f16::from_f32(d);
    let mut b = dh.to_le_bytes().to_vec();
    b.extend((0..16).map(|j| q[j] | (q[16 + j] << 4)));
    (b, q.iter().map(|&x| (x as f32 - 8.0) * dh.to_f32()).collect())
}

/// Q4_1: f16 d, f16 m, then 16 bytes of nibbles as Q4_0; value q * d + m.
fn q4_1_block(d: f32, m: f32, q: &[u8; 32]) -> (Vec<u8>, Vec<f32>) {
    let (dh, mh) = (f16::from_f32(d), f16::from_f32(m));
    let mut b = dh.to_le_bytes().to_vec();
    b.extend(mh.to_le_bytes());
    b.extend((0..16).map(|j| q[j] | (q[16 + j] << 4)));
    (b, q.iter().map(|&x| x as f32 * dh.to_f32() + mh.to_f32()).collect())
}

/// Random values of one row in `ty`, as (file bytes, exact decoded values).
fn random_row(ty: GgmlType, len: usize, rng: &mut SplitMix) -> (Vec<u8>, Vec<f32>) {
    let mut bytes = Vec::new();
    let mut vals = Vec::new();
    match ty {
        GgmlType::F32 => {
            let v: Vec<f32> = (0..len).map(|_| rng.next_f32()).collect();
            bytes = f32_bytes(&v);
            vals = v;
        }
        GgmlType::F16 => {
            for _ in 0..len {
                let h = f16::from_f32(rng.next_f32());
                bytes.extend(h.to_le_bytes());
                vals.push(h.to_f32());
            }
        }
        GgmlType::BF16 => {
            for _ in 0..len {
                let h = bf16::from_f32(rng.next_f32());
                bytes.extend(h.to_le_bytes());
                vals.push(h.to_f32());
            }
        }
        _ => {
            for _ in 0..len / 32 {
                let d = 0.01 + 0.1 * rng.next_f32().abs();
                let (b, v) = match ty {
                    GgmlType::Q8_0 => q8_0_block(d, &std::array::from_fn(|_| (rng.next_u64() % 256) as u8 as i8)),
                    GgmlType::Q4_0 => q4_0_block(d, &std::array::from_fn(|_| (rng.next_u64() % 16) as u8)),
                    GgmlType::Q4_1 => {
                        q4_1_block(d, -0.3 * rng.next_f32(), &std::array::from_fn(|_| (rng.next_u64() % 16) as u8))
                    }
                    _ => unreachable!(),
                };
                bytes.extend(b);
                vals.extend(v);
            }
        }
    }
    (bytes, vals)
}

// ---------------------------------------------------------------------------------------------------------
// Reader and dequantisation.

#[test]
fn metadata_of_every_type_round_trips() {
    let mut w = Writer::new();
    w.raw("u8", T_U8, &[200])
        .raw("i8", T_I8, &[(-5i8) as u8])
        .raw("u16", T_U16, &60000u16.to_le_bytes())
        .raw("i16", T_I16, &(-30000i16).to_le_bytes())
        .u32("u32", 4_000_000_000)
        .raw("i32", T_I32, &(-7i32).to_le_bytes())
        .f32("f32", 1.5)
        .bool("bool", true)
        .str("string", "héllo")
        .raw("u64", T_U64, &(1u64 << 40).to_le_bytes())
        .raw("i64", T_I64, &(-1i64 << 40).to_le_bytes())
        .raw("f64", T_F64, &0.1f64.to_le_bytes())
        .str_array("strings", &["a".into(), "".into(), "ü".into()])
        .i32_array("ints", &[1, -2, 3]);
    // An array of two arrays of u16.
    let mut nested = Vec::new();
    nested.extend(T_ARRAY.to_le_bytes());
    nested.extend(2u64.to_le_bytes());
    for items in [&[1u16, 2][..], &[3u16][..]] {
        nested.extend(T_U16.to_le_bytes());
        nested.extend((items.len() as u64).to_le_bytes());
        for v in items {
            nested.extend(v.to_le_bytes());
        }
    }
    w.raw("nested", T_ARRAY, &nested);
    let f = parse(w.build()).unwrap();
    assert_eq!(f.version, 3);
    assert_eq!(f.alignment, 32);
    assert_eq!(f.get("u8"), Some(&GgufValue::U8(200)));
    assert_eq!(f.get("i8"), Some(&GgufValue::I8(-5)));
    assert_eq!(f.get("u16"), Some(&GgufValue::U16(60000)));
    assert_eq!(f.get("i16"), Some(&GgufValue::I16(-30000)));
    assert_eq!(f.get("u32").and_then(|v| v.as_u64()), Some(4_000_000_000));
    assert_eq!(f.get("i32"), Some(&GgufValue::I32(-7)));
    assert_eq!(f.get("f32").and_then(|v| v.as_f64()), Some(1.5));
    assert_eq!(f.get("bool").and_then(|v| v.as_bool()), Some(true));
    assert_eq!(f.get("string").and_then(|v| v.as_str()), Some("héllo"));
    assert_eq!(f.get("u64"), Some(&GgufValue::U64(1 << 40)));
    assert_eq!(f.get("i64"), Some(&GgufValue::I64(-1 << 40)));
    assert_eq!(f.get("f64"), Some(&GgufValue::F64(0.1)));
    assert_eq!(f.get("strings"), Some(&GgufValue::Array(GgufArray::String(vec!["a".into(), "".into(), "ü".into()]))));
    assert_eq!(f.get("ints").and_then(|v| v.as_array()).and_then(|a| a.to_i64_vec()), Some(vec![1, -2, 3]));
    assert_eq!(
        f.get("nested"),
        Some(&GgufValue::Array(GgufArray::Array(vec![GgufArray::U16(vec![1, 2]), GgufArray::U16(vec![3])])))
    );
    let keys: Vec<&str> = f.metadata.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(keys.first(), Some(&"u8"), "metadata keeps file order");
    assert!(f.tensors.is_empty());
}

#[test]
fn every_supported_tensor_type_dequantises_exactly() {
    let mut rng = SplitMix(7);
    for ty in [GgmlType::F32, GgmlType::F16, GgmlType::BF16, GgmlType::Q8_0, GgmlType::Q4_0, GgmlType::Q4_1] {
        // Three rows of 64 (two blocks each for the 32-element formats), ne = [64, 3].
        let mut data = Vec::new();
        let mut want = Vec::new();
        for _ in 0..3 {
            let (b, v) = random_row(ty, 64, &mut rng);
            data.extend(b);
            want.extend(v);
        }
        let mut w = Writer::new();
        w.tensor("t", &[64, 3], ty, data);
        let f = parse(w.build()).unwrap();
        let t = f.tensor("t").unwrap();
        assert_eq!(t.shape(), vec![3, 64], "{}", ty.name());
        let got = dequantize(t, f.tensor_bytes(t), &f.origin).unwrap();
        assert_eq!(got.len(), want.len());
        for (i, (g, e)) in got.iter().zip(&want).enumerate() {
            assert_eq!(g.to_bits(), e.to_bits(), "{} element {i}: {g} vs {e}", ty.name());
        }
    }
}

#[test]
fn q4_nibble_order_and_offsets_are_ggml_s() {
    // Element j < 16 is the low nibble of byte j, element 16 + j its high nibble.
    let q: [u8; 32] = std::array::from_fn(|i| i as u8 % 16);
    let (b0, _) = q4_0_block(1.0, &q);
    assert_eq!(b0[2], 0x00); // q[0] = 0, q[16] = 0
    assert_eq!(b0[3], 0x11);
    let mut w = Writer::new();
    w.tensor("q40", &[32], GgmlType::Q4_0, b0).tensor("q41", &[32], GgmlType::Q4_1, q4_1_block(0.5, 2.0, &q).0);
    let f = parse(w.build()).unwrap();
    let t = f.tensor("q40").unwrap();
    let v = dequantize(t, f.tensor_bytes(t), "x").unwrap();
    assert_eq!(v[0], -8.0);
    assert_eq!(v[15], 7.0);
    assert_eq!(v[16], -8.0);
    assert_eq!(v[31], 7.0);
    let t = f.tensor("q41").unwrap();
    let v = dequantize(t, f.tensor_bytes(t), "x").unwrap();
    assert_eq!(v[1], 2.5);
    assert_eq!(v[17], 2.5);
    assert_eq!(v[31], 9.5);
}

#[test]
fn alignment_is_read_from_metadata() {
    let mut w = Writer::new();
    w.alignment = 64;
    w.u32("general.alignment", 64);
    w.tensor("a", &[3], GgmlType::F32, f32_bytes(&[1.0, 2.0, 3.0]));
    w.tensor("b", &[2], GgmlType::F32, f32_bytes(&[4.0, 5.0]));
    let f = parse(w.build()).unwrap();
    assert_eq!(f.alignment, 64);
    let b = f.tensor("b").unwrap();
    assert_eq!(b.offset, 64);
    assert_eq!(dequantize(b, f.tensor_bytes(b), "x").unwrap(), vec![4.0, 5.0]);
}

#[test]
fn unsupported_tensor_type_is_an_error_naming_tensor_and_type() {
    let mut w = Writer::new();
    w.tensor("blk.0.ffn_up.weight", &[256], GgmlType(14), vec![0u8; 210]); // Q6_K
    let f = parse(w.build()).unwrap();
    let t = f.tensor("blk.0.ffn_up.weight").unwrap();
    let e = dequantize(t, f.tensor_bytes(t), &f.origin).unwrap_err().to_string();
    assert!(e.contains("blk.0.ffn_up.weight") && e.contains("Q6_K") && e.contains("test.gguf"), "{e}");
}

// ---------------------------------------------------------------------------------------------------------
// Malformed files: every one is an error naming the file (and tensor or key), never a panic.

fn small_valid() -> Writer {
    let mut w = Writer::new();
    w.str("general.architecture", "llama").str_array("list", &["x".into(), "yy".into()]);
    w.tensor("a", &[4, 2], GgmlType::F32, f32_bytes(&[0.0; 8]));
    w.tensor("b", &[32], GgmlType::Q8_0, vec![0u8; 34]);
    w
}

#[test]
fn every_truncation_is_an_error() {
    let full = small_valid().build();
    parse(full.clone()).unwrap();
    for n in 0..full.len() {
        let e = parse_err(full[..n].to_vec());
        assert!(e.contains("test.gguf"), "prefix {n}: {e}");
    }
}

#[test]
fn random_corruption_never_panics() {
    let full = small_valid().build();
    let mut rng = SplitMix(99);
    for _ in 0..3000 {
        let mut b = full.clone();
        for _ in 0..1 + rng.next_u64() % 4 {
            let i = (rng.next_u64() % b.len() as u64) as usize;
            b[i] = rng.next_u64() as u8;
        }
        if let Ok(f) = GgufFile::from_bytes(b, "fuzz.gguf") {
            for t in &f.tensors {
                let _ = dequantize(t, f.tensor_bytes(t), &f.origin);
            }
        }
    }
}

#[test]
fn header_errors() {
    let mut b = small_valid().build();
    b[0] = b'X';
    assert!(parse_err(b).contains("not a GGUF file"));

    let mut w = small_valid();
    w.version = 1;
    assert!(parse_err(w.build()).contains("version 1"));
    w.version = 3u32.swap_bytes();
    assert!(parse_err(w.build()).contains("big-endian"));
    w.version = 9;
    assert!(parse_err(w.build()).contains("version 9"));

    let mut w = small_valid();
    w.n_kv_override = Some(u64::MAX);
    assert!(parse_err(w.build()).contains("metadata count"));
    let mut w = small_valid();
    w.n_tensors_override = Some(1 << 40);
    assert!(parse_err(w.build()).contains("tensor count"));
}

#[test]
fn metadata_errors() {
    // A string claiming more bytes than the file has.
    let mut w = Writer::new();
    w.raw("s", T_STRING, &u64::MAX.to_le_bytes());
    assert!(parse_err(w.build()).contains("claims"));
    // An array claiming 2^60 elements.
    let mut a = T_U32.to_le_bytes().to_vec();
    a.extend((1u64 << 60).to_le_bytes());
    let mut w = Writer::new();
    w.raw("arr", T_ARRAY, &a);
    let e = parse_err(w.build());
    assert!(e.contains("`arr`") && e.contains("impossible"), "{e}");
    // Unknown value and element types.
    let mut w = Writer::new();
    w.raw("odd", 13, &[0; 8]);
    assert!(parse_err(w.build()).contains("unknown value type 13"));
    let mut a = 77u32.to_le_bytes().to_vec();
    a.extend(1u64.to_le_bytes());
    let mut w = Writer::new();
    w.raw("arr", T_ARRAY, &a);
    assert!(parse_err(w.build()).contains("unknown array element type 77"));
    // Arrays nested too deep.
    let mut deep = Vec::new();
    for _ in 0..6 {
        deep.extend(T_ARRAY.to_le_bytes());
        deep.extend(1u64.to_le_bytes());
    }
    deep.extend(T_U8.to_le_bytes());
    deep.extend(0u64.to_le_bytes());
    let mut w = Writer::new();
    w.raw("deep", T_ARRAY, &deep[12..]);
    assert!(parse_err(w.build()).contains("nested"));
    // A boolean that is neither 0 nor 1, a duplicate key, invalid UTF-8, a bad alignment.
    let mut w = Writer::new();
    w.raw("b", T_BOOL, &[2]);
    assert!(parse_err(w.build()).contains("boolean"));
    let mut w = Writer::new();
    w.u32("k", 1).u32("k", 2);
    assert!(parse_err(w.build()).contains("duplicate key"));
    let mut w = Writer::new();
    w.raw("s", T_STRING, &[2, 0, 0, 0, 0, 0, 0, 0, 0xFF, 0xFE]);
    assert!(parse_err(w.build()).contains("UTF-8"));
    let mut w = Writer::new();
    w.u32("general.alignment", 3);
    assert!(parse_err(w.build()).contains("general.alignment"));
}

#[test]
fn tensor_table_errors() {
    let check = |mutate: &dyn Fn(&mut Writer), want: &str| {
        let mut w = small_valid();
        mutate(&mut w);
        let e = parse_err(w.build());
        assert!(e.contains(want), "expected {want:?} in: {e}");
    };
    check(&|w| w.tensors[1].ne = vec![1, 1, 1, 1, 32], "5 dimensions");
    check(&|w| w.tensors[0].ne = vec![4, 0], "zero dimension");
    check(&|w| w.tensors[0].ty = 99, "tensor a: unknown ggml tensor type id 99");
    check(&|w| w.tensors[1].ne = vec![16], "tensor b: first dimension 16 is not a multiple of the Q8_0 block size 32");
    check(&|w| w.tensors[0].ne = vec![1 << 32, 1 << 32, 1 << 32], "tensor a: absurd shape");
    check(&|w| w.tensors[0].ne = vec![1 << 20, 1 << 20], "lie outside");
    check(&|w| w.tensors[1].offset = Some(7), "tensor b: data offset 7 is not a multiple of the alignment 32");
    check(&|w| w.tensors[1].offset = Some(1 << 40), "tensor b: 34 bytes of data at offset");
    check(&|w| w.tensors[1].offset = Some(u64::MAX - 31), "tensor b: 34 bytes of data at offset");
    check(&|w| w.tensors[1].offset = Some(0), "overlaps tensor");
    check(&|w| w.tensors[1].name = "a".into(), "duplicate tensor name");
}

// ---------------------------------------------------------------------------------------------------------
// Conversion of a tiny llama model.

const HIDDEN: usize = 64;
const HEADS: usize = 4;
const KV_HEADS: usize = 2;
const HEAD_DIM: usize = 16;
const FFN: usize = 96;
const LAYERS: usize = 2;

/// GPT-2's byte alphabet, as a vocabulary of 256 one-character tokens.
fn byte_tokens() -> Vec<String> {
    let mut printable: Vec<u32> = (0x21..=0x7E).chain(0xA1..=0xAC).chain(0xAE..=0xFF).collect();
    let mut chars: Vec<u32> = printable.clone();
    let mut extra = 0;
    for b in 0..256u32 {
        if !printable.contains(&b) {
            printable.push(b);
            chars.push(256 + extra);
            extra += 1;
        }
    }
    let mut by_byte: Vec<(u32, u32)> = printable.into_iter().zip(chars).collect();
    by_byte.sort();
    by_byte.into_iter().map(|(_, c)| char::from_u32(c).unwrap().to_string()).collect()
}

/// llama.cpp's permutation of Q/K rows (`reshape(n_head, 2, half, rest).swapaxes(1, 2)`).
fn llama_cpp_permute<T: Clone>(rows: &[T], n_head: usize) -> Vec<T> {
    let half = rows.len() / n_head / 2;
    let mut out = Vec::new();
    for h in 0..n_head {
        for j in 0..half {
            for s in 0..2 {
                out.push(rows[(h * 2 + s) * half + j].clone());
            }
        }
    }
    out
}

/// Expected HF tensors of the tiny model: name → (shape, values).
type Expected = Vec<(String, Vec<usize>, Vec<f32>)>;

/// A tiny llama GGUF exercising every supported type, biases optional; returns it and the HF tensors it
/// must convert to.
fn tiny_llama(untied: bool) -> (Writer, Expected) {
    let mut rng = SplitMix(2024);
    let mut tokens = byte_tokens();
    tokens.extend(["Ġt", "he", "Ġthe", "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>"].map(String::from));
    let vocab = tokens.len();
    let mut types = vec![1i32; vocab];
    types[vocab - 4] = 3;
    types[vocab - 3] = 3;
    types[vocab - 2] = 3;
    types[vocab - 1] = 4;
    let mut w = Writer::new();
    w.str("general.architecture", "llama")
        .str("general.name", "tiny")
        .u32("llama.block_count", LAYERS as u32)
        .u32("llama.context_length", 512)
        .u32("llama.embedding_length", HIDDEN as u32)
        .u32("llama.feed_forward_length", FFN as u32)
        .u32("llama.attention.head_count", HEADS as u32)
        .u32("llama.attention.head_count_kv", KV_HEADS as u32)
        .f32("llama.rope.freq_base", 50000.0)
        .f32("llama.attention.layer_norm_rms_epsilon", 1e-5)
        .str("tokenizer.ggml.model", "gpt2")
        .str("tokenizer.ggml.pre", "smollm")
        .str_array("tokenizer.ggml.tokens", &tokens)
        .i32_array("tokenizer.ggml.token_type", &types)
        .str_array("tokenizer.ggml.merges", &["Ġ t".into(), "h e".into(), "Ġt he".into()])
        .u32("tokenizer.ggml.bos_token_id", (vocab - 3) as u32)
        .u32("tokenizer.ggml.eos_token_id", (vocab - 2) as u32)
        .bool("tokenizer.ggml.add_bos_token", false)
        .str("tokenizer.chat_template", "{% for m in messages %}<|im_start|>{{ m['content'] }}<|im_end|>{% endfor %}");
    let mut expected: Expected = Vec::new();
    // Rows in HF order → (file bytes in GGUF row order, HF values).
    let mut add =
        |w: &mut Writer, gguf: &str, hf: &str, rows: usize, cols: usize, ty: GgmlType, permute: Option<usize>| {
            let hf_rows: Vec<(Vec<u8>, Vec<f32>)> = (0..rows).map(|_| random_row(ty, cols, &mut rng)).collect();
            let file_rows = match permute {
                Some(h) => llama_cpp_permute(&hf_rows, h),
                None => hf_rows.clone(),
            };
            let ne: Vec<u64> = if rows == 1 { vec![cols as u64] } else { vec![cols as u64, rows as u64] };
            w.tensor(gguf, &ne, ty, file_rows.into_iter().flat_map(|(b, _)| b).collect());
            let shape = if rows == 1 { vec![cols] } else { vec![rows, cols] };
            expected.push((hf.into(), shape, hf_rows.into_iter().flat_map(|(_, v)| v).collect()));
        };
    add(&mut w, "token_embd.weight", "model.embed_tokens.weight", vocab, HIDDEN, GgmlType::Q8_0, None);
    for l in 0..LAYERS {
        let g = |s: &str| format!("blk.{l}.{s}");
        let h = |s: &str| format!("model.layers.{l}.{s}");
        add(&mut w, &g("attn_norm.weight"), &h("input_layernorm.weight"), 1, HIDDEN, GgmlType::F32, None);
        add(
            &mut w,
            &g("attn_q.weight"),
            &h("self_attn.q_proj.weight"),
            HEADS * HEAD_DIM,
            HIDDEN,
            GgmlType::Q4_1,
            Some(HEADS),
        );
        add(
            &mut w,
            &g("attn_k.weight"),
            &h("self_attn.k_proj.weight"),
            KV_HEADS * HEAD_DIM,
            HIDDEN,
            GgmlType::Q4_0,
            Some(KV_HEADS),
        );
        add(
            &mut w,
            &g("attn_v.weight"),
            &h("self_attn.v_proj.weight"),
            KV_HEADS * HEAD_DIM,
            HIDDEN,
            GgmlType::F16,
            None,
        );
        add(
            &mut w,
            &g("attn_output.weight"),
            &h("self_attn.o_proj.weight"),
            HIDDEN,
            HEADS * HEAD_DIM,
            GgmlType::BF16,
            None,
        );
        add(&mut w, &g("ffn_norm.weight"), &h("post_attention_layernorm.weight"), 1, HIDDEN, GgmlType::F32, None);
        add(&mut w, &g("ffn_gate.weight"), &h("mlp.gate_proj.weight"), FFN, HIDDEN, GgmlType::Q4_1, None);
        add(&mut w, &g("ffn_up.weight"), &h("mlp.up_proj.weight"), FFN, HIDDEN, GgmlType::Q8_0, None);
        add(&mut w, &g("ffn_down.weight"), &h("mlp.down_proj.weight"), HIDDEN, FFN, GgmlType::Q4_0, None);
    }
    add(&mut w, "output_norm.weight", "model.norm.weight", 1, HIDDEN, GgmlType::F32, None);
    if untied {
        add(&mut w, "output.weight", "lm_head.weight", vocab, HIDDEN, GgmlType::F16, None);
    }
    (w, expected)
}

fn write_gguf(dir: &Path, w: &Writer) -> std::path::PathBuf {
    let p = dir.join("model.gguf");
    std::fs::write(&p, w.build()).unwrap();
    p
}

#[test]
fn tiny_llama_converts_with_exact_unpermuted_weights() {
    for (untied, dtype) in [(false, StoredDtype::F32), (true, StoredDtype::F32), (false, StoredDtype::BF16)] {
        let tmp = tempfile::tempdir().unwrap();
        let (w, expected) = tiny_llama(untied);
        let gguf = write_gguf(tmp.path(), &w);
        let out = tmp.path().join("out");
        let summary = convert_gguf(&gguf, &out, dtype).unwrap();
        assert_eq!(summary.n_tensors, expected.len());
        let model = Model::open(&out).unwrap();
        let c = &model.config;
        assert_eq!(
            (c.hidden_size, c.num_layers, c.num_heads, c.num_kv_heads, c.head_dim),
            (HIDDEN, LAYERS, HEADS, KV_HEADS, HEAD_DIM)
        );
        assert_eq!((c.intermediate_size, c.vocab_size, c.max_position_embeddings), (FFN, 263, 512));
        assert_eq!(c.rope_theta, 50000.0);
        assert_eq!(c.rms_norm_eps, 1e-5f32 as f64);
        assert_eq!(c.tie_word_embeddings, !untied);
        for (name, shape, want) in &expected {
            let t = model.weights.get(name, shape).unwrap();
            assert_eq!(t.dtype, dtype);
            let got = t.to_f32();
            for (i, (g, e)) in got.iter().zip(want).enumerate() {
                let e = if dtype == StoredDtype::BF16 { bf16::from_f32(*e).to_f32() } else { *e };
                assert_eq!(g.to_bits(), e.to_bits(), "{name}[{i}]: {g} vs {e}");
            }
        }
        // No temporary files left behind.
        let names: Vec<String> =
            std::fs::read_dir(&out).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        assert!(names.iter().all(|n| !n.ends_with(".partial")), "{names:?}");
    }
}

#[test]
fn tiny_llama_tokenizer_files() {
    let tmp = tempfile::tempdir().unwrap();
    let (w, _) = tiny_llama(false);
    let out = tmp.path().join("out");
    convert_gguf(&write_gguf(tmp.path(), &w), &out, StoredDtype::F32).unwrap();
    let tok = tokenizers::Tokenizer::from_file(out.join("tokenizer.json")).unwrap();
    // 256 byte tokens, then Ġt=256, he=257, Ġthe=258, <|endoftext|>=259, <|im_start|>=260, <|im_end|>=261, <think>=262.
    let ids = tok.encode("<|im_start|>the the<think><|im_end|>", true).unwrap().get_ids().to_vec();
    let t_id = tok.token_to_id("t").unwrap();
    assert_eq!(ids, vec![260, t_id, 257, 258, 262, 261]);
    assert_eq!(tok.decode(&ids, false).unwrap(), "<|im_start|>the the<think><|im_end|>");
    let cfg: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("tokenizer_config.json")).unwrap()).unwrap();
    assert_eq!(cfg["bos_token"], "<|im_start|>");
    assert_eq!(cfg["eos_token"], "<|im_end|>");
    assert_eq!(cfg["add_bos_token"], false);
    assert!(cfg["chat_template"].as_str().unwrap().starts_with("{% for m in messages %}"));
    assert_eq!(cfg["added_tokens_decoder"]["262"]["special"], false);
    assert_eq!(cfg["added_tokens_decoder"]["260"]["special"], true);
}

#[test]
fn add_bos_token_sets_the_post_processor() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut w, _) = tiny_llama(false);
    w.bool("tokenizer.ggml.add_eos_token", true);
    // Flip the existing add_bos_token flag in place (a second key would be a duplicate): its bool byte follows
    // the key and the u32 value type.
    let key = b"tokenizer.ggml.add_bos_token";
    let at = w.kv.windows(key.len()).position(|x| x == key).unwrap();
    w.kv[at + key.len() + 4] = 1;
    let out = tmp.path().join("out");
    convert_gguf(&write_gguf(tmp.path(), &w), &out, StoredDtype::F32).unwrap();
    let tok = tokenizers::Tokenizer::from_file(out.join("tokenizer.json")).unwrap();
    let ids = tok.encode("the", true).unwrap().get_ids().to_vec();
    assert_eq!(ids.first(), Some(&260));
    assert_eq!(ids.last(), Some(&261));
}

fn convert_err(w: &Writer) -> String {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let e = convert_gguf(&write_gguf(tmp.path(), w), &out, StoredDtype::F32).unwrap_err().to_string();
    assert!(e.contains("model.gguf"), "error does not name the file: {e}");
    assert!(!out.join("config.json").exists(), "a failed conversion left a config.json");
    e
}

#[test]
fn conversion_errors_name_file_and_tensor() {
    let (mut w, _) = tiny_llama(false);
    let i = w.tensors.iter().position(|t| t.name == "blk.1.ffn_down.weight").unwrap();
    w.tensors[i].ty = 6; // Q5_0: 32 elements per 22-byte block, not one convert-gguf reads
    w.tensors[i].data = vec![0u8; 22 * (FFN / 32) * HIDDEN];
    let e = convert_err(&w);
    assert!(e.contains("blk.1.ffn_down.weight") && e.contains("Q5_0"), "{e}");

    let (mut w, _) = tiny_llama(false);
    w.tensors.retain(|t| t.name != "blk.1.attn_v.weight");
    let e = convert_err(&w);
    assert!(e.contains("model.layers.1.self_attn.v_proj.weight"), "{e}");

    let (mut w, _) = tiny_llama(false);
    let i = w.tensors.iter().position(|t| t.name == "blk.0.attn_norm.weight").unwrap();
    w.tensors[i].ne = vec![32];
    w.tensors[i].data.truncate(32 * 4);
    let e = convert_err(&w);
    assert!(e.contains("blk.0.attn_norm.weight") && e.contains("shape"), "{e}");

    let (mut w, _) = tiny_llama(false);
    w.tensor("blk.0.attn_rot_embd", &[4], GgmlType::F32, vec![0; 16]);
    let e = convert_err(&w);
    assert!(e.contains("blk.0.attn_rot_embd"), "{e}");

    let (mut w, _) = tiny_llama(false);
    w.tensor("blk.2.attn_norm.weight", &[HIDDEN as u64], GgmlType::F32, vec![0; HIDDEN * 4]);
    let e = convert_err(&w);
    assert!(e.contains("blk.2.attn_norm.weight"), "{e}");
}

#[test]
fn conversion_metadata_errors() {
    let mut w = Writer::new();
    w.str("general.architecture", "gemma");
    assert!(convert_err(&w).contains("gemma"));

    let (w0, _) = tiny_llama(false);
    // Replace one u32 value in place: find the key in the blob and overwrite the 4 bytes after its type.
    let patch = |key: &str, value: u32| {
        let mut w = Writer { kv: w0.kv.clone(), n_kv: w0.n_kv, ..Writer::new() };
        w.tensors = w0
            .tensors
            .iter()
            .map(|t| TensorSpec {
                name: t.name.clone(),
                ne: t.ne.clone(),
                ty: t.ty,
                data: t.data.clone(),
                offset: None,
            })
            .collect();
        let k = key.as_bytes();
        let at = w.kv.windows(k.len()).position(|x| x == k).unwrap() + k.len() + 4;
        w.kv[at..at + 4].copy_from_slice(&value.to_le_bytes());
        w
    };
    assert!(convert_err(&patch("tokenizer.ggml.bos_token_id", 100_000)).contains("tokenizer.ggml.bos_token_id"));
    assert!(convert_err(&patch("llama.attention.head_count_kv", 3)).contains("num_key_value_heads"));
    assert!(convert_err(&patch("llama.block_count", 100_000)).contains("num_hidden_layers"));
    assert!(convert_err(&patch("llama.embedding_length", 0)).contains("llama.embedding_length"));
    let e = convert_err(&patch("llama.block_count", 1));
    assert!(e.contains("blk.1."), "{e}");
}

// ---------------------------------------------------------------------------------------------------------
// The real SmolLM2 file against HF transformers and gguf-py.

fn golden() -> Value {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/gguf_smollm2.json");
    serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap()
}

/// Compare values with a fixture summary: exact samples, sums to summation-order rounding.
fn check_summary(what: &str, values: &[f32], shape: &[usize], s: &Value) {
    let want_shape: Vec<usize> = s["shape"].as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as usize).collect();
    assert_eq!(shape, &want_shape[..], "{what}: shape");
    for pair in s["samples"].as_array().unwrap() {
        let i = pair[0].as_u64().unwrap() as usize;
        let want = pair[1].as_f64().unwrap() as f32;
        assert_eq!(values[i].to_bits(), want.to_bits(), "{what}[{i}]: {} vs {want}", values[i]);
    }
    let sum: f64 = values.iter().map(|&x| x as f64).sum();
    let wsum: f64 = values.iter().enumerate().map(|(i, &x)| x as f64 * ((i % 1009) + 1) as f64 / 1009.0).sum();
    for (got, key) in [(sum, "sum"), (wsum, "weighted_sum")] {
        let want = s[key].as_f64().unwrap();
        let scale = values.iter().map(|&x| (x as f64).abs()).sum::<f64>().max(1.0);
        assert!((got - want).abs() <= 1e-9 * scale, "{what} {key}: {got} vs {want}");
    }
}

#[test]
fn smollm2_dequantisation_matches_gguf_py() {
    let g = golden();
    let f = GgufFile::open(&fixtures::smollm2_gguf()).unwrap();
    for (name, s) in g["dequant"].as_object().unwrap() {
        let t = f.tensor(name).unwrap();
        assert_eq!(t.ggml_type.name(), s["type"].as_str().unwrap());
        let v = dequantize(t, f.tensor_bytes(t), &f.origin).unwrap();
        check_summary(name, &v, &t.shape(), s);
    }
}

#[test]
fn smollm2_converted_weights_match_transformers() {
    let g = golden();
    let model = Model::open(&fixtures::smollm2_dir()).unwrap();
    let c = &model.config;
    assert_eq!((c.num_layers, c.hidden_size, c.num_heads, c.num_kv_heads, c.head_dim), (30, 576, 9, 3, 64));
    assert_eq!((c.vocab_size, c.intermediate_size, c.max_position_embeddings), (49152, 1536, 8192));
    assert!(c.tie_word_embeddings);
    assert_eq!(c.rope_theta, 100000.0);
    for (name, s) in g["hf_weights"].as_object().unwrap() {
        let shape: Vec<usize> = s["shape"].as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as usize).collect();
        let t = model.weights.get(name, &shape).unwrap();
        assert_eq!(t.dtype, StoredDtype::F32);
        check_summary(name, &t.to_f32(), &shape, s);
    }
}

#[test]
fn smollm2_converted_tokenizer_matches_transformers() {
    let g = golden();
    let dir = fixtures::smollm2_dir();
    let tok = tokenizers::Tokenizer::from_file(dir.join("tokenizer.json")).unwrap();
    let cases = g["tokens"].as_array().unwrap();
    assert!(cases.len() >= 10);
    for case in cases {
        let text = case["text"].as_str().unwrap();
        let want: Vec<u32> = case["ids"].as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect();
        let got = tok.encode(text, true).unwrap().get_ids().to_vec();
        assert_eq!(got, want, "token ids differ for {text:?}");
    }
    let cfg: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("tokenizer_config.json")).unwrap()).unwrap();
    assert_eq!(cfg["bos_token"], "<|im_start|>");
    assert_eq!(cfg["eos_token"], "<|im_end|>");
    assert_eq!(cfg["pad_token"], "<|im_end|>");
    assert_eq!(cfg["unk_token"], "<|endoftext|>");
    assert!(cfg["chat_template"].as_str().unwrap().contains("<|im_start|>"));
}
