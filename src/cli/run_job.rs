//! `lark run`: the main job — score the pool, select with χ²-B, write everything, print a summary.

use super::score::ScoreArgs;
use super::select::{select_rows, write_selection, SelectOpts};
use crate::error::Result;
use crate::report::{write_report, ReportInput};
use crate::run::{Interrupt, StderrHooks};
use crate::score::ScoreRow;
use crate::select::Selection;
use std::collections::BTreeMap;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub score: ScoreArgs,
    #[command(flatten)]
    pub select: SelectOpts,
    /// Do not write OUT/report.html.
    #[arg(long)]
    pub no_report: bool,
}

pub fn run(a: Args) -> Result<()> {
    let r = a.score.score(&mut StderrHooks::default(), Some(Interrupt::on_signals()?))?;
    let selections = select_rows(&r.output.rows, &a.select)?;
    let n_train =
        write_selection(&selections, &r.pool.source, a.score.format, &a.score.out, a.select.drop_zero_weight)?;
    if !a.no_report {
        let input = ReportInput { rows: &r.output.rows, selections: &selections, run: Some(r.info()), gstar: None };
        write_report(&a.score.out.join("report.html"), &input)?;
    }
    // run.json after every other file: a run killed before this point is resumed, not taken as complete.
    let r = r.finish()?;
    print_summary(&r.output.rows, &selections, &a.select);
    println!(
        "\n{} trajectories, {} tokens through the model in {:.1} s ({:.0} tokens/s) on {}",
        r.output.rows.len(),
        r.output.tokens_forward,
        r.output.seconds,
        r.output.tokens_forward as f64 / r.output.seconds.max(1e-9),
        r.device
    );
    println!(
        "wrote {}: scores.jsonl, scores.json, selection.jsonl, train.jsonl ({n_train} lines), {}run.json",
        a.score.out.display(),
        if a.no_report { "" } else { "report.html, " }
    );
    Ok(())
}

fn fmt_score(x: f64) -> String {
    if x.is_finite() {
        format!("{x:.5}")
    } else {
        "—".into()
    }
}

/// The selection per problem, then per-teacher mean score and selected counts.
pub fn print_summary(rows: &[ScoreRow], selections: &[Selection], opts: &SelectOpts) {
    let teacher: BTreeMap<(i64, i64), &str> =
        rows.iter().map(|r| ((r.problem_id, r.candidate_id), r.teacher.as_str())).collect();
    println!("selection by {} ({}, B = {})", opts.by, opts.weighting, opts.budget);
    for s in selections {
        let picks: Vec<String> = s
            .selected
            .iter()
            .map(|c| {
                let t = teacher.get(&(s.problem_id, c.candidate_id)).copied().unwrap_or("?");
                format!("#{} {t} ({} w={:.3})", c.candidate_id, fmt_score(c.score), c.weight)
            })
            .collect();
        println!("  problem {:>4}: {}", s.problem_id, picks.join(", "));
    }
    // Per-teacher mean of the ranking score and how often each teacher was selected.
    let scorer = crate::score::parse_scorers(&opts.by).ok().and_then(|v| v.into_iter().next());
    let mut per: BTreeMap<&str, (f64, usize, usize, usize)> = BTreeMap::new();
    for r in rows {
        let e = per.entry(r.teacher.as_str()).or_insert((0.0, 0, 0, 0));
        e.3 += 1;
        if let Some(v) = scorer.map(|s| s.value(r)).filter(|v| v.is_finite()) {
            e.0 += v;
            e.1 += 1;
        }
    }
    for s in selections {
        for c in &s.selected {
            if let Some(t) = teacher.get(&(s.problem_id, c.candidate_id)) {
                if let Some(e) = per.get_mut(t) {
                    e.2 += 1;
                }
            }
        }
    }
    println!("\n{:<22} {:>12} {:>9} {:>12}", "teacher", format!("mean {}", opts.by), "selected", "trajectories");
    for (t, (sum, n, sel, total)) in per {
        let mean = if n > 0 { sum / n as f64 } else { f64::NAN };
        println!("{t:<22} {:>12} {sel:>9} {total:>12}", fmt_score(mean));
    }
}
