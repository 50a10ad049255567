//! The `exemplar` Python package's extension (`exemplar._exemplar`): the library's encoder,
//! index and per-problem solver behind Python classes. Options go through the command line's
//! own clap parsers (src/cli), so keyword arguments have the flags' names, defaults and
//! messages; work runs without the GIL; progress goes to Python's `logging`.

use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;

mod args;
mod encoder;
mod index;
mod json;
mod logging;
mod solver;

#[pymodule]
fn _exemplar(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<encoder::PyEncoder>()?;
    m.add_class::<index::PyIndex>()?;
    m.add_class::<index::Hit>()?;
    m.add_class::<solver::PySolver>()?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}

/// A failure of the work itself (files, models, the server): RuntimeError with the whole
/// chain, as the command line prints it after `error: `.
pub(crate) fn runtime_error(e: anyhow::Error) -> PyErr {
    PyRuntimeError::new_err(format!("{e:#}"))
}

/// A bad argument: ValueError with the command line's message.
pub(crate) fn value_error(e: impl std::fmt::Display) -> PyErr {
    PyValueError::new_err(format!("{e:#}"))
}
