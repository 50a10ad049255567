use clap::Parser;
use exemplar::cli::exit_on_error;
use exemplar::cli::solve::{run, SolveArgs};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    exit_on_error(run(SolveArgs::parse()));
}
