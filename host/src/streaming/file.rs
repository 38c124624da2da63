//! Serving one file: open it, answer the request's preconditions and range, stream its bytes.
//!
//! Shared by `FileResponse` (a handler names the file) and the `[static]` mounts
//! ([`super::static_files`] finds the file). Nothing here runs on the loop thread or blocks a
//! tokio worker: opening and `fstat` run on tokio's blocking pool
//! ([`tokio::task::spawn_blocking`]), and so does every read the page cache cannot answer.
//!
//! The body is read in chunks of [`FILE_CHUNK`] with positional reads, straight into the
//! buffer handed to hyper: one copy from the page cache, no intermediate buffer (tokio's
//! `fs::File` keeps one of its own and copies twice). A chunk is first read on the tokio
//! worker with `preadv2(RWF_NOWAIT)`, which copies what the page cache holds and refuses
//! (`EAGAIN`) rather than wait for the disk: a cached file, the usual case for a file served
//! often, costs no thread hop (a futex wake-up, an eventfd write and two context switches per
//! chunk, the largest cost after the copies: `docs/files.md`). What the worker does instead is
//! one copy of the chunk, as the socket write that follows does. A chunk that is not cached is
//! read with `pread` on the blocking pool, and the chunk after it is read ahead while hyper
//! sends it, so the disk's wait overlaps the socket's; a cached chunk is read only when hyper
//! asks for it. A response holds at most one chunk beyond what hyper holds, whatever its client
//! does. A blocking thread is taken only for the length of one read, so a thousand stalled
//! downloads hold no thread.
//! `sendfile(2)` would skip the copy, but hyper owns the socket and writes only the buffers it
//! is given (and HTTP/2 framing or TLS could not use it anyway); the socket write copies every
//! byte once more in any case (`docs/files.md`).
//!
//! Validators: a strong `ETag` made of the file's size and its modification time in
//! nanoseconds (`"<size hex>-<mtime ns hex>"`; nginx's is the same pair with the time in
//! seconds, which cannot tell apart two writes within a second), and `Last-Modified`. Strong,
//! so that `If-Range` may use it: a different content with the same size and the same
//! nanosecond mtime takes a deliberate `touch`. Preconditions follow RFC 9110 §13.2.2: `If-Match`, then
//! `If-Unmodified-Since` (412), then `If-None-Match`, then `If-Modified-Since` (304), then
//! `Range` under `If-Range`. Only a single byte range is answered 206; a request for several is
//! answered with the whole file (200), which RFC 9110 §14.2 allows, and saves building
//! `multipart/byteranges`. Preconditions and ranges apply to `GET` and `HEAD` of a `200`
//! answer only; `HEAD` gets the `GET` answer's headers and no body (ranges are for `GET` only,
//! §14.2).

use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use http::header::{
    ACCEPT_RANGES, CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, ETAG, IF_MATCH, IF_MODIFIED_SINCE,
    IF_NONE_MATCH, IF_RANGE, IF_UNMODIFIED_SINCE, LAST_MODIFIED, RANGE,
};
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use http_body::{Frame, SizeHint};
use http_body_util::BodyExt;
use pyhost_core::reply::Reply;
use tokio::task::JoinHandle;

use super::body::{BoxError, Deferred};
use crate::logging::{LogBudget, suppressed_note};

/// The size of the reads a file body is made of. Measured with `bench/run.py`'s file scenario
/// (100 MiB over loopback, `docs/files.md`): 64 KiB pays the blocking-pool hop four times as
/// often for the same bytes; above 256 KiB nothing more is gained and a slow client's
/// response holds more.
pub(crate) const FILE_CHUNK: usize = 256 << 10;

/// The request headers a file's answer depends on. Taken from the request only when the
/// answer is a file, so other requests pay nothing for them.
#[derive(Debug, Default, Clone)]
pub(crate) struct Conditions {
    pub(crate) if_match: Option<HeaderValue>,
    pub(crate) if_none_match: Option<HeaderValue>,
    pub(crate) if_modified_since: Option<HeaderValue>,
    pub(crate) if_unmodified_since: Option<HeaderValue>,
    pub(crate) range: Option<HeaderValue>,
    pub(crate) if_range: Option<HeaderValue>,
}

impl Conditions {
    /// The conditional and range headers of a request.
    pub(crate) fn from_headers(headers: &HeaderMap) -> Self {
        let get = |name: &HeaderName| joined(headers, name);
        Self {
            if_match: get(&IF_MATCH),
            if_none_match: get(&IF_NONE_MATCH),
            if_modified_since: headers.get(IF_MODIFIED_SINCE).cloned(),
            if_unmodified_since: headers.get(IF_UNMODIFIED_SINCE).cloned(),
            range: headers.get(RANGE).cloned(),
            if_range: headers.get(IF_RANGE).cloned(),
        }
    }
}

/// A list header sent as several lines, as one value (RFC 9110 §5.3).
fn joined(headers: &HeaderMap, name: &HeaderName) -> Option<HeaderValue> {
    let mut values = headers.get_all(name).iter();
    let first = values.next()?;
    let Some(second) = values.next() else {
        return Some(first.clone());
    };
    let mut all = first.as_bytes().to_vec();
    for value in std::iter::once(second).chain(values) {
        all.extend_from_slice(b", ");
        all.extend_from_slice(value.as_bytes());
    }
    HeaderValue::from_bytes(&all).ok()
}

