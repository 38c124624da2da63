//! Forms parsed in Rust, on tokio: `multipart/form-data` with `multer`, large files spooled to
//! temporary files as they arrive, and the hand-over of a parsed form to the loop thread.
//!
//! Two ways in:
//! - a route declaring `form=` has its body parsed by the service before dispatch
//!   ([`parse_body`]), streamed from the connection into `multer`: a file part larger than
//!   `server.form_spool_threshold` goes to a temporary file (`tokio::fs`) and never sits in
//!   memory whole. The files are removed by the request's [`Spool`] when its future ends:
//!   after the response, when the client leaves, on a timeout, whatever the handler did;
//! - `await request.form()` on any other route parses the body already read
//!   ([`start_parse`]): a task on tokio parses it and sends the form through a
//!   [`channel::to_loop`] channel of one item to the handler's [`PendingForm`]. The body is in
//!   memory already, so nothing is spooled.
//!
//! The loop thread only converts the finished form into Python objects ([`to_python`]).

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use bytes::{Bytes, BytesMut};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBytes, PyList, PyString, PyTuple};
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

use crate::streaming::channel::{self, Empty, LoopReceiver};
use crate::streaming::request_body::{BodyError, Frames, http_error};
use pyhost_core::form::{
    FileContent, FilePart, FormError, FormKind, FormLimits, MEMORY_BUDGET, ParsedForm,
};

/// The runtime lazily parsed forms run on, remembered from the first request with a body.
static RUNTIME: OnceLock<tokio::runtime::Handle> = OnceLock::new();

/// Remembers the current tokio runtime for [`start_parse`]. Called on a tokio worker.
pub(crate) fn remember_runtime() {
    if RUNTIME.get().is_none()
        && let Ok(handle) = tokio::runtime::Handle::try_current()
    {
        let _ = RUNTIME.set(handle);
    }
}

/// Names spooled files apart within this process.
static NEXT_FILE: AtomicU64 = AtomicU64::new(1);

/// The temporary files of one request, removed when it is dropped.
#[derive(Default)]
pub(crate) struct Spool {
    paths: Vec<PathBuf>,
}

impl Spool {
    /// A new file in the system's temporary directory (`$TMPDIR`), readable by this user
    /// only; recorded before it is created, so it is removed whatever happens next.
    async fn create(&mut self) -> std::io::Result<(PathBuf, tokio::fs::File)> {
        let name = format!(
            "pyhost-upload-{}-{}",
            std::process::id(),
            NEXT_FILE.fetch_add(1, Ordering::Relaxed)
        );
        let path = std::env::temp_dir().join(name);
        self.paths.push(path.clone());
        let mut options = tokio::fs::OpenOptions::new();
        options.write(true).create_new(true).mode(0o600);
        let file = options.open(&path).await?;
        Ok((path, file))
    }
}

impl Drop for Spool {
    fn drop(&mut self) {
        if self.paths.is_empty() {
            return;
        }
        let paths = std::mem::take(&mut self.paths);
        let remove = move || {
            for path in paths {
                // Already gone (a handler removed it) is fine.
                let _ = std::fs::remove_file(path);
            }
        };
        // File system calls stay off the tokio workers.
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => drop(runtime.spawn_blocking(remove)),
            Err(_) => remove(),
        }
    }
}

