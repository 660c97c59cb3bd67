//! `lark report --run DIR --out report.html`: the run's scores and selection as one self-contained HTML page.

use crate::error::Result;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// A run directory: scores.jsonl, and selection.jsonl and run.json when present.
    #[arg(long)]
    pub run: PathBuf,
    /// The HTML file to write.
    #[arg(long)]
    pub out: PathBuf,
}

pub fn run(a: Args) -> Result<()> {
    crate::report::write_report_for_dir(&a.run, &a.out)?;
    eprintln!("lark: wrote {}", a.out.display());
    Ok(())
}
