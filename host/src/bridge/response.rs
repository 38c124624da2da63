//! Turning what a handler returned (or raised) into a [`Reply`], on the loop thread.
//!
//! GIL: held by every caller. Only Rust data leaves this module, so tokio never sees a Python
//! object.

use bytes::Bytes;
use http::{HeaderName, HeaderValue, StatusCode};
use pyo3::prelude::*;
use pyo3::types::{PyByteArray, PyBytes, PyDict, PyList, PyMemoryView, PyString, PyTuple};

use crate::bridge::sdk::sdk;
use crate::pyconv::json::{to_json, type_name};
use pyhost_core::reply::Reply;

const JSON: &str = "application/json";
const TEXT: &str = "text/plain; charset=utf-8";
const OCTETS: &str = "application/octet-stream";

/// Why a handler's result could not become a response.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConvertError {
    /// The value (or part of it) has no HTTP form.
    #[error("cannot turn a {type_name} into a response: {reason}")]
    Unserializable {
        /// Fully qualified type of the offending value.
        type_name: String,
        /// What went wrong.
        reason: String,
    },
    /// A status, header or body of the wrong shape.
    #[error("invalid response: {0}")]
    Invalid(String),
}

/// Converts a handler's return value.
pub(crate) fn from_result(result: &Bound<'_, PyAny>) -> Result<Reply, ConvertError> {
    let py = result.py();
    if result.is_none() {
        return Ok(Reply::empty(StatusCode::NO_CONTENT));
    }
    let sdk = sdk(py).map_err(|err| ConvertError::Invalid(err.to_string()))?;
    if result.is_instance(sdk.response.bind(py)).unwrap_or(false) {
        return from_response_object(result);
    }
    if let Ok(tuple) = result.cast::<PyTuple>()
        && (tuple.len() == 2 || tuple.len() == 3)
    {
        let body = tuple.get_item(0).map_err(invalid)?;
        let status = status_of(&tuple.get_item(1).map_err(invalid)?)?;
        let mut reply = if body.is_none() {
            Reply::empty(status)
        } else {
            let (bytes, media_type) = render_body(&body)?;
            Reply::with_body(status, bytes, media_type)
        };
        if tuple.len() == 3 {
            let headers = headers_of(&tuple.get_item(2).map_err(invalid)?)?;
            reply.merge_headers(headers);
        }
        return Ok(reply);
    }
    let (bytes, media_type) = render_body(result)?;
    Ok(Reply::with_body(StatusCode::OK, bytes, media_type))
}

fn invalid(err: PyErr) -> ConvertError {
    ConvertError::Invalid(err.to_string())
}

fn render_body(value: &Bound<'_, PyAny>) -> Result<(Bytes, &'static str), ConvertError> {
    if let Ok(text) = value.cast::<PyString>() {
        let text = text.to_str().map_err(invalid)?;
        return Ok((Bytes::copy_from_slice(text.as_bytes()), TEXT));
    }
    if let Ok(bytes) = value.cast::<PyBytes>() {
        return Ok((body_of(bytes), OCTETS));
    }
    if value.is_instance_of::<PyByteArray>() || value.is_instance_of::<PyMemoryView>() {
        let bytes = value
            .py()
            .get_type::<PyBytes>()
            .call1((value,))
            .map_err(invalid)?;
        let bytes = bytes
            .cast::<PyBytes>()
            .map_err(|e| ConvertError::Invalid(e.to_string()))?;
        return Ok((Bytes::copy_from_slice(bytes.as_bytes()), OCTETS));
    }
    match to_json(value) {
        Ok(json) => Ok((Bytes::from(json), JSON)),
        Err(_) if value.hasattr("__await__").unwrap_or(false) => {
            // Close it so Python does not warn that it was never awaited.
            let _ = value.call_method0("close");
            Err(ConvertError::Unserializable {
                type_name: type_name(value),
                reason: "the handler returned an awaitable instead of awaiting it".to_owned(),
            })
        }
        Err(err) => Err(ConvertError::Unserializable {
            type_name: type_name(value),
            reason: err.to_string(),
        }),
    }
}

