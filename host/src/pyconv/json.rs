//! JSON both ways between Python objects and bytes, in Rust.
//!
//! Handler results (dicts, lists, scalars) are serialised here instead of through `json.dumps`,
//! and request bodies are parsed straight into Python objects, in the order the body gives
//! them, without a round trip through Python's parser.
//! GIL: every function here is called with it held (they take `Python` or `Bound`).

use std::cell::Cell;
use std::fmt;

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict, PyFloat, PyInt, PyList, PyString, PyTuple};
use serde::de::{DeserializeSeed, MapAccess, SeqAccess, Visitor};
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

/// Builds Python objects from parsed JSON (objects in their order: `preserve_order` is on).
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

/// Why a body could not become Python objects.
#[derive(Debug, thiserror::Error)]
pub enum ParseError {
    /// The body is not JSON, or holds an integer that does not fit in 64 bits.
    #[error("{0}")]
    Malformed(String),
    /// Python could not build an object (out of memory, say).
    #[error("cannot build the parsed value: {0}")]
    Python(PyErr),
}

/// Parses a JSON body straight into Python objects, object keys in the body's order (as
/// `json.loads` keeps them). Integers beyond 64 bits are refused, as
/// [`pyhost_core::validation::parse_json`] refuses them.
///
/// For bodies no schema checked. Instructions per request on the loop thread for the echo
/// benchmark's 104-byte body (valgrind, mimalloc), against `parse_json` + [`to_python`]:
/// 10.7k here, 14.3k there (8.2k + 6.1k); 267k against 358k for a 2.5 KB body. A body a
/// schema checked was parsed on a tokio worker already, and walking that tree ([`to_python`],
/// 5.8k) is cheaper on the loop thread than parsing again (10.7k): that is why serde_json's
/// `preserve_order` is on, so the tree keeps the body's order too. It costs the worker's
/// parse 10-19% more (9.3k against 8.2k; 248k against 203k) and makes schema checks no slower
/// (1.0k against 1.2k; 14.6k against 17.5k).
pub fn parse_to_python<'py>(py: Python<'py>, body: &[u8]) -> Result<Bound<'py, PyAny>, ParseError> {
    pyhost_core::validation::check_integer_widths(body).map_err(ParseError::Malformed)?;
    let failure = Cell::new(None);
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    let parsed = Build {
        py,
        failure: &failure,
    }
    .deserialize(&mut deserializer)
    .and_then(|value| deserializer.end().map(|()| value));
    match (parsed, failure.take()) {
        (_, Some(err)) => Err(ParseError::Python(err)),
        (Ok(value), None) => Ok(value),
        (Err(err), None) => Err(ParseError::Malformed(err.to_string())),
    }
}

/// Builds one JSON value as a Python object; a Python failure is parked in `failure` (serde's
/// error type cannot carry it) and the parse stopped.
#[derive(Clone, Copy)]
struct Build<'a, 'py> {
    py: Python<'py>,
    failure: &'a Cell<Option<PyErr>>,
}

impl<'py> Build<'_, 'py> {
    fn check<T, E: serde::de::Error>(&self, result: PyResult<T>) -> Result<T, E> {
        result.map_err(|err| {
            self.failure.set(Some(err));
            E::custom("a Python object could not be built")
        })
    }
}

impl<'de, 'py> DeserializeSeed<'de> for Build<'_, 'py> {
    type Value = Bound<'py, PyAny>;

    fn deserialize<D: serde::Deserializer<'de>>(
        self,
        deserializer: D,
    ) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de, 'py> Visitor<'de> for Build<'_, 'py> {
    type Value = Bound<'py, PyAny>;

    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("a JSON value")
    }

    fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
        Ok(self.py.None().into_bound(self.py))
    }

    fn visit_bool<E: serde::de::Error>(self, value: bool) -> Result<Self::Value, E> {
        Ok(PyBool::new(self.py, value).to_owned().into_any())
    }

    fn visit_i64<E: serde::de::Error>(self, value: i64) -> Result<Self::Value, E> {
        let Ok(int) = value.into_pyobject(self.py);
        Ok(int.into_any())
    }

    fn visit_u64<E: serde::de::Error>(self, value: u64) -> Result<Self::Value, E> {
        let Ok(int) = value.into_pyobject(self.py);
        Ok(int.into_any())
    }

    fn visit_f64<E: serde::de::Error>(self, value: f64) -> Result<Self::Value, E> {
        Ok(PyFloat::new(self.py, value).into_any())
    }

    fn visit_str<E: serde::de::Error>(self, value: &str) -> Result<Self::Value, E> {
        Ok(PyString::new(self.py, value).into_any())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let list = PyList::empty(self.py);
        while let Some(item) = seq.next_element_seed(self)? {
            self.check(list.append(item))?;
        }
        Ok(list.into_any())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let dict = PyDict::new(self.py);
        // A repeated key keeps its first position and its last value, as in `json.loads`.
        while let Some(key) = map.next_key_seed(self)? {
            let value = map.next_value_seed(self)?;
            self.check(dict.set_item(key, value))?;
        }
        Ok(dict.into_any())
    }
}
