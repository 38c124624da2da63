//! JSON both ways between Python objects and bytes, in Rust.
//!
//! Handler results (dicts, lists, scalars) are serialised here instead of through `json.dumps`,
//! and parsed bodies become Python objects without a round trip through Python's parser.
//! GIL: every function here is called with it held (they take `Python` or `Bound`).

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict, PyFloat, PyInt, PyList, PyString, PyTuple};
use serde::ser::{Error as _, SerializeMap, SerializeSeq};
use serde_json::Value;

/// Deepest nesting accepted when serialising; deeper usually means a reference cycle.
const MAX_DEPTH: usize = 256;

/// Why a value could not be serialised.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct SerializeError(pub String);

/// Serialises a Python value to compact JSON.
pub fn to_json(value: &Bound<'_, PyAny>) -> Result<Vec<u8>, SerializeError> {
    let mut out = Vec::with_capacity(128);
    serde_json::to_writer(&mut out, &PyJson { value, depth: 0 })
        .map_err(|err| SerializeError(err.to_string()))?;
    Ok(out)
}

struct PyJson<'a, 'py> {
    value: &'a Bound<'py, PyAny>,
    depth: usize,
}

impl serde::Serialize for PyJson<'_, '_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let value = self.value;
        if self.depth > MAX_DEPTH {
            return Err(S::Error::custom(format!(
                "nesting deeper than {MAX_DEPTH} levels (is there a reference cycle?)"
            )));
        }
        let depth = self.depth + 1;
        if value.is_none() {
            serializer.serialize_unit()
        } else if let Ok(s) = value.cast::<PyString>() {
            serializer.serialize_str(s.to_str().map_err(S::Error::custom)?)
        } else if let Ok(b) = value.cast::<PyBool>() {
            serializer.serialize_bool(b.is_true())
        } else if let Ok(i) = value.cast::<PyInt>() {
            if let Ok(n) = i.extract::<i64>() {
                serializer.serialize_i64(n)
            } else if let Ok(n) = i.extract::<u64>() {
                serializer.serialize_u64(n)
            } else {
                Err(S::Error::custom(
                    "integer too large for JSON (over 64 bits)",
                ))
            }
        } else if let Ok(f) = value.cast::<PyFloat>() {
            let f = f.value();
            if f.is_finite() {
                serializer.serialize_f64(f)
            } else {
                Err(S::Error::custom(format!("{f} is not valid JSON")))
            }
        } else if let Ok(dict) = value.cast::<PyDict>() {
            let mut map = serializer.serialize_map(Some(dict.len()))?;
            for (key, item) in dict.iter() {
                map.serialize_entry(
                    &json_key(&key).map_err(S::Error::custom)?,
                    &PyJson {
                        value: &item,
                        depth,
                    },
                )?;
            }
            map.end()
        } else if let Ok(list) = value.cast::<PyList>() {
            let mut seq = serializer.serialize_seq(Some(list.len()))?;
            for item in list.iter() {
                seq.serialize_element(&PyJson {
                    value: &item,
                    depth,
                })?;
            }
            seq.end()
        } else if let Ok(tuple) = value.cast::<PyTuple>() {
            let mut seq = serializer.serialize_seq(Some(tuple.len()))?;
            for item in tuple.iter() {
                seq.serialize_element(&PyJson {
                    value: &item,
                    depth,
                })?;
            }
            seq.end()
        } else {
            let type_name = value
                .get_type()
                .fully_qualified_name()
                .map(|n| n.to_string())
                .unwrap_or_else(|_| "?".to_owned());
            Err(S::Error::custom(format!(
                "object of type {type_name} is not JSON serializable"
            )))
        }
    }
}

/// Dict keys become strings the way `json.dumps` does it.
fn json_key(key: &Bound<'_, PyAny>) -> Result<String, String> {
    if let Ok(s) = key.cast::<PyString>() {
        return s.to_str().map(str::to_owned).map_err(|e| e.to_string());
    }
    if key.is_none() {
        return Ok("null".to_owned());
    }
    if let Ok(b) = key.cast::<PyBool>() {
        return Ok(if b.is_true() { "true" } else { "false" }.to_owned());
    }
    if key.is_instance_of::<PyInt>() || key.is_instance_of::<PyFloat>() {
        return key.str().map(|s| s.to_string()).map_err(|e| e.to_string());
    }
    let type_name = key
        .get_type()
        .fully_qualified_name()
        .map(|n| n.to_string())
        .unwrap_or_default();
    Err(format!(
        "keys must be str, int, float, bool or None, not {type_name}"
    ))
}

/// Builds Python objects from parsed JSON.
pub fn to_python<'py>(py: Python<'py>, value: &Value) -> PyResult<Bound<'py, PyAny>> {
    Ok(match value {
        Value::Null => py.None().into_bound(py),
        Value::Bool(b) => PyBool::new(py, *b).to_owned().into_any(),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                i.into_pyobject(py)?.into_any()
            } else if let Some(u) = n.as_u64() {
                u.into_pyobject(py)?.into_any()
            } else if let Some(f) = n.as_f64() {
                PyFloat::new(py, f).into_any()
            } else {
                return Err(PyValueError::new_err(format!("unrepresentable number {n}")));
            }
        }
        Value::String(s) => PyString::new(py, s).into_any(),
        Value::Array(items) => {
            let list = PyList::empty(py);
            for item in items {
                list.append(to_python(py, item)?)?;
            }
            list.into_any()
        }
        Value::Object(map) => {
            let dict = PyDict::new(py);
            for (key, item) in map {
                dict.set_item(key, to_python(py, item)?)?;
            }
            dict.into_any()
        }
    })
}
