//! Keyword arguments through the command line's parsers: `max_tokens=512` becomes
//! `--max-tokens=512` and is parsed by the very clap definition `solve` uses, so a default or a
//! validation message cannot differ between the CLI and Python.

use clap::{Command, Parser};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict};

/// The flags `kwargs` stand for in `cmd`. `None` and `False` leave a flag out, `True` gives a
/// switch. A keyword that names no flag, or one in `refused`, is a TypeError, as for any Python
/// function called with an unknown keyword.
pub fn words(
    cmd: &Command,
    what: &str,
    kwargs: Option<&Bound<'_, PyDict>>,
    refused: &[&str],
) -> PyResult<Vec<String>> {
    let mut out = Vec::new();
    let Some(kwargs) = kwargs else {
        return Ok(out);
    };
    for (key, value) in kwargs.iter() {
        let key: String = key.extract()?;
        let long = key.replace('_', "-");
        let arg = cmd
            .get_arguments()
            .find(|a| a.get_long() == Some(long.as_str()))
            .filter(|_| !refused.contains(&key.as_str()) && !key.contains('-'));
        let Some(arg) = arg else {
            return Err(PyTypeError::new_err(format!(
                "{what}() got an unexpected keyword argument '{key}'"
            )));
        };
        if value.is_none() {
            continue;
        }
        if arg.get_action().takes_values() {
            out.push(format!("--{long}={}", text(&value)?));
        } else if value.is_instance_of::<PyBool>() {
            if value.extract::<bool>()? {
                out.push(format!("--{long}"));
            }
        } else {
            return Err(PyTypeError::new_err(format!(
                "{what}(): {key} is a switch (--{long}): give True or False"
            )));
        }
    }
    Ok(out)
}

/// A value as a command line spells it: a path through `os.fspath`, a `datetime.timedelta` as
/// seconds, anything else through `str()`.
pub fn text(v: &Bound<'_, PyAny>) -> PyResult<String> {
    if v.hasattr("__fspath__")? {
        let os = v.py().import("os")?;
        return os.call_method1("fspath", (v,))?.str()?.extract();
    }
    if v.hasattr("total_seconds")? {
        let secs: f64 = v.call_method0("total_seconds")?.extract()?;
        return Ok(secs.to_string());
    }
    v.str()?.extract()
}

/// Parse `words` as the arguments of `name`; a refusal is a ValueError with clap's message
/// (its first line, without the `error: ` and the usage that follow on a terminal).
pub fn parse<T: Parser>(name: &str, words: Vec<String>) -> PyResult<T> {
    let argv = std::iter::once(name.to_string()).chain(words);
    T::try_parse_from(argv).map_err(|e| {
        let text = e.render().to_string();
        let first = text.lines().next().unwrap_or_default();
        PyValueError::new_err(first.strip_prefix("error: ").unwrap_or(first).to_string())
    })
}
