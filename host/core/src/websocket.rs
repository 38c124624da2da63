//! WebSocket routes before the upgrade: whether a request is a valid opening handshake
//! (RFC 6455 section 4.2.1), whether its `Origin` is allowed, and which subprotocols it
//! offers; and the `[websocket]` settings.
//!
//! Only the decisions live here, Python-free like the rest of admission: the host crate
//! checks the handshake with [`check`] after routing, then validates the route's declared
//! parameters with [`crate::admission::Admission::admit`] as for any request, all before the
//! handler runs. Whatever fails is an HTTP answer, never an accepted socket.

use std::time::Duration;

use http::header::{
    CONNECTION, ORIGIN, SEC_WEBSOCKET_KEY, SEC_WEBSOCKET_PROTOCOL, SEC_WEBSOCKET_VERSION, UPGRADE,
};
use http::{HeaderMap, HeaderValue, Method, StatusCode, Version};

use crate::middleware::cors::OriginList;
use crate::reply::Reply;

/// The `[websocket]` table, checked.
#[non_exhaustive]
#[derive(Debug, Clone)]
pub struct WebSocketConfig {
    /// Largest message (after reassembling its fragments) a client may send, in bytes; a
    /// larger one closes the connection with 1009.
    pub max_message: usize,
    /// WebSocket connections open at once; beyond it new upgrade requests get 503.
    pub max_connections: usize,
    /// The same for one IP address (0: no per-address limit).
    pub max_connections_per_client: usize,
    /// How often an idle connection is pinged; one that has not answered by the next ping
    /// is dropped (`None`: never pinged).
    pub ping_interval: Option<Duration>,
    /// The origins a browser's upgrade request may come from (`None`: any).
    pub allowed_origins: Option<OriginList>,
}

impl Default for WebSocketConfig {
    /// Every `[websocket]` key at its default, as a file without the table gets it.
    fn default() -> Self {
        Self {
            max_message: 1024 * 1024,
            max_connections: 1024,
            max_connections_per_client: 256,
            ping_interval: Some(Duration::from_secs(20)),
            allowed_origins: None,
        }
    }
}

/// An upgrade request that may be accepted: the client's key and offered subprotocols.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Handshake {
    /// `Sec-WebSocket-Key`, from which the `Sec-WebSocket-Accept` answer is derived.
    pub key: HeaderValue,
    /// The subprotocols of `Sec-WebSocket-Protocol`, in the client's order of preference.
    pub protocols: Vec<String>,
}

