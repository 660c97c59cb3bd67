//! Reading a candidate pool: format choice, the checks common to every format (duplicate ids, empty pool),
//! the strict-or-skip policy, and grouping records by problem.
//!
//! Two entry points: [`visit_pool`] streams records to a callback (a pool of 165k long trajectories need
//! not sit in memory at once), and [`read_pool`] collects them into a [`Pool`] grouped by problem.
//! Problems are ordered by first appearance; records within a problem keep their reading order.

use super::record::{Invalid, Origin, Record, Reject};
use super::{jsonl, parquet, rsr_dir};
use crate::error::{LarkError, Result};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// Pool layouts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoolFormat {
    /// A `.parquet` file or a directory with `*.parquet` files below it means `Parquet`; another directory
    /// `RsrDir`; another file `LarkJsonl`.
    Auto,
    /// One JSON object a line: `{problem_id, candidate_id, teacher, messages}` (the LARK authors' input).
    LarkJsonl,
    /// `<root>/<teacher>/<name>_gen<N>.json` lists (the RSR authors' released pool).
    RsrDir,
    /// JSONL whose every record is ShareGPT-shaped (`conversations: [{from, value}]`); `LarkJsonl` also takes
    /// such records, detected per record (no `messages`, a `conversations` list).
    ShareGpt,
    /// One Parquet file or a directory of shards (HF datasets), with a `messages` or `conversations` column.
    Parquet,
}

impl PoolFormat {
    pub fn name(self) -> &'static str {
        match self {
            PoolFormat::Auto => "auto",
            PoolFormat::LarkJsonl => "lark-jsonl",
            PoolFormat::RsrDir => "rsr-dir",
            PoolFormat::ShareGpt => "sharegpt",
            PoolFormat::Parquet => "parquet",
        }
    }
    /// `Auto` resolved against what `path` is.
    pub fn resolve(self, path: &Path) -> Result<PoolFormat> {
        match self {
            PoolFormat::Auto => {
                let md = std::fs::metadata(path).map_err(|e| LarkError::io(path, e))?;
                Ok(if parquet::looks_like(path) {
                    PoolFormat::Parquet
                } else if md.is_dir() {
                    PoolFormat::RsrDir
                } else {
                    PoolFormat::LarkJsonl
                })
            }
            f => Ok(f),
        }
    }
}

impl FromStr for PoolFormat {
    type Err = LarkError;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "auto" => Ok(PoolFormat::Auto),
            "lark-jsonl" | "jsonl" => Ok(PoolFormat::LarkJsonl),
            "rsr-dir" | "rsr" => Ok(PoolFormat::RsrDir),
            "sharegpt" => Ok(PoolFormat::ShareGpt),
            "parquet" => Ok(PoolFormat::Parquet),
            _ => Err(LarkError::input(
                "--format",
                format!("unknown pool format {s:?} (auto, lark-jsonl, rsr-dir, sharegpt, parquet)"),
            )),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadOptions {
    pub format: PoolFormat,
    /// Collect invalid entries as [`Reject`]s instead of failing on the first one.
    pub skip_invalid: bool,
}

impl Default for ReadOptions {
    fn default() -> Self {
        ReadOptions { format: PoolFormat::Auto, skip_invalid: false }
    }
}

/// What a streaming read found besides the records themselves.
#[derive(Debug, Clone, PartialEq)]
pub struct VisitSummary {
    pub format: PoolFormat,
    pub n_records: usize,
    /// Problem ids in order of first appearance.
    pub problems: Vec<i64>,
    pub rejects: Vec<Reject>,
}

/// Where a pool is: one path (a JSONL file, a Parquet file or directory of shards, an RSR tree), or several
/// paths of one format read in the order given, as one pool (`--pool a.parquet b.parquet ...`: a dataset's
/// shards named one by one, or JSONL parts). Duplicate ids across the paths are caught as within one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolSource {
    paths: Vec<PathBuf>,
}

