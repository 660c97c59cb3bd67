//! The scorers by name: each is a field of `scores.jsonl` and a possible `--by` for selection, with the
//! direction in which it is better (paper Table 1: every baseline is "max" except RSR, which is "min").

use super::row::ScoreRow;
use crate::error::{LarkError, Result};
use std::fmt;
use std::str::FromStr;

/// Which end of a scorer is better.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    Max,
    Min,
}

impl Direction {
    /// The score mapped so that larger is better (selection negates min-direction scores first).
    pub fn key(self, score: f64) -> f64 {
        match self {
            Direction::Max => score,
            Direction::Min => -score,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scorer {
    /// LARK ĝ_k (Eq. 7).
    GHat,
    /// ρ̂_k alone (ablation).
    RhoHat,
    /// 1/ℓ_k (ablation).
    InverseLoss,
    /// Mean Brier residual ‖π − δ‖² per token (ablation).
    BrierMean,
    /// GRAPE: −ℓ_k (Appendix C.2).
    Grape,
    /// Rank-Surprisal Ratio Σ clipped rank / Σ NLL (Yang et al.); lower is better.
    Rsr,
    /// Diagnostics (§5.4): mean gold probability, wrong-token concentration, mean entropy.
    MeanPGold,
    WrongConc,
    EntropyMean,
    /// Token Length: scored tokens (the paper's definition).
    TokenLen,
    /// Token Length as the authors computed it: whitespace words of the assistant content.
    WordLen,
    /// LIMO-style rule-based quality (Appendix C.2).
    RuleQuality,
    /// Seeded uniform key (Appendix C.2 "Random").
    Random,
    /// Local Naturalness (Just et al.), m previous steps of context; extra forward passes.
    LocalNaturalness,
    /// LLM-judged quality, imported `overall_score`.
    LlmJudge,
}

impl Scorer {
    pub const ALL: [Scorer; 15] = [
        Scorer::GHat,
        Scorer::RhoHat,
        Scorer::InverseLoss,
        Scorer::BrierMean,
        Scorer::Grape,
        Scorer::Rsr,
        Scorer::MeanPGold,
        Scorer::WrongConc,
        Scorer::EntropyMean,
        Scorer::TokenLen,
        Scorer::WordLen,
        Scorer::RuleQuality,
        Scorer::Random,
        Scorer::LocalNaturalness,
        Scorer::LlmJudge,
    ];

    /// The field name in `scores.jsonl` (also the canonical `--by` / `--scorers` name).
    pub fn name(self) -> &'static str {
        match self {
            Scorer::GHat => "g_hat",
            Scorer::RhoHat => "rho_hat",
            Scorer::InverseLoss => "inverse_loss",
            Scorer::BrierMean => "brier_mean",
            Scorer::Grape => "grape",
            Scorer::Rsr => "rsr",
            Scorer::MeanPGold => "mean_p_gold",
            Scorer::WrongConc => "wrong_conc",
            Scorer::EntropyMean => "entropy_mean",
            Scorer::TokenLen => "token_len",
            Scorer::WordLen => "word_len",
            Scorer::RuleQuality => "rule_quality",
            Scorer::Random => "random",
            Scorer::LocalNaturalness => "local_naturalness",
            Scorer::LlmJudge => "llm_judge",
        }
    }

    pub fn direction(self) -> Direction {
        match self {
            Scorer::Rsr => Direction::Min,
            _ => Direction::Max,
        }
    }

    /// Costs extra forward passes (about (m+1)× the one-pass scorers): opt-in.
    pub fn needs_extra_passes(self) -> bool {
        self == Scorer::LocalNaturalness
    }

    /// Needs `--judge-scores FILE`.
    pub fn needs_judge_file(self) -> bool {
        self == Scorer::LlmJudge
    }

    /// The scorers computed unless asked otherwise: everything from the one forward pass and the text,
    /// i.e. all but Local Naturalness (costly) and the LLM judge (needs a file).
    pub fn defaults() -> Vec<Scorer> {
        Scorer::ALL.into_iter().filter(|s| !s.needs_extra_passes() && !s.needs_judge_file()).collect()
    }

    /// This scorer's value in a row; NaN when absent (skipped, not requested, not computable).
    pub fn value(self, r: &ScoreRow) -> f64 {
        let int = |v: Option<u64>| v.map(|x| x as f64).unwrap_or(f64::NAN);
        match self {
            Scorer::GHat => r.g_hat,
            Scorer::RhoHat => r.rho_hat,
            Scorer::InverseLoss => r.inverse_loss,
            Scorer::BrierMean => r.brier_mean,
            Scorer::Grape => r.grape,
            Scorer::Rsr => r.rsr,
            Scorer::MeanPGold => r.mean_p_gold,
            Scorer::WrongConc => r.wrong_conc,
            Scorer::EntropyMean => r.entropy_mean,
            Scorer::TokenLen => int(r.token_len),
            Scorer::WordLen => int(r.word_len),
            Scorer::RuleQuality => r.rule_quality,
            Scorer::Random => r.random,
            Scorer::LocalNaturalness => r.local_naturalness.unwrap_or(f64::NAN),
            Scorer::LlmJudge => r.llm_judge.unwrap_or(f64::NAN),
        }
    }
}

impl fmt::Display for Scorer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Scorer {
    type Err = LarkError;
    /// Canonical names plus a few aliases (`lark`, `brier`, `rho`, `length`, `rule`, `judge`, `local`, ...).
    fn from_str(s: &str) -> Result<Self> {
        let t = s.trim().to_ascii_lowercase().replace('-', "_");
        if let Some(x) = Scorer::ALL.into_iter().find(|x| x.name() == t) {
            return Ok(x);
        }
        Ok(match t.as_str() {
            "lark" | "ghat" => Scorer::GHat,
            "rho" => Scorer::RhoHat,
            "inv_loss" | "inverse" => Scorer::InverseLoss,
            "brier" | "brier_residual" => Scorer::BrierMean,
            "p_gold" => Scorer::MeanPGold,
            "entropy" => Scorer::EntropyMean,
            "length" | "token_length" | "tokens" => Scorer::TokenLen,
            "words" | "word_length" => Scorer::WordLen,
            "rule" | "rule_based" | "limo" => Scorer::RuleQuality,
            "local" => Scorer::LocalNaturalness,
            "judge" | "llm" => Scorer::LlmJudge,
            _ => {
                let names: Vec<&str> = Scorer::ALL.iter().map(|x| x.name()).collect();
                return Err(LarkError::input(
                    "--scorers",
                    format!("unknown scorer {s:?} (one of: {})", names.join(", ")),
                ));
            }
        })
    }
}

/// `--scorers`: `default`, `all`, or a comma list of names that may itself contain `default`/`all`
/// (e.g. `default,local_naturalness`). Order is kept, duplicates dropped. `all` includes `llm_judge`,
/// which the caller must pair with a judge file.
pub fn parse_scorers(s: &str) -> Result<Vec<Scorer>> {
    let mut out: Vec<Scorer> = Vec::new();
    let mut push = |x: Scorer| {
        if !out.contains(&x) {
            out.push(x)
        }
    };
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        match part {
            "default" => Scorer::defaults().into_iter().for_each(&mut push),
            "all" => Scorer::ALL.into_iter().for_each(&mut push),
            name => push(name.parse()?),
        }
    }
    if out.is_empty() {
        return Err(LarkError::input("--scorers", "no scorer named"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_directions() {
        for s in Scorer::ALL {
            assert_eq!(s.name().parse::<Scorer>().unwrap(), s);
            assert_eq!(s.direction() == Direction::Min, s == Scorer::Rsr);
        }
        assert_eq!("lark".parse::<Scorer>().unwrap(), Scorer::GHat);
        assert_eq!("Brier".parse::<Scorer>().unwrap(), Scorer::BrierMean);
        assert!("nope".parse::<Scorer>().is_err());
        assert_eq!(Direction::Min.key(2.0), -2.0);
    }

    #[test]
    fn scorer_lists() {
        let d = parse_scorers("default").unwrap();
        assert_eq!(d.len(), 13);
        assert!(!d.contains(&Scorer::LocalNaturalness) && !d.contains(&Scorer::LlmJudge));
        assert_eq!(parse_scorers("all").unwrap().len(), 15);
        assert_eq!(parse_scorers("rsr, g_hat,rsr").unwrap(), vec![Scorer::Rsr, Scorer::GHat]);
        let e = parse_scorers("default,local").unwrap();
        assert_eq!(e.len(), 14);
        assert_eq!(*e.last().unwrap(), Scorer::LocalNaturalness);
        assert!(parse_scorers("").is_err());
        assert!(parse_scorers("g_hat,bogus").is_err());
    }
}