/// Reads the body of a route declaring a form and parses it under `limits`, spooling large
/// files into `spool`. The kind was read from the request's `Content-Type`; `None` (no
/// `Content-Type`) is an empty form if the body is empty too.
pub(crate) async fn parse_body<B>(
    frames: &mut Frames<B>,
    kind: Option<FormKind>,
    limits: &FormLimits,
    spool: &mut Spool,
) -> Result<(ParsedForm, Bytes), FormError>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    match kind {
        Some(FormKind::Multipart(boundary)) => {
            // One chunk at a time: multer takes whatever is ready at once, and with one
            // there is never more than a chunk it has not looked at (`guarded_stream`).
            let (tx, rx) = mpsc::channel::<Result<Bytes, FormError>>(1);
            // The connection is read as multer takes the chunks, both in this future.
            let pump = async move {
                while let Some(item) = frames.next().await {
                    let failed = item.is_err();
                    if tx.send(item.map_err(body_error)).await.is_err() || failed {
                        break;
                    }
                }
            };
            let progress = Arc::new(AtomicU64::new(0));
            let stream = guarded_stream(rx, progress.clone());
            let parse = parse_multipart(stream, boundary, limits, spool, Some(&progress));
            tokio::pin!(pump, parse);
            let form = tokio::select! {
                form = &mut parse => form,
                () = &mut pump => parse.await,
            };
            Ok((form?, Bytes::new()))
        }
        Some(FormKind::UrlEncoded) => {
            let body = collect(frames).await?;
            let form = pyhost_core::form::parse_urlencoded(&body, limits)?;
            Ok((form, body))
        }
        None => {
            let body = collect(frames).await?;
            if body.is_empty() {
                Ok((ParsedForm::default(), body))
            } else {
                Err(FormError::NotAForm("(none)".to_owned()))
            }
        }
    }
}

async fn collect<B>(frames: &mut Frames<B>) -> Result<Bytes, FormError>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let mut body = BytesMut::new();
    while let Some(chunk) = frames.next().await {
        body.extend_from_slice(&chunk.map_err(body_error)?);
    }
    Ok(body.freeze())
}

/// Bytes multer may have taken in without giving anything back (a part's data, or a new
/// part) before it is given another chunk: what bounds a preamble, the part headers and the
/// boundaries it buffers whole, to this plus one chunk. Real part headers are a few hundred
/// bytes.
const STALL_LIMIT: u64 = 1024 * 1024;

/// The body's chunks as multer reads them, cut off with an error once multer has taken
/// [`STALL_LIMIT`] bytes without making `progress` (the parse loop resets it for each part
/// and each piece of a part's data it gets). Multer looks at each chunk before it asks for
/// the next (the channel holds one), so what it took before a chunk and did not give back is
/// what it holds.
fn guarded_stream(
    mut rx: mpsc::Receiver<Result<Bytes, FormError>>,
    progress: Arc<AtomicU64>,
) -> impl futures_util::Stream<Item = Result<Bytes, FormError>> + Send + 'static {
    futures_util::stream::poll_fn(move |cx| {
        let polled = rx.poll_recv(cx);
        if let std::task::Poll::Ready(Some(Ok(chunk))) = &polled {
            let taken = progress.fetch_add(chunk.len() as u64, Ordering::Relaxed);
            if taken > STALL_LIMIT {
                return std::task::Poll::Ready(Some(Err(FormError::Malformed(format!(
                    "no part boundary, or no end of a part's headers, within {STALL_LIMIT} bytes"
                )))));
            }
        }
        polled
    })
}

fn body_error(err: BodyError) -> FormError {
    match err {
        BodyError::TooLarge(limit) => FormError::BodyTooLarge(limit),
        BodyError::Timeout(timeout) => FormError::Timeout(timeout.as_secs_f64()),
        BodyError::Read(message) => FormError::Read(message),
    }
}

fn multer_error(err: multer::Error) -> FormError {
    match err {
        multer::Error::StreamReadFailed(source) => match source.downcast::<FormError>() {
            Ok(form) => *form,
            Err(other) => FormError::Read(other.to_string()),
        },
        other => FormError::Malformed(other.to_string()),
    }
}

