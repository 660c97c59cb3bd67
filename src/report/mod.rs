//! `report.html`: one self-contained page (inline SVG and CSS, no script, no network) that shows what a run
//! scored and selected: (a) per problem, each candidate's score grouped by teacher, the selected ones
//! marked with their weights (the paper's Figure 9); (b) per-teacher mean score with its spread
//! (Figure 3c); (c) selected vs all candidates: mean gold-token probability and wrong-token concentration
//! (Figure 4); (d) the distribution of the training weights; and (e), when the directory holds `lark gstar`'s
//! `gstar.jsonl`, ĝ against the exact g* (Figure 6, [`gstar`]).

pub mod gstar;
pub mod svg;

use crate::error::{LarkError, Result};
use crate::export::jsonl::read_jsonl;
use crate::export::{read_scores_jsonl, read_selection_jsonl, write_atomic};
use crate::grad::gstar::GstarRow;
use crate::score::{group_rows, ScoreRow, Scorer};
use crate::select::Selection;
use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::Path;
use svg::{esc, fmt, y_axis, Scale};

/// At most this many problems get a panel in (a) (the first ones in pool order); the rest are counted.
pub const MAX_PROBLEM_PANELS: usize = 60;

const PALETTE: [&str; 10] =
    ["#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#edc948", "#b07aa1", "#ff9da7", "#9c755f", "#bab0ac"];

/// What the report is drawn from.
pub struct ReportInput<'a> {
    pub rows: &'a [ScoreRow],
    /// Empty when the run only scored.
    pub selections: &'a [Selection],
    /// `run.json`, when there is one.
    pub run: Option<&'a serde_json::Value>,
    /// `gstar.jsonl` of `lark gstar`, when there is one (section (e)).
    pub gstar: Option<&'a [GstarRow]>,
}

/// Read a run directory (scores.jsonl; selection.jsonl, run.json and gstar.jsonl when present) and write the
/// report. A directory of `lark gstar` alone (gstar.jsonl, no scores.jsonl) gets a page with section (e) only.
pub fn write_report_for_dir(run_dir: &Path, out: &Path) -> Result<()> {
    let gstar_path = run_dir.join(GSTAR_FILE);
    let gstar_rows: Option<Vec<GstarRow>> = if gstar_path.exists() { Some(read_jsonl(&gstar_path)?) } else { None };
    let scores_path = run_dir.join("scores.jsonl");
    if let (false, Some(g)) = (scores_path.exists(), &gstar_rows) {
        return write_gstar_report(out, g);
    }
    let rows = read_scores_jsonl(&scores_path)?;
    let sel_path = run_dir.join("selection.jsonl");
    let selections = if sel_path.exists() { read_selection_jsonl(&sel_path)? } else { Vec::new() };
    let run_path = run_dir.join("run.json");
    let run = match std::fs::read_to_string(&run_path) {
        Ok(t) => Some(
            serde_json::from_str::<serde_json::Value>(&t)
                .map_err(|e| LarkError::input(run_path.display().to_string(), e.to_string()))?,
        ),
        Err(_) => None,
    };
    let input = ReportInput { rows: &rows, selections: &selections, run: run.as_ref(), gstar: gstar_rows.as_deref() };
    write_report(out, &input)
}

/// The file `lark gstar` writes its per-candidate rows to.
pub const GSTAR_FILE: &str = "gstar.jsonl";

/// A page with the g* section alone (what `lark gstar` writes beside gstar.jsonl).
pub fn write_gstar_report(path: &Path, rows: &[GstarRow]) -> Result<()> {
    let mut h = head();
    gstar::section(&mut h, rows);
    h.push_str("</body></html>\n");
    write_atomic(path, |w| w.write_all(h.as_bytes()).map_err(|e| w.err(e)))
}

/// Write the report to `path` (atomically).
pub fn write_report(path: &Path, input: &ReportInput<'_>) -> Result<()> {
    let html = render(input);
    write_atomic(path, |w| w.write_all(html.as_bytes()).map_err(|e| w.err(e)))
}

