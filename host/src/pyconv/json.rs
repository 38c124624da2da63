//! JSON both ways between Python objects and bytes, in Rust.
//!
//! Handler results (dicts, lists, scalars) are serialised here instead of through `json.dumps`,
//! and so are the SDK's `Response` bodies, through the built-in module `_pyhost_json`: one
//! encoder, one behaviour for both. Request bodies are parsed straight into Python objects, in
//! the order the body gives them, without a round trip through Python's parser.
//! GIL: every function here is called with it held (they take `Python` or `Bound`).

use std::cell::Cell;
use std::fmt;

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict, PyFloat, PyInt, PyList, PyString, PyTuple};
use serde::de::{DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde::ser::{SerializeMap, SerializeSeq};
use serde_json::Value;

/// Deepest nesting accepted when serialising; deeper usually means a reference cycle.
const MAX_DEPTH: usize = 256;

/// Why a value could not be serialised. Both ways a handler's value becomes JSON (a returned
/// value, converted by the host, and a `Response`/`JSONResponse` body, rendered by the SDK
/// through `_pyhost_json.dumps`) fail with these, so they refuse the same values.
#[derive(Debug, Clone, thiserror::Error)]
pub(crate) enum SerializeError {
    /// NaN and the infinities have no JSON form (Python's `json` writes them anyway, as
    /// `NaN` and `Infinity`, which JSON parsers refuse).
    #[error("out of range float values are not JSON compliant: {0}")]
    NonFinite(String),
    /// Integers are limited to 64 bits, the limit request bodies have.
    #[error("the integer {0} does not fit in 64 bits (send it as a string)")]
    IntegerTooLarge(String),
    /// A type with no JSON form.
    #[error("object of type {0} is not JSON serializable")]
    Unsupported(String),
    /// A dict key that JSON cannot spell as a string.
    #[error("keys must be str, int, float, bool or None, not {0}")]
    Key(String),
    /// Nesting past [`MAX_DEPTH`].
    #[error("nesting deeper than {MAX_DEPTH} levels (is there a reference cycle?)")]
    TooDeep,
    /// Python failed while reading the value (a `str` with a lone surrogate, say).
    #[error("{0}")]
    Python(String),
}

impl SerializeError {
    /// The exception `json.dumps` raises for the same problem: `TypeError` for a type JSON
    /// cannot express, `ValueError` for a value it cannot.
    pub(crate) fn into_py_err(self) -> PyErr {
        match self {
            Self::Unsupported(_) | Self::Key(_) => PyTypeError::new_err(self.to_string()),
            _ => PyValueError::new_err(self.to_string()),
        }
    }
}

/// Serialises a Python value to compact JSON: no spaces, non-ASCII text as UTF-8, floats
/// spelled as Python's `repr` spells them, so the bytes are those of
/// `json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)` for every
/// value this accepts.
pub(crate) fn to_json(value: &Bound<'_, PyAny>) -> Result<Vec<u8>, SerializeError> {
    let mut out = Vec::with_capacity(128);
    let failure = Cell::new(None);
    let mut serializer = serde_json::Serializer::with_formatter(&mut out, PythonFloats);
    let written = serde::Serialize::serialize(
        &PyJson {
            value,
            depth: 0,
            failure: &failure,
        },
        &mut serializer,
    );
    match (written, failure.take()) {
        (_, Some(err)) => Err(err),
        (Ok(()), None) => Ok(out),
        // Writing to a Vec cannot fail, so this is only reached if serde_json itself refuses.
        (Err(err), None) => Err(SerializeError::Python(err.to_string())),
    }
}

/// Adds `_pyhost_json` to the interpreter's built-in modules; call before it starts.
pub(crate) fn register() {
    pyo3::append_to_inittab!(_pyhost_json);
}

/// The built-in module `_pyhost_json`: the host's encoder, for the SDK's `Response` bodies.
#[pymodule]
pub mod _pyhost_json {
    use pyo3::prelude::*;
    use pyo3::types::PyBytes;

    /// `value` as compact JSON bytes; `TypeError` or `ValueError` for what JSON cannot carry.
    /// GIL: held throughout (the value is read as it is written).
    #[pyfunction]
    fn dumps<'py>(value: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyBytes>> {
        let bytes = super::to_json(value).map_err(super::SerializeError::into_py_err)?;
        Ok(PyBytes::new(value.py(), &bytes))
    }
}

/// serde_json's compact output, with floats written as Python's `float.__repr__` writes them
/// (`1e+16`, `1e-05`, `100.0`): the same shortest digits either way, only spelled alike so
/// that the SDK's encoder outside the host gives the same bytes.
struct PythonFloats;

impl serde_json::ser::Formatter for PythonFloats {
    fn write_f64<W: ?Sized + std::io::Write>(
        &mut self,
        writer: &mut W,
        value: f64,
    ) -> std::io::Result<()> {
        let mut buffer = zmij::Buffer::new();
        writer.write_all(&python_repr(buffer.format_finite(value)))
    }
}

