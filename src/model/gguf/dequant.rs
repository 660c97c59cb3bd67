//! ggml block formats → f32, computed exactly as ggml and gguf-py do (one f32 multiply, then one add), so
//! the results are bit-identical to `gguf.quants.dequantize`.

use super::reader::{GgmlType, TensorInfo};
use crate::error::{LarkError, Result};
use half::{bf16, f16};

/// Whether [`dequantize`] handles this type.
pub fn is_supported(t: GgmlType) -> bool {
    matches!(t, GgmlType::F32 | GgmlType::F16 | GgmlType::BF16 | GgmlType::Q8_0 | GgmlType::Q4_0 | GgmlType::Q4_1)
}

/// Dequantise one tensor's bytes (as laid out in the file, `ne[0]` fastest) into f32 in the same order.
/// `origin` names the file in errors.
pub fn dequantize(t: &TensorInfo, bytes: &[u8], origin: &str) -> Result<Vec<f32>> {
    if !is_supported(t.ggml_type) {
        return Err(LarkError::Unsupported(format!(
            "{origin}: tensor {} has ggml type {} (convert-gguf reads F32, F16, BF16, Q8_0, Q4_0, Q4_1)",
            t.name,
            t.ggml_type.name()
        )));
    }
    if bytes.len() != t.n_bytes {
        return Err(LarkError::input(
            format!("{origin}: tensor {}", t.name),
            format!("{} data bytes, expected {}", bytes.len(), t.n_bytes),
        ));
    }
    let mut out = Vec::with_capacity(t.numel);
    match t.ggml_type {
        GgmlType::F32 => out.extend(bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))),
        GgmlType::F16 => out.extend(bytes.chunks_exact(2).map(|c| f16::from_le_bytes([c[0], c[1]]).to_f32())),
        GgmlType::BF16 => out.extend(bytes.chunks_exact(2).map(|c| bf16::from_le_bytes([c[0], c[1]]).to_f32())),
        GgmlType::Q8_0 => {
            // block: f16 scale d, then 32 signed bytes; x = q * d.
            for b in bytes.chunks_exact(34) {
                let d = f16::from_le_bytes([b[0], b[1]]).to_f32();
                out.extend(b[2..].iter().map(|&q| (q as i8) as f32 * d));
            }
        }
        GgmlType::Q4_0 => {
            // block: f16 d, then 16 bytes; low nibbles are elements 0..16, high nibbles 16..32; x = (q - 8) * d.
            for b in bytes.chunks_exact(18) {
                let d = f16::from_le_bytes([b[0], b[1]]).to_f32();
                let qs = &b[2..];
                out.extend(qs.iter().map(|&q| d * ((q & 0x0F) as i32 - 8) as f32));
                out.extend(qs.iter().map(|&q| d * ((q >> 4) as i32 - 8) as f32));
            }
        }
        GgmlType::Q4_1 => {
            // block: f16 d, f16 m, then 16 bytes of nibbles in Q4_0's order; x = q * d + m.
            for b in bytes.chunks_exact(20) {
                let d = f16::from_le_bytes([b[0], b[1]]).to_f32();
                let m = f16::from_le_bytes([b[2], b[3]]).to_f32();
                let qs = &b[4..];
                out.extend(qs.iter().map(|&q| d * (q & 0x0F) as f32 + m));
                out.extend(qs.iter().map(|&q| d * (q >> 4) as f32 + m));
            }
        }
        _ => unreachable!("is_supported checked above"),
    }
    debug_assert_eq!(out.len(), t.numel);
    Ok(out)
}
