//! exemplar: embed solved math problems, index them, and retrieve few-shot examples for a
//! reasoning model. One module per pipeline stage; see README.md for the architecture.

pub mod cli;
pub mod corpus;
pub mod encoder;
pub mod extract;
pub mod index;
pub mod index_cli;
pub mod output;
pub mod plot;
pub mod retrieval_eval;
pub mod solve;
