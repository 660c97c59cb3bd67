//! Resuming a killed run: the journal `OUT/partial/`.
//!
//! A job is cut into *chunks* of whole problems (consecutive in pool order, a few batches of tokens each;
//! see `schedule::Chunker`). After a chunk has gone through the model, every one of its candidates
//! (per-trajectory statistics, outcome, text features, Local Naturalness, judge score) is appended to
//! `partial/journal.jsonl` as ONE line and the file is flushed and fsync'ed; chunks are appended in order
//! even when several devices finish them out of order. A problem is therefore either completely in the
//! journal or not at all. `partial/manifest.json` records everything that changes the numbers (model,
//! tokenizer and pool fingerprints, settings, precision, judge file, shard, batch/chunk budgets; not the number of
//! devices, which changes none): a resume whose manifest differs is refused, naming the fields.
//!
//! On `--resume` the journal is read back, a torn last line (kill -9 during a write) is cut off, and the
//! chunks found are not recomputed. Numbers are stored exactly (finite f64 in shortest round-trip form,
//! which serde_json parses back bit for bit; NaN/±inf as strings), so the per-problem scores recomputed
//! from the journal, and the final files, are byte-identical to an uninterrupted run's. The journal is
//! removed after the final files (and `run.json`, last) are written.
//!
//! The same line format, one candidate a line, is a sharded run's `candidates.jsonl`, which `lark merge`
//! reads.

use crate::error::{LarkError, Result};
use crate::score::{Candidate, Outcome, TextFeatures};
use crate::stats::TrajectoryStats;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// One candidate and its index among the pool's records (after `--skip-invalid`), which fixes its place
/// in the output whatever shard or chunk computed it.
#[derive(Debug, Clone, PartialEq)]
pub struct Indexed {
    pub index: usize,
    pub candidate: Candidate,
}

fn num(x: f64) -> Value {
    if x.is_finite() {
        json!(x)
    } else if x.is_nan() {
        json!("NaN")
    } else if x > 0.0 {
        json!("inf")
    } else {
        json!("-inf")
    }
}

fn unnum(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) if s == "NaN" => Some(f64::NAN),
        Value::String(s) if s == "inf" => Some(f64::INFINITY),
        Value::String(s) if s == "-inf" => Some(f64::NEG_INFINITY),
        _ => None,
    }
}

fn stats_to_value(s: &TrajectoryStats) -> Value {
    json!([
        s.n_tokens,
        num(s.nll_sum),
        num(s.brier_sum),
        num(s.sum_p2_sum),
        num(s.p_gold_sum),
        num(s.wrong_conc_sum),
        num(s.entropy_sum),
        num(s.rank_clip_sum),
        num(s.rank_sum),
        num(s.topk_brier_sum)
    ])
}

fn stats_from_value(v: &Value) -> Option<TrajectoryStats> {
    let a = v.as_array().filter(|a| a.len() == 10)?;
    let f = |i: usize| unnum(&a[i]);
    Some(TrajectoryStats {
        n_tokens: a[0].as_u64()? as usize,
        nll_sum: f(1)?,
        brier_sum: f(2)?,
        sum_p2_sum: f(3)?,
        p_gold_sum: f(4)?,
        wrong_conc_sum: f(5)?,
        entropy_sum: f(6)?,
        rank_clip_sum: f(7)?,
        rank_sum: f(8)?,
        topk_brier_sum: f(9)?,
    })
}

impl Indexed {
    /// The exact JSON form (see the module comment).
    pub fn to_value(&self) -> Value {
        let c = &self.candidate;
        let mut v = json!({
            "i": self.index, "p": c.problem_id, "c": c.candidate_id, "t": c.teacher,
            "tf": [c.text.words, c.text.selfver, c.text.explore, c.text.gran],
        });
        match &c.outcome {
            Outcome::Scored { stats, truncated, n_turns } => {
                v["s"] = stats_to_value(stats);
                v["tr"] = json!(truncated);
                // Absent means 1, so a single-turn journal is unchanged.
                if *n_turns != 1 {
                    v["nt"] = json!(n_turns);
                }
            }
            Outcome::Skipped(why) => v["skip"] = json!(why),
        }
        if let Some(x) = c.local_naturalness {
            v["ln"] = num(x);
        }
        if let Some(x) = c.llm_judge {
            v["lj"] = num(x);
        }
        v
    }

