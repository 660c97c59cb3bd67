//! Running a scoring job: tokenising ahead of the devices ([`prepare`]), scheduling batches onto one worker
//! per backend ([`workers`]) and collecting their statistics ([`job`]);
//! resuming a killed job ([`resume`]) and splitting one over a cluster ([`shard`]); the whole job of
//! `lark score`, files and fingerprints included, is a [`score_job::ScoreJob`].

pub mod fingerprint;
pub mod hooks;
pub mod interrupt;
pub mod job;
mod prepare;
pub mod resume;
pub mod schedule;
pub mod score_job;
pub mod shard;
mod workers;

pub use hooks::{JobHooks, QuietHooks, StderrHooks};
pub use interrupt::Interrupt;
pub use job::{
    parse_brier, score_pool, score_pool_on, score_pool_with, JobControl, JobOutput, Progress, ScoreSettings,
    CHUNK_WORK_SECONDS,
};
pub use resume::{Indexed, Journal};
pub use score_job::{FinishedRun, ScoreJob, ScoreRun};
pub use shard::Shard;