/// Parses a multipart body from `stream`, telling `progress` (when it guards the stream) of
/// each part and each piece of data multer gives back.
async fn parse_multipart<S>(
    stream: S,
    boundary: String,
    limits: &FormLimits,
    spool: &mut Spool,
    progress: Option<&AtomicU64>,
) -> Result<ParsedForm, FormError>
where
    S: futures_util::Stream<Item = Result<Bytes, FormError>> + Send + 'static,
{
    let advanced = || {
        if let Some(progress) = progress {
            progress.store(0, Ordering::Relaxed);
        }
    };
    let mut multipart = multer::Multipart::new(stream, boundary);
    let mut form = ParsedForm::default();
    // Bytes of text fields and in-memory files held so far (`MEMORY_BUDGET`); a form parsed
    // from a body in memory already (nothing spooled) is bounded by its body limit instead.
    let mut in_memory: u64 = 0;
    let spools = limits.spool_threshold != u64::MAX;
    while let Some(mut field) = multipart.next_field().await.map_err(multer_error)? {
        advanced();
        if form.order.len() >= limits.max_parts {
            return Err(FormError::TooManyParts(limits.max_parts));
        }
        let name = field
            .name()
            .ok_or_else(|| {
                FormError::Malformed("a part without a name in its Content-Disposition".to_owned())
            })?
            .to_owned();
        let Some(filename) = field.file_name().map(str::to_owned) else {
            let mut value = BytesMut::new();
            while let Some(chunk) = field.chunk().await.map_err(multer_error)? {
                advanced();
                if (value.len() + chunk.len()) as u64 > limits.max_field_size {
                    return Err(FormError::FieldTooLarge {
                        name,
                        limit: limits.max_field_size,
                    });
                }
                if spools && in_memory + (value.len() + chunk.len()) as u64 > MEMORY_BUDGET {
                    return Err(FormError::FieldsTooLarge(MEMORY_BUDGET));
                }
                value.extend_from_slice(&chunk);
            }
            in_memory += value.len() as u64;
            let value = String::from_utf8(value.to_vec())
                .map_err(|_| FormError::Malformed(format!("field {name:?} is not UTF-8 text")))?;
            form.order.push((false, form.fields.len()));
            form.fields.push((name, value));
            continue;
        };
        let content_type = field.content_type().map(ToString::to_string);
        let headers = field
            .headers()
            .iter()
            .map(|(key, value)| {
                (
                    key.as_str().to_owned(),
                    String::from_utf8_lossy(value.as_bytes()).into_owned(),
                )
            })
            .collect();
        let file_limit = limits.max_file_size.unwrap_or(u64::MAX);
        let mut size: u64 = 0;
        let mut memory = BytesMut::new();
        let mut spooled: Option<(PathBuf, tokio::fs::File)> = None;
        while let Some(chunk) = field.chunk().await.map_err(multer_error)? {
            advanced();
            size += chunk.len() as u64;
            if size > file_limit {
                return Err(FormError::FileTooLarge {
                    name,
                    limit: file_limit,
                });
            }
            let over_budget = spools && in_memory + size > MEMORY_BUDGET;
            if spooled.is_none() && (size > limits.spool_threshold || over_budget) {
                let (path, mut file) = spool.create().await.map_err(spool_error)?;
                file.write_all(&memory).await.map_err(spool_error)?;
                memory = BytesMut::new();
                spooled = Some((path, file));
            }
            match &mut spooled {
                Some((_, file)) => file.write_all(&chunk).await.map_err(spool_error)?,
                None => memory.extend_from_slice(&chunk),
            }
        }
        let content = match spooled {
            Some((path, mut file)) => {
                file.flush().await.map_err(spool_error)?;
                FileContent::Spooled(path)
            }
            None => {
                in_memory += size;
                FileContent::Memory(memory.freeze())
            }
        };
        form.order.push((true, form.files.len()));
        form.files.push(FilePart {
            name,
            filename,
            content_type,
            headers,
            size,
            content,
        });
    }
    Ok(form)
}

fn spool_error(err: std::io::Error) -> FormError {
    tracing::error!("could not write an uploaded file to a temporary file: {err}");
    FormError::Spool(err.to_string())
}

