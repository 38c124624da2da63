//! The built-in module `_pyhost_host`: the table's address for the SDK's cffi binding, and
//! async host functions as Python awaitables (pyo3-async-runtimes).

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