/// Checks that a request to a WebSocket route is an opening handshake the server can accept.
///
/// Refusals: 426 (with `Upgrade: websocket`) for a request that is no WebSocket upgrade, one
/// over another HTTP version than 1.1 (WebSocket over HTTP/2, RFC 8441, is not supported) or
/// one asking for another protocol version than 13 (with `Sec-WebSocket-Version: 13`); 400
/// for a missing or malformed `Sec-WebSocket-Key`; 403 when `origins` is set and the request
/// carries an `Origin` not on it. A request without `Origin` is not refused for it: browsers
/// always send one, and any other client could send whatever the list allows.
pub fn check(
    method: &Method,
    version: Version,
    headers: &HeaderMap,
    origins: Option<&OriginList>,
) -> Result<Handshake, Reply> {
    if version != Version::HTTP_11 {
        return Err(upgrade_required(
            "this route takes WebSocket connections, over HTTP/1.1 only",
        ));
    }
    if *method != Method::GET
        || !has_token(headers, &UPGRADE, "websocket")
        || !has_token(headers, &CONNECTION, "upgrade")
    {
        return Err(upgrade_required(
            "this route takes WebSocket connections: send a GET with `Connection: Upgrade` and `Upgrade: websocket`",
        ));
    }
    if !headers
        .get_all(SEC_WEBSOCKET_VERSION)
        .iter()
        .any(|value| value.as_bytes().trim_ascii() == b"13")
    {
        let mut reply = upgrade_required("unsupported WebSocket version: this server speaks 13");
        reply
            .headers
            .push((SEC_WEBSOCKET_VERSION, HeaderValue::from_static("13")));
        return Err(reply);
    }
    let mut keys = headers.get_all(SEC_WEBSOCKET_KEY).iter();
    let key = match (keys.next(), keys.next()) {
        (Some(key), None) if is_key(key.as_bytes()) => key.clone(),
        _ => {
            return Err(Reply::detail(
                StatusCode::BAD_REQUEST,
                "Sec-WebSocket-Key must be one base64-encoded 16-byte value",
            ));
        }
    };
    if let Some(origins) = origins {
        let mut values = headers.get_all(ORIGIN).iter();
        let allowed = match (values.next(), values.next()) {
            (None, _) => true,
            (Some(origin), None) => origins.allows(origin),
            (Some(_), Some(_)) => false,
        };
        if !allowed {
            return Err(Reply::detail(
                StatusCode::FORBIDDEN,
                "WebSocket connections from this origin are not allowed",
            ));
        }
    }
    let protocols = headers
        .get_all(SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(str::trim)
        .filter(|token| !token.is_empty())
        .map(str::to_owned)
        .collect();
    Ok(Handshake { key, protocols })
}

fn upgrade_required(detail: &'static str) -> Reply {
    let mut reply = Reply::detail(StatusCode::UPGRADE_REQUIRED, detail);
    reply
        .headers
        .push((UPGRADE, HeaderValue::from_static("websocket")));
    reply
        .headers
        .push((CONNECTION, HeaderValue::from_static("Upgrade")));
    reply
}

/// Whether a comma-separated header (any of its lines) names `token`, ignoring case.
fn has_token(headers: &HeaderMap, name: &http::HeaderName, token: &str) -> bool {
    headers.get_all(name).iter().any(|value| {
        value
            .to_str()
            .unwrap_or_default()
            .split(',')
            .any(|item| item.trim().eq_ignore_ascii_case(token))
    })
}

/// A base64 encoding of 16 bytes: 22 characters of the alphabet, then `==`.
fn is_key(value: &[u8]) -> bool {
    let value = value.trim_ascii();
    value.len() == 24
        && value.ends_with(b"==")
        && value[..22]
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        map
    }

    const GOOD: [(&str, &str); 4] = [
        ("connection", "keep-alive, Upgrade"),
        ("upgrade", "WebSocket"),
        ("sec-websocket-version", "13"),
        ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
    ];

    fn good_with(extra: &[(&str, &str)]) -> HeaderMap {
        let mut pairs = GOOD.to_vec();
        pairs.extend_from_slice(extra);
        headers(&pairs)
    }

    #[test]
    fn a_valid_handshake_is_accepted_with_its_subprotocols() {
        let map = good_with(&[
            ("sec-websocket-protocol", "chat, superchat"),
            ("sec-websocket-protocol", "v2"),
        ]);
        let handshake = check(&Method::GET, Version::HTTP_11, &map, None).unwrap();
        assert_eq!(handshake.key, "dGhlIHNhbXBsZSBub25jZQ==");
        assert_eq!(handshake.protocols, ["chat", "superchat", "v2"]);
    }

    #[test]
    fn a_plain_request_or_another_version_is_told_to_upgrade() {
        let status = |method: Method, version: Version, map: &HeaderMap| {
            check(&method, version, map, None).unwrap_err().status
        };
        let plain = headers(&[]);
        assert_eq!(
            status(Method::GET, Version::HTTP_11, &plain),
            StatusCode::UPGRADE_REQUIRED
        );
        let good = good_with(&[]);
        assert_eq!(
            status(Method::GET, Version::HTTP_2, &good),
            StatusCode::UPGRADE_REQUIRED
        );
        assert_eq!(
            status(Method::GET, Version::HTTP_10, &good),
            StatusCode::UPGRADE_REQUIRED
        );
        assert_eq!(
            status(Method::HEAD, Version::HTTP_11, &good),
            StatusCode::UPGRADE_REQUIRED
        );
        let old = headers(&[
            ("connection", "Upgrade"),
            ("upgrade", "websocket"),
            ("sec-websocket-version", "8"),
            ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ]);
        let reply = check(&Method::GET, Version::HTTP_11, &old, None).unwrap_err();
        assert_eq!(reply.status, StatusCode::UPGRADE_REQUIRED);
        assert!(
            reply
                .headers
                .iter()
                .any(|(name, value)| *name == SEC_WEBSOCKET_VERSION && value == "13")
        );
    }

    #[test]
    fn a_bad_key_is_a_bad_request() {
        for key in [
            "",
            "short==",
            "dGhlIHNhbXBsZSBub25jZQ",
            "dGhlIHNhbXBsZSBub25jZ!==",
        ] {
            let map = headers(&[
                ("connection", "Upgrade"),
                ("upgrade", "websocket"),
                ("sec-websocket-version", "13"),
                ("sec-websocket-key", key),
            ]);
            let reply = check(&Method::GET, Version::HTTP_11, &map, None).unwrap_err();
            assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{key:?}");
        }
        let twice = good_with(&[("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")]);
        let reply = check(&Method::GET, Version::HTTP_11, &twice, None).unwrap_err();
        assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    }

    #[test]
    fn origins_off_the_list_are_refused() {
        let list = OriginList::new(&["https://app.test".to_owned(), "https://*.b.test".to_owned()])
            .unwrap();
        let allowed = |origin: Option<&str>| {
            let map = match origin {
                Some(origin) => good_with(&[("origin", origin)]),
                None => good_with(&[]),
            };
            match check(&Method::GET, Version::HTTP_11, &map, Some(&list)) {
                Ok(_) => true,
                Err(reply) => {
                    assert_eq!(reply.status, StatusCode::FORBIDDEN);
                    false
                }
            }
        };
        assert!(allowed(Some("https://app.test")));
        assert!(allowed(Some("https://x.b.test")));
        assert!(allowed(None));
        assert!(!allowed(Some("https://evil.test")));
        assert!(!allowed(Some("http://app.test")));
        assert!(!allowed(Some("null")));
        let twice = good_with(&[
            ("origin", "https://app.test"),
            ("origin", "https://app.test"),
        ]);
        assert!(check(&Method::GET, Version::HTTP_11, &twice, Some(&list)).is_err());
    }
}
