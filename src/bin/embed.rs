use clap::Parser;
use exemplar::cli::{exit_on_error, run_embed, EmbedCli};

// candle allocates fresh buffers for every intermediate tensor; glibc malloc returns large ones
// to the OS each time (mmap/munmap + page faults: a third of the run time in system calls).
// mimalloc keeps and reuses them.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    exit_on_error(run_embed(EmbedCli::parse()));
}
