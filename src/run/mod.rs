//! Running a scoring job: tokenising ahead of the devices ([`prepare`]), scheduling batches onto one worker
//! per backend ([`workers`]) and collecting their statistics ([`job`]);
//! resuming a killed job ([`resume`]) and splitting one over a cluster ([`shard`]).

pub mod interrupt;
pub mod job;
mod prepare;
pub mod resume;
pub mod schedule;
pub mod shard;
mod workers;

pub use interrupt::Interrupt;
pub use job::{
    parse_brier, score_pool, score_pool_on, score_pool_with, JobControl, JobOutput, Progress, ScoreSettings,
    CHUNK_WORK_SECONDS,
};
pub use resume::{Indexed, Journal};
pub use shard::Shard;
