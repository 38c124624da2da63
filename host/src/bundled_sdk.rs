//! The pyhost SDK this crate was built with, served to the embedded interpreter.
//!
//! The host and its SDK speak one ABI and one route-spec format, so a binary built from this
//! crate (the CLI, or an embedding application) carries the SDK's sources (`build.rs` bundles
//! `pyruntime/pyhost`) and imports `pyhost` from them, ahead of `sys.path`: `pyhost serve` needs
//! an interpreter with cffi and no virtualenv at all, and a virtualenv holding another SDK
//! version cannot change what the host runs (it is reported, with both versions).

use std::ffi::CString;

use pyo3::prelude::*;
use pyo3::types::PyModule;

mod files {
    include!(concat!(env!("OUT_DIR"), "/sdk_files.rs"));
}

pub(crate) use files::VERSION;
use files::{FILES, MAGIC};

const FINDER_SOURCE: &str = include_str!("bundled_sdk.py");

/// Makes `import pyhost` load the bundled SDK. Returns a note to log when the virtualenv has
/// an SDK of another version, which the bundled one shadows.
///
/// GIL: held (`py`); call once, before anything imports `pyhost`.
pub(crate) fn install(py: Python<'_>) -> PyResult<Option<String>> {
    let source = CString::new(FINDER_SOURCE)
        .map_err(|err| pyo3::exceptions::PyValueError::new_err(err.to_string()))?;
    let finder = PyModule::from_code(py, &source, c"pyhost_bundled_sdk.py", c"pyhost_bundled_sdk")?;
    let files: Vec<(&str, &str, Bound<'_, pyo3::types::PyBytes>)> = FILES
        .iter()
        .map(|&(relative, text, code)| (relative, text, pyo3::types::PyBytes::new(py, code)))
        .collect();
    let magic = pyo3::types::PyBytes::new(py, MAGIC);
    finder
        .call_method1("install", (files, VERSION, magic))?
        .extract()
}
