//! lark: learnability-grounded selection of reasoning trajectories.
//!
//! Data flows one way (see README "Architecture"):
//! pool (`io`) → token ids and scored span (`text`) → per-token statistics from a student forward pass
//! (`backend` over `model`) → per-trajectory sums (`stats`) → scores (`score`) → weights (`select`) → files
//! (`export`); `run` schedules the whole job.

pub mod backend;
pub mod cli;
pub mod crashpoint;
pub mod error;
pub mod export;
pub mod ffi;
pub mod grad;
pub mod io;
pub mod model;
pub mod report;
pub mod run;
pub mod score;
pub mod select;
pub mod stats;
pub mod student;
pub mod text;

pub use error::{LarkError, Result};
