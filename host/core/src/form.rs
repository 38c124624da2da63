//! Request bodies as forms: which kind a request carries, the limits a form is held to, the
//! parsed form as plain data, and the validation of declared form fields.
//!
//! The parsing itself is split by how much work it is: `application/x-www-form-urlencoded`
//! is decoded here ([`parse_urlencoded`], with `form_urlencoded`), `multipart/form-data` by the
//! host on tokio (`pyhost/src/streaming/form.rs`, with `multer`), which spools large files to
//! disk. Both produce a [`ParsedForm`] and report problems as a [`FormError`], whose
//! [`FormError::into_reply`] is the answer: 400 for a malformed form, 413 for one over a
//! limit, 415 for a body that is not a form.

use std::path::PathBuf;

use bytes::Bytes;
use http::header::CONTENT_TYPE;
use http::{HeaderMap, StatusCode};

use crate::reply::Reply;
use crate::validation::{self, FieldError, QueryParam, Typed};

/// The limits every form is parsed under (`server.form_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FormLimits {
    /// Most parts (multipart) or fields (urlencoded) in one form.
    pub max_parts: usize,
    /// Largest text field, in bytes (its value; for urlencoded, once decoded).
    pub max_field_size: u64,
    /// Largest file part, in bytes (`None`: only the body limit bounds it).
    pub max_file_size: Option<u64>,
    /// A file part larger than this is written to a temporary file as it arrives instead of
    /// being kept in memory.
    pub spool_threshold: u64,
}

impl Default for FormLimits {
    fn default() -> Self {
        Self {
            max_parts: 1000,
            max_field_size: 1024 * 1024,
            max_file_size: None,
            spool_threshold: 1024 * 1024,
        }
    }
}

/// The most a multipart form parsed while it arrives keeps in memory: its text fields (more
/// is a 413) and its files under the spool threshold (past it, the next files are spooled
/// whatever their size). The body limit of a route taking uploads can be large; this keeps
/// what one request holds in memory small whatever the parts are.
pub const MEMORY_BUDGET: u64 = 16 * 1024 * 1024;

/// What kind of form a body is, from its `Content-Type`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FormKind {
    /// `application/x-www-form-urlencoded`.
    UrlEncoded,
    /// `multipart/form-data` with its boundary.
    Multipart(String),
}

impl FormKind {
    /// The kind of form the request's `Content-Type` announces; `Ok(None)` without one.
    pub fn of(headers: &HeaderMap) -> Result<Option<Self>, FormError> {
        let Some(value) = headers.get(CONTENT_TYPE) else {
            return Ok(None);
        };
        let text = value.to_str().unwrap_or_default();
        let mut params = text.split(';');
        let essence = params
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase();
        match essence.as_str() {
            "application/x-www-form-urlencoded" => Ok(Some(FormKind::UrlEncoded)),
            "multipart/form-data" => {
                let boundary = params.find_map(|param| {
                    let (name, value) = param.split_once('=')?;
                    name.trim()
                        .eq_ignore_ascii_case("boundary")
                        .then(|| value.trim().trim_matches('"').to_owned())
                });
                match boundary {
                    Some(boundary) if !boundary.is_empty() && boundary.len() <= 70 => {
                        Ok(Some(FormKind::Multipart(boundary)))
                    }
                    _ => Err(FormError::Malformed(
                        "multipart/form-data without a valid boundary parameter".to_owned(),
                    )),
                }
            }
            _ => Err(FormError::NotAForm(essence)),
        }
    }
}

/// A parsed form: its text fields and its files, each in the order they came.
#[derive(Debug, Default)]
pub struct ParsedForm {
    /// Text fields, names repeated as they came.
    pub fields: Vec<(String, String)>,
    /// File parts (those with a filename).
    pub files: Vec<FilePart>,
    /// Position in the form of each part: `(false, i)` is `fields[i]`, `(true, i)` is
    /// `files[i]`.
    pub order: Vec<(bool, usize)>,
}

/// One uploaded file.
#[derive(Debug)]
pub struct FilePart {
    /// The form field's name.
    pub name: String,
    /// The filename the client gave.
    pub filename: String,
    /// The part's `Content-Type`, if it gave one.
    pub content_type: Option<String>,
    /// The part's headers.
    pub headers: Vec<(String, String)>,
    /// Its size in bytes.
    pub size: u64,
    /// Where its bytes are.
    pub content: FileContent,
}

/// Where an uploaded file's bytes are.
#[derive(Debug)]
pub enum FileContent {
    /// In memory (at most the spool threshold).
    Memory(Bytes),
    /// In a temporary file, removed when the request is over.
    Spooled(PathBuf),
}

/// Why a body could not be read as a form.
#[derive(Debug, thiserror::Error)]
pub enum FormError {
    /// The body is not a form at all.
    #[error(
        "Unsupported media type {0:?}: this route expects a form (application/x-www-form-urlencoded or multipart/form-data)"
    )]
    NotAForm(String),
    /// Broken syntax: a bad boundary, a truncated body, a part without a name.
    #[error("Malformed form: {0}")]
    Malformed(String),
    /// More parts than `server.form_max_parts`.
    #[error("Too many form parts: the limit is {0}")]
    TooManyParts(usize),
    /// A text field over `server.form_max_field_size`.
    #[error("Form field {name:?} too large: the limit is {limit} bytes")]
    FieldTooLarge {
        /// The field.
        name: String,
        /// The limit.
        limit: u64,
    },
    /// Text fields over [`MEMORY_BUDGET`] together.
    #[error("Form fields too large together: the limit is {0} bytes of text")]
    FieldsTooLarge(u64),
    /// A file over `server.form_max_file_size`.
    #[error("File {name:?} too large: the limit is {limit} bytes")]
    FileTooLarge {
        /// The field.
        name: String,
        /// The limit.
        limit: u64,
    },
    /// The body crossed its limit.
    #[error("Request body too large: the limit is {0} bytes")]
    BodyTooLarge(u64),
    /// The client paused longer than `server.body_timeout` between two chunks.
    #[error("Request body not received within {0:.1}s")]
    Timeout(f64),
    /// The connection failed while the form was read.
    #[error("Could not read the request body: {0}")]
    Read(String),
    /// Writing a spooled file failed (a full disk, say): the server's problem.
    #[error("Could not store an uploaded file: {0}")]
    Spool(String),
}

