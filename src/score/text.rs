//! Scores from the assistant text alone (paper Appendix C.2): whitespace word length and the LIMO-style
//! rule-based quality.
//!
//! Words are Python's `str.split()` words (runs of Unicode whitespace, plus the ASCII separators
//! U+001C–U+001F that Python also splits on), lower-cased, matched exactly: "check," or "Verify:" do not
//! count, as in the authors' script.

/// Python's `str.isspace` for the purpose of `split()`.
pub fn is_py_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// Python's `text.split()`.
pub fn py_words(text: &str) -> impl Iterator<Item = &str> {
    text.split(is_py_space).filter(|w| !w.is_empty())
}

/// The keyword groups: 0 self-verification, 1 exploration, 2 granularity (Appendix C.2).
const KEYWORDS: [(&str, u8); 6] =
    [("check", 0), ("verify", 0), ("perhaps", 1), ("might", 1), ("therefore", 2), ("since", 2)];

/// What the text scorers need from one assistant text, so the text itself need not be kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TextFeatures {
    /// Whitespace words (Token Length as the authors computed it).
    pub words: u64,
    /// Occurrences of "check" or "verify" (self-verification).
    pub selfver: u64,
    /// Occurrences of "perhaps" or "might" (exploratory approach).
    pub explore: u64,
    /// Occurrences of "therefore" or "since" (adaptive granularity).
    pub gran: u64,
}

impl TextFeatures {
    pub fn from_text(text: &str) -> Self {
        let mut f = TextFeatures::default();
        for w in py_words(text) {
            f.words += 1;
            // ASCII words (nearly all) are compared without allocating; others are lower-cased as Python
            // would (a non-ASCII letter can lower-case to ASCII, e.g. the Kelvin sign to "k").
            let group = if w.is_ascii() {
                KEYWORDS.iter().find(|(k, _)| k.eq_ignore_ascii_case(w)).map(|(_, g)| *g)
            } else {
                let lower = w.to_lowercase();
                KEYWORDS.iter().find(|(k, _)| *k == lower).map(|(_, g)| *g)
            };
            match group {
                Some(0) => f.selfver += 1,
                Some(1) => f.explore += 1,
                Some(_) => f.gran += 1,
                None => {}
            }
        }
        f
    }

    fn freq(&self, n: u64) -> f64 {
        if self.words == 0 {
            0.0
        } else {
            n as f64 / self.words as f64
        }
    }
}

/// Within-group z-scores: (x − mean) / (population std + 1e-8).
pub fn zscore(xs: &[f64]) -> Vec<f64> {
    if xs.is_empty() {
        return Vec::new();
    }
    let n = xs.len() as f64;
    let mean = xs.iter().sum::<f64>() / n;
    let std = (xs.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / n).sqrt();
    xs.iter().map(|x| (x - mean) / (std + 1e-8)).collect()
}

/// LIMO-style rule quality over one problem's candidates (Appendix C.2):
/// 0.30 z(words) + 0.20 z(selfver/words) + 0.25 z(explore/words) + 0.25 z(gran/words).
pub fn rule_quality(feats: &[TextFeatures]) -> Vec<f64> {
    let col = |f: &dyn Fn(&TextFeatures) -> f64| zscore(&feats.iter().map(f).collect::<Vec<_>>());
    let len = col(&|t| t.words as f64);
    let sv = col(&|t| t.freq(t.selfver));
    let ex = col(&|t| t.freq(t.explore));
    let gr = col(&|t| t.freq(t.gran));
    (0..feats.len()).map(|i| 0.30 * len[i] + 0.20 * sv[i] + 0.25 * ex[i] + 0.25 * gr[i]).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_and_keywords() {
        let f = TextFeatures::from_text("Let us CHECK this.\n\nSince x=1, we might verify; check\u{a0}therefore done");
        // words: Let us CHECK this. Since x=1, we might verify; check therefore done → 12
        assert_eq!(f.words, 12);
        assert_eq!(f.selfver, 2); // "CHECK", "check" ("verify;" has punctuation)
        assert_eq!(f.explore, 1); // "might"
        assert_eq!(f.gran, 2); // "Since", "therefore"
        assert_eq!(TextFeatures::from_text("  \n\t ").words, 0);
        assert_eq!(py_words("a\u{1f}b").count(), 2);
        // The Kelvin sign lower-cases to ASCII "k" (Python agrees): "chec\u{212a}" is "check".
        assert_eq!(TextFeatures::from_text("chec\u{212a} Checks").selfver, 1);
    }

    #[test]
    fn zscore_population_std() {
        let z = zscore(&[1.0, 2.0, 3.0]);
        let std = (2.0f64 / 3.0).sqrt();
        assert!((z[0] + 1.0 / (std + 1e-8)).abs() < 1e-12);
        assert_eq!(z[1], 0.0);
        assert_eq!(zscore(&[5.0, 5.0]), vec![0.0, 0.0]);
    }

    #[test]
    fn rule_quality_by_hand() {
        // Two candidates: z-scores of two values are ±1 (up to the 1e-8 in the denominator).
        // A: 10 words, 1 check → selfver 0.1, nothing else. B: 20 words, 2 "since" → gran 0.1.
        let a = TextFeatures { words: 10, selfver: 1, explore: 0, gran: 0 };
        let b = TextFeatures { words: 20, selfver: 0, explore: 0, gran: 2 };
        let q = rule_quality(&[a, b]);
        // A: 0.30(−1) + 0.20(+1) + 0.25(0) + 0.25(−1) = −0.35 ; B: +0.35
        assert!((q[0] + 0.35).abs() < 1e-6 && (q[1] - 0.35).abs() < 1e-6, "{q:?}");
        // A single candidate scores 0.
        assert_eq!(rule_quality(&[a]), vec![0.0]);
        assert!(rule_quality(&[]).is_empty());
    }
}