/// How the request that a file answers was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Method {
    /// `GET`: preconditions, ranges and the body.
    Get,
    /// `HEAD`: preconditions, the headers of the `GET` answer, no body.
    Head,
    /// Anything else (a handler's `POST` answered with a file): the file, unconditionally.
    Other,
}

impl Method {
    /// The method of `method`.
    pub(crate) fn of(method: &http::Method) -> Self {
        match *method {
            http::Method::GET => Self::Get,
            http::Method::HEAD => Self::Head,
            _ => Self::Other,
        }
    }
}

/// What to answer with a file: the request's side.
#[derive(Debug)]
pub(crate) struct FileRequest {
    /// The file.
    pub(crate) path: PathBuf,
    /// The status of a full answer; preconditions and ranges apply only to 200.
    pub(crate) status: StatusCode,
    /// Headers of every answer (a handler's own, `Content-Disposition`).
    pub(crate) headers: Vec<(HeaderName, HeaderValue)>,
    /// `Content-Type`; `None`: guessed from [`Self::guess_from`]'s extension.
    pub(crate) media_type: Option<HeaderValue>,
    /// The name whose extension gives the media type (the download name, or the path).
    pub(crate) guess_from: Option<PathBuf>,
    /// The request's conditional headers.
    pub(crate) conditions: Conditions,
    /// The request's method.
    pub(crate) method: Method,
}

/// Why a file could not be served.
#[derive(Debug, thiserror::Error)]
pub(crate) enum FileError {
    /// Nothing at that path.
    #[error("{}: no such file", .0.display())]
    NotFound(PathBuf),
    /// A directory or a device, not a regular file.
    #[error("{} is not a regular file", .0.display())]
    NotAFile(PathBuf),
    /// There, but not readable (permissions, I/O error).
    #[error("cannot read {}: {source}", path.display())]
    Unreadable {
        /// The file.
        path: PathBuf,
        /// What the system said.
        source: io::Error,
    },
    /// The blocking pool dropped the task (the runtime is shutting down).
    #[error("the task opening the file did not finish")]
    Lost,
}

impl FileError {
    /// The host's answer: 404 for a missing file, 500 otherwise (the details go to the log,
    /// not to the client).
    pub(crate) fn reply(&self) -> Reply {
        match self {
            Self::NotFound(_) => Reply::detail(StatusCode::NOT_FOUND, "Not Found"),
            _ => Reply::detail(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Internal Server Error: the file could not be read",
            ),
        }
    }
}

/// An open regular file and what `fstat` said about it.
#[derive(Debug)]
pub(crate) struct Opened {
    file: std::fs::File,
    len: u64,
    modified: Option<SystemTime>,
}

impl Opened {
    /// Opens `path` and checks that it is a regular file. Blocking: for the blocking pool.
    pub(crate) fn open_blocking(path: &Path) -> Result<Self, FileError> {
        let file = std::fs::File::open(path).map_err(|err| classify(path, err))?;
        let meta = file.metadata().map_err(|err| classify(path, err))?;
        if !meta.is_file() {
            return Err(FileError::NotAFile(path.to_path_buf()));
        }
        Ok(Self {
            file,
            len: meta.len(),
            modified: meta.modified().ok(),
        })
    }
}

fn classify(path: &Path, err: io::Error) -> FileError {
    match err.kind() {
        io::ErrorKind::NotFound | io::ErrorKind::NotADirectory => {
            FileError::NotFound(path.to_path_buf())
        }
        _ => FileError::Unreadable {
            path: path.to_path_buf(),
            source: err,
        },
    }
}

/// Opens the request's file on the blocking pool and answers it.
pub(crate) async fn serve(request: FileRequest) -> Result<(Reply, Option<FileBody>), FileError> {
    let path = request.path.clone();
    let opened = tokio::task::spawn_blocking(move || Opened::open_blocking(&path))
        .await
        .map_err(|_| FileError::Lost)??;
    Ok(answer(opened, &request))
}

/// Missing or unreadable files logged per second: a handler may name a file from the request.
static FILE_LOGS: LogBudget = LogBudget::new(20);

/// A file the service is to answer with ([`Deferred::File`]).
pub(crate) enum FileJob {
    /// Named by a handler's `FileResponse`.
    Response(Box<FileRequest>),
    /// Under a `[static]` mount, still to be resolved to a file.
    Static(Box<super::static_files::StaticRequest>),
}

/// Turns a file job into its answer: the head, and the body to stream after it. A `head`
/// request gets the `GET` answer's headers and no body. Runs on a tokio worker; the file work
/// goes to the blocking pool.
pub(crate) async fn resolve(
    job: FileJob,
    head: bool,
    request_id: &str,
) -> (Reply, Option<Deferred>) {
    let (reply, body) = match job {
        FileJob::Response(mut request) => {
            if head {
                request.method = Method::Head;
            }
            let path = request.path.clone();
            match serve(*request).await {
                Ok(answer) => answer,
                Err(err) => {
                    if let Some(held_back) = FILE_LOGS.admit() {
                        let note = suppressed_note(held_back);
                        match err {
                            FileError::NotFound(_) => tracing::warn!(
                                "request {request_id}: FileResponse names {}, which does not exist{note}",
                                path.display()
                            ),
                            _ => tracing::error!("request {request_id}: FileResponse: {err}{note}"),
                        }
                    }
                    (err.reply(), None)
                }
            }
        }
        FileJob::Static(request) => super::static_files::serve(*request).await,
    };
    let body = body.map(|body| Deferred::Stream(Box::pin(body.map_err(BoxError::from))));
    (reply, body)
}

