//! Whose request this is: the `Host` header and the target's authority, settled the same way
//! whichever protocol carried the request.
//!
//! The rules (RFC 9110 §7.2, RFC 9112 §3.2, RFC 9113 §8.3.1):
//! - more than one `Host` field line, an empty or malformed one, or one with userinfo: 400;
//! - HTTP/1.1 without `Host`: 400, even with an absolute-form target (the client must send it);
//! - HTTP/1.x with an absolute-form target: the target's authority is the request's, and the
//!   received `Host` is ignored (RFC 9112 §3.2.2 says MUST ignore, so a different one is not an
//!   error there);
//! - HTTP/2: `:authority` or `Host` must be present, and when both are they must agree (RFC
//!   9113 §8.3.1 makes a disagreeing pair malformed);
//! - a target authority with userinfo (`http://user@host/`): 400 (RFC 9110 §4.2.4).
//!
//! After the check the `Host` header holds the request's authority, as an HTTP/2-to-1.1
//! intermediary must write it (RFC 9113 §8.3.1, RFC 9112 §3.2.2): handlers see one `Host`,
//! and the request URL the service builds from it names the same authority on both protocols.
//! HTTP/1.0 needs no `Host`; without one the service falls back to the listen address.
//!
//! Cost per request: one header lookup and a scan of that name's values (at most two looked
//! at); a header is written only for an absolute-form or HTTP/2 request whose `Host` differs.

use http::header::HOST;
use http::uri::Authority;
use http::{HeaderValue, StatusCode, Version};

use crate::reply::Reply;

/// Why a request's authority cannot be settled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthorityError {
    /// An HTTP/1.1 request without `Host`, or an HTTP/2 one without `:authority` or `Host`.
    #[error("the request names no host: it needs a Host header (or, over HTTP/2, :authority)")]
    Missing,
    /// More than one `Host` field line.
    #[error("more than one Host header")]
    Repeated,
    /// A `Host` value that is empty or no `host[:port]`.
    #[error("the Host header is not a host[:port]")]
    Invalid,
    /// Userinfo (`user@`) in `Host` or in the target's authority.
    #[error("userinfo is not allowed in a request's authority")]
    UserInfo,
    /// HTTP/2 `:authority` and `Host` that name different authorities.
    #[error(":authority and Host name different hosts")]
    Mismatch,
    /// A host `server.allowed_hosts` does not list (`crate::middleware::hosts`).
    #[error("the Host header names a host this server does not serve")]
    NotAllowed,
}

impl AuthorityError {
    /// The 400 the client gets.
    pub fn into_reply(self) -> Reply {
        Reply::detail(StatusCode::BAD_REQUEST, format!("Bad request: {self}"))
    }
}

/// Checks the request's authority and leaves it in the one `Host` header (see the module docs).
pub fn settle(parts: &mut http::request::Parts) -> Result<(), AuthorityError> {
    let host = single_host(&parts.headers)?;
    let target = parts.uri.authority();
    if let Some(target) = target
        && target.as_str().contains('@')
    {
        return Err(AuthorityError::UserInfo);
    }
    let host = host.map(parse_host).transpose()?;
    let authority = match (parts.version, target, host) {
        (Version::HTTP_09 | Version::HTTP_10, None, _) => return Ok(()),
        (Version::HTTP_11, _, None) => return Err(AuthorityError::Missing),
        (Version::HTTP_11, None, Some(_)) => return Ok(()),
        // Absolute form over HTTP/1: the target wins, whatever Host said.
        (Version::HTTP_09 | Version::HTTP_10 | Version::HTTP_11, Some(target), _) => target,
        // HTTP/2 (and anything later): either, and both only when they agree.
        (_, None, None) => return Err(AuthorityError::Missing),
        (_, None, Some(_)) => return Ok(()),
        (_, Some(target), Some(host)) if host != *target => return Err(AuthorityError::Mismatch),
        (_, Some(target), _) => target,
    };
    let unchanged = parts
        .headers
        .get(HOST)
        .is_some_and(|value| value.as_bytes() == authority.as_str().as_bytes());
    if !unchanged {
        let value =
            HeaderValue::from_str(authority.as_str()).map_err(|_| AuthorityError::Invalid)?;
        parts.headers.insert(HOST, value);
    }
    Ok(())
}

