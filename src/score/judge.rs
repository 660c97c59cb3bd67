//! LLM-judged quality (Appendix C.2): the judge (Qwen3-32B) is run elsewhere; its `overall_score` values
//! are imported from a file in one of three forms:
//!
//! 1. nested object: `{"<problem_id>": {"<candidate_id>": {"overall_score": 0.7, ...}, ...}, ...}`
//!    (a bare number in place of the inner object is accepted too);
//! 2. a JSON list of flat objects: `[{"problem_id": 1, "candidate_id": 0, "overall_score": 0.7}, ...]`;
//! 3. JSON Lines of the same flat objects.
//!
//! `overall_score: null` means the judge gave no usable score (NaN, never selected). A candidate absent
//! from the file also gets no score (NaN, `null` in scores.jsonl). Extra fields are ignored.

use crate::error::{LarkError, Result};
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::path::Path;

#[derive(Debug, Clone, Default, PartialEq)]
pub struct JudgeScores {
    scores: HashMap<(i64, i64), f64>,
}

impl JudgeScores {
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| LarkError::io(path, e))?;
        Self::parse(&text, &path.display().to_string())
    }

    /// Parse the file's text; `name` is used in error messages.
    pub fn parse(text: &str, name: &str) -> Result<Self> {
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let mut out = JudgeScores::default();
        match serde_json::from_str::<Value>(text) {
            Ok(Value::Object(top)) if !looks_flat(&top) => out.nested(&top, name)?,
            Ok(Value::Object(top)) => out.flat(&top, name)?,
            Ok(Value::Array(items)) => {
                for (i, v) in items.iter().enumerate() {
                    let o = v.as_object().ok_or_else(|| at(name, format!("element {i}"), "expected an object"))?;
                    out.flat(o, &format!("{name} (element {i})"))?;
                }
            }
            Ok(_) => return Err(LarkError::input(name, "expected a JSON object, a JSON list or JSON Lines")),
            Err(whole) => {
                // JSON Lines: one flat object a line.
                for (i, line) in text.lines().enumerate() {
                    if line.trim().is_empty() {
                        continue;
                    }
                    let loc = format!("{name}:{}", i + 1);
                    let v: Value = serde_json::from_str(line).map_err(|e| {
                        let hint = if i == 0 { format!(" (as one JSON document: {whole})") } else { String::new() };
                        LarkError::input(&loc, format!("invalid JSON: {e}{hint}"))
                    })?;
                    let o = v.as_object().ok_or_else(|| LarkError::input(&loc, "expected a JSON object"))?;
                    out.flat(o, &loc)?;
                }
            }
        }
        Ok(out)
    }

    /// The imported score of one candidate: `None` when absent, NaN when the file had `null`.
    pub fn get(&self, problem_id: i64, candidate_id: i64) -> Option<f64> {
        self.scores.get(&(problem_id, candidate_id)).copied()
    }

    pub fn len(&self) -> usize {
        self.scores.len()
    }

    pub fn is_empty(&self) -> bool {
        self.scores.is_empty()
    }

    fn insert(&mut self, pid: i64, cid: i64, score: f64, loc: &str) -> Result<()> {
        if self.scores.insert((pid, cid), score).is_some() {
            return Err(LarkError::input(loc, format!("duplicate score for problem {pid}, candidate {cid}")));
        }
        Ok(())
    }

    fn nested(&mut self, top: &Map<String, Value>, name: &str) -> Result<()> {
        for (pkey, inner) in top {
            let pid =
                parse_key(pkey).ok_or_else(|| at(name, format!("key {pkey:?}"), "expected an integer problem id"))?;
            let inner = inner.as_object().ok_or_else(|| at(name, format!("[{pkey:?}]"), "expected an object"))?;
            for (ckey, v) in inner {
                let field = format!("[{pkey:?}][{ckey:?}]");
                let cid = parse_key(ckey).ok_or_else(|| at(name, &field, "expected an integer candidate id key"))?;
                let score = match v {
                    Value::Object(o) => score_of(o.get("overall_score"), name, &format!("{field}.overall_score"))?,
                    other => score_of(Some(other), name, &field)?,
                };
                self.insert(pid, cid, score, name)?;
            }
        }
        Ok(())
    }

    fn flat(&mut self, o: &Map<String, Value>, loc: &str) -> Result<()> {
        let id = |k: &str| -> Result<i64> {
            match o.get(k) {
                Some(Value::Number(n)) if n.is_i64() => Ok(n.as_i64().unwrap_or_default()),
                Some(Value::String(s)) if parse_key(s).is_some() => Ok(parse_key(s).unwrap_or_default()),
                Some(_) => Err(at(loc, k, "expected an integer")),
                None => Err(at(loc, k, "missing")),
            }
        };
        let (pid, cid) = (id("problem_id")?, id("candidate_id")?);
        let score = score_of(o.get("overall_score"), loc, "overall_score")?;
        self.insert(pid, cid, score, loc)
    }
}