impl PoolSource {
    /// At least one path (an empty list is refused).
    pub fn new(paths: Vec<PathBuf>) -> Result<PoolSource> {
        if paths.is_empty() {
            return Err(LarkError::input("--pool", "no pool path given"));
        }
        Ok(PoolSource { paths })
    }
    pub fn paths(&self) -> &[PathBuf] {
        &self.paths
    }
    /// The paths as messages and reports show them: `a.parquet, b.parquet`.
    pub fn display(&self) -> String {
        self.paths.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
    }
    /// As `run.json` records it: the path (a string) for one path, as before several were possible; an array
    /// of strings for several.
    pub fn to_json(&self) -> serde_json::Value {
        match self.paths.as_slice() {
            [one] => serde_json::Value::String(one.display().to_string()),
            many => many.iter().map(|p| serde_json::Value::String(p.display().to_string())).collect(),
        }
    }
    /// The one format of every path: `format` itself, or `Auto` resolved per path (all must agree).
    pub fn resolve(&self, format: PoolFormat) -> Result<PoolFormat> {
        let first = format.resolve(&self.paths[0])?;
        for p in &self.paths[1..] {
            let f = format.resolve(p)?;
            if f != first {
                return Err(LarkError::input(
                    p.display().to_string(),
                    format!(
                        "the pool's paths have different formats: {} is {}, this one {}; one pool is one format",
                        self.paths[0].display(),
                        first.name(),
                        f.name()
                    ),
                ));
            }
        }
        Ok(first)
    }
}

impl From<&Path> for PoolSource {
    fn from(p: &Path) -> PoolSource {
        PoolSource { paths: vec![p.to_path_buf()] }
    }
}
impl From<&PathBuf> for PoolSource {
    fn from(p: &PathBuf) -> PoolSource {
        PoolSource { paths: vec![p.clone()] }
    }
}
impl From<PathBuf> for PoolSource {
    fn from(p: PathBuf) -> PoolSource {
        PoolSource { paths: vec![p] }
    }
}
impl From<&PoolSource> for PoolSource {
    fn from(s: &PoolSource) -> PoolSource {
        s.clone()
    }
}

/// Stream every valid record of the pool at `source` to `f`, in reading order (path by path).
/// Fails on the first invalid entry unless `opts.skip_invalid`; fails on an empty pool either way.
pub fn visit_pool(
    source: impl Into<PoolSource>,
    opts: &ReadOptions,
    f: impl FnMut(Record) -> Result<()>,
) -> Result<VisitSummary> {
    let source = source.into();
    let format = source.resolve(opts.format)?;
    let mut sink = Sink::new(opts.skip_invalid, f);
    match format {
        // One numbering of id-less rows over every file of every path.
        PoolFormat::Parquet => parquet::read(source.paths(), &mut sink)?,
        _ => {
            for path in source.paths() {
                match format {
                    PoolFormat::LarkJsonl => jsonl::read(path, false, &mut sink)?,
                    PoolFormat::ShareGpt => jsonl::read(path, true, &mut sink)?,
                    PoolFormat::RsrDir => rsr_dir::read(path, &mut sink)?,
                    PoolFormat::Parquet | PoolFormat::Auto => unreachable!("resolved above"),
                }
            }
        }
    }
    sink.finish(&source.display(), format)
}

/// A whole pool in memory, problem-major.
#[derive(Debug, Clone)]
pub struct Pool {
    pub source: PoolSource,
    pub format: PoolFormat,
    /// Grouped by problem (first-appearance order), reading order within a problem.
    pub records: Vec<Record>,
    /// `(problem_id, start, end)`: `records[start..end]` are that problem's candidates.
    pub groups: Vec<(i64, usize, usize)>,
    pub rejects: Vec<Reject>,
    index: HashMap<(i64, i64), usize>,
}

impl Pool {
    /// Each problem's id and its candidates, in order.
    pub fn problems(&self) -> impl Iterator<Item = (i64, &[Record])> + '_ {
        self.groups.iter().map(move |&(pid, s, e)| (pid, &self.records[s..e]))
    }
    pub fn get(&self, problem_id: i64, candidate_id: i64) -> Option<&Record> {
        self.index.get(&(problem_id, candidate_id)).map(|&i| &self.records[i])
    }
    pub fn n_problems(&self) -> usize {
        self.groups.len()
    }
}

/// Read the whole pool at `source` (a path, or several: [`PoolSource`]).
pub fn read_pool(source: impl Into<PoolSource>, opts: &ReadOptions) -> Result<Pool> {
    let source = source.into();
    collect_pool(source.clone(), |f| visit_pool(&source, opts, f))
}

