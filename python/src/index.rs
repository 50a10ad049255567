//! `exemplar.Index`: an index built by `embed index build`, searched by text (embedded with the
//! index's own model and recipe, as `embed index query` does) or by vectors.

use exemplar::encoder::{Device, Encoder, TextKind};
use exemplar::index::{self, Index, SearchMethod, SearchOptions};
use numpy::{PyArrayDyn, PyArrayMethods, PyUntypedArrayMethods};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use crate::encoder::strings;
use crate::{args, json, runtime_error, value_error};

type Record = serde_json::Map<String, serde_json::Value>;

/// One neighbour: its record's `id`, the cosine score, its row in the index and the whole
/// record as a dict.
#[pyclass(module = "exemplar", frozen, get_all)]
pub struct Hit {
    id: Py<PyAny>,
    score: f32,
    row: usize,
    record: Py<PyDict>,
}

#[pymethods]
impl Hit {
    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        let id = self.id.bind(py).repr()?;
        Ok(format!(
            "Hit(id={id}, score={:.4}, row={})",
            self.score, self.row
        ))
    }
}

#[pyclass(name = "Index", module = "exemplar", frozen)]
pub struct PyIndex {
    index: Index,
    records: Vec<Record>,
    model: Option<String>,
    device: Device,
    /// The query encoder, loaded by the first text search.
    encoder: Mutex<Option<Arc<Encoder>>>,
}

#[pymethods]
impl PyIndex {
    /// Open the index folder `path`. `model` names the model folder if it moved since the
    /// index was built (same weights), or the model for an index of external vectors;
    /// `verify` hashes every file as `--verify` does.
    #[staticmethod]
    #[pyo3(signature = (path, model=None, device="cpu", verify=false))]
    fn open(
        py: Python<'_>,
        path: &Bound<'_, PyAny>,
        model: Option<&Bound<'_, PyAny>>,
        device: &str,
        verify: bool,
    ) -> PyResult<Self> {
        let path = PathBuf::from(args::text(path)?);
        let model = model.map(|m| args::text(m)).transpose()?;
        let device: Device = device
            .parse()
            .map_err(|e| value_error(format!("device: {e}")))?;
        let (index, records) = py
            .detach(|| {
                let index = match verify {
                    true => Index::load_verified(&path),
                    false => Index::load(&path),
                }?;
                let records = index.records()?;
                anyhow::Ok((index, records))
            })
            .map_err(runtime_error)?;
        Ok(Self {
            index,
            records,
            model,
            device,
            encoder: Mutex::new(None),
        })
    }

    /// The `k` nearest records of a text (a list of hits) or of each of a sequence of texts (a
    /// list of lists). `filter` keeps records whose field equals a value: "FIELD=VALUE" as
    /// `--filter` takes it, or a dict of them (all must hold). `method`: "exact" or "hnsw"
    /// (default: by the index's size); `ef`: the graph search's candidate list.
    #[pyo3(signature = (texts, k=4, filter=None, ef=None, method=None))]
    fn search<'py>(
        &self,
        py: Python<'py>,
        texts: &Bound<'py, PyAny>,
        k: usize,
        filter: Option<&Bound<'py, PyAny>>,
        ef: Option<usize>,
        method: Option<&str>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let (single, texts) = strings(texts)?;
        let plan = self.plan(k, filter, ef, method)?;
        let found = py
            .detach(|| {
                let encoder = self.encoder()?;
                let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
                let vectors = match refs.is_empty() {
                    true => Vec::new(),
                    false => encoder.encode(&refs, TextKind::Query)?.vectors,
                };
                anyhow::Ok(self.run(&plan, vectors.iter().map(Vec::as_slice)))
            })
            .map_err(runtime_error)?;
        self.hits(py, single, found)
    }

    /// The `k` nearest records of a vector (1-D) or of each row of a 2-D array, as `embed
    /// index query --vectors` finds them (rows scaled to unit length first). Same `filter`,
    /// `ef` and `method` as [`search`].
    #[pyo3(signature = (vectors, k=4, filter=None, ef=None, method=None))]
    fn search_vectors<'py>(
        &self,
        py: Python<'py>,
        vectors: &Bound<'py, PyAny>,
        k: usize,
        filter: Option<&Bound<'py, PyAny>>,
        ef: Option<usize>,
        method: Option<&str>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let plan = self.plan(k, filter, ef, method)?;
        let numpy = py.import("numpy")?;
        let array = numpy.call_method1("ascontiguousarray", (vectors, "float32"))?;
        let array = array.cast::<PyArrayDyn<f32>>()?;
        let (single, dim) = match array.shape() {
            [d] => (true, *d),
            [_, d] => (false, *d),
            s => {
                return Err(value_error(format!(
                    "vectors: a 1-D or 2-D array, not {}-D",
                    s.len()
                )))
            }
        };
        if dim != self.index.dim() {
            return Err(value_error(format!(
                "vectors: {dim}-d vectors, the index holds {}-d vectors",
                self.index.dim()
            )));
        }
        let mut values = array.readonly().as_slice()?.to_vec();
        let ids: Vec<String> = (0..values.len() / dim.max(1))
            .map(|i| i.to_string())
            .collect();
        let found = py
            .detach(|| {
                let scaled = index::external::normalize_rows(&mut values, dim, &ids)?;
                if scaled > 0 {
                    crate::logging::emit(
                        crate::logging::INFO,
                        &format!("{scaled} query vectors were not unit length and were normalised"),
                    );
                }
                anyhow::Ok(self.run(&plan, values.chunks_exact(dim)))
            })
            .map_err(value_error)?;
        self.hits(py, single, found)
    }

    /// The index's manifest (what `embed index info --json` prints).
    fn info<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        json::serialized(py, &self.index.manifest)
    }

    /// Width of the stored vectors.
    #[getter]
    fn dim(&self) -> usize {
        self.index.dim()
    }

    fn __len__(&self) -> usize {
        self.index.len()
    }

    fn __repr__(&self) -> String {
        format!(
            "exemplar.Index({:?}: {} x {})",
            self.index.dir.display().to_string(),
            self.index.len(),
            self.index.dim()
        )
    }
}

