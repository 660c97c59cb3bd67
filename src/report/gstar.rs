//! The g* section of the report: the paper's Fig. 6 panels from `lark gstar`'s `gstar.jsonl`, recomputed
//! from the rows (the same [`diagnose`] that wrote `gstar_summary.json`, so the page and the summary agree):
//! (a) g* against the per-question mean-and-scale rescaled ĝ, pooled, with Pearson and Spearman;
//! (b) Recall@B for B = 1…10 beside the random line B/K; (c) the histogram of the relative p-weighted RMS
//! error ‖ĝ − g*‖_p / ‖g*‖_p. The paper's Qwen2.5-7B figures are printed beside each panel.

use super::svg::{esc, fmt, y_axis, Scale};
use crate::grad::diagnostics::{diagnose, Diagnostics, Question};
use crate::grad::gstar::{rows_by_problem, GstarRow};
use std::fmt::Write as _;

/// The paper's Appendix B.8 figures (Qwen2.5-7B, 50 questions, K = 33).
pub const PAPER: PaperFigures = PaperFigures {
    pearson: 0.748,
    spearman: 0.566,
    recall_at_1: 0.38,
    recall_at_3: 0.56,
    rel_rms_error_mean: 0.574,
    rel_rms_error_median: 0.590,
};

pub struct PaperFigures {
    pub pearson: f64,
    pub spearman: f64,
    pub recall_at_1: f64,
    pub recall_at_3: f64,
    pub rel_rms_error_mean: f64,
    pub rel_rms_error_median: f64,
}

/// The rows' questions in pool order (problems as they first appear, candidates as listed).
pub fn questions(rows: &[GstarRow]) -> Vec<Question> {
    rows_by_problem(rows)
        .into_iter()
        .map(|(problem_id, rs)| Question {
            problem_id,
            g_hat: rs.iter().map(|r| r.g_hat).collect(),
            g_star: rs.iter().map(|r| r.g_star).collect(),
        })
        .collect()
}

/// Append the g* section (an `<h2>` and three panels) to `h`.
pub fn section(h: &mut String, rows: &[GstarRow]) {
    let d = diagnose(&questions(rows));
    let _ = write!(
        h,
        "<h2 id=\"gstar\">(e) ĝ against the exact g* (paper Fig. 6)</h2>\n<p>{} questions, {} candidates with \
         finite ĝ and g* (uniform prior over each question's scored candidates). Off the paper's Qwen2.5-7B \
         figures, a low correlation or a recall near the random line means that on this student and pool the \
         forward-pass proxy ĝ does not rank candidates as the exact directional derivative does.</p>\n",
        d.n_questions, d.n_candidates
    );
    if d.n_questions == 0 {
        h.push_str("<p>No question has two candidates with finite ĝ and g*: nothing to compare.</p>\n");
        return;
    }
    h.push_str("<div class=\"grid\">");
    scatter(h, &d);
    recall(h, &d);
    error_hist(h, &d);
    h.push_str("</div>\n");
    table(h, &d);
}

/// (a) pooled scatter, ĝ rescaled per question on x, g* on y, with the y = x line.
fn scatter(h: &mut String, d: &Diagnostics) {
    let (w, ht) = (300.0, 260.0);
    let all = d.points.iter().flat_map(|(x, y)| [*x, *y]);
    let xs = Scale::fit(all.clone(), 50.0, w - 10.0);
    let ys = Scale { p0: ht - 40.0, p1: 20.0, ..Scale::fit(all, 0.0, 1.0) };
    let _ = write!(
        h,
        "<div class=\"panel\"><svg width=\"{w}\" height=\"{ht}\" role=\"img\" aria-label=\"g_hat vs g_star\">"
    );
    let _ = write!(
        h,
        "<text x=\"{}\" y=\"12\" class=\"ttl\" text-anchor=\"middle\">(a) pooled, per-question rescale</text>",
        w / 2.0
    );
    y_axis(h, &ys, 50.0);
    let _ = write!(
        h,
        "<line x1=\"{:.1}\" y1=\"{:.1}\" x2=\"{:.1}\" y2=\"{:.1}\" stroke=\"#bbb\" stroke-dasharray=\"4 3\"/>",
        xs.at(xs.lo),
        ys.at(xs.lo),
        xs.at(xs.hi),
        ys.at(xs.hi)
    );
    for (x, y) in &d.points {
        let _ = write!(
            h,
            "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"2.5\" fill=\"#4e79a7\" fill-opacity=\"0.7\"><title>ĝ′ {} g* {}</title></circle>",
            xs.at(*x),
            ys.at(*y),
            fmt(*x),
            fmt(*y)
        );
    }
    let _ = write!(
        h,
        "<text x=\"{}\" y=\"{}\" class=\"lbl\" text-anchor=\"middle\">rescaled ĝ ({} … {}); Pearson {}, Spearman {}</text>\
         <text x=\"{}\" y=\"{}\" class=\"tick\" text-anchor=\"middle\">paper: Pearson {}, Spearman {}</text></svg></div>",
        w / 2.0,
        ht - 22.0,
        fmt(xs.lo),
        fmt(xs.hi),
        fmt(d.pearson),
        fmt(d.spearman),
        w / 2.0,
        ht - 8.0,
        PAPER.pearson,
        PAPER.spearman
    );
}

