//! GGUF import: read a llama.cpp model file (header, metadata, tensor table), dequantise its tensors and
//! rebuild the Hugging Face model directory it came from (`lark convert-gguf`).
//!
//! Split by job: `reader` parses and validates the container, `dequant` turns ggml blocks into f32, `layout`
//! maps tensor names and undoes llama.cpp's Q/K row permutation, `tokenizer` rebuilds `tokenizer.json` the
//! way HF transformers does when it loads a GGUF, and `convert` writes the directory.

mod convert;
mod dequant;
mod layout;
mod reader;
mod tokenizer;

pub use convert::{convert_gguf, model_config, ConvertSummary, CONVERT_FORMAT_VERSION};
pub use dequant::dequantize;
pub use layout::{hf_tensor_name, unpermute_rows};
pub use reader::{GgmlType, GgufArray, GgufFile, GgufValue, TensorInfo};
pub use tokenizer::{tokenizer_files, TokenizerFiles};
