//! `lark_select._native`: the Python face of the `lark` library. Everything here is argument conversion;
//! the numbers come from the same library calls the CLI and the C ABI make. Records, rows and selections
//! cross the boundary as JSON texts (what the CLI reads and writes), so a field means the same everywhere.
//!
//! Long calls (scoring) run on a worker thread while the calling thread waits with the GIL released, looking
//! at Python's signals every [`POLL`]: Ctrl-C raises the job's [`Interrupt`], waits for it to stop cleanly
//! (finished chunks journaled, nothing final written), and raises KeyboardInterrupt.

use lark::error::LarkError;
use lark::io::{read_pool_texts, PoolFormat, ReadOptions};
use lark::run::{Interrupt, JobHooks, Progress, QuietHooks, ScoreJob, StderrHooks};
use lark::score::BrierMode;
use lark::select::{select_rows, Selection, Weighting};
use lark::student::{ChatScore, Student, StudentSettings};
use pyo3::create_exception;
use pyo3::exceptions::{PyException, PyKeyboardInterrupt};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict};
use std::sync::Mutex;
use std::time::Duration;

create_exception!(_native, LarkError_, PyException, "Base class of lark's errors.");
create_exception!(_native, InputError, LarkError_, "Bad input: a record, a file, an option (the message names it).");
create_exception!(_native, ModelError, InputError, "A model directory that cannot be opened.");
create_exception!(
    _native,
    UnsupportedError,
    LarkError_,
    "Something lark does not support (an architecture, a template)."
);
create_exception!(_native, BackendError, LarkError_, "The backend (CPU or CUDA) failed or is unavailable.");

/// How often a waiting call looks at Python's signals.
const POLL: Duration = Duration::from_millis(100);

/// The Python exception for a library error (the CLI's message, with its advice in Python's terms).
fn to_py(e: LarkError) -> PyErr {
    let msg = e.to_string();
    match e {
        LarkError::Io { .. } | LarkError::Input { .. } => InputError::new_err(msg),
        LarkError::Unsupported(_) => UnsupportedError::new_err(msg),
        LarkError::Backend(_) | LarkError::OutOfMemory { .. } => BackendError::new_err(msg),
        LarkError::Interrupted { .. } => PyKeyboardInterrupt::new_err(
            msg.replace("interrupted by SIGINT", "interrupted")
                .replace("rerun with --resume", "rerun with resume=True"),
        ),
        LarkError::Other(_) => LarkError_::new_err(msg),
    }
}

fn model_error(e: LarkError) -> PyErr {
    match e {
        e @ (LarkError::Io { .. } | LarkError::Input { .. }) => ModelError::new_err(e.to_string()),
        e => to_py(e),
    }
}

fn parse<T: std::str::FromStr>(what: &str, s: &str) -> PyResult<T>
where
    T::Err: std::fmt::Display,
{
    s.parse().map_err(|e: T::Err| InputError::new_err(format!("{what}: {e}")))
}

/// Run `job` on a worker thread, the GIL released, until it ends or Python has a pending signal (Ctrl-C):
/// then `interrupt` is raised, the job is waited for (it stops within a batch), and the signal's exception
/// (KeyboardInterrupt) is returned. A job that was interrupted returns the signal's exception too.
fn run_interruptible<T: Send>(
    py: Python<'_>,
    interrupt: &Interrupt,
    job: impl FnOnce() -> lark::Result<T> + Send,
) -> PyResult<T> {
    // The worker sets `done` and notifies; the waiter wakes at least every POLL to look at signals.
    let done = (Mutex::new(false), std::sync::Condvar::new());
    std::thread::scope(|scope| {
        let done = &done;
        let handle = scope.spawn(move || {
            let r = job();
            *done.0.lock().unwrap_or_else(|e| e.into_inner()) = true;
            done.1.notify_all();
            r
        });
        let mut signal: Option<PyErr> = None;
        loop {
            let finished = py.allow_threads(|| {
                let guard = done.0.lock().unwrap_or_else(|e| e.into_inner());
                let (guard, _) = done.1.wait_timeout_while(guard, POLL, |d| !*d).unwrap_or_else(|e| e.into_inner());
                *guard
            });
            if finished {
                break;
            }
            if let Err(e) = py.check_signals() {
                interrupt.raise(2);
                signal = Some(e);
                break;
            }
        }
        let result = py.allow_threads(|| handle.join());
        let result = match result {
            Ok(r) => r,
            Err(_) => return Err(LarkError_::new_err("internal error: the scoring thread panicked")),
        };
        match (result, signal) {
            (Ok(v), None) => Ok(v),
            // Finished before it saw the interrupt: the work is done, but the user asked to stop.
            (Ok(_), Some(e)) => Err(e),
            (Err(e), _) => Err(to_py(e)),
        }
    })
}

