//! Local Naturalness (Just et al., 2025; paper Appendix C.2), the model-free part: splitting the assistant
//! text into steps, building each step's local context, and combining per-step log-probabilities.
//!
//! score_local(y) = (1/J) Σ_j (1/|s_j|) Σ_u log π(s_{j,u} | x, s_{j−m:j−1}, s_{j,<u})
//!
//! - Steps: the assistant text split on blank lines ("\n\n"); if that gives fewer than 2 steps, split on
//!   "\n" instead. Each step is stripped of surrounding whitespace; empty steps are dropped (so runs of
//!   blank lines do not create zero-length steps).
//! - Context of step j: the prompt rendered with the generation prompt, then — when j > 0 — the previous
//!   min(j, m) steps joined by "\n\n" followed by "\n\n". The first step follows the generation prompt
//!   directly (no separator is invented before it).
//! - The caller tokenises `context` and `context + step`, scores the step's tokens with the student, and
//!   passes each step's (Σ log-prob, token count) to [`combine`].

use super::text::is_py_space;

/// The steps of an assistant text (see the module doc).
pub fn split_steps(text: &str) -> Vec<&str> {
    let split = |sep: &'static str| -> Vec<&str> {
        text.split(sep).map(|s| s.trim_matches(is_py_space)).filter(|s| !s.is_empty()).collect()
    };
    let steps = split("\n\n");
    if steps.len() < 2 {
        split("\n")
    } else {
        steps
    }
}

/// One forward-pass window: score the tokens of `step` given `context`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepWindow {
    pub context: String,
    pub step: String,
}

impl StepWindow {
    /// The text fed to the model: context followed by the step.
    pub fn full(&self) -> String {
        format!("{}{}", self.context, self.step)
    }
}

/// The windows for every step of `assistant_text`, with `prompt` the chat-templated prompt including the
/// generation prompt and `m` the local context size (the paper uses m = 4).
pub fn step_windows(prompt: &str, assistant_text: &str, m: usize) -> Vec<StepWindow> {
    let steps = split_steps(assistant_text);
    (0..steps.len())
        .map(|j| {
            let prev = &steps[j.saturating_sub(m)..j];
            let context =
                if prev.is_empty() { prompt.to_string() } else { format!("{prompt}{}\n\n", prev.join("\n\n")) };
            StepWindow { context, step: steps[j].to_string() }
        })
        .collect()
}

/// Mean over steps of each step's mean log-probability, from per-step `(Σ log-prob, token count)`.
/// Steps that produced no scored token are left out; NaN when no step has any.
pub fn combine(steps: &[(f64, usize)]) -> f64 {
    let means: Vec<f64> = steps.iter().filter(|(_, n)| *n > 0).map(|(s, n)| s / *n as f64).collect();
    if means.is_empty() {
        f64::NAN
    } else {
        means.iter().sum::<f64>() / means.len() as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_split_on_blank_lines_with_fallback() {
        assert_eq!(split_steps("a b\n\n  c\n\n\n\nd  "), vec!["a b", "c", "d"]);
        // One paragraph: fall back to single newlines.
        assert_eq!(split_steps("x\ny\n z"), vec!["x", "y", "z"]);
        assert_eq!(split_steps("only"), vec!["only"]);
        assert!(split_steps(" \n\n ").is_empty());
        // "\n\n\n" splits into "a" and "\nb"; stripping gives "b".
        assert_eq!(split_steps("a\n\n\nb"), vec!["a", "b"]);
    }

    #[test]
    fn windows_keep_at_most_m_previous_steps() {
        let w = step_windows("P:", "s1\n\ns2\n\ns3\n\ns4", 2);
        assert_eq!(w.len(), 4);
        assert_eq!(w[0], StepWindow { context: "P:".into(), step: "s1".into() });
        assert_eq!(w[1].context, "P:s1\n\n");
        assert_eq!(w[2].context, "P:s1\n\ns2\n\n");
        assert_eq!(w[3].context, "P:s2\n\ns3\n\n");
        assert_eq!(w[3].full(), "P:s2\n\ns3\n\ns4");
        assert!(step_windows("P", "", 4).is_empty());
    }

    #[test]
    fn combine_means_of_means() {
        // Step means −1 and −3 → −2 (not the token-weighted −(2+9)/5).
        assert_eq!(combine(&[(-2.0, 2), (-9.0, 3)]), -2.0);
        assert_eq!(combine(&[(-2.0, 2), (0.0, 0)]), -1.0);
        assert!(combine(&[]).is_nan());
    }
}
