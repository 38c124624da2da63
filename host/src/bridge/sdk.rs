//! The Python classes the bridge builds or recognises, looked up once.
//! GIL: held by every caller (they pass `Python`).

use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;

/// Classes from the `pyhost` SDK and the standard library the bridge needs.
pub(super) struct Sdk {
    /// `pyhost.Headers`.
    pub headers: Py<PyAny>,
    /// `pyhost.QueryParams`.
    pub query_params: Py<PyAny>,
    /// `pyhost.Response`.
    pub response: Py<PyAny>,
    /// `pyhost.FileResponse`.
    pub file_response: Py<PyAny>,
    /// `pyhost.HTTPError`.
    pub http_error: Py<PyAny>,
    /// `uuid.UUID`, imported on first use: only apps with `uuid` parameters pay for the module
    /// (and `platform`, which it imports).
    uuid: PyOnceLock<Py<PyAny>>,
}

impl Sdk {
    /// `uuid.UUID`.
    pub(super) fn uuid<'py>(&self, py: Python<'py>) -> PyResult<&Bound<'py, PyAny>> {
        self.uuid
            .get_or_try_init(py, || Ok(py.import("uuid")?.getattr("UUID")?.unbind()))
            .map(|class| class.bind(py))
    }
}

static SDK: PyOnceLock<Sdk> = PyOnceLock::new();

/// Returns the cached classes, importing them on first use.
pub(super) fn sdk(py: Python<'_>) -> PyResult<&Sdk> {
    SDK.get_or_try_init(py, || {
        let pyhost = py.import("pyhost")?;
        Ok(Sdk {
            headers: pyhost.getattr("Headers")?.unbind(),
            query_params: pyhost.getattr("QueryParams")?.unbind(),
            response: pyhost.getattr("Response")?.unbind(),
            file_response: pyhost.getattr("FileResponse")?.unbind(),
            http_error: pyhost.getattr("HTTPError")?.unbind(),
            uuid: PyOnceLock::new(),
        })
    })
}