/// Progress for a job: nothing, stderr as the CLI draws it, or a Python callable taking a dict. A callable
/// that raises stops the job; its exception is re-raised when the job has stopped.
enum PyHooks {
    Quiet(QuietHooks),
    Stderr(StderrHooks),
    Callback { f: PyObject, interrupt: Interrupt, error: Option<PyErr> },
}

impl PyHooks {
    fn new(progress: Option<&Bound<'_, PyAny>>, interrupt: &Interrupt) -> PyResult<PyHooks> {
        Ok(match progress {
            None => PyHooks::Quiet(QuietHooks),
            Some(p) if p.is_instance_of::<pyo3::types::PyBool>() => {
                if p.extract::<bool>()? {
                    PyHooks::Stderr(StderrHooks::default())
                } else {
                    PyHooks::Quiet(QuietHooks)
                }
            }
            Some(p) if p.is_callable() => {
                PyHooks::Callback { f: p.clone().unbind(), interrupt: interrupt.clone(), error: None }
            }
            Some(_) => return Err(InputError::new_err("progress: expected True, False, None or a callable")),
        })
    }

    fn take_error(&mut self) -> Option<PyErr> {
        match self {
            PyHooks::Callback { error, .. } => error.take(),
            _ => None,
        }
    }
}

impl JobHooks for PyHooks {
    fn progress(&mut self, p: &Progress) {
        match self {
            PyHooks::Quiet(h) => h.progress(p),
            PyHooks::Stderr(h) => h.progress(p),
            PyHooks::Callback { f, interrupt, error } => Python::with_gil(|py| {
                let d = PyDict::new(py);
                let r = (|| -> PyResult<()> {
                    d.set_item("trajectories_done", p.trajectories_done)?;
                    d.set_item("trajectories_total", p.trajectories_total)?;
                    d.set_item("problems_done", p.problems_done)?;
                    d.set_item("problems_total", p.problems_total)?;
                    d.set_item("tokens_done", p.tokens_done)?;
                    d.set_item("tokens_total", p.tokens_total)?;
                    d.set_item("totals_exact", p.totals_exact)?;
                    d.set_item("tokens_per_s", p.tokens_this_run as f64 / p.elapsed_s.max(1e-9))?;
                    d.set_item("elapsed_s", p.elapsed_s)?;
                    f.call1(py, (d,))?;
                    Ok(())
                })();
                if let Err(e) = r {
                    interrupt.raise(2);
                    error.get_or_insert(e);
                }
            }),
        }
    }
    fn note(&mut self, line: &str) {
        match self {
            PyHooks::Stderr(h) => h.note(line),
            _ => eprintln!("{line}"),
        }
    }
    fn done(&mut self) {
        if let PyHooks::Stderr(h) = self {
            h.done()
        }
    }
}

