//! Running a scoring job: scheduling trajectories onto a backend and collecting their statistics;
//! resuming a killed job ([`resume`]) and splitting one over a cluster ([`shard`]).

pub mod job;
pub mod resume;
pub mod schedule;
pub mod shard;

pub use job::{parse_brier, score_pool, score_pool_with, JobControl, JobOutput, Progress, ScoreSettings};
pub use resume::{Indexed, Journal};
pub use shard::Shard;
