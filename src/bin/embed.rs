use clap::Parser;
use exemplar::cli::{exit_on_error, run, EmbedCli};

fn main() {
    exit_on_error(run(EmbedCli::parse()));
}