/// Run a whole `lark score` job from a JSON object of its options; returns `run.json` as JSON text.
#[pyfunction]
#[pyo3(signature = (job_json, progress=None))]
fn score_job(py: Python<'_>, job_json: &str, progress: Option<&Bound<'_, PyAny>>) -> PyResult<String> {
    let value: serde_json::Value =
        serde_json::from_str(job_json).map_err(|e| InputError::new_err(format!("job: invalid JSON: {e}")))?;
    let job = ScoreJob::from_json(&value).map_err(to_py)?;
    let interrupt = Interrupt::default();
    let mut hooks = PyHooks::new(progress, &interrupt)?;
    let result = {
        let hooks = &mut hooks;
        let interrupt2 = interrupt.clone();
        run_interruptible(py, &interrupt, move || job.run(hooks, Some(interrupt2)))
    };
    if let Some(e) = hooks.take_error() {
        return Err(e);
    }
    let done = result?;
    serde_json::to_string(&done.info).map_err(|e| LarkError_::new_err(e.to_string()))
}

/// A student model on a device, scoring records in memory.
#[pyclass(frozen, module = "lark_select._native")]
struct NativeStudent {
    student: Student,
}

#[pymethods]
impl NativeStudent {
    #[new]
    #[pyo3(signature = (model, device, precision, max_len, span, turns, brier, rank_clip))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        model: std::path::PathBuf,
        device: &str,
        precision: Option<&str>,
        max_len: usize,
        span: &str,
        turns: &str,
        brier: &str,
        rank_clip: u32,
    ) -> PyResult<Self> {
        let settings = StudentSettings {
            span: parse("span", span)?,
            turns: parse("turns", turns)?,
            max_len,
            brier: lark::run::parse_brier(brier).map_err(to_py)?,
            rank_clip,
            precision: precision.map(|p| parse("precision", p)).transpose()?,
        };
        if max_len == 0 {
            return Err(InputError::new_err("max_len: must be at least 1"));
        }
        let device: lark::backend::DeviceChoice = parse("device", device)?;
        let student = py.allow_threads(|| Student::open(&model, &device, settings)).map_err(model_error)?;
        Ok(NativeStudent { student })
    }

    #[getter]
    fn device(&self) -> String {
        self.student.device().to_string()
    }

    #[getter]
    fn settings(&self) -> String {
        let s = self.student.settings();
        let brier = match s.brier {
            BrierMode::Exact => "exact".to_string(),
            BrierMode::TopK(k) => format!("topk:{k}"),
        };
        serde_json::json!({
            "model": self.student.dir(), "device": self.student.device(), "precision": s.precision.map(|p| p.name()),
            "span": s.span.to_string(), "turns": s.turns.to_string(), "max_len": s.max_len, "brier": brier,
            "rank_clip": s.rank_clip,
        })
        .to_string()
    }

    /// Score records (JSON texts, one pool record each) as `lark score` scores a pool: the rows of
    /// `scores.jsonl`, as JSON texts, problem-major.
    #[pyo3(signature = (records, name, format, skip_invalid, scorers, local_m, seed, progress=None))]
    #[allow(clippy::too_many_arguments)]
    fn score_records(
        &self,
        py: Python<'_>,
        records: Vec<String>,
        name: &str,
        format: &str,
        skip_invalid: bool,
        scorers: &str,
        local_m: usize,
        seed: u64,
        progress: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<(Vec<String>, Vec<String>)> {
        let format: PoolFormat = parse("format", format)?;
        let interrupt = Interrupt::default();
        let mut hooks = PyHooks::new(progress, &interrupt)?;
        let result = {
            let hooks = &mut hooks;
            let interrupt2 = interrupt.clone();
            let student = &self.student;
            run_interruptible(py, &interrupt, move || {
                let pool = read_pool_texts(&records, name, &ReadOptions { format, skip_invalid })?;
                let out = student.score_pool(&pool, scorers, local_m, seed, Some(interrupt2), |p| hooks.progress(p));
                hooks.done();
                let rows = out?.rows.iter().map(|r| serde_json::to_string(r).expect("serialisable")).collect();
                let rejects = pool.rejects.iter().map(|r| serde_json::to_string(r).expect("serialisable")).collect();
                Ok((rows, rejects))
            })
        };
        if let Some(e) = hooks.take_error() {
            return Err(e);
        }
        result
    }

    /// Per-token statistics of chats (JSON texts: a messages array or a record): per chat, None-free dicts
    /// with the skip reason, or the arrays as little-endian bytes (float32; rank uint32).
    fn token_stats<'py>(&self, py: Python<'py>, chats: Vec<String>) -> PyResult<Vec<Bound<'py, PyDict>>> {
        let interrupt = Interrupt::default();
        let student = &self.student;
        let scores = run_interruptible(py, &interrupt, move || student.score_chat_texts(&chats, "chats"))?;
        scores
            .into_iter()
            .map(|c| {
                let d = PyDict::new(py);
                match c {
                    ChatScore::Skipped { reason, truncated } => {
                        d.set_item("skipped", reason)?;
                        d.set_item("truncated", truncated)?;
                    }
                    ChatScore::Scored { tokens, truncated, n_turns, .. } => {
                        let f32s = |f: fn(&lark::stats::TokenStats) -> f32| -> Vec<u8> {
                            tokens.iter().flat_map(|t| f(t).to_le_bytes()).collect()
                        };
                        d.set_item("skipped", py.None())?;
                        d.set_item("truncated", truncated)?;
                        d.set_item("n_turns", n_turns)?;
                        d.set_item("logprob", PyBytes::new(py, &f32s(|t| t.logprob)))?;
                        d.set_item("sum_p2", PyBytes::new(py, &f32s(|t| t.sum_p2)))?;
                        d.set_item("entropy", PyBytes::new(py, &f32s(|t| t.entropy)))?;
                        d.set_item("lse", PyBytes::new(py, &f32s(|t| t.lse)))?;
                        let ranks: Vec<u8> = tokens.iter().flat_map(|t| t.rank.to_le_bytes()).collect();
                        d.set_item("rank", PyBytes::new(py, &ranks))?;
                    }
                }
                Ok(d)
            })
            .collect()
    }
}