/// The answer to `request` from the opened file: its head (the `Reply`, whose body is empty
/// unless the answer is an error) and, for a `GET` answered with bytes, the body to stream.
/// Every answer that could carry the file says its length in `Content-Length`, `HEAD`'s too.
pub(crate) fn answer(opened: Opened, request: &FileRequest) -> (Reply, Option<FileBody>) {
    let validators = Validators::of(&opened);
    let mut reply = Reply::empty(request.status);
    // The framing is ours to say.
    reply.headers.extend(
        request
            .headers
            .iter()
            .filter(|(name, _)| name != CONTENT_LENGTH && name != CONTENT_RANGE)
            .cloned(),
    );
    let conditional = request.status == StatusCode::OK && request.method != Method::Other;
    if conditional {
        validators.add_to(&mut reply.headers);
        reply
            .headers
            .push((ACCEPT_RANGES, HeaderValue::from_static("bytes")));
        match precondition(&request.conditions, &validators) {
            Precondition::Failed => {
                let mut failed =
                    Reply::detail(StatusCode::PRECONDITION_FAILED, "Precondition Failed");
                validators.add_to(&mut failed.headers);
                return (failed, None);
            }
            Precondition::NotModified => {
                reply.status = StatusCode::NOT_MODIFIED;
                return (reply, None);
            }
            Precondition::Proceed => {}
        }
    }
    if !reply.headers.iter().any(|(name, _)| name == CONTENT_TYPE) {
        reply.headers.push((CONTENT_TYPE, content_type(request)));
    }
    let mut start = 0;
    let mut len = opened.len;
    if conditional
        && request.method == Method::Get
        && let Some(range) = &request.conditions.range
        && if_range_holds(request.conditions.if_range.as_ref(), &validators)
    {
        match parse_range(range.as_bytes(), opened.len) {
            ByteRange::Ignored => {}
            ByteRange::Unsatisfiable => {
                let mut refused =
                    Reply::detail(StatusCode::RANGE_NOT_SATISFIABLE, "Range Not Satisfiable");
                if let Ok(value) = HeaderValue::from_str(&format!("bytes */{}", opened.len)) {
                    refused.headers.push((CONTENT_RANGE, value));
                }
                validators.add_to(&mut refused.headers);
                return (refused, None);
            }
            ByteRange::Satisfiable { first, last } => {
                reply.status = StatusCode::PARTIAL_CONTENT;
                start = first;
                len = last - first + 1;
                if let Ok(value) =
                    HeaderValue::from_str(&format!("bytes {first}-{last}/{}", opened.len))
                {
                    reply.headers.push((CONTENT_RANGE, value));
                }
            }
        }
    }
    reply.headers.push((CONTENT_LENGTH, HeaderValue::from(len)));
    let body =
        (request.method != Method::Head && len > 0).then(|| FileBody::new(opened.file, start, len));
    (reply, body)
}

/// `Content-Type`: the handler's, else guessed from the extension; text is said to be UTF-8.
fn content_type(request: &FileRequest) -> HeaderValue {
    if let Some(media_type) = &request.media_type {
        return media_type.clone();
    }
    let name = request.guess_from.as_deref().unwrap_or(&request.path);
    guess_media_type(name)
}

/// The media type of a file named `name`, from its extension.
pub(crate) fn guess_media_type(name: &Path) -> HeaderValue {
    let Some(mime) = mime_guess::from_path(name).first() else {
        return HeaderValue::from_static("application/octet-stream");
    };
    let text = if mime.type_() == mime_guess::mime::TEXT && mime.get_param("charset").is_none() {
        format!("{mime}; charset=utf-8")
    } else {
        mime.to_string()
    };
    HeaderValue::from_str(&text).unwrap_or(HeaderValue::from_static("application/octet-stream"))
}

/// A file's validators.
struct Validators {
    etag: Option<HeaderValue>,
    /// Seconds since the epoch: HTTP dates have no finer grain.
    modified: Option<u64>,
}

impl Validators {
    fn of(opened: &Opened) -> Self {
        let since_epoch = opened
            .modified
            .and_then(|time| time.duration_since(UNIX_EPOCH).ok());
        Self {
            etag: since_epoch.and_then(|mtime| {
                HeaderValue::from_str(&format!("\"{:x}-{:x}\"", opened.len, mtime.as_nanos())).ok()
            }),
            modified: since_epoch.map(|mtime| mtime.as_secs()),
        }
    }

    fn add_to(&self, headers: &mut Vec<(HeaderName, HeaderValue)>) {
        if let Some(etag) = &self.etag {
            headers.push((ETAG, etag.clone()));
        }
        if let Some(seconds) = self.modified {
            let date = httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_secs(seconds));
            if let Ok(value) = HeaderValue::from_str(&date) {
                headers.push((LAST_MODIFIED, value));
            }
        }
    }

    /// The opaque part of the ETag, quotes included.
    fn opaque(&self) -> Option<&[u8]> {
        self.etag.as_ref().map(HeaderValue::as_bytes)
    }
}

