//! The response as it comes back from Python: plain Rust data, ready for hyper.

use bytes::Bytes;
use http::header::CONTENT_TYPE;
use http::{HeaderName, HeaderValue, StatusCode};

/// A finished response, built on the loop thread or by the host itself.
#[derive(Debug, Clone)]
pub struct Reply {
    /// Status code.
    pub status: StatusCode,
    /// Headers, repeats allowed, in order.
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// The whole body.
    pub body: Bytes,
}

impl Reply {
    /// A reply with no body and no content type.
    pub fn empty(status: StatusCode) -> Self {
        Self {
            status,
            headers: Vec::new(),
            body: Bytes::new(),
        }
    }

    /// A reply whose body has a known media type.
    pub fn with_body(status: StatusCode, body: Bytes, media_type: &'static str) -> Self {
        Self {
            status,
            headers: vec![(CONTENT_TYPE, HeaderValue::from_static(media_type))],
            body,
        }
    }

    /// A reply whose headers will say what the body is.
    pub fn with_raw_body(status: StatusCode, body: Bytes) -> Self {
        Self {
            status,
            headers: Vec::new(),
            body,
        }
    }

    /// A JSON reply.
    pub fn json(status: StatusCode, value: &serde_json::Value) -> Self {
        let body = serde_json::to_vec(value).unwrap_or_default();
        Self::with_body(status, Bytes::from(body), "application/json")
    }

    /// The `{"detail": ...}` reply the host uses for its own errors.
    pub fn detail(status: StatusCode, detail: impl Into<serde_json::Value>) -> Self {
        Self::json(status, &serde_json::json!({ "detail": detail.into() }))
    }

    /// Adds headers; a `content-type` among them replaces the one the body rendering chose.
    pub fn merge_headers(&mut self, headers: Vec<(HeaderName, HeaderValue)>) {
        if headers.iter().any(|(name, _)| *name == CONTENT_TYPE) {
            self.headers.retain(|(name, _)| *name != CONTENT_TYPE);
        }
        self.headers.extend(headers);
    }

    /// Sets `content-type` unless the headers already carry one.
    pub fn default_content_type(&mut self, value: HeaderValue) {
        if !self.headers.iter().any(|(name, _)| *name == CONTENT_TYPE) {
            self.headers.push((CONTENT_TYPE, value));
        }
    }
}
