//! Candidate pools in: the LARK authors' JSONL and the RSR authors' directory layout, validated record by
//! record with errors that name the file, line and field (or collected as rejects under `--skip-invalid`).

mod jsonl;
pub mod parquet;
pub mod pool;
pub mod record;
mod rsr_dir;
pub mod validate;

pub use pool::{read_pool, read_pool_texts, visit_pool, Pool, PoolFormat, PoolSource, ReadOptions, VisitSummary};
pub use record::{Invalid, Message, Origin, Record, Reject};