fn from_response_object(response: &Bound<'_, PyAny>) -> Result<Reply, ConvertError> {
    let status = status_of(&response.getattr("status").map_err(invalid)?)?;
    let body = response.getattr("body").map_err(invalid)?;
    let body = body.cast::<PyBytes>().map_err(|_| {
        ConvertError::Invalid(format!(
            "Response.body must be bytes, not {}",
            type_name(&body)
        ))
    })?;
    let mut reply = Reply::with_raw_body(status, body_of(body));
    reply.merge_headers(headers_of(&response.getattr("headers").map_err(invalid)?)?);
    let media_type = response.getattr("media_type").map_err(invalid)?;
    if !media_type.is_none() {
        let media_type: String = media_type.extract().map_err(invalid)?;
        reply.default_content_type(header_value(&media_type)?);
    }
    Ok(reply)
}

/// Bodies from this size on are sent from the Python object's own buffer instead of a copy.
const SHARE_FROM: usize = 64 << 10;

/// The bytes of a handler's `bytes` body. A large one is not copied: the `Bytes` keeps the
/// Python object alive and points into it (a handler returning one 5 MiB object to 200
/// clients holds it once, not 200 times). Its last reference may be dropped on a tokio
/// thread, without the GIL: pyo3 then queues the decref, and the loop thread applies it when
/// it next enters Rust, so nothing waits for the GIL. Small bodies are copied: one copy of a
/// few bytes is cheaper than that queue.
fn body_of(bytes: &Bound<'_, PyBytes>) -> Bytes {
    let data = bytes.as_bytes();
    if data.len() < SHARE_FROM {
        return Bytes::copy_from_slice(data);
    }
    Bytes::from_owner(pyo3::pybacked::PyBackedBytes::from(bytes.clone()))
}

fn status_of(value: &Bound<'_, PyAny>) -> Result<StatusCode, ConvertError> {
    let code: u16 = value.extract().map_err(|_| {
        ConvertError::Invalid(format!("status must be an int, not {}", type_name(value)))
    })?;
    if !(100..=599).contains(&code) {
        return Err(ConvertError::Invalid(format!(
            "status {code} is outside 100-599"
        )));
    }
    StatusCode::from_u16(code).map_err(|e| ConvertError::Invalid(e.to_string()))
}

fn header_value(text: &str) -> Result<HeaderValue, ConvertError> {
    HeaderValue::from_str(text)
        .map_err(|_| ConvertError::Invalid(format!("invalid header value {text:?}")))
}

/// Reads headers given as a mapping or a sequence of `(name, value)` pairs.
pub(crate) fn headers_of(
    value: &Bound<'_, PyAny>,
) -> Result<Vec<(HeaderName, HeaderValue)>, ConvertError> {
    if value.is_none() {
        return Ok(Vec::new());
    }
    let pairs: Vec<(String, String)> = if let Ok(dict) = value.cast::<PyDict>() {
        dict.iter()
            .map(|(k, v)| Ok((k.str()?.to_string(), v.str()?.to_string())))
            .collect::<PyResult<_>>()
            .map_err(invalid)?
    } else if value.is_instance_of::<PyList>() || value.is_instance_of::<PyTuple>() {
        value.extract().map_err(|_| {
            ConvertError::Invalid(
                "headers must be a dict or a list of (name, value) string pairs".into(),
            )
        })?
    } else if value.hasattr("items").unwrap_or(false) {
        value
            .call_method0("items")
            .and_then(|items| items.extract())
            .map_err(invalid)?
    } else {
        return Err(ConvertError::Invalid(format!(
            "headers must be a dict or a list of pairs, not {}",
            type_name(value)
        )));
    };
    pairs
        .into_iter()
        .map(|(name, value)| {
            let name = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| ConvertError::Invalid(format!("invalid header name {name:?}")))?;
            Ok((name, header_value(&value)?))
        })
        .collect()
}

/// The reply for an `HTTPError` raised by a handler.
pub(crate) fn from_http_error(error: &Bound<'_, PyAny>) -> Result<Reply, ConvertError> {
    let status = status_of(&error.getattr("status").map_err(invalid)?)?;
    let detail = error.getattr("detail").map_err(invalid)?;
    let dict = PyDict::new(error.py());
    dict.set_item("detail", &detail).map_err(invalid)?;
    let body = match to_json(dict.as_any()) {
        Ok(body) => body,
        Err(_) => {
            // A detail that is not JSON still reaches the client, as its text.
            let text = detail.str().map_err(invalid)?.to_string();
            serde_json::to_vec(&serde_json::json!({ "detail": text })).unwrap_or_default()
        }
    };
    let mut reply = Reply::with_body(status, Bytes::from(body), JSON);
    reply.merge_headers(headers_of(&error.getattr("headers").map_err(invalid)?)?);
    Ok(reply)
}