/// A single top-level object with `problem_id` is one flat record (a one-line JSON Lines file).
fn looks_flat(o: &Map<String, Value>) -> bool {
    o.contains_key("problem_id") && o.contains_key("candidate_id")
}

fn parse_key(s: &str) -> Option<i64> {
    s.trim().parse().ok()
}

fn score_of(v: Option<&Value>, loc: &str, field: &str) -> Result<f64> {
    match v {
        Some(Value::Number(n)) => Ok(n.as_f64().unwrap_or(f64::NAN)),
        Some(Value::Null) => Ok(f64::NAN),
        Some(_) => Err(at(loc, field, "expected a number or null")),
        None => Err(at(loc, field, "missing")),
    }
}

fn at(loc: &str, field: impl AsRef<str>, msg: &str) -> LarkError {
    LarkError::input(loc, format!("field `{}`: {msg}", field.as_ref()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn three_forms() {
        let nested = r#"{"3": {"0": {"overall_score": 0.7, "overall_reason": "ok"}, "1": 0.2}, "4": {"0": {"overall_score": null}}}"#;
        let j = JudgeScores::parse(nested, "j.json").unwrap();
        assert_eq!(j.get(3, 0), Some(0.7));
        assert_eq!(j.get(3, 1), Some(0.2));
        assert!(j.get(4, 0).unwrap().is_nan());
        assert_eq!(j.get(4, 1), None);

        let list = r#"[{"problem_id": 3, "candidate_id": 0, "overall_score": 0.5}, {"problem_id": "4", "candidate_id": 2, "overall_score": 1}]"#;
        let j = JudgeScores::parse(list, "j.json").unwrap();
        assert_eq!((j.get(3, 0), j.get(4, 2), j.len()), (Some(0.5), Some(1.0), 2));

        let lines = "{\"problem_id\": 1, \"candidate_id\": 0, \"overall_score\": 0.1}\n\n{\"problem_id\": 1, \"candidate_id\": 1, \"overall_score\": 0.9}\n";
        let j = JudgeScores::parse(lines, "j.jsonl").unwrap();
        assert_eq!((j.get(1, 0), j.get(1, 1)), (Some(0.1), Some(0.9)));
        let one = "{\"problem_id\": 1, \"candidate_id\": 0, \"overall_score\": 0.1}";
        assert_eq!(JudgeScores::parse(one, "j").unwrap().get(1, 0), Some(0.1));
    }

    #[test]
    fn errors_name_the_field() {
        let e = JudgeScores::parse(r#"{"x": {"0": 0.5}}"#, "j.json").unwrap_err().to_string();
        assert!(e.contains("j.json") && e.contains("\"x\""), "{e}");
        let e = JudgeScores::parse(r#"{"1": {"0": {"overall_score": "high"}}}"#, "j.json").unwrap_err().to_string();
        assert!(e.contains("overall_score") && e.contains("number"), "{e}");
        let e = JudgeScores::parse("{\"problem_id\": 1, \"candidate_id\": 0, \"overall_score\": 1}\n{bad", "j.jsonl")
            .unwrap_err()
            .to_string();
        assert!(e.contains("j.jsonl:2"), "{e}");
        let e = JudgeScores::parse(r#"[{"problem_id": 1, "candidate_id": 0, "overall_score": 1}, {"problem_id": 1, "candidate_id": 0, "overall_score": 1}]"#, "j").unwrap_err().to_string();
        assert!(e.contains("duplicate"), "{e}");
    }
}