    pub fn from_value(v: &Value) -> Option<Indexed> {
        let tf = v.get("tf")?.as_array().filter(|a| a.len() == 4)?;
        let outcome = match v.get("skip") {
            Some(why) => Outcome::Skipped(why.as_str()?.to_string()),
            None => Outcome::Scored {
                stats: stats_from_value(v.get("s")?)?,
                truncated: v.get("tr")?.as_bool()?,
                n_turns: match v.get("nt") {
                    None => 1,
                    Some(n) => n.as_u64()? as usize,
                },
            },
        };
        let opt = |k: &str| -> Option<Option<f64>> {
            match v.get(k) {
                None => Some(None),
                Some(x) => unnum(x).map(Some),
            }
        };
        Some(Indexed {
            index: v.get("i")?.as_u64()? as usize,
            candidate: Candidate {
                problem_id: v.get("p")?.as_i64()?,
                candidate_id: v.get("c")?.as_i64()?,
                teacher: v.get("t")?.as_str()?.to_string(),
                outcome,
                text: TextFeatures {
                    words: tf[0].as_u64()?,
                    selfver: tf[1].as_u64()?,
                    explore: tf[2].as_u64()?,
                    gran: tf[3].as_u64()?,
                },
                local_naturalness: opt("ln")?,
                llm_judge: opt("lj")?,
            },
        })
    }
}

/// The journal of an unfinished run in `OUT/partial/`.
pub struct Journal {
    dir: PathBuf,
    file: File,
    /// Chunks already in the journal (read back on resume), by chunk number.
    done: BTreeMap<usize, Vec<Indexed>>,
}

/// The fields of `a` and `b` (JSON objects) that differ.
fn differing(a: &Value, b: &Value) -> Vec<String> {
    let keys: std::collections::BTreeSet<&String> =
        a.as_object().into_iter().chain(b.as_object()).flat_map(|o| o.keys()).collect();
    keys.into_iter().filter(|k| a.get(k.as_str()) != b.get(k.as_str())).cloned().collect()
}

impl Journal {
    pub fn dir(out: &Path) -> PathBuf {
        out.join("partial")
    }

    /// Open the journal of `out`. With `resume`, an existing journal whose manifest equals `manifest` is
    /// continued (a different manifest is an error naming the fields); without it, or when there is none,
    /// a fresh journal is started (an old one is discarded).
    pub fn open(out: &Path, manifest: &Value, resume: bool) -> Result<Journal> {
        let dir = Self::dir(out);
        let man_path = dir.join("manifest.json");
        let log = dir.join("journal.jsonl");
        if resume && man_path.exists() && log.exists() {
            let text = std::fs::read_to_string(&man_path).map_err(|e| LarkError::io(&man_path, e))?;
            let old: Value = serde_json::from_str(&text)
                .map_err(|e| LarkError::input(man_path.display().to_string(), e.to_string()))?;
            let diff = differing(&old, manifest);
            if !diff.is_empty() {
                return Err(LarkError::input(
                    man_path.display().to_string(),
                    format!(
                        "cannot resume: the unfinished run used different {} (rerun without --resume to start over)",
                        diff.join(", ")
                    ),
                ));
            }
            let (done, valid_len) = read_journal(&log)?;
            let mut file = OpenOptions::new().read(true).write(true).open(&log).map_err(|e| LarkError::io(&log, e))?;
            // Cut a torn last line off before appending after it.
            file.set_len(valid_len).map_err(|e| LarkError::io(&log, e))?;
            file.seek(SeekFrom::End(0)).map_err(|e| LarkError::io(&log, e))?;
            return Ok(Journal { dir, file, done });
        }
        if resume {
            eprintln!("lark: --resume: no unfinished run in {}, starting from the beginning", dir.display());
        } else if dir.exists() {
            eprintln!("lark: discarding the unfinished run in {} (--resume continues one)", dir.display());
        }
        if dir.exists() {
            std::fs::remove_dir_all(&dir).map_err(|e| LarkError::io(&dir, e))?;
        }
        std::fs::create_dir_all(&dir).map_err(|e| LarkError::io(&dir, e))?;
        crate::export::write_atomic(&man_path, |w| {
            w.write_all(serde_json::to_string_pretty(manifest).expect("serialisable").as_bytes()).map_err(|e| w.err(e))
        })?;
        let file = File::create(&log).map_err(|e| LarkError::io(&log, e))?;
        file.sync_all().map_err(|e| LarkError::io(&log, e))?;
        Ok(Journal { dir, file, done: BTreeMap::new() })
    }