fn mean_sd(xs: &[f64]) -> (f64, f64, usize) {
    let v: Vec<f64> = xs.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return (f64::NAN, f64::NAN, 0);
    }
    let m = v.iter().sum::<f64>() / v.len() as f64;
    let var = v.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / v.len() as f64;
    (m, var.sqrt(), v.len())
}

/// The page's head and title, the same for the run page and the g*-only page.
fn head() -> String {
    let mut h = String::new();
    h.push_str(concat!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">",
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">",
        "<title>lark report</title><style>",
        "body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#222;background:#fff}",
        "h1{font-size:22px}h2{font-size:18px;margin-top:28px;border-bottom:1px solid #ddd}",
        ".grid{display:flex;flex-wrap:wrap;gap:10px}.panel{border:1px solid #eee;padding:4px}",
        ".tick{font-size:9px;fill:#555}.lbl{font-size:10px;fill:#333}.ttl{font-size:11px;font-weight:600}",
        "table{border-collapse:collapse}td,th{padding:2px 8px;border-bottom:1px solid #eee;text-align:right}",
        "td:first-child,th:first-child{text-align:left}.legend span{margin-right:14px}",
        "</style></head><body>\n<h1>lark report</h1>\n"
    ));
    h
}

/// The whole page.
pub fn render(input: &ReportInput<'_>) -> String {
    let by = input.selections.first().map(|s| s.by.clone()).unwrap_or_else(|| "g_hat".into());
    let scorer: Scorer = by.parse().unwrap_or(Scorer::GHat);
    let teachers: Vec<String> = {
        let mut t: Vec<String> = input.rows.iter().map(|r| r.teacher.clone()).collect();
        t.sort();
        t.dedup();
        t
    };
    let color: HashMap<&str, &str> =
        teachers.iter().enumerate().map(|(i, t)| (t.as_str(), PALETTE[i % PALETTE.len()])).collect();
    let weights: HashMap<(i64, i64), f64> = input
        .selections
        .iter()
        .flat_map(|s| s.selected.iter().map(move |c| ((s.problem_id, c.candidate_id), c.weight)))
        .collect();

    let mut h = head();
    summary(&mut h, input, &by);
    let _ = write!(h, "<p class=\"legend\">");
    for t in &teachers {
        let _ = write!(
            h,
            "<span><svg width=\"10\" height=\"10\"><circle cx=\"5\" cy=\"5\" r=\"4\" fill=\"{}\"/></svg> {}</span>",
            color[t.as_str()],
            esc(t)
        );
    }
    h.push_str("</p>\n");
    problems(&mut h, input, scorer, &teachers, &color, &weights);
    per_teacher(&mut h, input, scorer, &teachers, &color);
    selected_vs_all(&mut h, input, &weights);
    weight_hist(&mut h, input);
    if let Some(g) = input.gstar {
        gstar::section(&mut h, g);
    }
    h.push_str("</body></html>\n");
    h
}

fn summary(h: &mut String, input: &ReportInput<'_>, by: &str) {
    let n_problems = group_rows(input.rows.to_vec()).len();
    let skipped = input.rows.iter().filter(|r| r.skipped.is_some()).count();
    let _ = write!(
        h,
        "<p>{} problems, {} candidates ({} skipped). Ranked by <b>{}</b>",
        n_problems,
        input.rows.len(),
        skipped,
        esc(by)
    );
    // Multi-turn pools: how many trajectories were scored over several assistant turns.
    let multi: Vec<u64> =
        input.rows.iter().filter(|r| r.skipped.is_none() && r.n_turns > 1).map(|r| r.n_turns).collect();
    if !multi.is_empty() {
        let _ = write!(
            h,
            "; {} candidates scored over several assistant turns (up to {} turns)",
            multi.len(),
            multi.iter().max().copied().unwrap_or(1)
        );
    }
    if let Some(s) = input.selections.first() {
        let _ = write!(h, "; selection: {} with B = {}", esc(&s.method), s.budget);
    } else {
        h.push_str("; no selection in this run (scores only)");
    }
    h.push_str(".</p>\n");
    if let Some(run) = input.run {
        // A string, or (a pool of several paths) an array of strings, shown joined.
        let g = |k: &str| {
            run.get(k).map(|v| match v {
                serde_json::Value::String(s) => s.clone(),
                serde_json::Value::Array(a) => a
                    .iter()
                    .map(|x| x.as_str().map(str::to_string).unwrap_or_else(|| x.to_string()))
                    .collect::<Vec<_>>()
                    .join(", "),
                v => v.to_string(),
            })
        };
        let _ = write!(
            h,
            "<p>model <code>{}</code>, pool <code>{}</code>, device {}, {} tokens/s.</p>",
            esc(&g("model").unwrap_or_default()),
            esc(&g("pool").unwrap_or_default()),
            esc(&g("device").unwrap_or_default()),
            run.get("tokens_per_s").and_then(|v| v.as_f64()).map(|x| format!("{x:.0}")).unwrap_or_default()
        );
        h.push('\n');
    }
}

