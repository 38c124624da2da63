//! Strict decoding of the request target: the path and the query string.
//!
//! Percent-decoding must not be lossy here: a handler that reads `request.path` or a path
//! parameter gets exactly what the client sent, or the request is refused. Dot segments and
//! NUL bytes are refused outright, since handlers often use path values as file names.

use percent_encoding::percent_decode_str;

/// Why a request target is refused (400).
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    /// A `.` or `..` segment, literal or percent-encoded.
    #[error("the path contains a '.' or '..' segment")]
    DotSegment,
    /// A NUL byte, usually percent-encoded.
    #[error("the path contains a NUL byte")]
    Nul,
    /// Bytes that are not UTF-8 once percent-decoded.
    #[error("the {0} is not valid UTF-8 once percent-decoded")]
    NotUtf8(&'static str),
}

/// Decodes a path (or a path parameter) strictly.
pub fn decode_path(raw: &str) -> Result<String, TargetError> {
    // Most paths have nothing to decode: one pass over the bytes settles them (the general
    // way below took about 570 instructions for `/hello`, by callgrind).
    if !raw.contains('%') {
        if raw.contains('\0') {
            return Err(TargetError::Nul);
        }
        if has_dot_segment(raw) {
            return Err(TargetError::DotSegment);
        }
        return Ok(raw.to_owned());
    }
    let decoded = percent_decode_str(raw)
        .decode_utf8()
        .map_err(|_| TargetError::NotUtf8("path"))?;
    if decoded.contains('\0') {
        return Err(TargetError::Nul);
    }
    if has_dot_segment(&decoded) {
        return Err(TargetError::DotSegment);
    }
    Ok(decoded.into_owned())
}

/// Whether a `/`-separated segment of `path` is `.` or `..`.
fn has_dot_segment(path: &str) -> bool {
    path.contains('.')
        && path
            .split('/')
            .any(|segment| segment == "." || segment == "..")
}

/// Splits and decodes a query string (`+` is a space), keeping repeats and order.
pub fn decode_query(raw: &str) -> Result<Vec<(String, String)>, TargetError> {
    if raw.is_empty() {
        return Ok(Vec::new());
    }
    let decode = |text: &str| -> Result<String, TargetError> {
        let spaced = text.replace('+', " ");
        percent_decode_str(&spaced)
            .decode_utf8()
            .map(|text| text.into_owned())
            .map_err(|_| TargetError::NotUtf8("query string"))
    };
    raw.split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            Ok((decode(key)?, decode(value)?))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_decode_strictly() {
        assert_eq!(decode_path("/a%20b/c").unwrap(), "/a b/c");
        assert_eq!(decode_path("/a/../b"), Err(TargetError::DotSegment));
        assert_eq!(decode_path("/a/%2e%2E/b"), Err(TargetError::DotSegment));
        assert_eq!(decode_path("/a/./b"), Err(TargetError::DotSegment));
        assert_eq!(decode_path("/a%00"), Err(TargetError::Nul));
        assert_eq!(decode_path("/%ff"), Err(TargetError::NotUtf8("path")));
        assert_eq!(decode_path("/a..b/.hidden").unwrap(), "/a..b/.hidden");
    }

    #[test]
    fn queries_keep_repeats_and_order() {
        let pairs = decode_query("a=1&b=x+y&a=2&flag&&c=%C3%A9").unwrap();
        let expected = [
            ("a", "1"),
            ("b", "x y"),
            ("a", "2"),
            ("flag", ""),
            ("c", "é"),
        ];
        assert_eq!(
            pairs,
            expected
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<Vec<_>>()
        );
        assert_eq!(
            decode_query("a=%ff"),
            Err(TargetError::NotUtf8("query string"))
        );
    }
}