enum Precondition {
    Proceed,
    NotModified,
    Failed,
}

/// RFC 9110 §13.2.2, steps 1 to 4.
fn precondition(conditions: &Conditions, validators: &Validators) -> Precondition {
    if let Some(if_match) = &conditions.if_match {
        // Strong comparison: our tag is strong, a weak one in the list never matches.
        let matched = match_list(if_match.as_bytes(), |tag| {
            !tag.weak && Some(tag.opaque) == validators.opaque()
        });
        if !matched {
            return Precondition::Failed;
        }
    } else if let Some(date) = conditions.if_unmodified_since.as_ref().and_then(http_date)
        && validators.modified.is_some_and(|modified| modified > date)
    {
        return Precondition::Failed;
    }
    if let Some(if_none_match) = &conditions.if_none_match {
        // Weak comparison: `W/"x"` matches `"x"`.
        if match_list(if_none_match.as_bytes(), |tag| {
            Some(tag.opaque) == validators.opaque()
        }) {
            return Precondition::NotModified;
        }
    } else if let Some(date) = conditions.if_modified_since.as_ref().and_then(http_date)
        && validators.modified.is_some_and(|modified| modified <= date)
    {
        return Precondition::NotModified;
    }
    Precondition::Proceed
}

/// Whether `If-Range`, when sent, names the current file: an exact strong tag or the exact
/// `Last-Modified` date (RFC 9110 §13.1.5). A malformed one does not.
fn if_range_holds(if_range: Option<&HeaderValue>, validators: &Validators) -> bool {
    let Some(value) = if_range else {
        return true;
    };
    let bytes = value.as_bytes();
    if bytes.starts_with(b"\"") {
        return Some(bytes) == validators.opaque();
    }
    if bytes.starts_with(b"W/") {
        return false;
    }
    http_date(value).is_some_and(|date| Some(date) == validators.modified)
}

fn http_date(value: &HeaderValue) -> Option<u64> {
    let text = value.to_str().ok()?;
    let time = httpdate::parse_http_date(text).ok()?;
    time.duration_since(UNIX_EPOCH).ok().map(|d| d.as_secs())
}

/// One entity-tag of a list.
struct Tag<'a> {
    weak: bool,
    /// With its quotes, as our `ETag` value is.
    opaque: &'a [u8],
}

/// Whether `*` or any tag of the list satisfies `test`. A malformed list matches nothing past
/// the point where it stops making sense.
fn match_list(list: &[u8], mut test: impl FnMut(&Tag<'_>) -> bool) -> bool {
    let trimmed = list.trim_ascii();
    if trimmed == b"*" {
        return true;
    }
    let mut rest = trimmed;
    loop {
        rest = rest.trim_ascii_start();
        while let Some(after) = rest.strip_prefix(b",") {
            rest = after.trim_ascii_start();
        }
        if rest.is_empty() {
            return false;
        }
        let weak = rest.starts_with(b"W/");
        if weak {
            rest = &rest[2..];
        }
        if !rest.starts_with(b"\"") {
            return false;
        }
        let Some(close) = rest[1..].iter().position(|&b| b == b'"') else {
            return false;
        };
        let (opaque, after) = rest.split_at(close + 2);
        if test(&Tag { weak, opaque }) {
            return true;
        }
        rest = after;
    }
}

/// What a `Range` header asks of a file of a given length.
#[derive(Debug, PartialEq, Eq)]
enum ByteRange {
    /// Not a single byte range we understand, or several: answer the whole file.
    Ignored,
    /// A single range that starts past the end (or an empty suffix): 416.
    Unsatisfiable,
    /// Bytes `first..=last`.
    Satisfiable { first: u64, last: u64 },
}

/// Parses `bytes=FIRST-LAST`, `bytes=FIRST-` or `bytes=-SUFFIX` (RFC 9110 §14.1.2).
fn parse_range(value: &[u8], len: u64) -> ByteRange {
    let Some(eq) = value.iter().position(|&b| b == b'=') else {
        return ByteRange::Ignored;
    };
    let (unit, specs) = value.split_at(eq);
    if !unit.trim_ascii().eq_ignore_ascii_case(b"bytes") {
        return ByteRange::Ignored;
    }
    let mut specs = specs[1..]
        .split(|&b| b == b',')
        .map(<[u8]>::trim_ascii)
        .filter(|spec| !spec.is_empty());
    let (Some(spec), None) = (specs.next(), specs.next()) else {
        return ByteRange::Ignored;
    };
    let Some(dash) = spec.iter().position(|&b| b == b'-') else {
        return ByteRange::Ignored;
    };
    let (first, last) = (&spec[..dash], &spec[dash + 1..]);
    let number = |digits: &[u8]| -> Option<u64> {
        if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
            return None;
        }
        // Past u64: a position no file reaches.
        Some(
            std::str::from_utf8(digits)
                .ok()?
                .parse()
                .unwrap_or(u64::MAX),
        )
    };
    if first.is_empty() {
        let Some(suffix) = number(last) else {
            return ByteRange::Ignored;
        };
        if suffix == 0 || len == 0 {
            return ByteRange::Unsatisfiable;
        }
        return ByteRange::Satisfiable {
            first: len.saturating_sub(suffix),
            last: len - 1,
        };
    }
    let Some(first) = number(first) else {
        return ByteRange::Ignored;
    };
    let last = if last.is_empty() {
        u64::MAX
    } else {
        match number(last) {
            Some(last) if last >= first => last,
            _ => return ByteRange::Ignored,
        }
    };
    if first >= len {
        return ByteRange::Unsatisfiable;
    }
    ByteRange::Satisfiable {
        first,
        last: last.min(len - 1),
    }
}

