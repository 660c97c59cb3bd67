//! Command-line interface: argument parsing and wiring only. One file per command.

use clap::{Parser, Subcommand};

pub mod bench;
mod convert_gguf;
mod doctor;
pub mod gstar;
mod inspect;
mod merge;
mod report;
mod run_job;
pub mod score;
pub mod select;
mod selftest;

#[derive(Parser)]
#[command(name = "lark", version, about = "Learnability-grounded selection of reasoning trajectories")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Show a model directory's architecture, sizes, dtype and rope settings.
    Inspect(inspect::Args),
    /// Convert a llama-architecture GGUF file into an HF-style model directory.
    ConvertGguf(convert_gguf::Args),
    /// Report the CUDA driver, devices, cuBLAS and the embedded kernels (exits 0 without a GPU).
    Doctor(doctor::Args),
    /// Check every CUDA kernel and whole models against the CPU reference (needs a GPU).
    Selftest(selftest::Args),
    /// Score a candidate pool with the student: scores.jsonl, scores.json, run.json.
    Score(score::ScoreArgs),
    /// Select and weight trajectories per problem from scores.jsonl: selection.jsonl, train.jsonl.
    Select(select::Args),
    /// The main job: score, select (χ²-B), write everything and print a summary.
    Run(run_job::Args),
    /// Combine the output directories of `lark score --shard I/N` into one unsharded result.
    Merge(merge::Args),
    /// Write a run's scores and selection as one self-contained HTML page with plots.
    Report(report::Args),
    /// The exact directional derivative g* (backward passes on the CPU) beside ĝ, and the paper's Fig. 6 checks:
    /// gstar.jsonl, gstar_summary.json, report.html.
    Gstar(gstar::Args),
    /// Scoring throughput on synthetic or given sequences (tokens/s, TFLOP/s, peak memory).
    Bench(bench::Args),
}

/// Parse arguments, run the command, print any error, return the process exit code.
pub fn main() -> i32 {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Inspect(a) => inspect::run(a),
        Command::ConvertGguf(a) => convert_gguf::run(a),
        Command::Doctor(a) => doctor::run(a),
        Command::Selftest(a) => selftest::run(a),
        Command::Bench(a) => bench::run(a),
        Command::Score(a) => score::run(a),
        Command::Select(a) => select::run(a),
        Command::Run(a) => run_job::run(a),
        Command::Merge(a) => merge::run(a),
        Command::Report(a) => report::run(a),
        Command::Gstar(a) => gstar::run(a),
    };
    match result {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("error: {e}");
            e.exit_code()
        }
    }
}
