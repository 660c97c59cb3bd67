//! `lark select`: scores in, per-problem selection with training weights out (`selection.jsonl`, `train.jsonl`).

use crate::error::{LarkError, Result};
use crate::export::jsonl::read_jsonl;
use crate::export::read_scores_jsonl;
pub use crate::export::write_selection;
use crate::grad::gstar::{rows_by_problem, GstarRow};
use crate::io::{PoolFormat, PoolSource};
use crate::score::Direction;
use crate::score::ScoreRow;
use crate::select::{select, Selection, Weighting};
use std::path::{Path, PathBuf};

#[derive(clap::Args, Clone)]
pub struct SelectOpts {
    /// The scorer to rank by (a scores.jsonl field: g_hat, rsr, grape, ...; or g_star, with the gstar.jsonl of
    /// `lark gstar` as --scores).
    #[arg(long, default_value = "g_hat")]
    pub by: String,
    /// Trajectories selected per problem.
    #[arg(long, default_value_t = 3)]
    pub budget: usize,
    /// chi2 (LARK), uniform, proportional or softmax.
    #[arg(long, default_value = "chi2")]
    pub weighting: String,
    /// Softmax temperature.
    #[arg(long)]
    pub temperature: Option<f64>,
    /// Leave weight-0 selections (ties at the threshold) out of train.jsonl.
    #[arg(long)]
    pub drop_zero_weight: bool,
}

#[derive(clap::Args)]
pub struct Args {
    /// scores.jsonl written by `lark score` (gstar.jsonl of `lark gstar` with --by g_star).
    #[arg(long)]
    pub scores: PathBuf,
    /// The pool that was scored (for the messages of train.jsonl): its path, or its several paths as given to
    /// `lark score`.
    #[arg(long, num_args = 1.., required = true)]
    pub pool: Vec<PathBuf>,
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long, default_value = "auto")]
    pub format: PoolFormat,
    #[command(flatten)]
    pub opts: SelectOpts,
}

/// Rank every problem's candidates by `opts.by` and weight the top B.
pub fn select_rows(rows: &[ScoreRow], opts: &SelectOpts) -> Result<Vec<Selection>> {
    crate::select::select_rows(rows, &opts.by, opts.budget, Weighting::parse(&opts.weighting, opts.temperature)?)
}

/// The scorer name that ranks by the exact g* of `lark gstar` (a `gstar.jsonl` field, higher is better).
pub const G_STAR: &str = "g_star";

/// `--by g_star`: rank every problem's candidates by the exact g* (rows of `gstar.jsonl`, in file order; a
/// skipped candidate's null g* ranks last and is never selected, as a skipped trajectory's ĝ).
pub fn select_gstar_rows(rows: &[GstarRow], opts: &SelectOpts) -> Result<Vec<Selection>> {
    let weighting = Weighting::parse(&opts.weighting, opts.temperature)?;
    rows_by_problem(rows)
        .into_iter()
        .map(|(pid, rs)| {
            let cands: Vec<(i64, f64)> = rs.iter().map(|r| (r.candidate_id, r.g_star)).collect();
            select(pid, &cands, G_STAR, Direction::Max, opts.budget, weighting)
        })
        .collect()
}

/// Read `gstar.jsonl`, saying what is expected when `path` is something else (a scores.jsonl, say).
pub fn read_gstar_rows(path: &Path) -> Result<Vec<GstarRow>> {
    read_jsonl(path).map_err(|e| {
        LarkError::input(
            path.display().to_string(),
            format!("--by g_star reads the gstar.jsonl that `lark gstar` writes as --scores: {e}"),
        )
    })
}

pub fn run(a: Args) -> Result<()> {
    let selections = if a.opts.by == G_STAR {
        select_gstar_rows(&read_gstar_rows(&a.scores)?, &a.opts)?
    } else {
        select_rows(&read_scores_jsonl(&a.scores)?, &a.opts)?
    };
    let n = write_selection(&selections, &PoolSource::new(a.pool.clone())?, a.format, &a.out, a.opts.drop_zero_weight)?;
    eprintln!(
        "lark: {} problems selected by {} ({}, B = {}); {} training lines in {}",
        selections.len(),
        a.opts.by,
        a.opts.weighting,
        a.opts.budget,
        n,
        a.out.join("train.jsonl").display()
    );
    Ok(())
}