/// One search's settings, checked as `embed index query` checks them.
struct Plan {
    k: usize,
    ef: usize,
    method: Option<SearchMethod>,
    allowed: Option<Vec<usize>>,
}

impl PyIndex {
    fn plan(
        &self,
        k: usize,
        filter: Option<&Bound<'_, PyAny>>,
        ef: Option<usize>,
        method: Option<&str>,
    ) -> PyResult<Plan> {
        if k == 0 {
            return Err(value_error("-k must be at least 1 (neighbours per query)"));
        }
        let ef = ef.unwrap_or(index::DEFAULT_EF);
        if ef == 0 {
            return Err(value_error("--ef must be at least 1"));
        }
        let method = method
            .map(|m| m.parse::<SearchMethod>())
            .transpose()
            .map_err(|e| value_error(format!("method: {e}")))?;
        let allowed = filter.map(|f| self.allowed(f)).transpose()?;
        Ok(Plan {
            k,
            ef,
            method,
            allowed,
        })
    }

    /// Rows a filter keeps: "FIELD=VALUE", or a dict whose every pair must hold.
    fn allowed(&self, filter: &Bound<'_, PyAny>) -> PyResult<Vec<usize>> {
        let pairs: Vec<(String, String)> = match filter.cast::<PyDict>() {
            Ok(d) => d
                .iter()
                .map(|(f, v)| Ok((args::text(&f)?, args::text(&v)?)))
                .collect::<PyResult<_>>()?,
            Err(_) => {
                let f = args::text(filter)?;
                let (field, value) = f
                    .split_once('=')
                    .ok_or_else(|| value_error(format!("--filter {f:?}: expected FIELD=VALUE")))?;
                vec![(field.to_string(), value.to_string())]
            }
        };
        let mut rows: Option<Vec<usize>> = None;
        for (field, value) in pairs {
            let these = index::filter_rows(&self.records, &field, &value).map_err(value_error)?;
            rows = Some(match rows {
                None => these,
                Some(r) => r
                    .into_iter()
                    .filter(|i| these.binary_search(i).is_ok())
                    .collect(),
            });
        }
        Ok(rows.unwrap_or_default())
    }

    fn encoder(&self) -> anyhow::Result<Arc<Encoder>> {
        let mut slot = self
            .encoder
            .lock()
            .map_err(|_| anyhow::anyhow!("an earlier search panicked"))?;
        if let Some(e) = slot.as_ref() {
            return Ok(e.clone());
        }
        let e = Arc::new(index::query_encoder(
            &self.index.manifest,
            self.model.as_deref(),
            self.device,
        )?);
        *slot = Some(e.clone());
        Ok(e)
    }

    fn run<'a>(
        &self,
        plan: &Plan,
        vectors: impl Iterator<Item = &'a [f32]>,
    ) -> Vec<Vec<index::Hit>> {
        let opts = SearchOptions {
            ef: plan.ef,
            method: plan.method,
            allowed: plan.allowed.as_ref(),
        };
        vectors
            .map(|v| self.index.search(v, plan.k, &opts).hits)
            .collect()
    }

    fn hits<'py>(
        &self,
        py: Python<'py>,
        single: bool,
        found: Vec<Vec<index::Hit>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let mut lists = Vec::with_capacity(found.len());
        for hits in found {
            let mut list = Vec::with_capacity(hits.len());
            for h in hits {
                let record = &self.records[h.row];
                let id = record.get("id").unwrap_or(&serde_json::Value::Null);
                let hit = Hit {
                    id: json::to_py(py, id)?.unbind(),
                    score: h.score,
                    row: h.row,
                    record: json::dict(py, record)?.unbind(),
                };
                list.push(Bound::new(py, hit)?);
            }
            lists.push(PyList::new(py, list)?);
        }
        match (single, lists.pop()) {
            (true, Some(one)) => Ok(one.into_any()),
            (_, last) => {
                lists.extend(last);
                Ok(PyList::new(py, lists)?.into_any())
            }
        }
    }
}