/// (a) One panel per problem: candidates' scores in columns by teacher; selected ones ringed, with weight.
fn problems(
    h: &mut String,
    input: &ReportInput<'_>,
    scorer: Scorer,
    teachers: &[String],
    color: &HashMap<&str, &str>,
    weights: &HashMap<(i64, i64), f64>,
) {
    let groups = group_rows(input.rows.to_vec());
    let _ = write!(h, "<h2 id=\"problems\">(a) Candidates per problem, by teacher</h2>\n<p>Each dot is a candidate's {}; ringed dots are selected, labelled with their training weight.", esc(scorer.name()));
    if groups.len() > MAX_PROBLEM_PANELS {
        let _ = write!(h, " The first {MAX_PROBLEM_PANELS} of {} problems are shown.", groups.len());
    }
    h.push_str("</p>\n<div class=\"grid\">\n");
    let (w, ht) = (60.0 + 46.0 * teachers.len().max(1) as f64, 170.0);
    for (pid, rows) in groups.iter().take(MAX_PROBLEM_PANELS) {
        let ys = Scale::fit(rows.iter().map(|r| scorer.value(r)), ht - 40.0, 22.0);
        let _ = write!(
            h,
            "<div class=\"panel\"><svg width=\"{w}\" height=\"{ht}\" role=\"img\" aria-label=\"problem {pid}\">"
        );
        let _ = write!(h, "<text x=\"4\" y=\"13\" class=\"ttl\">problem {pid}</text>");
        y_axis(h, &ys, 52.0);
        for (ti, t) in teachers.iter().enumerate() {
            let cx = 70.0 + 46.0 * ti as f64;
            let mine: Vec<&ScoreRow> = rows.iter().filter(|r| &r.teacher == t).collect();
            for (k, r) in mine.iter().enumerate() {
                let v = scorer.value(r);
                if !v.is_finite() {
                    continue;
                }
                let x = cx + (k as f64 - (mine.len() as f64 - 1.0) / 2.0) * 5.0;
                let y = ys.at(v);
                let _ = write!(
                    h,
                    "<circle cx=\"{x:.1}\" cy=\"{y:.1}\" r=\"3.5\" fill=\"{}\"><title>#{} {}: {}{}</title></circle>",
                    color[t.as_str()],
                    r.candidate_id,
                    esc(t),
                    fmt(v),
                    if r.n_turns > 1 { format!(" ({} turns)", r.n_turns) } else { String::new() }
                );
                if let Some(wt) = weights.get(&(r.problem_id, r.candidate_id)) {
                    let _ = write!(
                        h,
                        "<circle cx=\"{x:.1}\" cy=\"{y:.1}\" r=\"6.5\" fill=\"none\" stroke=\"#000\" stroke-width=\"1.5\" class=\"sel\"/><text x=\"{:.1}\" y=\"{:.1}\" class=\"lbl\">{:.2}</text>",
                        x + 7.0,
                        y + 3.0,
                        wt
                    );
                }
            }
            let short: String = t.chars().take(8).collect();
            let _ = write!(
                h,
                "<text x=\"{cx:.1}\" y=\"{:.1}\" class=\"tick\" text-anchor=\"middle\">{}</text>",
                ht - 22.0,
                esc(&short)
            );
        }
        h.push_str("</svg></div>\n");
    }
    h.push_str("</div>\n");
}

