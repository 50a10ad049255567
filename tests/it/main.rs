//! The integration tests, in one binary (one link of candle and arrow instead of one per suite):
//! a module per suite, and `util` with every helper they share. Each test still runs in its own
//! process under nextest. Run one suite with `cargo nextest run --release -E 'test(/^index::/)'`.

mod util;

mod decoders;
mod encode_cli;
mod encoder_parity;
mod eval_retrieval;
mod extract;
mod index;
mod ingest;
mod llama_server;
mod long_inputs;
mod memory;
mod model_config;
mod plot;
mod plot_html;
mod retrieve_tool;
mod solve;
mod solve_failures;
mod solve_loop;
mod solve_tool_calls;
mod solve_tools;
mod submission_parquet;
