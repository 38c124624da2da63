//! The request object handlers receive: a Python class backed by the Rust [`RequestData`].
//!
//! Attributes are built on first access and cached, so a handler pays only for what it reads.
//! Only the loop thread and sync-handler threads touch it, always with the GIL held.

use pyo3::exceptions::{PyKeyError, PyRuntimeError};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBytes, PyDict, PyList, PyString, PyTuple};

use crate::bridge::sdk::sdk;
use crate::pyconv::json;
use crate::streaming::request_body::{self, BodySource};
use pyhost_core::request::RequestData;
use pyhost_core::validation::Typed;

/// Names readable both as attributes and as `request["name"]`.
const KEYS: [&str; 15] = [
    "method",
    "path",
    "url",
    "query_string",
    "path_params",
    "query_params",
    "query",
    "headers",
    "body",
    "json",
    "client",
    "request_id",
    "route",
    "plugin",
    "form_params",
];

/// An HTTP request as a handler sees it.
#[pyclass(name = "Request", module = "pyhost", frozen)]
pub struct PyRequest {
    data: RequestData,
    path_params: PyOnceLock<Py<PyAny>>,
    query: PyOnceLock<Py<PyAny>>,
    header_params: PyOnceLock<Py<PyAny>>,
    cookies: PyOnceLock<Py<PyAny>>,
    query_params: PyOnceLock<Py<PyAny>>,
    headers: PyOnceLock<Py<PyAny>>,
    body: PyOnceLock<Py<PyAny>>,
    json: PyOnceLock<Py<PyAny>>,
    /// Where the body comes from beyond `data.body` (a stream, a form parsed before dispatch).
    source: std::sync::Mutex<BodySource>,
    /// A `stream=True` route's request.
    streamed: bool,
    form_params: PyOnceLock<Py<PyAny>>,
    /// What `form()` awaits, made once.
    form: PyOnceLock<Py<PyAny>>,
}

impl PyRequest {
    /// Wraps request data and where the rest of its body comes from; nothing is converted yet.
    pub(crate) fn new(data: RequestData, source: BodySource) -> Self {
        Self {
            streamed: matches!(source, BodySource::Stream(_)),
            source: std::sync::Mutex::new(source),
            form_params: PyOnceLock::new(),
            form: PyOnceLock::new(),
            data,
            path_params: PyOnceLock::new(),
            query: PyOnceLock::new(),
            header_params: PyOnceLock::new(),
            cookies: PyOnceLock::new(),
            query_params: PyOnceLock::new(),
            headers: PyOnceLock::new(),
            body: PyOnceLock::new(),
            json: PyOnceLock::new(),
        }
    }
}

fn typed_to_python<'py>(py: Python<'py>, value: &Typed) -> PyResult<Bound<'py, PyAny>> {
    Ok(match value {
        Typed::Str(s) => PyString::new(py, s).into_any(),
        Typed::Int(i) => i.into_pyobject(py)?.into_any(),
        Typed::Float(f) => f.into_pyobject(py)?.into_any(),
        Typed::Bool(b) => b.into_pyobject(py)?.to_owned().into_any(),
        Typed::Uuid(u) => sdk(py)?.uuid(py)?.call1((u.to_string(),))?,
        Typed::None => py.None().into_bound(py),
        Typed::List(items) => {
            let list = PyList::empty(py);
            for item in items {
                list.append(typed_to_python(py, item)?)?;
            }
            list.into_any()
        }
    })
}

fn typed_dict(py: Python<'_>, items: &[(String, Typed)]) -> PyResult<Py<PyAny>> {
    let dict = PyDict::new(py);
    for (key, value) in items {
        dict.set_item(key, typed_to_python(py, value)?)?;
    }
    Ok(dict.into_any().unbind())
}

fn cached<'py>(
    py: Python<'py>,
    cell: &PyOnceLock<Py<PyAny>>,
    make: impl FnOnce() -> PyResult<Py<PyAny>>,
) -> PyResult<Bound<'py, PyAny>> {
    cell.get_or_try_init(py, make).map(|v| v.bind(py).clone())
}

impl PyRequest {
    /// Starts parsing `body` as this request's form on tokio; the `_PendingForm` to await.
    fn parse_form(&self, py: Python<'_>, body: bytes::Bytes) -> PyResult<Py<PyAny>> {
        let content_type = self.data.headers.get(http::header::CONTENT_TYPE).cloned();
        let pending = crate::streaming::form::start_parse(
            content_type,
            body,
            crate::streaming::form::limits(),
        );
        Ok(Py::new(py, pending)?.into_any())
    }