/// (b) Per-teacher mean score, ± one standard deviation over its candidates.
fn per_teacher(
    h: &mut String,
    input: &ReportInput<'_>,
    scorer: Scorer,
    teachers: &[String],
    color: &HashMap<&str, &str>,
) {
    let _ = write!(h, "<h2 id=\"teachers\">(b) Mean {} per teacher, ± one standard deviation</h2>", esc(scorer.name()));
    h.push('\n');
    let stats: Vec<(&String, (f64, f64, usize))> = teachers
        .iter()
        .map(|t| {
            let v: Vec<f64> = input.rows.iter().filter(|r| &r.teacher == t).map(|r| scorer.value(r)).collect();
            (t, mean_sd(&v))
        })
        .collect();
    let (w, row_h) = (640.0, 26.0);
    let ht = 30.0 + row_h * stats.len() as f64;
    let xs = Scale::fit(stats.iter().flat_map(|(_, (m, s, _))| [m - s, m + s]), 200.0, w - 80.0);
    let _ = write!(h, "<svg width=\"{w}\" height=\"{ht}\" role=\"img\" aria-label=\"per-teacher mean\">");
    for (i, (t, (m, sd, n))) in stats.iter().enumerate() {
        let y = 20.0 + row_h * i as f64;
        let _ = write!(h, "<text x=\"4\" y=\"{:.1}\" class=\"lbl\">{} (n={n})</text>", y + 4.0, esc(t));
        if m.is_finite() {
            let (a, b) = (xs.at(m - sd), xs.at(m + sd));
            let _ = write!(
                h,
                "<line x1=\"{a:.1}\" y1=\"{y:.1}\" x2=\"{b:.1}\" y2=\"{y:.1}\" stroke=\"#555\" stroke-width=\"2\"/><circle cx=\"{:.1}\" cy=\"{y:.1}\" r=\"5\" fill=\"{}\"><title>mean {} sd {}</title></circle><text x=\"{:.1}\" y=\"{:.1}\" class=\"tick\">{}</text>",
                xs.at(*m),
                color[t.as_str()],
                fmt(*m),
                fmt(*sd),
                b + 6.0,
                y + 3.0,
                fmt(*m)
            );
        }
    }
    let _ = write!(
        h,
        "<text x=\"200\" y=\"{:.1}\" class=\"tick\">{}</text><text x=\"{:.1}\" y=\"{:.1}\" class=\"tick\" text-anchor=\"end\">{}</text></svg>",
        ht - 2.0,
        fmt(xs.lo),
        w - 80.0,
        ht - 2.0,
        fmt(xs.hi)
    );
    h.push('\n');
}