/// Starts parsing `body` (a request's whole body, with its `Content-Type`) on tokio; the
/// handler awaits the returned form. GIL: held (`py`), loop thread; nothing is parsed here.
pub(crate) fn start_parse(
    content_type: Option<http::HeaderValue>,
    body: Bytes,
    limits: FormLimits,
) -> PendingForm {
    let (tx, rx) = channel::to_loop::<Result<ParsedForm, FormError>>(1);
    let job = async move {
        let mut headers = http::HeaderMap::new();
        if let Some(value) = content_type {
            headers.insert(http::header::CONTENT_TYPE, value);
        }
        // Already in memory: nothing to gain from spooling.
        let limits = FormLimits {
            spool_threshold: u64::MAX,
            ..limits
        };
        let form = match FormKind::of(&headers) {
            Err(err) => Err(err),
            Ok(Some(FormKind::UrlEncoded)) => pyhost_core::form::parse_urlencoded(&body, &limits),
            Ok(Some(FormKind::Multipart(boundary))) => {
                // In memory already: nothing to guard.
                let chunk = futures_util::stream::iter([Ok::<_, FormError>(body)]);
                let mut spool = Spool::default();
                parse_multipart(chunk, boundary, &limits, &mut spool, None).await
            }
            Ok(None) if body.is_empty() => Ok(ParsedForm::default()),
            Ok(None) => Err(FormError::NotAForm("(none)".to_owned())),
        };
        let _ = tx.send(form).await;
    };
    match RUNTIME.get() {
        Some(runtime) => drop(runtime.spawn(job)),
        // Not reached: a body comes only through a request the service handled on tokio.
        None => tracing::error!("no tokio runtime to parse a form on"),
    }
    PendingForm { rx: Mutex::new(rx) }
}

/// A form being parsed on tokio, as the handler awaits it (`pyhost.forms` loops on
/// `try_take` and `ready`). GIL: held by every method, on the loop thread.
#[pyclass(module = "pyhost", name = "_PendingForm")]
pub(crate) struct PendingForm {
    rx: Mutex<LoopReceiver<Result<ParsedForm, FormError>>>,
}

#[pymethods]
impl PendingForm {
    /// The form as a `pyhost.FormData`, `None` while it is being parsed; raises `HTTPError`
    /// for a form that cannot be parsed.
    fn try_take<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyAny>>> {
        let item = self
            .rx
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .try_recv();
        match item {
            Ok(Ok(form)) => to_python(py, form).map(Some),
            Ok(Err(err)) => Err(http_error(py, err.status().as_u16(), err.to_string())?),
            Err(Empty::Waiting) => Ok(None),
            Err(Empty::Closed) => Err(http_error(
                py,
                500,
                "the form could not be parsed".to_owned(),
            )?),
        }
    }

    /// A future done once `try_take` has the outcome.
    fn ready<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        self.rx
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .ready(py)
    }
}

/// `pyhost.forms.FormData` and `UploadFile`, looked up once.
struct FormClasses {
    form_data: Py<PyAny>,
    upload_file: Py<PyAny>,
}

static CLASSES: PyOnceLock<FormClasses> = PyOnceLock::new();