/// A pool given as JSON texts in memory, one record each (`lark score`'s JSONL lines without the file: a
/// library caller's records). `name` stands for the file in errors and in [`Pool::source`]: text i is
/// `name (element i)`. `opts.format`: `Auto` or `LarkJsonl` (`messages`, or ShareGPT `conversations`), or
/// `ShareGpt`.
pub fn read_pool_texts(texts: &[String], name: &str, opts: &ReadOptions) -> Result<Pool> {
    let sharegpt = match opts.format {
        PoolFormat::Auto | PoolFormat::LarkJsonl => false,
        PoolFormat::ShareGpt => true,
        f => return Err(LarkError::input(name, format!("records in memory are JSON objects, not {}", f.name()))),
    };
    let source = PoolSource::new(vec![PathBuf::from(name)])?;
    collect_pool(source, |f| {
        let mut sink = Sink::new(opts.skip_invalid, f);
        jsonl::read_texts(texts, Path::new(name), sharegpt, &mut sink)?;
        let format = if sharegpt { PoolFormat::ShareGpt } else { PoolFormat::LarkJsonl };
        sink.finish(name, format)
    })
}

/// A pool from the records a visit delivers, grouped by problem in first-appearance order.
fn collect_pool(
    source: PoolSource,
    visit: impl FnOnce(&mut dyn FnMut(Record) -> Result<()>) -> Result<VisitSummary>,
) -> Result<Pool> {
    let mut by_problem: HashMap<i64, Vec<Record>> = HashMap::new();
    let summary = visit(&mut |r| {
        by_problem.entry(r.problem_id).or_default().push(r);
        Ok(())
    })?;
    let mut records = Vec::with_capacity(summary.n_records);
    let mut groups = Vec::with_capacity(summary.problems.len());
    for pid in &summary.problems {
        let start = records.len();
        records.extend(by_problem.remove(pid).unwrap_or_default());
        groups.push((*pid, start, records.len()));
    }
    let index = records.iter().enumerate().map(|(i, r)| ((r.problem_id, r.candidate_id), i)).collect();
    Ok(Pool { source, format: summary.format, records, groups, rejects: summary.rejects, index })
}

/// Where readers deliver entries: applies the duplicate check and the strict-or-skip policy.
pub(super) struct Sink<F> {
    skip_invalid: bool,
    f: F,
    seen: HashMap<(i64, i64), Origin>,
    problem_seen: std::collections::HashSet<i64>,
    problems: Vec<i64>,
    rejects: Vec<Reject>,
    n_records: usize,
}

impl<F: FnMut(Record) -> Result<()>> Sink<F> {
    fn new(skip_invalid: bool, f: F) -> Self {
        Sink {
            skip_invalid,
            f,
            seen: HashMap::new(),
            problem_seen: Default::default(),
            problems: Vec::new(),
            rejects: Vec::new(),
            n_records: 0,
        }
    }

    /// The summary of a finished read; an error when no record was valid (an empty pool).
    fn finish(self, name: &str, format: PoolFormat) -> Result<VisitSummary> {
        if self.n_records == 0 {
            let why = if self.rejects.is_empty() {
                "empty pool: no records".to_string()
            } else {
                format!("empty pool: all {} entries were invalid (see rejects)", self.rejects.len())
            };
            return Err(LarkError::input(name, why));
        }
        Ok(VisitSummary { format, n_records: self.n_records, problems: self.problems, rejects: self.rejects })
    }

    /// An entry that failed validation: an error, or a reject under `skip_invalid`.
    pub(super) fn invalid(&mut self, origin: &Origin, invalid: Invalid) -> Result<()> {
        if self.skip_invalid {
            self.rejects.push(Reject::new(origin, invalid));
            Ok(())
        } else {
            Err(invalid.at(origin))
        }
    }

    /// A record that passed its format's checks.
    pub(super) fn record(&mut self, r: Record) -> Result<()> {
        let key = (r.problem_id, r.candidate_id);
        if let Some(first) = self.seen.get(&key) {
            let inv = Invalid::new(
                "candidate_id",
                format!(
                    "duplicate (problem_id {}, candidate_id {}): first seen at {first}",
                    r.problem_id, r.candidate_id
                ),
            );
            let origin = r.origin.clone();
            return self.invalid(&origin, inv);
        }
        self.seen.insert(key, r.origin.clone());
        if self.problem_seen.insert(r.problem_id) {
            self.problems.push(r.problem_id);
        }
        self.n_records += 1;
        (self.f)(r)
    }
}