impl FormError {
    /// The answer to send.
    pub fn into_reply(self) -> Reply {
        Reply::detail(self.status(), self.to_string())
    }

    /// The status that answers it.
    pub fn status(&self) -> StatusCode {
        match self {
            FormError::NotAForm(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            FormError::Malformed(_) | FormError::Read(_) => StatusCode::BAD_REQUEST,
            FormError::TooManyParts(_)
            | FormError::FieldTooLarge { .. }
            | FormError::FieldsTooLarge(_)
            | FormError::FileTooLarge { .. }
            | FormError::BodyTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            FormError::Timeout(_) => StatusCode::REQUEST_TIMEOUT,
            FormError::Spool(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// Decodes an `application/x-www-form-urlencoded` body under `limits`.
pub fn parse_urlencoded(body: &[u8], limits: &FormLimits) -> Result<ParsedForm, FormError> {
    let mut form = ParsedForm::default();
    for (name, value) in form_urlencoded::parse(body) {
        if form.fields.len() >= limits.max_parts {
            return Err(FormError::TooManyParts(limits.max_parts));
        }
        if value.len() as u64 > limits.max_field_size {
            return Err(FormError::FieldTooLarge {
                name: name.into_owned(),
                limit: limits.max_field_size,
            });
        }
        form.order.push((false, form.fields.len()));
        form.fields.push((name.into_owned(), value.into_owned()));
    }
    Ok(form)
}

/// Checks the declared form fields against the form's text fields, as query parameters are
/// checked; errors are located at `["form", name]`. A declared field sent as a file is
/// reported as such rather than as missing.
pub fn validate_fields(
    params: &[QueryParam],
    form: &ParsedForm,
) -> Result<Vec<(String, Typed)>, Vec<FieldError>> {
    let checked = validation::validate_params("form", params, &form.fields);
    let sent_as_file: Vec<FieldError> = params
        .iter()
        .filter(|param| {
            form.files.iter().any(|file| file.name == param.name)
                && !form.fields.iter().any(|(name, _)| *name == param.name)
        })
        .map(|param| FieldError {
            loc: vec![
                validation::Loc::Key("form".into()),
                validation::Loc::Key(param.name.clone()),
            ],
            msg: "Expected a text field, got a file".to_owned(),
            kind: "string_type".to_owned(),
        })
        .collect();
    match checked {
        Ok(values) if sent_as_file.is_empty() => Ok(values),
        Ok(_) => Err(sent_as_file),
        Err(errors) => {
            // A file sent for a declared field is "missing" as text: say what it really is.
            let mut errors: Vec<FieldError> = errors
                .into_iter()
                .filter(|error| {
                    !(error.kind == "missing"
                        && sent_as_file.iter().any(|file| file.loc == error.loc))
                })
                .collect();
            errors.extend(sent_as_file);
            Err(errors)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(content_type: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, content_type.parse().unwrap());
        headers
    }

    #[test]
    fn kinds_are_read_from_the_content_type() {
        assert_eq!(FormKind::of(&HeaderMap::new()).unwrap(), None);
        assert_eq!(
            FormKind::of(&headers("application/x-www-form-urlencoded; charset=utf-8")).unwrap(),
            Some(FormKind::UrlEncoded)
        );
        assert_eq!(
            FormKind::of(&headers("multipart/form-data; boundary=\"abc\"")).unwrap(),
            Some(FormKind::Multipart("abc".into()))
        );
        assert!(matches!(
            FormKind::of(&headers("multipart/form-data")),
            Err(FormError::Malformed(_))
        ));
        assert!(matches!(
            FormKind::of(&headers("application/json")),
            Err(FormError::NotAForm(_))
        ));
    }

    #[test]
    fn urlencoded_forms_are_decoded_under_their_limits() {
        let limits = FormLimits {
            max_parts: 3,
            max_field_size: 5,
            ..FormLimits::default()
        };
        let form = parse_urlencoded(b"a=1&b=h%C3%A9&a=x+y", &limits).unwrap();
        assert_eq!(
            form.fields,
            [("a", "1"), ("b", "hé"), ("a", "x y")].map(|(n, v)| (n.to_owned(), v.to_owned()))
        );
        assert!(matches!(
            parse_urlencoded(b"a=1&a=2&a=3&a=4", &limits),
            Err(FormError::TooManyParts(3))
        ));
        assert!(matches!(
            parse_urlencoded(b"a=123456", &limits),
            Err(FormError::FieldTooLarge { .. })
        ));
    }

    #[test]
    fn statuses_follow_the_problem() {
        assert_eq!(
            FormError::TooManyParts(1).into_reply().status,
            StatusCode::PAYLOAD_TOO_LARGE
        );
        assert_eq!(
            FormError::Malformed("x".into()).into_reply().status,
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            FormError::NotAForm("text/plain".into()).into_reply().status,
            StatusCode::UNSUPPORTED_MEDIA_TYPE
        );
    }
}
