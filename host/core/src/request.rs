//! The request as it crosses into Python: plain Rust data, validated and typed, free of any
//! Python object, so it can be built on a tokio worker and handed to the loop thread.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, Method};

use crate::validation::Typed;

/// Everything a handler can read about its request.
#[derive(Debug)]
pub struct RequestData {
    /// The request method (HEAD arrives as HEAD even when a GET route serves it).
    pub method: Method,
    /// The percent-decoded path.
    pub path: String,
    /// The full URL as the client addressed it.
    pub url: String,
    /// The raw query string, without `?`.
    pub query_string: String,
    /// Every query pair, decoded, repeats kept, in order.
    pub query_pairs: Vec<(String, String)>,
    /// Typed path parameters.
    pub path_params: Vec<(String, Typed)>,
    /// Declared query parameters, validated and typed, defaults filled.
    pub query: Vec<(String, Typed)>,
    /// Declared headers (lower-case names), validated and typed, defaults filled.
    pub header_params: Vec<(String, Typed)>,
    /// Declared cookies, validated and typed, defaults filled.
    pub cookies: Vec<(String, Typed)>,
    /// Declared form fields, validated and typed, defaults filled (set by the host once the
    /// form is parsed: [`crate::form::validate_fields`]).
    pub form: Vec<(String, Typed)>,
    /// Request headers, repeats kept.
    pub headers: HeaderMap,
    /// The whole body.
    pub body: Bytes,
    /// The body parsed as JSON, when the route declares one (already schema-checked).
    pub json: Option<serde_json::Value>,
    /// The peer address.
    pub client: Option<SocketAddr>,
    /// Identifier of this request in logs and the `x-request-id` header.
    pub request_id: Arc<str>,
    /// The matched path template.
    pub route: Arc<str>,
    /// Index of the plugin that owns the route.
    pub plugin: u32,
}