/// The bytes `offset..offset + len` of a file, in chunks of at most [`FILE_CHUNK`]: read on the
/// tokio worker when the page cache holds them, else on the blocking pool, one chunk ahead.
pub(crate) struct FileBody {
    file: Arc<std::fs::File>,
    /// Where the next read starts.
    offset: u64,
    /// Bytes not yet read.
    unread: u64,
    /// Bytes not yet handed to hyper.
    unsent: u64,
    next: Next,
    /// Whether reads are tried on the worker first; cleared for good when the file system
    /// does not support reads that refuse to wait.
    cached_reads: bool,
}

/// The chunk after the one hyper has.
enum Next {
    /// Not read yet.
    Unread,
    /// Read ahead from the page cache.
    Ready(Bytes),
    /// Being read on the blocking pool.
    Reading(JoinHandle<io::Result<Bytes>>),
}

impl FileBody {
    fn new(file: std::fs::File, offset: u64, len: u64) -> Self {
        Self {
            file: Arc::new(file),
            offset,
            unread: len,
            unsent: len,
            next: Next::Unread,
            cached_reads: true,
        }
    }

    /// The size of the next read.
    fn next_len(&self) -> usize {
        usize::try_from(self.unread).map_or(FILE_CHUNK, |unread| unread.min(FILE_CHUNK))
    }

    /// The next chunk, read here (on the tokio worker) if the page cache holds at least its
    /// first page: what the cache holds of it, without waiting for the disk. `Err` gives the
    /// buffer back when nothing could be read that way.
    fn read_cached(&mut self, mut buffer: BytesMut, n: usize) -> Result<Bytes, BytesMut> {
        if !self.cached_reads {
            return Err(buffer);
        }
        match read_nowait(&self.file, self.offset, &mut buffer, n) {
            Ok(0) => Err(buffer),
            Ok(read) => {
                self.offset += read as u64;
                self.unread -= read as u64;
                Ok(buffer.freeze())
            }
            Err(err) => {
                // EAGAIN: not cached, the blocking pool reads it (and the cause of any other
                // error, which it reports). The others say the kernel or the file system does
                // not do this kind of read.
                if matches!(
                    err.raw_os_error(),
                    Some(libc::EOPNOTSUPP | libc::EINVAL | libc::ENOSYS)
                ) {
                    self.cached_reads = false;
                }
                Err(buffer)
            }
        }
    }

    /// Starts reading the next chunk into `buffer` on the blocking pool.
    fn read_blocking(&mut self, buffer: BytesMut, n: usize) {
        let file = self.file.clone();
        let offset = self.offset;
        self.offset += n as u64;
        self.unread -= n as u64;
        self.next = Next::Reading(tokio::task::spawn_blocking(move || {
            read_chunk(&file, offset, buffer, n)
        }));
    }

    /// Reads the next chunk if the cache holds it (`Next::Ready`), else starts its read on
    /// the blocking pool (`Next::Reading`).
    fn read_next(&mut self) {
        let n = self.next_len();
        // Allocated here, on the tokio worker that will also free it: an allocation made on
        // the blocking pool's threads would spread the chunks over as many allocator heaps as
        // there are threads, each keeping its freed pages (measured: 50 stalled downloads
        // took about twice the memory that way).
        let buffer = BytesMut::with_capacity(n);
        match self.read_cached(buffer, n) {
            Ok(chunk) => self.next = Next::Ready(chunk),
            Err(buffer) => self.read_blocking(buffer, n),
        }
    }

    fn sent(&mut self, chunk: Bytes) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        self.unsent -= chunk.len() as u64;
        Poll::Ready(Some(Ok(Frame::data(chunk))))
    }
}

/// Reads what the page cache holds of the `n` bytes at `offset` into `buffer` (empty, with
/// room for `n`), without waiting for the disk (`preadv2` with `RWF_NOWAIT`): `EAGAIN` when
/// not even the first page is cached.
#[cfg(target_os = "linux")]
fn read_nowait(
    file: &std::fs::File,
    offset: u64,
    buffer: &mut BytesMut,
    n: usize,
) -> io::Result<usize> {
    use std::os::fd::AsRawFd;
    let spare = &mut buffer.spare_capacity_mut()[..n];
    let at = libc::off_t::try_from(offset).map_err(|_| io::Error::other("offset out of range"))?;
    let iov = libc::iovec {
        iov_base: spare.as_mut_ptr().cast(),
        iov_len: spare.len(),
    };
    // SAFETY: the one `iovec` describes `spare`, memory the buffer owns, `spare.len()` bytes
    // of it, and `preadv2` writes at most that many bytes there; the file descriptor is open
    // for the call (`file` is borrowed).
    let read = unsafe { libc::preadv2(file.as_raw_fd(), &iov, 1, at, libc::RWF_NOWAIT) };
    let read = usize::try_from(read).map_err(|_| io::Error::last_os_error())?;
    // SAFETY: `preadv2` initialised the first `read` bytes of `spare` (at most `n`, within
    // the capacity).
    unsafe { buffer.set_len(read) };
    Ok(read)
}