/// A float's text, at most 24 bytes (`-2.2250738585072014e-308` is the longest).
struct FloatText([u8; 32], usize);

impl std::ops::Deref for FloatText {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.0[..self.1]
    }
}

/// Respells a finite float's shortest round-trip text (any of `1e16`, `1.5e-7`, `0.001`,
/// `123.0`) the way `float.__repr__` does: positional while the decimal exponent is between
/// -4 and 16, else `d.ddde±XX` with at least two exponent digits.
fn python_repr(text: &str) -> FloatText {
    let (negative, text) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let (mantissa, exponent) = match text.split_once(['e', 'E']) {
        Some((mantissa, exponent)) => (mantissa, exponent.parse::<i32>().unwrap_or(0)),
        None => (text, 0),
    };
    let (whole, fraction) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    // The value is 0.DIGITS x 10^point, DIGITS without leading or trailing zeros.
    let mut digits = [0u8; 24];
    let mut count = 0;
    let mut point = i32::try_from(whole.len()).unwrap_or(0) + exponent;
    for &byte in whole.as_bytes().iter().chain(fraction.as_bytes()) {
        if count == 0 && byte == b'0' {
            point -= 1;
        } else if count < digits.len() {
            digits[count] = byte;
            count += 1;
        }
    }
    while count > 0 && digits[count - 1] == b'0' {
        count -= 1;
    }
    let mut out = FloatText([0; 32], 0);
    let mut push = |byte: u8| {
        if out.1 < out.0.len() {
            out.0[out.1] = byte;
            out.1 += 1;
        }
    };
    if negative {
        push(b'-');
    }
    if count == 0 {
        b"0.0".iter().for_each(|&b| push(b));
        return out;
    }
    let digits = &digits[..count];
    if (-3..=16).contains(&point) {
        if point <= 0 {
            push(b'0');
            push(b'.');
            (0..-point).for_each(|_| push(b'0'));
            digits.iter().for_each(|&b| push(b));
        } else {
            let point = point as usize;
            for (index, &byte) in digits.iter().enumerate() {
                if index == point {
                    push(b'.');
                }
                push(byte);
            }
            if point >= digits.len() {
                (digits.len()..point).for_each(|_| push(b'0'));
                push(b'.');
                push(b'0');
            }
        }
    } else {
        push(digits[0]);
        if digits.len() > 1 {
            push(b'.');
            digits[1..].iter().for_each(|&b| push(b));
        }
        let exponent = point - 1;
        push(b'e');
        push(if exponent < 0 { b'-' } else { b'+' });
        let magnitude = exponent.unsigned_abs();
        if magnitude >= 100 {
            push(b'0' + (magnitude / 100) as u8);
        }
        push(b'0' + (magnitude / 10 % 10) as u8);
        push(b'0' + (magnitude % 10) as u8);
    }
    out
}

struct PyJson<'a, 'py> {
    value: &'a Bound<'py, PyAny>,
    depth: usize,
    /// The typed reason of a failure (serde's error type carries only text).
    failure: &'a Cell<Option<SerializeError>>,
}

impl<'py> PyJson<'_, 'py> {
    /// An item one level down.
    fn child<'b>(&'b self, value: &'b Bound<'py, PyAny>) -> PyJson<'b, 'py> {
        PyJson {
            value,
            depth: self.depth + 1,
            failure: self.failure,
        }
    }

    fn fail<E: serde::ser::Error>(&self, err: SerializeError) -> E {
        let error = E::custom(&err);
        self.failure.set(Some(err));
        error
    }
}

impl serde::Serialize for PyJson<'_, '_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let value = self.value;
        if self.depth > MAX_DEPTH {
            return Err(self.fail(SerializeError::TooDeep));
        }
        if value.is_none() {
            serializer.serialize_unit()
        } else if let Ok(s) = value.cast::<PyString>() {
            let text = s
                .to_str()
                .map_err(|err| self.fail(SerializeError::Python(err.to_string())))?;
            serializer.serialize_str(text)
        } else if let Ok(b) = value.cast::<PyBool>() {
            serializer.serialize_bool(b.is_true())
        } else if let Ok(i) = value.cast::<PyInt>() {
            if let Ok(n) = i.extract::<i64>() {
                serializer.serialize_i64(n)
            } else if let Ok(n) = i.extract::<u64>() {
                serializer.serialize_u64(n)
            } else {
                Err(self.fail(SerializeError::IntegerTooLarge(int_text(i))))
            }
        } else if let Ok(f) = value.cast::<PyFloat>() {
            let f = f.value();
            if f.is_finite() {
                serializer.serialize_f64(f)
            } else {
                Err(self.fail(SerializeError::NonFinite(non_finite_text(f))))
            }
        } else if let Ok(dict) = value.cast::<PyDict>() {
            let mut map = serializer.serialize_map(Some(dict.len()))?;
            for (key, item) in dict.iter() {
                let key = json_key(&key).map_err(|err| self.fail(err))?;
                map.serialize_entry(&key, &self.child(&item))?;
            }
            map.end()
        } else if let Ok(list) = value.cast::<PyList>() {
            let mut seq = serializer.serialize_seq(Some(list.len()))?;
            for item in list.iter() {
                seq.serialize_element(&self.child(&item))?;
            }
            seq.end()
        } else if let Ok(tuple) = value.cast::<PyTuple>() {
            let mut seq = serializer.serialize_seq(Some(tuple.len()))?;
            for item in tuple.iter() {
                seq.serialize_element(&self.child(&item))?;
            }
            seq.end()
        } else {
            Err(self.fail(SerializeError::Unsupported(type_name(value))))
        }
    }
}