/// ĝ (paper Eq. 7, exact form) from per-candidate mean loss ℓ_k and mean Brier b_k of one problem.
#[pyfunction]
fn g_hat(l: Vec<f64>, brier_mean: Vec<f64>) -> PyResult<Vec<f64>> {
    if l.len() != brier_mean.len() {
        return Err(InputError::new_err(format!("g_hat: {} losses but {} Brier means", l.len(), brier_mean.len())));
    }
    Ok(lark::score::lark::g_hat_exact(&l, &brier_mean))
}

fn weighting(method: &str, temperature: Option<f64>) -> PyResult<Weighting> {
    Weighting::parse(method, temperature).map_err(|e| {
        InputError::new_err(
            e.to_string().replace("--weighting: ", "weighting: ").replace("--temperature: ", "temperature: "),
        )
    })
}

/// Weights of one problem's keys (higher is better) under a rule: one per key, 0 for the unselected.
#[pyfunction]
#[pyo3(signature = (keys, budget, method, temperature=None))]
fn weights(keys: Vec<f64>, budget: usize, method: &str, temperature: Option<f64>) -> PyResult<Vec<f64>> {
    if budget == 0 {
        return Err(InputError::new_err("budget: must be at least 1"));
    }
    let w = match weighting(method, temperature)? {
        Weighting::Chi2 => lark::select::weights::chi2(&keys, budget),
        Weighting::Uniform => lark::select::weights::uniform(&keys, budget),
        Weighting::Proportional => lark::select::weights::proportional(&keys, budget),
        Weighting::Softmax { temperature } => lark::select::weights::softmax(&keys, budget, temperature),
    };
    let mut out = vec![0.0; keys.len()];
    for (i, x) in w.selected {
        out[i] = x;
    }
    Ok(out)
}

