//! Route declarations as the Python SDK describes them (`Route.spec()`), in plain data.
//!
//! The loader reads these once at start-up; routing and validation are compiled from them so
//! that no request needs Python to decide where it goes or whether it is valid.

use indexmap::IndexMap;
use serde::Deserialize;
use serde_json::Value;

/// One route as declared by a handler author.
#[derive(Debug, Clone, Deserialize)]
pub struct RouteSpec {
    /// Upper-case HTTP methods.
    pub methods: Vec<String>,
    /// Path template such as `/users/{user_id:int}`.
    pub path: String,
    /// `module.qualname` of the handler, for logs and error messages.
    pub name: String,
    /// Whether the handler is a coroutine function (else it runs on a thread).
    pub is_async: bool,
    /// Declared query parameters by name, in declaration order (`null` reads as none).
    #[serde(default, deserialize_with = "query_specs")]
    pub query: IndexMap<String, QuerySpec>,
    /// Declared request headers by lower-case name, with the same types and constraints as
    /// query parameters.
    #[serde(default, deserialize_with = "query_specs")]
    pub headers: IndexMap<String, QuerySpec>,
    /// Declared cookies by name, likewise.
    #[serde(default, deserialize_with = "query_specs")]
    pub cookies: IndexMap<String, QuerySpec>,
    /// JSON Schema of the request body, when the route declares one.
    #[serde(default)]
    pub body_schema: Option<Value>,
    /// Seconds this route's handler may run, overriding `server.request_timeout`.
    #[serde(default)]
    pub timeout: Option<f64>,
    /// Whether the handler reads the body as a stream (`request.stream()`) instead of
    /// receiving it whole.
    #[serde(default)]
    pub stream: bool,
    /// This route's largest request body, overriding `server.body_limit`: bytes, or a size
    /// string as in the config (`"64 MiB"`).
    #[serde(default)]
    pub body_limit: Option<bytesize::ByteSize>,
    /// Declared form fields (`form=` on the route), checked like query parameters. `Some`
    /// (even empty) means the host parses the body as a form before the handler runs.
    #[serde(default)]
    pub form: Option<IndexMap<String, QuerySpec>>,
    /// A WebSocket route (`router.websocket`): a `GET` whose handler gets the socket, not a
    /// request, once the upgrade request is admitted (`crate::websocket`).
    #[serde(default)]
    pub websocket: bool,
    /// Index of the plugin that declared it (set by the loader, not by the SDK).
    #[serde(skip)]
    pub plugin: usize,
}

/// The scalar type of a path segment or query parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ParamType {
    /// Any text.
    Str,
    /// A signed 64-bit integer.
    Int,
    /// A finite float.
    Float,
    /// `true/false`, `1/0`, `yes/no`, `on/off`.
    Bool,
    /// A UUID in any of its usual spellings.
    Uuid,
    /// The rest of the path, slashes included (path segments only).
    Path,
}

impl ParamType {
    /// The name used in templates and messages.
    pub fn as_str(self) -> &'static str {
        match self {
            ParamType::Str => "str",
            ParamType::Int => "int",
            ParamType::Float => "float",
            ParamType::Bool => "bool",
            ParamType::Uuid => "uuid",
            ParamType::Path => "path",
        }
    }
}

/// A declared query parameter.
#[derive(Debug, Clone, Deserialize)]
pub struct QuerySpec {
    /// Scalar type of each value.
    #[serde(rename = "type")]
    pub kind: ParamType,
    /// Whether a request without it is invalid.
    pub required: bool,
    /// Value used when absent (JSON form).
    #[serde(default)]
    pub default: Option<Value>,
    /// Inclusive lower bound for numbers.
    #[serde(default)]
    pub ge: Option<f64>,
    /// Inclusive upper bound for numbers.
    #[serde(default)]
    pub le: Option<f64>,
    /// Exclusive lower bound for numbers.
    #[serde(default)]
    pub gt: Option<f64>,
    /// Exclusive upper bound for numbers.
    #[serde(default)]
    pub lt: Option<f64>,
    /// Minimum length in characters for strings.
    #[serde(default)]
    pub min_length: Option<usize>,
    /// Maximum length in characters for strings.
    #[serde(default)]
    pub max_length: Option<usize>,
    /// Regular expression a string must match, in the `regex` crate's syntax; searched, not
    /// anchored (`a` matches `ba`).
    #[serde(default)]
    pub pattern: Option<String>,
    /// The only values allowed.
    #[serde(default)]
    pub choices: Option<Vec<Value>>,
    /// Whether the key may repeat; the value is then a list.
    #[serde(default)]
    pub multiple: bool,
}

fn query_specs<'de, D>(deserializer: D) -> Result<IndexMap<String, QuerySpec>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    Ok(Option::<IndexMap<String, QuerySpec>>::deserialize(deserializer)?.unwrap_or_default())
}