    /// The whole body parsed as JSON, cached (routes that are not `stream=True`).
    fn json_value<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        // Both keep the body's key order (see `json::parse_to_python` for why two ways).
        cached(py, &self.json, || {
            if let Some(value) = &self.data.json {
                return Ok(json::to_python(py, value)?.unbind());
            }
            match json::parse_to_python(py, &self.data.body) {
                Ok(value) => Ok(value.unbind()),
                Err(json::ParseError::Python(err)) => Err(err),
                Err(json::ParseError::Malformed(err)) => Err(PyErr::from_value(
                    sdk(py)?
                        .http_error
                        .bind(py)
                        .call1((400, format!("Malformed JSON body: {err}")))?,
                )),
            }
        })
    }
}

#[pymethods]
impl PyRequest {
    /// The request method, upper case.
    #[getter]
    fn method(&self) -> &str {
        self.data.method.as_str()
    }

    /// The percent-decoded path.
    #[getter]
    fn path(&self) -> &str {
        &self.data.path
    }

    /// The full URL, query string included.
    #[getter]
    fn url(&self) -> &str {
        &self.data.url
    }

    /// The raw query string, without `?`.
    #[getter]
    fn query_string(&self) -> &str {
        &self.data.query_string
    }

    /// Typed path parameters.
    #[getter]
    fn path_params<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        cached(py, &self.path_params, || {
            typed_dict(py, &self.data.path_params)
        })
    }

    /// Declared query parameters, validated and typed, defaults filled.
    #[getter]
    fn query<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        cached(py, &self.query, || typed_dict(py, &self.data.query))
    }

    /// Declared headers (lower-case names), validated and typed, defaults filled.
    #[getter]
    fn header_params<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        cached(py, &self.header_params, || {
            typed_dict(py, &self.data.header_params)
        })
    }

    /// Declared cookies, validated and typed, defaults filled.
    #[getter]
    fn cookies<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        cached(py, &self.cookies, || typed_dict(py, &self.data.cookies))
    }

    /// Every query pair as a `pyhost.QueryParams` (repeated keys kept).
    #[getter]
    fn query_params<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        cached(py, &self.query_params, || {
            let pairs = PyList::empty(py);
            for (key, value) in &self.data.query_pairs {
                pairs.append(PyTuple::new(py, [key.as_str(), value.as_str()])?)?;
            }
            Ok(sdk(py)?.query_params.bind(py).call1((pairs,))?.unbind())
        })
    }

    /// The headers as a case-insensitive `pyhost.Headers` (repeated headers kept).
    #[getter]
    fn headers<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        cached(py, &self.headers, || {
            let pairs = PyList::empty(py);
            for (name, value) in &self.data.headers {
                // Header values are bytes on the wire; non-UTF-8 ones are read as Latin-1,
                // which is what HTTP/1.1 historically meant and never fails.
                let text = match value.to_str() {
                    Ok(text) => text.to_owned(),
                    Err(_) => value.as_bytes().iter().map(|&b| b as char).collect(),
                };
                pairs.append(PyTuple::new(py, [name.as_str(), text.as_str()])?)?;
            }
            Ok(sdk(py)?.headers.bind(py).call1((pairs,))?.unbind())
        })
    }

    /// The `Last-Event-ID` header (what a reconnecting `EventSource` last saw), or None.
    #[getter]
    fn last_event_id<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        match self.data.headers.get("last-event-id").map(|v| v.to_str()) {
            Some(Ok(text)) => Ok(PyString::new(py, text).into_any()),
            // A value that is not visible ASCII cannot be an id this server sent.
            _ => Ok(py.None().into_bound(py)),
        }
    }

    /// The whole body; on a `stream=True` route, a callable: `await request.body()` reads
    /// the stream whole.
    #[getter]
    fn body<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
        let py = slf.py();
        let this = slf.get();
        cached(py, &this.body, || {
            if this.streamed {
                let chunks = slf.getattr("stream")?;
                return Ok(request_body::helpers(py)?
                    .streamed_body
                    .bind(py)
                    .call1((chunks,))?
                    .unbind());
            }
            Ok(PyBytes::new(py, &this.data.body).into_any().unbind())
        })
    }

    /// The body parsed as JSON. Raises `HTTPError(400)` when it is not valid JSON. On a
    /// `stream=True` route, a callable: `await request.json()`.
    #[getter]
    fn json<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
        let py = slf.py();
        let this = slf.get();
        if this.streamed {
            return cached(py, &this.json, || {
                Ok(Self::body(slf)?.getattr("json")?.unbind())
            });
        }
        this.json_value(py)
    }

    /// The body's chunks as they arrive: `async for chunk in request.stream()`, once. On a
    /// route that is not `stream=True`, the whole body as one chunk.
    fn stream<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let helpers = request_body::helpers(py)?;
        if !self.streamed {
            return helpers
                .one_chunk
                .bind(py)
                .call1((PyBytes::new(py, &self.data.body),));
        }
        let taken = std::mem::take(
            &mut *self
                .source
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner()),
        );
        let BodySource::Stream(rx) = taken else {
            return Err(PyRuntimeError::new_err(
                "the request body stream was read already: request.stream() (and \
                 request.body()) can be read once",
            ));
        };
        let chunks = Py::new(py, request_body::RequestBody::new(rx))?;
        helpers.iterate.bind(py).call1((chunks,))
    }

    /// The body parsed as a form: `await request.form()` gives a `pyhost.FormData`.
    fn form<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
        let py = slf.py();
        let once = cached(py, &slf.get().form, || {
            let start = slf.getattr("_start_form")?;
            Ok(request_body::helpers(py)?
                .once
                .bind(py)
                .call1((start,))?
                .unbind())
        })?;
        once.call_method0("get")
    }

    /// Declared form fields (`form=` on the route), validated and typed, defaults filled.
    #[getter]
    fn form_params<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        cached(py, &self.form_params, || typed_dict(py, &self.data.form))
    }

    /// What `form()` awaits the first time: the form parsed before dispatch, or one parsed
    /// now on tokio.
    fn _start_form<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
        let py = slf.py();
        let this = slf.get();
        let helpers = request_body::helpers(py)?;
        let taken = {
            let mut source = this
                .source
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            match &*source {
                BodySource::Form(_) => std::mem::take(&mut *source),
                _ => BodySource::Whole,
            }
        };
        if let BodySource::Form(form) = taken {
            let form = crate::streaming::form::to_python(py, *form)?;
            return helpers.ready.bind(py).call1((form,));
        }
        if this.streamed {
            let body = Self::body(slf)?;
            let parse = slf.getattr("_parse_form")?;
            return helpers.form_of_stream.bind(py).call1((body, parse));
        }
        if this.data.body.is_empty() {
            let form = crate::streaming::form::to_python(py, Default::default())?;
            return helpers.ready.bind(py).call1((form,));
        }
        let pending = this.parse_form(py, this.data.body.clone())?;
        helpers.wait_form.bind(py).call1((pending,))
    }

    /// Starts parsing `data` as this request's form, on tokio.
    fn _parse_form(&self, py: Python<'_>, data: &[u8]) -> PyResult<Py<PyAny>> {
        self.parse_form(py, bytes::Bytes::copy_from_slice(data))
    }

    /// `(host, port)` of the peer, or None.
    #[getter]
    fn client<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        match self.data.client {
            Some(addr) => Ok(PyTuple::new(
                py,
                [
                    addr.ip().to_string().into_pyobject(py)?.into_any(),
                    addr.port().into_pyobject(py)?.into_any(),
                ],
            )?
            .into_any()),
            None => Ok(py.None().into_bound(py)),
        }
    }

    /// This request's id, as in the logs and the `x-request-id` header.
    #[getter]
    fn request_id(&self) -> &str {
        &self.data.request_id
    }

    /// The matched path template.
    #[getter]
    fn route(&self) -> &str {
        &self.data.route
    }

    /// Index of the plugin serving this request (what host services act for).
    /// What the plugin's lifespan yielded (`pyhost.State`), shared by its requests.
    #[getter]
    fn state(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        crate::lifespan::state(py, self.data.plugin)
    }

    #[getter]
    fn plugin(&self) -> u32 {
        self.data.plugin
    }

    fn __getitem__<'py>(slf: &Bound<'py, Self>, key: &str) -> PyResult<Bound<'py, PyAny>> {
        if KEYS.contains(&key) {
            slf.getattr(key)
        } else {
            Err(PyKeyError::new_err(key.to_owned()))
        }
    }

    #[pyo3(signature = (key, default=None))]
    fn get<'py>(
        slf: &Bound<'py, Self>,
        key: &str,
        default: Option<Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        if KEYS.contains(&key) {
            slf.getattr(key)
        } else {
            Ok(default.unwrap_or_else(|| slf.py().None().into_bound(slf.py())))
        }
    }

    fn __contains__(&self, key: &str) -> bool {
        KEYS.contains(&key)
    }

    fn keys(&self) -> Vec<&'static str> {
        KEYS.to_vec()
    }

    fn __repr__(&self) -> String {
        format!("<Request {} {}>", self.data.method, self.data.path)
    }

    fn __reduce__(&self) -> PyResult<()> {
        Err(PyRuntimeError::new_err("a request cannot be pickled"))
    }
}
