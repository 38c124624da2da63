//! The built-in module `_pyhost_host`: the table's address for the SDK's cffi binding, the
//! per-request hot calls (`kv_get`, `call`, `log`, `settings`) as direct built-in functions, and
//! the awaitable forms (`call_async`, `kv_*_async`) that run off the event loop
//! (pyo3-async-runtimes).
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

/// Adds `_pyhost_host` to the interpreter's built-in modules; call before it starts.
pub(crate) fn register() {
    pyo3::append_to_inittab!(_pyhost_host);
}

/// Registered before the interpreter starts ([`register`]).
///
/// No function takes the calling plugin: each acts for the plugin the host is running on this
/// thread ([`crate::services::identity`]).
#[pymodule]
pub mod _pyhost_host {
    use pyo3::prelude::*;
    use pyo3::types::PyBytes;

    use crate::services::{ServiceError, abi, blocking, caller, identity, services};

    #[pymodule_export]
    use super::HostCallError;

    fn to_py(err: ServiceError) -> PyErr {
        HostCallError::new_err((err.status(), err.to_string()))
    }

    /// Address of the host's `pyhost_host_v2` table.
    #[pyfunction]
    fn abi_table() -> usize {
        std::ptr::addr_of!(abi::TABLE) as usize
    }

    /// Plugin names, by index.
    #[pyfunction]
    fn plugins() -> PyResult<Vec<String>> {
        Ok(services().map_err(to_py)?.plugin_names())
    }

    /// The calling plugin's settings, as new Python objects on every call.
    #[pyfunction]
    fn settings<'py>(py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let services = services().map_err(to_py)?;
        let value = services
            .settings_value(caller().map_err(to_py)?)
            .map_err(to_py)?;
        crate::pyconv::json::to_python(py, value)
    }

    /// `host.kv.get` without the cffi round trip. GIL: held; the store is in memory or a
    /// local SQLite file, quick unless the disk is slow, which is what `kv_get_async` is for.
    #[pyfunction]
    fn kv_get<'py>(py: Python<'py>, key: &str) -> PyResult<Option<Bound<'py, PyBytes>>> {
        match services().and_then(|s| s.kv_get(caller()?, key.as_bytes())) {
            Ok(value) => Ok(Some(PyBytes::new(py, &value))),
            Err(ServiceError::NotFound) => Ok(None),
            Err(err) => Err(to_py(err)),
        }
    }

    /// Starts a store operation on a blocking thread, checked against the caller's grants
    /// now (on the caller's thread), and returns the awaitable of its result.
    fn kv_off_loop<'py, T>(
        py: Python<'py>,
        operation: impl FnOnce(&'static crate::services::Services, u32) -> Result<T, ServiceError>
        + Send
        + 'static,
    ) -> PyResult<Bound<'py, PyAny>>
    where
        T: for<'a> IntoPyObject<'a> + Send + 'static,
    {
        let services = services().map_err(to_py)?;
        let plugin = caller().map_err(to_py)?;
        services.kv_allowed(plugin).map_err(to_py)?;
        let job = blocking(services.runtime(), move || operation(services, plugin));
        pyo3_async_runtimes::tokio::future_into_py(py, async move {
            job.await.and_then(|outcome| outcome).map_err(to_py)
        })
    }

    /// `await host.kv.get_async(key)`: the read runs off the event loop.
    #[pyfunction]
    fn kv_get_async<'py>(py: Python<'py>, key: String) -> PyResult<Bound<'py, PyAny>> {
        kv_off_loop(py, move |services, plugin| {
            match services.kv_get(plugin, key.as_bytes()) {
                Ok(value) => Ok(Some(value)),
                Err(ServiceError::NotFound) => Ok(None),
                Err(err) => Err(err),
            }
        })
    }

    /// `await host.kv.set_async(key, value)`: the write runs off the event loop.
    #[pyfunction]
    fn kv_set_async<'py>(
        py: Python<'py>,
        key: String,
        value: Vec<u8>,
    ) -> PyResult<Bound<'py, PyAny>> {
        kv_off_loop(py, move |services, plugin| {
            services.kv_set(plugin, key.as_bytes(), &value)
        })
    }

    /// `await host.kv.delete_async(key)`: the delete runs off the event loop.
    #[pyfunction]
    fn kv_delete_async<'py>(py: Python<'py>, key: String) -> PyResult<Bound<'py, PyAny>> {
        kv_off_loop(py, move |services, plugin| {
            services.kv_delete(plugin, key.as_bytes())
        })
    }

    /// `host.call`: JSON conversion in Rust, and the host function runs with the GIL released
    /// (it is the application's code, of unknown duration) but on the calling thread; from
    /// the event loop, `call_async` keeps it off the loop.
    #[pyfunction]
    fn call<'py>(
        py: Python<'py>,
        name: &str,
        data: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let input = if data.is_none() {
            serde_json::Value::Null
        } else {
            let bytes = crate::pyconv::json::to_json(data).map_err(|err| {
                to_py(ServiceError::Invalid(format!(
                    "data is not JSON-serialisable: {err}"
                )))
            })?;
            serde_json::from_slice(&bytes)
                .map_err(|err| to_py(ServiceError::Invalid(err.to_string())))?
        };
        let services = services().map_err(to_py)?;
        let plugin = caller().map_err(to_py)?;
        let output = py
            .detach(|| services.call_value(plugin, name, input))
            .map_err(to_py)?;
        crate::pyconv::json::to_python(py, &output)
    }

    /// `host.log` without the cffi round trip.
    #[pyfunction]
    fn log(level: i32, message: &str, request_id: &str, fields: &str) -> PyResult<()> {
        services()
            .and_then(|s| s.log(identity::current(), level, message, request_id, fields))
            .map_err(to_py)
    }

    /// Awaits the host function `name` with JSON `data`; returns its JSON result. A sync
    /// function runs on a blocking thread, an async one on the host's runtime.
    #[pyfunction]
    fn call_async<'py>(py: Python<'py>, name: &str, data: Vec<u8>) -> PyResult<Bound<'py, PyAny>> {
        let future = services()
            .and_then(|s| s.call_async(caller()?, name, &data))
            .map_err(to_py)?;
        pyo3_async_runtimes::tokio::future_into_py(py, async move { future.await.map_err(to_py) })
    }
}