/// `lark select` over rows of `scores.jsonl` (JSON texts): one selection per problem, as JSON texts.
#[pyfunction]
#[pyo3(signature = (rows, by, budget, method, temperature=None))]
fn select(rows: Vec<String>, by: &str, budget: usize, method: &str, temperature: Option<f64>) -> PyResult<Vec<String>> {
    let rows: Vec<lark::score::ScoreRow> = rows
        .iter()
        .enumerate()
        .map(|(i, r)| serde_json::from_str(r).map_err(|e| InputError::new_err(format!("rows[{i}]: {e}"))))
        .collect::<PyResult<_>>()?;
    let sel = select_rows(&rows, by, budget, weighting(method, temperature)?)
        .map_err(|e| InputError::new_err(e.to_string().replace("--by: ", "by: ").replace("--budget: ", "budget: ")))?;
    Ok(sel.iter().map(|s| serde_json::to_string(s).expect("serialisable")).collect())
}

fn selections(texts: &[String]) -> PyResult<Vec<Selection>> {
    texts
        .iter()
        .enumerate()
        .map(|(i, s)| serde_json::from_str(s).map_err(|e| InputError::new_err(format!("selections[{i}]: {e}"))))
        .collect()
}

/// `train.jsonl`'s lines (JSON texts) for selections over records in memory (JSON texts).
#[pyfunction]
fn train_lines(
    selection_texts: Vec<String>,
    records: Vec<String>,
    format: &str,
    drop_zero_weight: bool,
) -> PyResult<Vec<String>> {
    let sel = selections(&selection_texts)?;
    let format: PoolFormat = parse("format", format)?;
    let pool = read_pool_texts(&records, "records", &ReadOptions { format, skip_invalid: true }).map_err(to_py)?;
    lark::export::train_lines(&sel, |p, c| pool.get(p, c), drop_zero_weight, "records").map_err(to_py)
}

/// `selection.jsonl` and `train.jsonl` into `out` for selections over the pool at `pool` (paths); returns the
/// number of training lines.
#[pyfunction]
fn write_selection(
    selection_texts: Vec<String>,
    pool: Vec<std::path::PathBuf>,
    format: &str,
    out: std::path::PathBuf,
    drop_zero_weight: bool,
) -> PyResult<usize> {
    let sel = selections(&selection_texts)?;
    let format: PoolFormat = parse("format", format)?;
    let source = lark::io::PoolSource::new(pool).map_err(to_py)?;
    lark::export::write_selection(&sel, &source, format, &out, drop_zero_weight).map_err(to_py)
}

/// A small random-weight Llama with the tokenizer files of `tokenizer_dir` (lark's own tests and examples:
/// the text path is real, scoring a pool takes seconds). The model `tests/common/student.rs` writes.
#[pyfunction]
fn _write_test_student(dir: std::path::PathBuf, tokenizer_dir: std::path::PathBuf) -> PyResult<()> {
    use lark::model::random::{tiny_config, write_random_model};
    std::fs::create_dir_all(&dir).map_err(|e| to_py(LarkError::io(&dir, e)))?;
    let mut cfg = tiny_config(lark::model::Architecture::Llama);
    cfg.vocab_size = 49152;
    write_random_model(&dir, &cfg, lark::model::StoredDtype::BF16, 5).map_err(to_py)?;
    for f in ["tokenizer.json", "tokenizer_config.json"] {
        let from = tokenizer_dir.join(f);
        std::fs::copy(&from, dir.join(f)).map_err(|e| to_py(LarkError::io(&from, e)))?;
    }
    Ok(())
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add("LarkError", py.get_type::<LarkError_>())?;
    m.add("InputError", py.get_type::<InputError>())?;
    m.add("ModelError", py.get_type::<ModelError>())?;
    m.add("UnsupportedError", py.get_type::<UnsupportedError>())?;
    m.add("BackendError", py.get_type::<BackendError>())?;
    m.add_class::<NativeStudent>()?;
    m.add_function(wrap_pyfunction!(score_job, m)?)?;
    m.add_function(wrap_pyfunction!(g_hat, m)?)?;
    m.add_function(wrap_pyfunction!(weights, m)?)?;
    m.add_function(wrap_pyfunction!(select, m)?)?;
    m.add_function(wrap_pyfunction!(train_lines, m)?)?;
    m.add_function(wrap_pyfunction!(write_selection, m)?)?;
    m.add_function(wrap_pyfunction!(_write_test_student, m)?)?;
    Ok(())
}
