//! Scores from per-trajectory statistics and text: pure functions, no model and no I/O.
//!
//! - [`lark`]: ĝ (paper Eq. 7) in the exact and the authors' compat form.
//! - [`trajectory`]: per-trajectory scores (ℓ, Brier, ρ̂, GRAPE, 1/ℓ, RSR, diagnostics).
//! - [`text`]: word length and the LIMO-style rule quality; [`random`]: the seeded Random baseline;
//!   [`judge`]: imported LLM-judge scores; [`local`]: Local Naturalness' steps and windows.
//! - [`row`]: one `scores.jsonl` line and the per-problem assembly; [`scorer`]: names and directions.

pub mod judge;
pub mod lark;
pub mod local;
pub mod random;
pub mod row;
pub mod scorer;
pub mod text;
pub mod trajectory;

pub use judge::JudgeScores;
pub use row::{group_rows, score_all, score_problem, Candidate, Outcome, ScoreOptions, ScoreRow};
pub use scorer::{parse_scorers, Direction, Scorer};
pub use text::TextFeatures;
pub use trajectory::{BrierMode, TrajectoryScores};