/// (c) Selected vs all candidates: mean gold-token probability and wrong-token concentration.
fn selected_vs_all(h: &mut String, input: &ReportInput<'_>, weights: &HashMap<(i64, i64), f64>) {
    h.push_str("<h2 id=\"selected\">(c) Selected vs all candidates</h2>\n");
    if weights.is_empty() {
        h.push_str("<p>No selection in this run.</p>\n");
        return;
    }
    let is_sel = |r: &&ScoreRow| weights.contains_key(&(r.problem_id, r.candidate_id));
    let metric = |f: fn(&ScoreRow) -> f64, sel: bool| {
        let v: Vec<f64> = input.rows.iter().filter(|r| !sel || is_sel(r)).map(f).collect();
        mean_sd(&v).0
    };
    type Metric = (&'static str, fn(&ScoreRow) -> f64);
    let metrics: [Metric; 2] =
        [("mean gold-token probability", |r| r.mean_p_gold), ("wrong-token concentration", |r| r.wrong_conc)];
    h.push_str("<div class=\"grid\">");
    for (name, f) in metrics {
        let (all, sel) = (metric(f, false), metric(f, true));
        let top = all.max(sel);
        let ys = Scale::new(0.0, if top.is_finite() && top > 0.0 { top * 1.15 } else { 1.0 }, 170.0, 30.0);
        let _ = write!(h, "<div class=\"panel\"><svg width=\"260\" height=\"200\" role=\"img\" aria-label=\"{name}\"><text x=\"4\" y=\"14\" class=\"ttl\">{name}</text>");
        y_axis(h, &ys, 50.0);
        for (k, (label, v, c)) in [("all", all, "#bab0ac"), ("selected", sel, "#4e79a7")].into_iter().enumerate() {
            let x = 80.0 + 90.0 * k as f64;
            if v.is_finite() {
                let y = ys.at(v);
                let _ = write!(
                    h,
                    "<rect x=\"{x}\" y=\"{y:.1}\" width=\"50\" height=\"{:.1}\" fill=\"{c}\"><title>{label}: {}</title></rect><text x=\"{:.1}\" y=\"{:.1}\" class=\"tick\" text-anchor=\"middle\">{}</text>",
                    (170.0 - y).max(0.0),
                    fmt(v),
                    x + 25.0,
                    y - 3.0,
                    fmt(v)
                );
            }
            let _ =
                write!(h, "<text x=\"{:.1}\" y=\"186\" class=\"lbl\" text-anchor=\"middle\">{label}</text>", x + 25.0);
        }
        h.push_str("</svg></div>");
    }
    h.push_str("</div>\n");
}

/// (d) Histogram of the selected candidates' training weights.
fn weight_hist(h: &mut String, input: &ReportInput<'_>) {
    h.push_str("<h2 id=\"weights\">(d) Distribution of training weights</h2>\n");
    let w: Vec<f64> = input.selections.iter().flat_map(|s| s.selected.iter().map(|c| c.weight)).collect();
    if w.is_empty() {
        h.push_str("<p>No selection in this run.</p>\n");
        return;
    }
    const BINS: usize = 20;
    let mut counts = [0usize; BINS];
    for x in &w {
        counts[((x.clamp(0.0, 1.0) * BINS as f64) as usize).min(BINS - 1)] += 1;
    }
    let max = *counts.iter().max().unwrap_or(&1) as f64;
    let ys = Scale::new(0.0, max.max(1.0), 200.0, 20.0);
    let _ = write!(h, "<svg width=\"560\" height=\"230\" role=\"img\" aria-label=\"weights\">");
    y_axis(h, &ys, 50.0);
    for (i, c) in counts.iter().enumerate() {
        let x = 56.0 + 24.0 * i as f64;
        let y = ys.at(*c as f64);
        let _ = write!(
            h,
            "<rect x=\"{x}\" y=\"{y:.1}\" width=\"22\" height=\"{:.1}\" fill=\"#59a14f\"><title>[{:.2}, {:.2}): {c}</title></rect>",
            200.0 - y,
            i as f64 / BINS as f64,
            (i + 1) as f64 / BINS as f64
        );
    }
    let _ = write!(h, "<text x=\"56\" y=\"216\" class=\"tick\">0</text><text x=\"296\" y=\"216\" class=\"tick\" text-anchor=\"middle\">0.5</text><text x=\"536\" y=\"216\" class=\"tick\" text-anchor=\"end\">1</text><text x=\"296\" y=\"228\" class=\"lbl\" text-anchor=\"middle\">weight ({} selected)</text></svg>", w.len());
    h.push('\n');
    // The same numbers as a table, for readers and tests.
    let mut per_budget: BTreeMap<usize, usize> = BTreeMap::new();
    for s in input.selections {
        *per_budget.entry(s.selected.len()).or_default() += 1;
    }
    h.push_str("<table><tr><th>selected per problem</th><th>problems</th></tr>");
    for (k, n) in per_budget {
        let _ = write!(h, "<tr><td>{k}</td><td>{n}</td></tr>");
    }
    h.push_str("</table>\n");
}
