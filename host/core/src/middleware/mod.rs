//! The host's own middleware, configured in the TOML file: what it decides about a request and
//! its response, without Python and without moving any body bytes.
//!
//! - [`cors`]: `[cors]`, the CORS protocol of the Fetch standard: preflights answered here, the
//!   response headers of actual requests;
//! - [`encoding`]: `[compression]`, `Accept-Encoding` negotiation and which responses are worth
//!   compressing (the compressing itself is the `pyhost` crate's);
//! - [`hosts`]: `server.allowed_hosts`, the names a request's `Host` may give.
//!
//! They live here, apart from the bytes, so the fuzzer, the property tests and the unit tests
//! exercise exactly the decisions the server makes.

pub mod cors;
pub mod encoding;
pub mod hosts;

use http::header::VARY;
use http::{HeaderName, HeaderValue};

/// Adds `token` to the response's `Vary`, keeping one `Vary` line: a cache must key the
/// response on that request header as well as on whatever the handler named.
pub fn add_vary(headers: &mut Vec<(HeaderName, HeaderValue)>, token: &'static str) {
    let Some(index) = headers.iter().position(|(name, _)| *name == VARY) else {
        headers.push((VARY, HeaderValue::from_static(token)));
        return;
    };
    // A handler may have split its Vary over several lines: any of them may name the token,
    // or `*`, which already covers every request header.
    let covered = headers
        .iter()
        .filter(|(name, _)| *name == VARY)
        .flat_map(|(_, value)| value.as_bytes().split(|&b| b == b','))
        .map(<[u8]>::trim_ascii)
        .any(|item| item == b"*" || item.eq_ignore_ascii_case(token.as_bytes()));
    if covered {
        return;
    }
    let mut joined = headers[index].1.as_bytes().to_vec();
    joined.extend_from_slice(b", ");
    joined.extend_from_slice(token.as_bytes());
    if let Ok(value) = HeaderValue::from_bytes(&joined) {
        headers[index].1 = value;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vary_of(headers: &[(HeaderName, HeaderValue)]) -> Vec<&str> {
        headers
            .iter()
            .filter(|(name, _)| *name == VARY)
            .map(|(_, value)| value.to_str().unwrap_or("?"))
            .collect()
    }

    #[test]
    fn vary_is_added_once_and_merged() {
        let mut headers = Vec::new();
        add_vary(&mut headers, "Origin");
        assert_eq!(vary_of(&headers), ["Origin"]);
        add_vary(&mut headers, "Origin");
        assert_eq!(vary_of(&headers), ["Origin"]);
        add_vary(&mut headers, "Accept-Encoding");
        assert_eq!(vary_of(&headers), ["Origin, Accept-Encoding"]);
    }

    #[test]
    fn vary_respects_what_the_handler_said() {
        let mut headers = vec![(VARY, HeaderValue::from_static("accept-encoding"))];
        add_vary(&mut headers, "Accept-Encoding");
        assert_eq!(vary_of(&headers), ["accept-encoding"]);
        let mut headers = vec![(VARY, HeaderValue::from_static("*"))];
        add_vary(&mut headers, "Origin");
        assert_eq!(vary_of(&headers), ["*"]);
        let mut headers = vec![
            (VARY, HeaderValue::from_static("Cookie")),
            (VARY, HeaderValue::from_static("Origin")),
        ];
        add_vary(&mut headers, "Origin");
        assert_eq!(vary_of(&headers), ["Cookie", "Origin"]);
    }
}