/// (b) Recall@B and the random line B/K.
fn recall(h: &mut String, d: &Diagnostics) {
    let (w, ht) = (300.0, 260.0);
    let xs = Scale::new(1.0, 10.0, 60.0, w - 20.0);
    let ys = Scale::new(0.0, 1.0, ht - 40.0, 20.0);
    let _ = write!(h, "<div class=\"panel\"><svg width=\"{w}\" height=\"{ht}\" role=\"img\" aria-label=\"recall\">");
    let _ = write!(
        h,
        "<text x=\"{}\" y=\"12\" class=\"ttl\" text-anchor=\"middle\">(b) Recall@B of g*'s top B</text>",
        w / 2.0
    );
    y_axis(h, &ys, 50.0);
    let line = |pick: &dyn Fn(&crate::grad::diagnostics::RecallPoint) -> Option<f64>| -> String {
        d.recall
            .iter()
            .filter_map(|p| pick(p).map(|v| format!("{:.1},{:.1}", xs.at(p.b as f64), ys.at(v))))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let _ = write!(
        h,
        "<polyline points=\"{}\" fill=\"none\" stroke=\"#bbb\" stroke-dasharray=\"4 3\"/>",
        line(&|p| p.random)
    );
    let _ =
        write!(h, "<polyline points=\"{}\" fill=\"none\" stroke=\"#e15759\" stroke-width=\"2\"/>", line(&|p| p.recall));
    for p in &d.recall {
        if let (Some(r), Some(b)) = (p.recall, p.random) {
            let _ = write!(
                h,
                "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"3\" fill=\"#e15759\"><title>B = {}: recall {} (random {}), {} questions</title></circle>",
                xs.at(p.b as f64),
                ys.at(r),
                p.b,
                fmt(r),
                fmt(b),
                p.n_questions
            );
        }
        let _ = write!(
            h,
            "<text x=\"{:.1}\" y=\"{}\" class=\"tick\" text-anchor=\"middle\">{}</text>",
            xs.at(p.b as f64),
            ht - 28.0,
            p.b
        );
    }
    let _ = write!(
        h,
        "<text x=\"{}\" y=\"{}\" class=\"lbl\" text-anchor=\"middle\">B (solid: ĝ, dashed: random B/K)</text>\
         <text x=\"{}\" y=\"{}\" class=\"tick\" text-anchor=\"middle\">paper: Recall@1 {}, Recall@3 {}</text></svg></div>",
        w / 2.0,
        ht - 16.0,
        w / 2.0,
        ht - 4.0,
        PAPER.recall_at_1,
        PAPER.recall_at_3
    );
}

/// (c) histogram of the per-question relative p-weighted RMS error.
fn error_hist(h: &mut String, d: &Diagnostics) {
    let (w, ht) = (300.0, 260.0);
    let hist = &d.rel_rms_histogram;
    let max = hist.counts.iter().copied().max().unwrap_or(1).max(1) as f64;
    let ys = Scale::new(0.0, max, ht - 40.0, 20.0);
    let bw = (w - 70.0) / hist.counts.len() as f64;
    let _ = write!(h, "<div class=\"panel\"><svg width=\"{w}\" height=\"{ht}\" role=\"img\" aria-label=\"error\">");
    let _ = write!(h, "<text x=\"{}\" y=\"12\" class=\"ttl\" text-anchor=\"middle\">(c) ‖ĝ − g*‖<tspan font-size=\"8\">p</tspan> / ‖g*‖<tspan font-size=\"8\">p</tspan> per question</text>", w / 2.0);
    y_axis(h, &ys, 50.0);
    for (i, c) in hist.counts.iter().enumerate() {
        let y = ys.at(*c as f64);
        let hi = if i + 1 == hist.counts.len() { "∞".to_string() } else { fmt(hist.edges[i + 1]) };
        let _ = write!(
            h,
            "<rect x=\"{:.1}\" y=\"{y:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"#76b7b2\"><title>[{}, {hi}): {c}</title></rect>",
            56.0 + bw * i as f64,
            bw - 1.0,
            ht - 40.0 - y,
            fmt(hist.edges[i])
        );
    }
    let _ = write!(
        h,
        "<text x=\"56\" y=\"{}\" class=\"tick\">0</text><text x=\"{:.1}\" y=\"{}\" class=\"tick\" text-anchor=\"end\">≥ 1.9</text>\
         <text x=\"{}\" y=\"{}\" class=\"lbl\" text-anchor=\"middle\">mean {}, median {}</text>\
         <text x=\"{}\" y=\"{}\" class=\"tick\" text-anchor=\"middle\">paper: mean {}, median {}</text></svg></div>",
        ht - 28.0,
        w - 14.0,
        ht - 28.0,
        w / 2.0,
        ht - 16.0,
        fmt(d.rel_rms_error_mean),
        fmt(d.rel_rms_error_median),
        w / 2.0,
        ht - 4.0,
        PAPER.rel_rms_error_mean,
        PAPER.rel_rms_error_median
    );
}

/// The figures as a table (for readers, screen readers and tests).
fn table(h: &mut String, d: &Diagnostics) {
    let r = |b: usize| d.recall.get(b - 1).and_then(|p| p.recall.zip(p.random));
    let rc = |b: usize| r(b).map_or("n/a".to_string(), |(x, rnd)| format!("{} (random {})", fmt(x), fmt(rnd)));
    h.push_str("<table id=\"gstar-figures\"><tr><th>figure</th><th>this run</th><th>paper (Qwen2.5-7B)</th></tr>");
    let rows: [(&str, String, String); 7] = [
        ("pooled Pearson (mean-and-scale rescale)", fmt(d.pearson), PAPER.pearson.to_string()),
        ("pooled Spearman", fmt(d.spearman), PAPER.spearman.to_string()),
        ("mean within-question Spearman", fmt(d.spearman_within_mean), "—".into()),
        ("Recall@1", rc(1), PAPER.recall_at_1.to_string()),
        ("Recall@3", rc(3), PAPER.recall_at_3.to_string()),
        ("rel. p-weighted RMS error, mean", fmt(d.rel_rms_error_mean), PAPER.rel_rms_error_mean.to_string()),
        ("rel. p-weighted RMS error, median", fmt(d.rel_rms_error_median), PAPER.rel_rms_error_median.to_string()),
    ];
    for (name, ours, paper) in rows {
        let _ = write!(h, "<tr><td>{}</td><td>{}</td><td>{}</td></tr>", esc(name), esc(&ours), esc(&paper));
    }
    h.push_str("</table>\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(p: i64, c: i64, gh: f64, gs: f64) -> GstarRow {
        GstarRow {
            problem_id: p,
            candidate_id: c,
            teacher: "t".into(),
            skipped: None,
            n_tokens: Some(10),
            truncated: false,
            l: 1.0,
            g_hat: gh,
            g_star: gs,
            rho_hat: 0.5,
            rho_star: 0.5,
            grad_sq_norm: 1.0,
            grad_dot_sum: 1.0,
            l_backward: 1.0,
        }
    }

    #[test]
    fn section_draws_three_panels_and_the_figures() {
        let rows = vec![
            row(7, 0, 0.1, 0.2),
            row(7, 1, 0.3, 0.1),
            row(7, 2, 0.2, 0.4),
            row(3, 0, 1.0, 2.0),
            row(3, 1, 2.0, 3.0),
            row(3, 2, f64::NAN, f64::NAN),
        ];
        let qs = questions(&rows);
        assert_eq!(qs.iter().map(|q| q.problem_id).collect::<Vec<_>>(), vec![7, 3], "pool order kept");
        let mut h = String::new();
        section(&mut h, &rows);
        assert!(h.contains("id=\"gstar\""));
        assert_eq!(h.matches("class=\"panel\"").count(), 3);
        assert!(h.contains("2 questions, 5 candidates"), "{h}");
        let d = diagnose(&qs);
        assert!(h.contains(&format!("<td>pooled Pearson (mean-and-scale rescale)</td><td>{}</td>", fmt(d.pearson))));
        assert_eq!(h.matches("<circle cx").count(), 5 + d.recall.iter().filter(|p| p.recall.is_some()).count());
    }

    #[test]
    fn no_comparable_question_is_said_plainly() {
        let mut h = String::new();
        section(&mut h, &[row(1, 0, 0.1, 0.2)]);
        assert!(h.contains("nothing to compare"));
    }
}
