//! The built-in module `_pyhost_host`: the table's address for the SDK's cffi binding, the
//! per-request hot calls (`kv_get`, `call`, `log`) as direct built-in functions, and async host
//! functions as Python awaitables (pyo3-async-runtimes).
//!
//! Why both this and the C table: a cffi ABI call costs about a microsecond here (argument
//! conversion, and cffi releases and re-takes the GIL around every call), while a built-in
//! function call costs tens of nanoseconds. The table stays the versioned ABI for every
//! service; the SDK takes the built-ins for the calls a handler makes many times per request.

use pyo3::prelude::*;

pyo3::create_exception!(
    _pyhost_host,
    HostCallError,
    pyo3::exceptions::PyException,
    "A host call failed: args are (status, message)."
);

/// Registered before the interpreter starts (`append_to_inittab!`).
#[pymodule]
pub mod _pyhost_host {
    use pyo3::prelude::*;

    use crate::services::{ServiceError, abi, services};

    #[pymodule_export]
    use super::HostCallError;

    fn to_py(err: ServiceError) -> PyErr {
        HostCallError::new_err((err.status(), err.to_string()))
    }

    /// Address of the host's `pyhost_host_v1` table.
    #[pyfunction]
    fn abi_table() -> usize {
        std::ptr::addr_of!(abi::TABLE) as usize
    }

    /// Plugin names, by index.
    #[pyfunction]
    fn plugins() -> PyResult<Vec<String>> {
        Ok(services().map_err(to_py)?.plugin_names())
    }

    /// `host.kv.get` without the cffi round trip. GIL: held; the store is in memory or a
    /// local SQLite file, both quick.
    #[pyfunction]
    fn kv_get<'py>(
        py: Python<'py>,
        plugin: u32,
        key: &str,
    ) -> PyResult<Option<Bound<'py, pyo3::types::PyBytes>>> {
        match services().and_then(|s| s.kv_get(plugin, key.as_bytes())) {
            Ok(value) => Ok(Some(pyo3::types::PyBytes::new(py, &value))),
            Err(ServiceError::NotFound) => Ok(None),
            Err(err) => Err(to_py(err)),
        }
    }

    /// `host.call`: JSON conversion in Rust, and the host function runs with the GIL released
    /// (it is the application's code, of unknown duration).
    #[pyfunction]
    fn call<'py>(
        py: Python<'py>,
        plugin: u32,
        name: &str,
        data: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let input = if data.is_none() {
            serde_json::Value::Null
        } else {
            let bytes = crate::bridge::json::to_json(data).map_err(|err| {
                to_py(ServiceError::Invalid(format!(
                    "data is not JSON-serialisable: {err}"
                )))
            })?;
            serde_json::from_slice(&bytes)
                .map_err(|err| to_py(ServiceError::Invalid(err.to_string())))?
        };
        let services = services().map_err(to_py)?;
        let output = py
            .detach(|| services.call_value(plugin, name, input))
            .map_err(to_py)?;
        crate::bridge::json::to_python(py, &output)
    }

    /// `host.log` without the cffi round trip.
    #[pyfunction]
    fn log(plugin: u32, level: i32, message: &str, request_id: &str, fields: &str) -> PyResult<()> {
        services()
            .and_then(|s| s.log(plugin, level, message, request_id, fields))
            .map_err(to_py)
    }

    /// Awaits the async host function `name` with JSON `data`; returns its JSON result.
    #[pyfunction]
    fn call_async<'py>(
        py: Python<'py>,
        plugin: u32,
        name: &str,
        data: Vec<u8>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let future = services()
            .and_then(|s| s.call_async(plugin, name, &data))
            .map_err(to_py)?;
        pyo3_async_runtimes::tokio::future_into_py(py, async move { future.await.map_err(to_py) })
    }
}