/// Elsewhere every read goes to the blocking pool.
#[cfg(not(target_os = "linux"))]
fn read_nowait(_: &std::fs::File, _: u64, _: &mut BytesMut, _: usize) -> io::Result<usize> {
    Err(io::Error::from_raw_os_error(libc::ENOSYS))
}

/// Reads exactly `n` bytes at `offset` into `buffer` (empty, with room for `n`); a file that
/// ends sooner has shrunk since it was opened, and the response is cut short (its client sees
/// it incomplete).
///
/// `pread` goes straight into the buffer's unused capacity: zeroing 256 KiB first, as a safe
/// `read_at` needs, cost about a tenth of the server's CPU per byte sent.
fn read_chunk(
    file: &std::fs::File,
    offset: u64,
    mut buffer: BytesMut,
    n: usize,
) -> io::Result<Bytes> {
    use std::os::fd::AsRawFd;
    while buffer.len() < n {
        let filled = buffer.len();
        let spare = &mut buffer.spare_capacity_mut()[..n - filled];
        let at = libc::off_t::try_from(offset + filled as u64)
            .map_err(|_| io::Error::other("file offset out of range"))?;
        // SAFETY: `spare` is memory the buffer owns, `spare.len()` bytes of it, and `pread`
        // writes at most that many bytes there; the file descriptor is open for the call
        // (`file` is borrowed).
        let read =
            unsafe { libc::pread(file.as_raw_fd(), spare.as_mut_ptr().cast(), spare.len(), at) };
        if read < 0 {
            let err = io::Error::last_os_error();
            if err.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(err);
        }
        if read == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the file shrank while it was being sent",
            ));
        }
        // SAFETY: `pread` initialised the `read` bytes after `filled` (at most `spare.len()`,
        // so within the capacity).
        unsafe { buffer.set_len(filled + read as usize) };
    }
    Ok(buffer.freeze())
}

impl http_body::Body for FileBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let this = self.get_mut();
        loop {
            match std::mem::replace(&mut this.next, Next::Unread) {
                Next::Ready(chunk) => return this.sent(chunk),
                Next::Reading(mut reading) => {
                    let result = match Pin::new(&mut reading).poll(cx) {
                        Poll::Ready(result) => result,
                        Poll::Pending => {
                            this.next = Next::Reading(reading);
                            return Poll::Pending;
                        }
                    };
                    let chunk = match result {
                        Ok(Ok(chunk)) => chunk,
                        Ok(Err(err)) => return Poll::Ready(Some(Err(err))),
                        Err(join) => return Poll::Ready(Some(Err(io::Error::other(join)))),
                    };
                    // A chunk the cache did not hold: the next one is read now, while hyper
                    // sends this one, so that the disk's wait overlaps the socket's.
                    if this.unread > 0 {
                        this.read_next();
                    }
                    return this.sent(chunk);
                }
                // A cached chunk is read when hyper asks for it, not ahead: the read is a
                // copy on this thread either way, and a chunk not read yet holds no memory.
                Next::Unread if this.unread == 0 => return Poll::Ready(None),
                Next::Unread => this.read_next(),
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.unsent == 0
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.unsent)
    }
}