/// The request's `Host` value, if it has exactly one.
fn single_host(headers: &http::HeaderMap) -> Result<Option<&HeaderValue>, AuthorityError> {
    let mut values = headers.get_all(HOST).iter();
    let first = values.next();
    if values.next().is_some() {
        return Err(AuthorityError::Repeated);
    }
    Ok(first)
}

/// A `Host` value as an authority: `host[:port]`, nothing else.
fn parse_host(value: &HeaderValue) -> Result<Authority, AuthorityError> {
    let bytes = value.as_bytes();
    if bytes.contains(&b'@') {
        return Err(AuthorityError::UserInfo);
    }
    // `Authority` also takes what a Host value may not be: an empty string, or a comma-joined
    // list some proxies make of two values.
    if bytes.is_empty() || bytes.contains(&b',') {
        return Err(AuthorityError::Invalid);
    }
    Authority::try_from(bytes).map_err(|_| AuthorityError::Invalid)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(version: Version, target: &str, hosts: &[&str]) -> http::request::Parts {
        let mut builder = http::Request::builder().version(version).uri(target);
        for host in hosts {
            builder = builder.header(HOST, *host);
        }
        builder
            .body(())
            .expect("a valid test request")
            .into_parts()
            .0
    }

    fn settled(version: Version, target: &str, hosts: &[&str]) -> Result<String, AuthorityError> {
        let mut parts = parts(version, target, hosts);
        settle(&mut parts)?;
        Ok(parts
            .headers
            .get(HOST)
            .map(|v| v.to_str().unwrap_or("?").to_owned())
            .unwrap_or_default())
    }

    #[test]
    fn http11_needs_exactly_one_host() {
        use AuthorityError::*;
        assert_eq!(
            settled(Version::HTTP_11, "/", &["a.test"]),
            Ok("a.test".into())
        );
        assert_eq!(settled(Version::HTTP_11, "/", &[]), Err(Missing));
        assert_eq!(
            settled(Version::HTTP_11, "/", &["a.test", "a.test"]),
            Err(Repeated)
        );
        assert_eq!(settled(Version::HTTP_11, "/", &[""]), Err(Invalid));
        assert_eq!(settled(Version::HTTP_11, "/", &["a b"]), Err(Invalid));
        assert_eq!(
            settled(Version::HTTP_11, "/", &["a.test, b.test"]),
            Err(Invalid)
        );
        assert_eq!(settled(Version::HTTP_11, "/", &["u@a.test"]), Err(UserInfo));
        assert_eq!(
            settled(Version::HTTP_11, "/", &["a.test:8080"]),
            Ok("a.test:8080".into())
        );
    }

    #[test]
    fn an_absolute_target_names_the_host_over_http1() {
        use AuthorityError::*;
        assert_eq!(
            settled(Version::HTTP_11, "http://t.test/x", &["h.test"]),
            Ok("t.test".into())
        );
        assert_eq!(
            settled(Version::HTTP_11, "http://t.test/x", &[]),
            Err(Missing)
        );
        assert_eq!(
            settled(Version::HTTP_10, "http://t.test/x", &[]),
            Ok("t.test".into())
        );
        assert_eq!(
            settled(Version::HTTP_11, "http://u@t.test/x", &["t.test"]),
            Err(UserInfo)
        );
    }

    #[test]
    fn http10_may_name_no_host() {
        assert_eq!(settled(Version::HTTP_10, "/", &[]), Ok(String::new()));
        assert_eq!(
            settled(Version::HTTP_10, "/", &["a", "b"]),
            Err(AuthorityError::Repeated)
        );
    }

    #[test]
    fn http2_takes_either_and_both_must_agree() {
        use AuthorityError::*;
        assert_eq!(
            settled(Version::HTTP_2, "http://a.test/", &[]),
            Ok("a.test".into())
        );
        assert_eq!(
            settled(Version::HTTP_2, "/", &["a.test"]),
            Ok("a.test".into())
        );
        assert_eq!(
            settled(Version::HTTP_2, "http://a.test/", &["A.TEST"]),
            Ok("a.test".into())
        );
        assert_eq!(settled(Version::HTTP_2, "/", &[]), Err(Missing));
        assert_eq!(
            settled(Version::HTTP_2, "http://a.test/", &["b.test"]),
            Err(Mismatch)
        );
        assert_eq!(
            settled(Version::HTTP_2, "http://a.test/", &["a.test", "a.test"]),
            Err(Repeated)
        );
    }
}