/// `module.Qualname` of `value`'s type, for messages.
pub(crate) fn type_name(value: &Bound<'_, PyAny>) -> String {
    value
        .get_type()
        .fully_qualified_name()
        .map(|n| n.to_string())
        .unwrap_or_else(|_| "?".to_owned())
}

/// An integer's digits for a message, shortened: a huge one is not worth repeating in full.
fn int_text(value: &Bound<'_, PyInt>) -> String {
    let text = value.str().map(|s| s.to_string()).unwrap_or_default();
    if text.len() > 40 {
        format!("{}... ({} digits)", &text[..40], text.len())
    } else {
        text
    }
}

/// How Python spells a non-finite float (`nan`, `inf`, `-inf`).
fn non_finite_text(value: f64) -> String {
    if value.is_nan() {
        "nan".to_owned()
    } else if value > 0.0 {
        "inf".to_owned()
    } else {
        "-inf".to_owned()
    }
}

/// Dict keys become strings the way `json.dumps` does it.
fn json_key(key: &Bound<'_, PyAny>) -> Result<String, SerializeError> {
    if let Ok(s) = key.cast::<PyString>() {
        return s
            .to_str()
            .map(str::to_owned)
            .map_err(|e| SerializeError::Python(e.to_string()));
    }
    if key.is_none() {
        return Ok("null".to_owned());
    }
    if let Ok(b) = key.cast::<PyBool>() {
        return Ok(if b.is_true() { "true" } else { "false" }.to_owned());
    }
    if let Ok(f) = key.cast::<PyFloat>() {
        let f = f.value();
        if !f.is_finite() {
            return Err(SerializeError::NonFinite(non_finite_text(f)));
        }
        let mut buffer = zmij::Buffer::new();
        let text = python_repr(buffer.format_finite(f));
        return Ok(String::from_utf8_lossy(&text).into_owned());
    }
    if let Ok(i) = key.cast::<PyInt>() {
        if let Ok(n) = i.extract::<i64>() {
            return Ok(n.to_string());
        }
        // int.__repr__, as json.dumps uses (keys have no 64-bit limit: they are strings).
        return key
            .py()
            .get_type::<PyInt>()
            .call_method1("__repr__", (key,))
            .and_then(|text| text.extract::<String>())
            .map_err(|e| SerializeError::Python(e.to_string()));
    }
    Err(SerializeError::Key(type_name(key)))
}

/// Builds Python objects from parsed JSON (objects in their order: `preserve_order` is on).
pub(crate) fn to_python<'py>(py: Python<'py>, value: &Value) -> PyResult<Bound<'py, PyAny>> {
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
pub(crate) enum ParseError {
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
pub(crate) fn parse_to_python<'py>(
    py: Python<'py>,
    body: &[u8],
) -> Result<Bound<'py, PyAny>, ParseError> {
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

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::python_repr;

    fn spelled(value: f64) -> String {
        let mut buffer = zmij::Buffer::new();
        String::from_utf8_lossy(&python_repr(buffer.format_finite(value))).into_owned()
    }

    #[test]
    fn floats_are_spelled_as_python_repr_spells_them() {
        // Each pair as `repr(float)` prints it (CPython 3.11).
        let cases = [
            (1e16, "1e+16"),
            (1234567890123456.0, "1234567890123456.0"),
            (0.0001, "0.0001"),
            (1e-5, "1e-05"),
            (100.0, "100.0"),
            (0.1, "0.1"),
            (-0.0, "-0.0"),
            (0.0, "0.0"),
            (5e-324, "5e-324"),
            (f64::MAX, "1.7976931348623157e+308"),
            (1.5e-7, "1.5e-07"),
            (123456789012345680.0, "1.2345678901234568e+17"),
            (2.5, "2.5"),
            (1e22, "1e+22"),
            (12345.678, "12345.678"),
            (-2.2250738585072014e-308, "-2.2250738585072014e-308"),
            (1e100, "1e+100"),
            (1e23, "1e+23"),
            (0.001234, "0.001234"),
        ];
        for (value, expected) in cases {
            assert_eq!(spelled(value), expected, "{value:e}");
        }
    }

    proptest! {
        #[test]
        fn the_spelling_reads_back_as_the_same_float(bits in any::<u64>()) {
            let value = f64::from_bits(bits);
            prop_assume!(value.is_finite());
            let text = spelled(value);
            prop_assert_eq!(text.parse::<f64>().map(f64::to_bits), Ok(bits), "{}", text);
        }
    }
}