impl std::fmt::Debug for FileBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileBody")
            .field("offset", &self.offset)
            .field("unsent", &self.unsent)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A current-thread runtime and a fresh directory named after `tag`, for a test's files.
    fn runtime_and_dir(tag: &str) -> (tokio::runtime::Runtime, PathBuf) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let dir = std::env::temp_dir().join(format!("pyhost-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        (runtime, dir)
    }

    #[test]
    fn ranges_parse_as_rfc_9110_says() {
        use ByteRange::*;
        assert_eq!(
            parse_range(b"bytes=0-9", 100),
            Satisfiable { first: 0, last: 9 }
        );
        assert_eq!(
            parse_range(b"bytes=90-", 100),
            Satisfiable {
                first: 90,
                last: 99
            }
        );
        assert_eq!(
            parse_range(b"bytes=90-500", 100),
            Satisfiable {
                first: 90,
                last: 99
            }
        );
        assert_eq!(
            parse_range(b"bytes=-10", 100),
            Satisfiable {
                first: 90,
                last: 99
            }
        );
        assert_eq!(
            parse_range(b"bytes=-1000", 100),
            Satisfiable { first: 0, last: 99 }
        );
        assert_eq!(
            parse_range(b"Bytes = 5-5 ", 100),
            Satisfiable { first: 5, last: 5 }
        );
        assert_eq!(parse_range(b"bytes=100-", 100), Unsatisfiable);
        assert_eq!(parse_range(b"bytes=-0", 100), Unsatisfiable);
        assert_eq!(parse_range(b"bytes=0-0", 0), Unsatisfiable);
        assert_eq!(
            parse_range(b"bytes=99999999999999999999999-", 100),
            Unsatisfiable
        );
        for ignored in [
            &b"bytes=0-1,5-6"[..],
            b"items=0-1",
            b"bytes=5-1",
            b"bytes=a-b",
            b"bytes=",
            b"bytes=-",
            b"bytes=1",
            b"0-1",
            b"bytes=+1-2",
        ] {
            assert_eq!(parse_range(ignored, 100), Ignored, "{ignored:?}");
        }
        assert_eq!(
            parse_range(b"bytes=0-1, ", 100),
            Satisfiable { first: 0, last: 1 }
        );
    }

    #[test]
    fn entity_tag_lists_match_by_opaque_tag() {
        let ours = |tag: &Tag<'_>| tag.opaque == b"\"a-b\"";
        assert!(match_list(b"\"a-b\"", ours));
        assert!(match_list(b"W/\"a-b\"", ours));
        assert!(match_list(b"\"x\", \"a-b\"", ours));
        assert!(match_list(b" * ", ours));
        assert!(match_list(b",,\"x\" ,W/\"a-b\"", ours));
        assert!(!match_list(b"\"a-b", ours));
        assert!(!match_list(b"a-b", ours));
        assert!(!match_list(b"\"x\"", ours));
        assert!(!match_list(b"\"a,b\", \"a-b", ours));
        assert!(!match_list(b"", ours));
    }

    /// The file `f.txt` of `dir`, written once (a rewrite would change its validators).
    fn opened(dir: &Path, content: &[u8]) -> Opened {
        let path = dir.join("f.txt");
        if !path.exists() {
            std::fs::write(&path, content).unwrap();
        }
        Opened::open_blocking(&path).unwrap()
    }

    fn request(conditions: Conditions, method: Method) -> FileRequest {
        FileRequest {
            path: PathBuf::from("f.txt"),
            status: StatusCode::OK,
            headers: Vec::new(),
            media_type: None,
            guess_from: None,
            conditions,
            method,
        }
    }

    fn header<'a>(reply: &'a Reply, name: &HeaderName) -> Option<&'a str> {
        reply
            .headers
            .iter()
            .find(|(n, _)| n == name)
            .and_then(|(_, v)| v.to_str().ok())
    }

    #[test]
    fn preconditions_give_304_412_and_ranges_206_416() {
        // A read the page cache cannot answer goes to the blocking pool, which needs a runtime.
        let (runtime, dir) = runtime_and_dir("file");
        let _entered = runtime.enter();
        let (reply, body) = answer(
            opened(&dir, b"0123456789"),
            &request(Conditions::default(), Method::Get),
        );
        assert_eq!(reply.status, StatusCode::OK);
        assert!(body.is_some());
        assert_eq!(header(&reply, &CONTENT_LENGTH), Some("10"));
        assert_eq!(
            header(&reply, &CONTENT_TYPE),
            Some("text/plain; charset=utf-8")
        );
        let etag = header(&reply, &ETAG).unwrap().to_owned();
        let modified = header(&reply, &LAST_MODIFIED).unwrap().to_owned();
        let value = |text: &str| Some(HeaderValue::from_str(text).unwrap());

        let cases: Vec<(Conditions, Method, StatusCode)> = vec![
            (
                Conditions {
                    if_none_match: value(&etag),
                    ..Default::default()
                },
                Method::Get,
                StatusCode::NOT_MODIFIED,
            ),
            (
                Conditions {
                    if_none_match: value(&format!("W/{etag}")),
                    ..Default::default()
                },
                Method::Head,
                StatusCode::NOT_MODIFIED,
            ),
            (
                Conditions {
                    if_none_match: value("\"other\""),
                    if_modified_since: value(&modified),
                    ..Default::default()
                },
                Method::Get,
                StatusCode::OK,
            ),
            (
                Conditions {
                    if_modified_since: value(&modified),
                    ..Default::default()
                },
                Method::Get,
                StatusCode::NOT_MODIFIED,
            ),
            (
                Conditions {
                    if_modified_since: value("Thu, 01 Jan 1970 00:00:00 GMT"),
                    ..Default::default()
                },
                Method::Get,
                StatusCode::OK,
            ),
            (
                Conditions {
                    if_modified_since: value("garbage"),
                    ..Default::default()
                },
                Method::Get,
                StatusCode::OK,
            ),
            (
                Conditions {
                    if_match: value("\"other\""),
                    ..Default::default()
                },
                Method::Get,
                StatusCode::PRECONDITION_FAILED,
            ),
            (
                Conditions {
                    if_match: value(&format!("W/{etag}")),
                    ..Default::default()
                },
                Method::Get,
                StatusCode::PRECONDITION_FAILED,
            ),
            (
                Conditions {
                    if_match: value(&etag),
                    ..Default::default()
                },
                Method::Get,
                StatusCode::OK,
            ),
            (
                Conditions {
                    if_unmodified_since: value("Thu, 01 Jan 1970 00:00:00 GMT"),
                    ..Default::default()
                },
                Method::Get,
                StatusCode::PRECONDITION_FAILED,
            ),
            (
                Conditions {
                    range: value("bytes=2-4"),
                    ..Default::default()
                },
                Method::Get,
                StatusCode::PARTIAL_CONTENT,
            ),
            (
                Conditions {
                    range: value("bytes=2-4"),
                    ..Default::default()
                },
                Method::Head,
                StatusCode::OK,
            ),
            (
                Conditions {
                    range: value("bytes=2-4"),
                    if_range: value(&etag),
                    ..Default::default()
                },
                Method::Get,
                StatusCode::PARTIAL_CONTENT,
            ),
            (
                Conditions {
                    range: value("bytes=2-4"),
                    if_range: value(&modified),
                    ..Default::default()
                },
                Method::Get,
                StatusCode::PARTIAL_CONTENT,
            ),
            (
                Conditions {
                    range: value("bytes=2-4"),
                    if_range: value("\"stale\""),
                    ..Default::default()
                },
                Method::Get,
                StatusCode::OK,
            ),
            (
                Conditions {
                    range: value("bytes=2-4"),
                    if_range: value(&format!("W/{etag}")),
                    ..Default::default()
                },
                Method::Get,
                StatusCode::OK,
            ),
            (
                Conditions {
                    range: value("bytes=10-"),
                    ..Default::default()
                },
                Method::Get,
                StatusCode::RANGE_NOT_SATISFIABLE,
            ),
            (
                Conditions {
                    if_none_match: value(&etag),
                    ..Default::default()
                },
                Method::Other,
                StatusCode::OK,
            ),
        ];
        for (conditions, method, status) in cases {
            let shown = format!("{conditions:?} {method:?}");
            let (reply, body) = answer(opened(&dir, b"0123456789"), &request(conditions, method));
            assert_eq!(reply.status, status, "{shown}");
            if status == StatusCode::PARTIAL_CONTENT {
                assert_eq!(header(&reply, &CONTENT_RANGE), Some("bytes 2-4/10"));
                assert_eq!(header(&reply, &CONTENT_LENGTH), Some("3"));
                let body = body.expect("a body");
                let bytes = runtime.block_on(body.collect()).unwrap().to_bytes();
                assert_eq!(&bytes[..], b"234");
            }
            if status == StatusCode::RANGE_NOT_SATISFIABLE {
                assert_eq!(header(&reply, &CONTENT_RANGE), Some("bytes */10"));
            }
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_body_spans_chunks_and_a_shrunk_file_cuts_it_short() {
        let (runtime, dir) = runtime_and_dir("chunks");
        let content: Vec<u8> = (0..FILE_CHUNK * 2 + 1000)
            .map(|i| (i % 251) as u8)
            .collect();
        let path = dir.join("big.bin");
        std::fs::write(&path, &content).unwrap();
        runtime.block_on(async {
            let file = std::fs::File::open(&path).unwrap();
            let body = FileBody::new(file, 10, content.len() as u64 - 10);
            let hint = http_body::Body::size_hint(&body).exact();
            assert_eq!(hint, Some(content.len() as u64 - 10));
            let bytes = body.collect().await.unwrap().to_bytes();
            assert_eq!(&bytes[..], &content[10..]);

            let file = std::fs::File::open(&path).unwrap();
            let body = FileBody::new(file, 0, content.len() as u64);
            std::fs::File::options()
                .write(true)
                .open(&path)
                .unwrap()
                .set_len(FILE_CHUNK as u64 + 5)
                .unwrap();
            let err = body.collect().await.unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
        });
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn cached_and_blocking_reads_give_the_same_bytes() {
        let (runtime, dir) = runtime_and_dir("cached");
        let content: Vec<u8> = (0..FILE_CHUNK * 3 + 77).map(|i| (i % 241) as u8).collect();
        let path = dir.join("cached.bin");
        std::fs::write(&path, &content).unwrap();
        // Just written, so in the page cache: the worker's read takes it whole, unless the
        // file system does not do such reads (then the pool reads every chunk).
        let file = std::fs::File::open(&path).unwrap();
        let mut buffer = BytesMut::with_capacity(FILE_CHUNK);
        match read_nowait(&file, 5, &mut buffer, FILE_CHUNK) {
            Ok(read) => {
                assert_eq!(read, FILE_CHUNK);
                assert_eq!(&buffer[..], &content[5..5 + FILE_CHUNK]);
            }
            Err(err) => assert!(
                matches!(
                    err.raw_os_error(),
                    Some(libc::EOPNOTSUPP | libc::EINVAL | libc::ENOSYS)
                ),
                "{err}"
            ),
        }
        runtime.block_on(async {
            for cached_reads in [true, false] {
                let file = std::fs::File::open(&path).unwrap();
                let mut body = FileBody::new(file, 3, content.len() as u64 - 3);
                body.cached_reads = cached_reads;
                let bytes = body.collect().await.unwrap().to_bytes();
                assert_eq!(&bytes[..], &content[3..], "cached reads: {cached_reads}");
            }
        });
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn media_types_come_from_the_extension() {
        let guess = |name: &str| {
            guess_media_type(Path::new(name))
                .to_str()
                .unwrap()
                .to_owned()
        };
        assert_eq!(guess("a.html"), "text/html; charset=utf-8");
        assert_eq!(guess("a.png"), "image/png");
        assert_eq!(guess("a.unknownext"), "application/octet-stream");
        assert_eq!(guess("noext"), "application/octet-stream");
    }
}
