//! `exemplar.Encoder`: texts to vectors with the model and recipe flags of `embed encode`,
//! through the same calls (tokenize, then the length-sorted batches), so the vectors are the
//! CLI's bit for bit.

use clap::{CommandFactory, Parser};
use exemplar::cli::model::ModelArgs;
use exemplar::encoder::{Encoder, TextKind};
use exemplar::progress::Progress;
use numpy::ndarray::{Array1, Array2};
use numpy::IntoPyArray;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString};
use std::sync::Mutex;

use crate::logging::LogProgress;
use crate::{args, json, runtime_error, value_error};

/// `--model` and the recipe flags, as `embed encode` takes them.
#[derive(Parser)]
#[command(name = "Encoder")]
struct EncoderArgs {
    #[command(flatten)]
    model: ModelArgs,
}

#[pyclass(name = "Encoder", module = "exemplar", frozen)]
pub struct PyEncoder {
    /// Locked for a call: a per-call instruction is set, used and put back.
    encoder: Mutex<Encoder>,
    model: String,
}

#[pymethods]
impl PyEncoder {
    /// Load `model` (a folder or `org/name` in the Hugging Face cache; None: $EXEMPLAR_MODEL or
    /// the installed all-MiniLM-L6-v2). Keyword options are `embed encode`'s model flags:
    /// attention, pooling, no_normalize, append_eos, max_length, instruction, query_template,
    /// document_template, padding_side, max_batch_tokens.
    #[new]
    #[pyo3(signature = (model=None, device="cpu", dtype=None, **options))]
    fn new(
        py: Python<'_>,
        model: Option<&Bound<'_, PyAny>>,
        device: &str,
        dtype: Option<&str>,
        options: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<Self> {
        let mut words = Vec::new();
        if let Some(m) = model {
            words.push(format!("--model={}", args::text(m)?));
        }
        words.push(format!("--device={device}"));
        if let Some(d) = dtype {
            words.push(format!("--dtype={d}"));
        }
        let cmd = EncoderArgs::command();
        words.extend(args::words(
            &cmd,
            "Encoder",
            options,
            &["model", "device", "dtype"],
        )?);
        let a: EncoderArgs = args::parse("Encoder", words)?;
        let spec = a.model.model_spec().map_err(value_error)?;
        let encoder = py.detach(|| a.model.load()).map_err(runtime_error)?;
        let info = encoder.info();
        crate::logging::emit(
            crate::logging::INFO,
            &format!(
                "loaded {spec}: {}-d, {} on {}",
                info.dim, info.dtype, info.device
            ),
        );
        Ok(Self {
            encoder: Mutex::new(encoder),
            model: spec,
        })
    }

    /// Embed `texts` (a string or a sequence of strings) as documents or as queries (the query
    /// template, with `instruction` for this call if given). float32, one row per text; a
    /// single string gives one vector.
    #[pyo3(signature = (texts, kind="document", instruction=None))]
    fn encode<'py>(
        &self,
        py: Python<'py>,
        texts: &Bound<'py, PyAny>,
        kind: &str,
        instruction: Option<String>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let kind: TextKind = kind
            .parse()
            .map_err(|e| value_error(format!("kind: {e}")))?;
        let (single, texts) = strings(texts)?;
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        let (dim, flat) = py
            .detach(|| {
                let mut enc = self.encoder.lock().map_err(|_| poisoned())?;
                let kept = instruction.as_ref().map(|i| {
                    let kept = enc.recipe().instruction.clone();
                    enc.set_instruction(i);
                    kept
                });
                let out = encode(&enc, &refs, kind);
                if let Some(k) = kept {
                    enc.set_instruction(&k);
                }
                Ok((enc.dim(), out?))
            })
            .map_err(runtime_error)?;
        if single {
            return Ok(Array1::from(flat).into_pyarray(py).into_any());
        }
        let rows = Array2::from_shape_vec((texts.len(), dim), flat).map_err(value_error)?;
        Ok(rows.into_pyarray(py).into_any())
    }

    /// Width of the vectors.
    #[getter]
    fn dim(&self, py: Python<'_>) -> PyResult<usize> {
        py.detach(|| Ok(self.encoder.lock().map_err(|_| poisoned())?.dim()))
            .map_err(runtime_error)
    }

    /// The resolved model and recipe, as `embed info --json` shows them.
    fn info<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let info = py
            .detach(|| Ok(self.encoder.lock().map_err(|_| poisoned())?.info().clone()))
            .map_err(runtime_error)?;
        json::serialized(py, &info)
    }

    fn __repr__(&self) -> String {
        format!("exemplar.Encoder({:?})", self.model)
    }
}

/// The CLI's path: tokenize all, then embed in batches, reporting texts done.
fn encode(enc: &Encoder, texts: &[&str], kind: TextKind) -> anyhow::Result<Vec<f32>> {
    if texts.is_empty() {
        return Ok(Vec::new());
    }
    let tokenized = enc.tokenize(texts, kind)?;
    let task = LogProgress.task("encoding", Some(texts.len() as u64), "texts");
    let encoded = enc.encode_tokenized(&tokenized, |n, _| task.inc(n as u64))?;
    Ok(encoded.vectors.concat())
}

fn poisoned() -> anyhow::Error {
    anyhow::anyhow!("an earlier call panicked while using this object")
}

/// A string (true: one text) or an iterable of strings.
pub fn strings(v: &Bound<'_, PyAny>) -> PyResult<(bool, Vec<String>)> {
    if let Ok(s) = v.cast::<PyString>() {
        return Ok((true, vec![s.to_string()]));
    }
    let mut out = Vec::new();
    for item in v.try_iter()? {
        let item = item?;
        let s = item.cast::<PyString>().map_err(|_| {
            value_error(format!(
                "texts: item #{} is not a string ({})",
                out.len() + 1,
                item.get_type()
            ))
        })?;
        out.push(s.to_string());
    }
    Ok((false, out))
}
