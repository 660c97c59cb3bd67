//! Running a scoring job: scheduling trajectories onto a backend and collecting their statistics.

pub mod job;
pub mod schedule;

pub use job::{parse_brier, score_pool, JobOutput, Progress, ScoreSettings};