    /// Number of chunks read back from an earlier attempt.
    pub fn resumed_chunks(&self) -> usize {
        self.done.len()
    }

    /// The numbers of the chunks read back from an earlier attempt (and not taken yet).
    pub fn chunk_numbers(&self) -> std::collections::BTreeSet<usize> {
        self.done.keys().copied().collect()
    }

    /// The candidates of chunk `k` if an earlier attempt finished it and it holds exactly the records
    /// `indices` (otherwise the chunk is recomputed).
    pub fn take_chunk(&mut self, k: usize, indices: &[usize]) -> Option<Vec<Indexed>> {
        let c = self.done.remove(&k)?;
        (c.len() == indices.len() && c.iter().zip(indices).all(|(a, &b)| a.index == b)).then_some(c)
    }

    /// Append chunk `k` as one line, then flush and fsync: after this returns the chunk survives kill -9.
    pub fn append_chunk(&mut self, k: usize, items: &[Indexed]) -> Result<()> {
        let line = json!({"chunk": k, "items": items.iter().map(Indexed::to_value).collect::<Vec<_>>()});
        let mut text = serde_json::to_string(&line).expect("serialisable");
        text.push('\n');
        let log = self.dir.join("journal.jsonl");
        let bytes = text.as_bytes();
        if crate::crashpoint::any_armed() {
            // A kill between the halves leaves a torn last line, which a resume cuts off.
            let (a, b) = bytes.split_at(bytes.len() / 2);
            self.file.write_all(a).and_then(|_| self.file.flush()).map_err(|e| LarkError::io(&log, e))?;
            crate::crashpoint::reach("journal-mid-line");
            self.file.write_all(b).map_err(|e| LarkError::io(&log, e))?;
        } else {
            self.file.write_all(bytes).map_err(|e| LarkError::io(&log, e))?;
        }
        self.file.flush().map_err(|e| LarkError::io(&log, e))?;
        crate::crashpoint::reach("journal-before-sync");
        self.file.sync_data().map_err(|e| LarkError::io(&log, e))
    }

    /// Remove the journal: the run's final files are written.
    pub fn finish(self) -> Result<()> {
        crate::crashpoint::reach("before-journal-removal");
        drop(self.file);
        std::fs::remove_dir_all(&self.dir).map_err(|e| LarkError::io(&self.dir, e))
    }
}

/// The complete chunks of a journal and the byte length of its valid prefix. Reading stops at the first
/// line that does not parse (only the last line can be torn: every earlier one was fsync'ed).
fn read_journal(path: &Path) -> Result<(BTreeMap<usize, Vec<Indexed>>, u64)> {
    let f = File::open(path).map_err(|e| LarkError::io(path, e))?;
    let mut r = BufReader::new(f);
    let mut done = BTreeMap::new();
    let mut valid = 0u64;
    let mut buf = Vec::new();
    loop {
        buf.clear();
        let n = r.read_until(b'\n', &mut buf).map_err(|e| LarkError::io(path, e))?;
        if n == 0 || buf.last() != Some(&b'\n') {
            break;
        }
        let Ok(v) = serde_json::from_slice::<Value>(&buf) else { break };
        let (Some(k), Some(items)) = (v.get("chunk").and_then(Value::as_u64), v.get("items").and_then(Value::as_array))
        else {
            break;
        };
        let Some(items) = items.iter().map(Indexed::from_value).collect::<Option<Vec<_>>>() else { break };
        done.insert(k as usize, items);
        valid += n as u64;
    }
    Ok((done, valid))
}

/// Write `items` one a line to `path` (atomically): a sharded run's `candidates.jsonl`.
pub fn write_candidates(path: &Path, items: &[Indexed]) -> Result<()> {
    crate::export::write_jsonl(path, items.iter().map(Indexed::to_value).collect::<Vec<_>>())
}

