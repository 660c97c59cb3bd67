//! The few inline-SVG pieces the report draws: axes with ticks, and escaping. No scripts, no fonts
//! fetched, no external references: the file renders offline.

use std::fmt::Write;

/// Escape text for HTML/SVG content and attribute values.
pub fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            _ => o.push(c),
        }
    }
    o
}

/// A number for axis labels and tooltips: 4 significant digits.
pub fn fmt(x: f64) -> String {
    if !x.is_finite() {
        return "—".into();
    }
    if x == 0.0 {
        return "0".into();
    }
    let a = x.abs();
    if !(1e-3..1e5).contains(&a) {
        format!("{x:.3e}")
    } else {
        let digits = (3 - a.log10().floor() as i32).max(0) as usize;
        format!("{x:.digits$}")
    }
}

/// A linear map from data `[lo, hi]` to pixels `[p0, p1]` (a degenerate range is widened).
#[derive(Clone, Copy)]
pub struct Scale {
    pub lo: f64,
    pub hi: f64,
    pub p0: f64,
    pub p1: f64,
}

impl Scale {
    pub fn new(lo: f64, hi: f64, p0: f64, p1: f64) -> Scale {
        let (lo, hi) = if !(lo.is_finite() && hi.is_finite()) {
            (0.0, 1.0)
        } else if hi - lo <= f64::EPSILON * lo.abs().max(1.0) {
            (lo - 0.5 * lo.abs().max(1e-9), hi + 0.5 * hi.abs().max(1e-9))
        } else {
            (lo, hi)
        };
        Scale { lo, hi, p0, p1 }
    }
    /// The range of the finite values of `xs`, with 5% margin.
    pub fn fit(xs: impl Iterator<Item = f64>, p0: f64, p1: f64) -> Scale {
        let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
        for x in xs.filter(|x| x.is_finite()) {
            lo = lo.min(x);
            hi = hi.max(x);
        }
        let m = if hi > lo { 0.05 * (hi - lo) } else { 0.0 };
        Scale::new(lo - m, hi + m, p0, p1)
    }
    pub fn at(&self, x: f64) -> f64 {
        self.p0 + (x - self.lo) / (self.hi - self.lo) * (self.p1 - self.p0)
    }
}

/// A vertical axis at pixel `x` with 3 tick labels.
pub fn y_axis(svg: &mut String, s: &Scale, x: f64) {
    let _ = write!(svg, r##"<line x1="{x}" y1="{:.1}" x2="{x}" y2="{:.1}" stroke="#888"/>"##, s.p0, s.p1);
    for k in 0..3 {
        let v = s.lo + (s.hi - s.lo) * k as f64 / 2.0;
        let y = s.at(v);
        let _ = write!(
            svg,
            r##"<line x1="{:.1}" y1="{y:.1}" x2="{x}" y2="{y:.1}" stroke="#888"/><text x="{:.1}" y="{:.1}" class="tick" text-anchor="end">{}</text>"##,
            x - 3.0,
            x - 5.0,
            y + 3.0,
            fmt(v)
        );
    }
}
