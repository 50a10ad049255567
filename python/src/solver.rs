//! `exemplar.Solver`: `solve`'s whole per-problem loop (retrieval, sampling, tools, vote, the
//! time budget carried from call to call, traces) one problem per call, through
//! [`exemplar::solve::solver::Solver`]. Options are `solve`'s flags, parsed by its own parser.

use clap::CommandFactory;
use exemplar::cli::solve::SolveArgs;
use exemplar::solve::solver::{Solved, Solver};
use exemplar::solve::Input;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};
use std::sync::{Arc, Mutex};

use crate::logging::LogProgress;
use crate::{args, runtime_error, value_error};

/// `solve` flags a Solver has no use for: it takes problems one call at a time, always answers,
/// with one setting, and reports through `logging`.
const REFUSED: &[&str] = &[
    "input",
    "serve",
    "compare_rag",
    "eval",
    "dry_run",
    "quiet",
    "help",
    "version",
];

#[pyclass(name = "Solver", module = "exemplar", frozen)]
pub struct PySolver {
    /// None once closed.
    inner: Mutex<Option<Solver>>,
}

#[pymethods]
impl PySolver {
    /// Load the index and its model, reach (or `launch=`) the server, and read which problems
    /// the traces already answer. Keyword options are `solve`'s flags with underscores
    /// (`samples=8`, `time_budget="5h"`, `tools="python"`, `rag="k=4"`, `traces=...`), with
    /// its defaults; a bad value raises ValueError with `solve`'s message.
    #[new]
    #[pyo3(signature = (index=None, endpoint=None, model=None, **options))]
    fn new(
        py: Python<'_>,
        index: Option<&Bound<'_, PyAny>>,
        endpoint: Option<&Bound<'_, PyAny>>,
        model: Option<&Bound<'_, PyAny>>,
        options: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<Self> {
        let mut words = vec!["--serve".to_string()];
        for (flag, v) in [("index", index), ("endpoint", endpoint), ("model", model)] {
            if let Some(v) = v.filter(|v| !v.is_none()) {
                words.push(format!("--{flag}={}", args::text(v)?));
            }
        }
        let cmd = SolveArgs::command();
        words.extend(args::words(&cmd, "Solver", options, REFUSED)?);
        let a: SolveArgs = args::parse("solve", words)?;
        let mut cfg = exemplar::cli::solve::config(&a).map_err(value_error)?;
        cfg.input = Input::Calls;
        let solver = py
            .detach(|| Solver::open(cfg, Arc::new(LogProgress)))
            .map_err(runtime_error)?;
        Ok(Self {
            inner: Mutex::new(Some(solver)),
        })
    }

    /// Answer one problem within its share of the time left and append its trace line.
    fn solve(&self, py: Python<'_>, id: &str, problem: &str) -> PyResult<u64> {
        Ok(self.solve_one(py, id, problem)?.answer)
    }

    /// As `solve`, with how the answer came: a dict of answer, fallback (no sample gave a
    /// valid answer), resumed (answered from earlier traces) and seconds.
    fn solve_details<'py>(
        &self,
        py: Python<'py>,
        id: &str,
        problem: &str,
    ) -> PyResult<Bound<'py, PyDict>> {
        let s = self.solve_one(py, id, problem)?;
        let d = PyDict::new(py);
        d.set_item("answer", s.answer)?;
        d.set_item("fallback", s.fallback)?;
        d.set_item("resumed", s.resumed)?;
        d.set_item("seconds", s.seconds)?;
        Ok(d)
    }

    /// The answer `solve` gives when nothing valid came back (`fallback=`).
    #[getter]
    fn fallback(&self, py: Python<'_>) -> PyResult<u64> {
        self.with(py, |s| Ok(s.fallback()))
    }

    /// This session's name in the traces.
    #[getter]
    fn session(&self, py: Python<'_>) -> PyResult<String> {
        self.with(py, |s| Ok(s.session().to_string()))
    }

    /// Seconds spent loading the embedding model and the index.
    #[getter]
    fn load_seconds(&self, py: Python<'_>) -> PyResult<f64> {
        self.with(py, |s| Ok(s.load_seconds()))
    }

    /// Let go of the model, the index and the sandbox, and stop a launched server. Calling it
    /// again does nothing.
    fn close(&self, py: Python<'_>) -> PyResult<()> {
        py.detach(|| {
            let taken = self.inner.lock().map(|mut s| s.take());
            drop(taken);
        });
        Ok(())
    }

    #[getter]
    fn closed(&self, py: Python<'_>) -> bool {
        py.detach(|| self.inner.lock().map_or(true, |s| s.is_none()))
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    #[pyo3(signature = (*_exc))]
    fn __exit__(&self, py: Python<'_>, _exc: &Bound<'_, PyTuple>) -> PyResult<bool> {
        self.close(py)?;
        Ok(false)
    }

    fn __repr__(&self, py: Python<'_>) -> String {
        match self.session(py) {
            Ok(s) => format!("exemplar.Solver(session {s:?})"),
            Err(_) => "exemplar.Solver(closed)".to_string(),
        }
    }
}

impl PySolver {
    fn solve_one(&self, py: Python<'_>, id: &str, problem: &str) -> PyResult<Solved> {
        self.with(py, |s| s.solve(id, problem).map_err(runtime_error))
    }

    /// Run `f` on the open solver without the GIL (the lock is taken there too, so another
    /// thread's call waits without blocking Python).
    fn with<T: Send>(
        &self,
        py: Python<'_>,
        f: impl FnOnce(&mut Solver) -> PyResult<T> + Send,
    ) -> PyResult<T> {
        py.detach(|| {
            let mut guard = self
                .inner
                .lock()
                .map_err(|_| value_error("an earlier call panicked inside this Solver"))?;
            match guard.as_mut() {
                Some(s) => f(s),
                None => Err(PyValueError::new_err("this Solver is closed")),
            }
        })
    }
}