/// Read a `candidates.jsonl` written by [`write_candidates`].
pub fn read_candidates(path: &Path) -> Result<Vec<Indexed>> {
    let f = File::open(path).map_err(|e| LarkError::io(path, e))?;
    let mut out = Vec::new();
    for (i, line) in BufReader::new(f).lines().enumerate() {
        let line = line.map_err(|e| LarkError::io(path, e))?;
        if line.trim().is_empty() {
            continue;
        }
        let v: Value = serde_json::from_str(&line).map_err(|e| LarkError::at_line(path, i + 1, e.to_string()))?;
        out.push(Indexed::from_value(&v).ok_or_else(|| LarkError::at_line(path, i + 1, "not a candidate record"))?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(index: usize, x: f64) -> Indexed {
        Indexed {
            index,
            candidate: Candidate {
                problem_id: -3,
                candidate_id: index as i64,
                teacher: "t\"q".into(),
                outcome: Outcome::Scored {
                    stats: TrajectoryStats {
                        n_tokens: 7,
                        nll_sum: x,
                        brier_sum: 0.1 + 0.2,
                        topk_brier_sum: f64::NAN,
                        rank_sum: f64::INFINITY,
                        entropy_sum: -0.0,
                        ..Default::default()
                    },
                    truncated: true,
                    n_turns: 3,
                },
                text: TextFeatures { words: 5, selfver: 1, explore: 2, gran: 3 },
                local_naturalness: Some(f64::NEG_INFINITY),
                llm_judge: None,
            },
        }
    }

    fn same(a: &Indexed, b: &Indexed) -> bool {
        // Bitwise, so NaN == NaN and -0.0 ≠ 0.0.
        format!("{:?}", a.to_value()) == format!("{:?}", b.to_value())
            && match (&a.candidate.outcome, &b.candidate.outcome) {
                (Outcome::Scored { stats: x, .. }, Outcome::Scored { stats: y, .. }) => {
                    x.nll_sum.to_bits() == y.nll_sum.to_bits()
                        && x.entropy_sum.to_bits() == y.entropy_sum.to_bits()
                        && x.topk_brier_sum.is_nan()
                        && y.topk_brier_sum.is_nan()
                }
                _ => false,
            }
    }

    #[test]
    fn candidates_round_trip_exactly() {
        for x in [1.0 / 3.0, 1e-300, 123456.789e10, f64::MIN_POSITIVE, std::f64::consts::PI] {
            let a = item(4, x);
            let back = Indexed::from_value(&serde_json::from_str(&a.to_value().to_string()).unwrap()).unwrap();
            assert!(same(&a, &back), "{x}");
        }
        let s = Indexed {
            candidate: Candidate { outcome: Outcome::Skipped("empty".into()), ..item(1, 1.0).candidate },
            index: 1,
        };
        assert_eq!(Indexed::from_value(&s.to_value()).unwrap(), s);
    }

    #[test]
    fn journal_survives_a_torn_line_and_refuses_other_settings() {
        let dir = tempfile::tempdir().unwrap();
        let man = json!({"settings": {"seed": 1}, "model": "a"});
        let mut j = Journal::open(dir.path(), &man, false).unwrap();
        j.append_chunk(0, &[item(0, 1.5), item(1, 2.5)]).unwrap();
        j.append_chunk(1, &[item(2, 3.5)]).unwrap();
        drop(j);
        // A kill during the third write leaves half a line.
        let log = dir.path().join("partial/journal.jsonl");
        let mut f = OpenOptions::new().append(true).open(&log).unwrap();
        f.write_all(b"{\"chunk\": 2, \"items\": [{\"i\"").unwrap();
        drop(f);

        let mut j = Journal::open(dir.path(), &man, true).unwrap();
        assert_eq!(j.resumed_chunks(), 2);
        assert!(j.take_chunk(1, &[3]).is_none(), "other records: recomputed");
        let c0 = j.take_chunk(0, &[0, 1]).unwrap();
        assert!(same(&c0[1], &item(1, 2.5)));
        j.append_chunk(2, &[item(3, 4.5)]).unwrap();
        drop(j);
        let (done, _) = read_journal(&log).unwrap();
        assert_eq!(done.keys().copied().collect::<Vec<_>>(), vec![0, 1, 2]);

        let other = json!({"settings": {"seed": 2}, "model": "a"});
        let err = Journal::open(dir.path(), &other, true).err().unwrap().to_string();
        assert!(err.contains("settings") && !err.contains("model"), "{err}");
        // Without --resume: a fresh journal.
        let j = Journal::open(dir.path(), &other, false).unwrap();
        assert_eq!(j.resumed_chunks(), 0);
        j.finish().unwrap();
        assert!(!dir.path().join("partial").exists());
    }
}
