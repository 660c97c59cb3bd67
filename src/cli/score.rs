//! `lark score`: a pool in, every trajectory scored, `scores.jsonl` + `scores.json` + `run.json` out. The job
//! is the library's [`ScoreJob`]; its fields are this command's options.

use crate::error::Result;
use crate::run::{Interrupt, JobOutput, ScoreJob, StderrHooks};

pub type ScoreArgs = ScoreJob;

pub fn run(a: ScoreArgs) -> Result<()> {
    let done = a.run(&mut StderrHooks::default(), Some(Interrupt::on_signals()?))?;
    let output = &done.output;
    eprintln!(
        "lark: wrote {} ({} rows, {:.0} tokens/s{})",
        a.out.join("scores.jsonl").display(),
        output.rows.len(),
        output.tokens_computed() as f64 / output.seconds.max(1e-9),
        resumed_note(output)
    );
    Ok(())
}

/// ", N of M chunks resumed from the journal" when some were.
pub fn resumed_note(o: &JobOutput) -> String {
    if o.chunks_resumed == 0 {
        return String::new();
    }
    format!(", {} of {} chunks ({} tokens) resumed from the journal", o.chunks_resumed, o.chunks, o.tokens_resumed)
}