/// The form as a `pyhost.FormData` of `str` values and `pyhost.UploadFile`s. GIL: held.
pub(crate) fn to_python(py: Python<'_>, form: ParsedForm) -> PyResult<Bound<'_, PyAny>> {
    let classes = CLASSES.get_or_try_init(py, || {
        let forms = py.import("pyhost.forms")?;
        Ok::<_, PyErr>(FormClasses {
            form_data: forms.getattr("FormData")?.unbind(),
            upload_file: forms.getattr("UploadFile")?.unbind(),
        })
    })?;
    let ParsedForm {
        fields,
        files,
        order,
    } = form;
    let mut fields: Vec<Option<(String, String)>> = fields.into_iter().map(Some).collect();
    let mut files: Vec<Option<FilePart>> = files.into_iter().map(Some).collect();
    let items = PyList::empty(py);
    for (is_file, index) in order {
        if is_file {
            let Some(file) = files.get_mut(index).and_then(Option::take) else {
                continue;
            };
            let headers = PyList::empty(py);
            for (name, value) in &file.headers {
                headers.append(PyTuple::new(py, [name.as_str(), value.as_str()])?)?;
            }
            let (data, path) = match &file.content {
                FileContent::Memory(bytes) => (PyBytes::new(py, bytes).into_any(), py.None()),
                FileContent::Spooled(path) => (
                    py.None().into_bound(py),
                    PyString::new(py, &path.to_string_lossy())
                        .into_any()
                        .unbind(),
                ),
            };
            let upload = classes.upload_file.bind(py).call1((
                file.filename.as_str(),
                file.content_type.as_deref(),
                file.size,
                headers,
                data,
                path,
            ))?;
            items.append((file.name.as_str(), upload))?;
        } else if let Some((name, value)) = fields.get_mut(index).and_then(Option::take) {
            items.append((name, value))?;
        }
    }
    classes.form_data.bind(py).call1((items,))
}

/// The limits `await request.form()` parses under (`server.form_*`), set by the service.
static LIMITS: OnceLock<FormLimits> = OnceLock::new();

/// Sets the limits of lazily parsed forms (the first service's).
pub(crate) fn set_limits(limits: FormLimits) {
    let _ = LIMITS.set(limits);
}

/// The limits of lazily parsed forms.
pub(crate) fn limits() -> FormLimits {
    LIMITS.get().copied().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(parts: &[(&str, Option<&str>, &[u8])]) -> Bytes {
        let mut out = Vec::new();
        for (name, filename, data) in parts {
            out.extend_from_slice(b"--b\r\nContent-Disposition: form-data; name=\"");
            out.extend_from_slice(name.as_bytes());
            out.push(b'"');
            if let Some(filename) = filename {
                out.extend_from_slice(format!("; filename=\"{filename}\"").as_bytes());
            }
            out.extend_from_slice(b"\r\n\r\n");
            out.extend_from_slice(data);
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"--b--\r\n");
        Bytes::from(out)
    }

    async fn parse(
        data: Bytes,
        limits: FormLimits,
        spool: &mut Spool,
    ) -> Result<ParsedForm, FormError> {
        // Small pieces, as from a connection.
        let pieces: Vec<Result<Bytes, FormError>> = data
            .chunks(7)
            .map(|piece| Ok(Bytes::copy_from_slice(piece)))
            .collect();
        parse_multipart(
            futures_util::stream::iter(pieces),
            "b".into(),
            &limits,
            spool,
            None,
        )
        .await
    }

    #[tokio::test]
    async fn a_file_past_the_threshold_is_spooled_and_removed_with_its_spool() {
        let limits = FormLimits {
            spool_threshold: 10,
            ..FormLimits::default()
        };
        let mut spool = Spool::default();
        let form = parse(
            body(&[
                ("a", None, b"1"),
                ("f", Some("f.bin"), &[7; 100]),
                ("g", Some("g"), b"small"),
            ]),
            limits,
            &mut spool,
        )
        .await
        .unwrap();
        assert_eq!(form.fields, [("a".to_owned(), "1".to_owned())]);
        assert_eq!(form.order, [(false, 0), (true, 0), (true, 1)]);
        let FileContent::Spooled(path) = &form.files[0].content else {
            panic!("not spooled");
        };
        assert_eq!(std::fs::read(path).unwrap(), [7; 100]);
        assert!(matches!(&form.files[1].content, FileContent::Memory(data) if data == "small"));
        let path = path.clone();
        drop(spool);
        // Removed on a blocking thread: give it a moment.
        for _ in 0..100 {
            if !path.exists() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert!(!path.exists());
    }

    #[tokio::test]
    async fn limits_and_malformed_bodies_are_errors() {
        let few = FormLimits {
            max_parts: 1,
            ..FormLimits::default()
        };
        let two = body(&[("a", None, b"1"), ("b", None, b"2")]);
        let mut spool = Spool::default();
        assert!(matches!(
            parse(two, few, &mut spool).await,
            Err(FormError::TooManyParts(1))
        ));
        let small_files = FormLimits {
            max_file_size: Some(3),
            ..FormLimits::default()
        };
        assert!(matches!(
            parse(body(&[("f", Some("f"), b"abcd")]), small_files, &mut spool).await,
            Err(FormError::FileTooLarge { .. })
        ));
        let whole = body(&[("a", None, b"1")]);
        let truncated = whole.slice(..whole.len() - 6);
        assert!(matches!(
            parse(truncated, FormLimits::default(), &mut spool).await,
            Err(FormError::Malformed(_))
        ));
        assert!(matches!(
            parse(
                body(&[("t", None, &[0xff, 0xfe])]),
                FormLimits::default(),
                &mut spool
            )
            .await,
            Err(FormError::Malformed(_))
        ));
    }
}
