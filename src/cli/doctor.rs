//! `lark doctor`: what this binary and this machine offer for the CUDA backend. Exits 0 whether or not a GPU is
//! present (it reports; `lark selftest --device cuda` is the check that fails without one).

use crate::backend::cuda::{device, kernels};
use crate::error::Result;

#[derive(clap::Args)]
pub struct Args {
    /// Also list ptxas resource usage (registers, stack, spills, shared memory) of every kernel.
    #[arg(long)]
    pub kernels: bool,
}

pub fn run(a: Args) -> Result<()> {
    println!("lark {}", env!("CARGO_PKG_VERSION"));
    println!("kernels        {}", kernels::describe());
    if kernels::COMPILED {
        println!("kernel archs   {}", kernels::ARCHS.join(", "));
        println!("kernel files   {}", kernels::SOURCES.join(", "));
    }
    let cublas = match device::cublas_version() {
        Some(v) => format!("found (libcublas {v})"),
        None => "not found (libcublas.so.13 could not be loaded)".into(),
    };
    match device::driver_info() {
        Err(e) => {
            println!("driver         {e}");
            println!("cuBLAS         {cublas}");
            println!("devices        none");
            println!("backend        cpu only (no CUDA driver found)");
        }
        Ok(info) => {
            println!("driver         supports CUDA {}", device::version_string(info.cuda_version));
            println!("cuBLAS         {cublas}");
            if info.devices.is_empty() {
                println!("devices        none (the driver reports 0 devices)");
            }
            for d in &info.devices {
                let runs =
                    if kernels::supports(d.cc.0, d.cc.1) { "kernels run here" } else { "NO kernels for this arch" };
                println!("device         {} — {runs}", d.summary());
            }
            match device::check_usable(0) {
                Ok(d) => println!("backend        cuda usable ({})", d.summary()),
                Err(why) => println!("backend        cpu only ({why})"),
            }
            if info.cuda_version < 13000 && kernels::COMPILED {
                println!(
                    "warning        the kernels were built with {}; a driver for CUDA {} may reject them",
                    kernels::NVCC_VERSION,
                    device::version_string(info.cuda_version)
                );
            }
        }
    }
    if a.kernels {
        println!("entry points   {}", kernels::ENTRY_POINTS.join(", "));
        if kernels::RESOURCE_USAGE.is_empty() {
            println!("resource usage (none: kernels not compiled)");
        } else {
            println!("resource usage (ptxas):");
            for l in kernels::RESOURCE_USAGE.lines() {
                println!("  {l}");
            }
        }
    }
    Ok(())
}
