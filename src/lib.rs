//! exemplar: embed solved math problems, index them, and retrieve few-shot examples for a
//! reasoning model. One module per pipeline stage (see docs/architecture.md):
//!
//! - [`corpus`] reads records; [`encoder`] turns texts into vectors; [`extract`] writes a
//!   corpus's vectors to Parquet shards; [`index`] builds and searches the HNSW index;
//!   [`retrieval_eval`] scores neighbours; [`plot`] draws maps; [`solve`] asks a model.
//! - [`fsio`], [`arrow_json`] and [`progress`] are the shared mechanisms (files, Arrow cells,
//!   progress reports). [`cli`] is the command line on top; the library never needs it.

pub mod arrow_json;
pub mod cli;
pub mod corpus;
pub mod encoder;
pub mod extract;
pub mod fsio;
pub mod index;
pub mod plot;
pub mod progress;
pub mod retrieval_eval;
pub mod solve;

/// `FromStr`, `Display`, `NAMES` and `name()` for a fieldless enum spelt as lowercase words on
/// the command line and in files: one definition of each spelling.
#[macro_export]
macro_rules! named_enum {
    ($ty:ident { $($variant:ident => $name:literal),+ $(,)? }) => {
        impl $ty {
            pub const NAMES: &'static [&'static str] = &[$($name),+];
            pub fn name(self) -> &'static str {
                match self {
                    $($ty::$variant => $name,)+
                }
            }
        }
        impl std::str::FromStr for $ty {
            type Err = anyhow::Error;
            fn from_str(s: &str) -> anyhow::Result<Self> {
                match s.trim() {
                    $($name => Ok($ty::$variant),)+
                    other => anyhow::bail!(
                        "{other:?}: expected one of {}",
                        Self::NAMES.join(", ")
                    ),
                }
            }
        }
        impl std::fmt::Display for $ty {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.name())
            }
        }
    };
}
