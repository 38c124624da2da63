//! `[compression]`: which content coding a response gets, decided from the request's
//! `Accept-Encoding` (RFC 9110 §12.5.3) and the response's own headers.
//!
//! The bytes are compressed by the `pyhost` crate; everything that decides whether and how is
//! here, so it is unit-tested without a server. Compression is skipped for what gains nothing
//! or must not change: bodies below `min_size`, media types not listed, responses a handler
//! already encoded (`Content-Encoding`), `Cache-Control: no-transform`, partial content, and
//! statuses without a body (1xx, 204, 304). `HEAD` gets the headers of an uncompressed `GET`.

use bytesize::ByteSize;
use http::header::{ACCEPT_ENCODING, CACHE_CONTROL, CONTENT_ENCODING, CONTENT_RANGE, CONTENT_TYPE};
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use serde::Deserialize;

/// A content coding the host can produce.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum Coding {
    /// `gzip` (RFC 1952).
    #[serde(rename = "gzip")]
    Gzip,
    /// `br`, Brotli (RFC 7932).
    #[serde(rename = "br")]
    Brotli,
    /// `zstd`, Zstandard (RFC 8878).
    #[serde(rename = "zstd")]
    Zstd,
}

impl Coding {
    /// The coding's name in `Content-Encoding`.
    pub fn token(self) -> &'static str {
        match self {
            Self::Gzip => "gzip",
            Self::Brotli => "br",
            Self::Zstd => "zstd",
        }
    }

    fn matches(self, name: &[u8]) -> bool {
        name.eq_ignore_ascii_case(self.token().as_bytes())
            // RFC 9110 §8.4.1.3: a recipient SHOULD take x-gzip as gzip.
            || (self == Self::Gzip && name.eq_ignore_ascii_case(b"x-gzip"))
    }
}

/// Why a `[compression]` value is unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CompressionConfigError {
    /// `encodings = []`.
    #[error(
        "expected at least one of \"zstd\", \"br\", \"gzip\"; leave [compression] out to turn compression off"
    )]
    NoEncodings,
    /// `media_types = []`.
    #[error("expected at least one media type or prefix; leave the key out for the defaults")]
    NoMediaTypes,
    /// A `media_types` entry that is no `type/` prefix or `type/subtype`.
    #[error(
        "expected a media type such as \"application/json\" or a prefix such as \"text/\", got {0:?}"
    )]
    MediaType(String),
}

impl CompressionConfigError {
    /// The key at fault, below `[compression]`.
    pub fn key(&self, media_types: &[String]) -> String {
        match self {
            Self::NoEncodings => "compression.encodings".to_owned(),
            Self::NoMediaTypes => "compression.media_types".to_owned(),
            Self::MediaType(entry) => match media_types.iter().position(|e| e == entry) {
                Some(index) => format!("compression.media_types[{index}]"),
                None => "compression.media_types".to_owned(),
            },
        }
    }
}

/// The defaults of `[compression]`.
pub mod defaults {
    use super::Coding;

    /// Below 1 KiB a response fits a packet or two either way: compressing it costs CPU and
    /// saves next to nothing.
    pub const MIN_SIZE: u64 = 1024;

    /// Server preference for equal q-values: zstd and brotli compress text better than gzip
    /// at the levels used, zstd fastest.
    pub const ENCODINGS: [Coding; 3] = [Coding::Zstd, Coding::Brotli, Coding::Gzip];

    /// Text formats; images, audio, video and archives are compressed already.
    pub const MEDIA_TYPES: [&str; 8] = [
        "text/",
        "application/json",
        "application/javascript",
        "application/xml",
        "application/problem+json",
        "application/xhtml+xml",
        "application/wasm",
        "image/svg+xml",
    ];
}

/// The checked `[compression]` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompressionPolicy {
    min_size: usize,
    /// In the server's order of preference.
    encodings: Vec<Coding>,
    /// Lower-case prefixes of the media types compressed.
    media_types: Vec<String>,
}

/// What to do with one response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Send it as it is; with `vary`, its form depended on `Accept-Encoding` (another request
    /// could have got it compressed), so caches must key on that.
    Identity {
        /// Add `Vary: Accept-Encoding`.
        vary: bool,
    },
    /// Compress it with this coding (and add `Vary: Accept-Encoding`).
    Compress(Coding),
}

impl CompressionPolicy {
    /// Checks the table's values; `None` for a key takes its default.
    pub fn new(
        min_size: Option<ByteSize>,
        encodings: Option<&[Coding]>,
        media_types: Option<&[String]>,
    ) -> Result<Self, CompressionConfigError> {
        let mut chosen: Vec<Coding> = Vec::new();
        for coding in encodings.unwrap_or(&defaults::ENCODINGS) {
            if !chosen.contains(coding) {
                chosen.push(*coding);
            }
        }
        if chosen.is_empty() {
            return Err(CompressionConfigError::NoEncodings);
        }
        let media_types = match media_types {
            None => defaults::MEDIA_TYPES.map(str::to_owned).to_vec(),
            Some([]) => return Err(CompressionConfigError::NoMediaTypes),
            Some(entries) => {
                for entry in entries {
                    if !is_media_type_prefix(entry) {
                        return Err(CompressionConfigError::MediaType(entry.clone()));
                    }
                }
                entries.iter().map(|e| e.to_ascii_lowercase()).collect()
            }
        };
        let min_size = min_size.map_or(defaults::MIN_SIZE, |size| size.as_u64());
        Ok(Self {
            min_size: usize::try_from(min_size).unwrap_or(usize::MAX),
            encodings: chosen,
            media_types,
        })
    }

    /// The coding the request accepts best among those configured; `None` for identity.
    pub fn negotiate(&self, request: &HeaderMap) -> Option<Coding> {
        negotiate(request, &self.encodings)
    }

    /// Whether the response goes out compressed with `accepted` (the request's
    /// [`CompressionPolicy::negotiate`]); `head` for a `HEAD` request.
    pub fn decide(
        &self,
        status: StatusCode,
        headers: &[(HeaderName, HeaderValue)],
        body_len: usize,
        accepted: Option<Coding>,
        head: bool,
    ) -> Decision {
        let has_body = !(status.is_informational()
            || status == StatusCode::NO_CONTENT
            || status == StatusCode::NOT_MODIFIED
            || status == StatusCode::PARTIAL_CONTENT);
        // Only a response that some request could get compressed varies with Accept-Encoding.
        let compressible = has_body
            && body_len >= self.min_size.max(1)
            && !headers.iter().any(|(name, value)| {
                *name == CONTENT_ENCODING
                    || *name == CONTENT_RANGE
                    || (*name == CACHE_CONTROL && has_directive(value, b"no-transform"))
            })
            && headers
                .iter()
                .find(|(name, _)| *name == CONTENT_TYPE)
                .is_some_and(|(_, value)| self.media_type_listed(value));
        match accepted {
            Some(coding) if compressible && !head => Decision::Compress(coding),
            _ => Decision::Identity { vary: compressible },
        }
    }

    fn media_type_listed(&self, content_type: &HeaderValue) -> bool {
        let bytes = content_type.as_bytes();
        let essence = bytes
            .split(|&b| b == b';')
            .next()
            .unwrap_or_default()
            .trim_ascii();
        self.media_types.iter().any(|prefix| {
            essence.len() >= prefix.len()
                && essence[..prefix.len()].eq_ignore_ascii_case(prefix.as_bytes())
        })
    }
}

/// `type/` or `type/subtype`, with token characters on either side.
fn is_media_type_prefix(entry: &str) -> bool {
    let token = |part: &str| {
        part.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$&-^_.+".contains(&b))
    };
    match entry.split_once('/') {
        Some((kind, sub)) => !kind.is_empty() && token(kind) && token(sub),
        None => false,
    }
}

fn has_directive(value: &HeaderValue, directive: &[u8]) -> bool {
    value
        .as_bytes()
        .split(|&b| b == b',')
        .any(|item| item.trim_ascii().eq_ignore_ascii_case(directive))
}

/// A q-value in thousandths (RFC 9110 §12.4.2: `0[.ddd]` or `1[.000]`).
fn parse_qvalue(text: &[u8]) -> Option<u16> {
    let (whole, fraction) = match text.iter().position(|&b| b == b'.') {
        Some(dot) => (&text[..dot], &text[dot + 1..]),
        None => (text, &[][..]),
    };
    if fraction.len() > 3 || !fraction.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let mut thousandths: u16 = 0;
    for i in 0..3 {
        let digit = fraction.get(i).map_or(0, |d| u16::from(d - b'0'));
        thousandths = thousandths * 10 + digit;
    }
    match whole {
        b"0" => Some(thousandths),
        b"1" if thousandths == 0 => Some(1000),
        _ => None,
    }
}

/// Picks the coding of `offered` (in preference order) that the request's `Accept-Encoding`
/// rates highest; `None` means identity. No `Accept-Encoding` at all means identity too: a
/// client that names no coding may not decode one.
pub fn negotiate(request: &HeaderMap, offered: &[Coding]) -> Option<Coding> {
    let mut values = request.get_all(ACCEPT_ENCODING).iter().peekable();
    values.peek()?;
    let mut explicit: [Option<u16>; 3] = [None; 3];
    let mut star: Option<u16> = None;
    let mut identity: Option<u16> = None;
    for value in values {
        for element in value.as_bytes().split(|&b| b == b',') {
            let mut parts = element.split(|&b| b == b';');
            let name = parts.next().unwrap_or_default().trim_ascii();
            if name.is_empty() {
                continue;
            }
            let mut q = Some(1000);
            for param in parts {
                let param = param.trim_ascii();
                if let Some(value) = param
                    .strip_prefix(b"q=")
                    .or_else(|| param.strip_prefix(b"Q="))
                {
                    q = parse_qvalue(value.trim_ascii());
                }
            }
            // An element with a malformed q-value says nothing usable: it is skipped.
            let Some(q) = q else { continue };
            let slot = if name == b"*" {
                &mut star
            } else if name.eq_ignore_ascii_case(b"identity") {
                &mut identity
            } else {
                match offered.iter().position(|c| c.matches(name)) {
                    Some(index) if index < explicit.len() => &mut explicit[index],
                    _ => continue,
                }
            };
            // The first mention of a coding counts.
            slot.get_or_insert(q);
        }
    }
    let mut best: Option<(Coding, u16)> = None;
    for (index, coding) in offered.iter().enumerate() {
        let q = explicit.get(index).copied().flatten().or(star).unwrap_or(0);
        if q > 0 && best.is_none_or(|(_, top)| q > top) {
            best = Some((*coding, q));
        }
    }
    let (coding, q) = best?;
    // Identity is always acceptable, but it wins only when the client rates it higher.
    match identity.or(star) {
        Some(identity_q) if identity_q > q => None,
        _ => Some(coding),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Coding::*;

    const ALL: [Coding; 3] = [Zstd, Brotli, Gzip];

    fn accept(values: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for value in values {
            headers.append(ACCEPT_ENCODING, HeaderValue::from_str(value).unwrap());
        }
        headers
    }

    fn pick(value: &str, offered: &[Coding]) -> Option<Coding> {
        negotiate(&accept(&[value]), offered)
    }

    #[test]
    fn the_highest_q_wins_and_ties_go_to_the_server_order() {
        assert_eq!(pick("gzip", &ALL), Some(Gzip));
        assert_eq!(pick("gzip, deflate, br", &ALL), Some(Brotli));
        assert_eq!(pick("gzip, deflate, br, zstd", &ALL), Some(Zstd));
        assert_eq!(pick("br;q=0.5, gzip;q=0.8", &ALL), Some(Gzip));
        assert_eq!(pick("br;q=1.0, gzip;q=0.999", &ALL), Some(Brotli));
        assert_eq!(pick("gzip, br", &[Gzip, Brotli]), Some(Gzip));
        assert_eq!(pick("GZIP", &ALL), Some(Gzip));
        assert_eq!(pick("x-gzip", &ALL), Some(Gzip));
        assert_eq!(pick("zstd, br", &[Gzip]), None);
    }

    #[test]
    fn q_zero_refuses() {
        assert_eq!(pick("gzip;q=0", &ALL), None);
        assert_eq!(pick("br;q=0, gzip", &ALL), Some(Gzip));
        assert_eq!(pick("gzip;q=0.000, br;q=0.001", &ALL), Some(Brotli));
        assert_eq!(pick("*;q=0", &ALL), None);
    }

    #[test]
    fn the_star_covers_what_is_not_named() {
        assert_eq!(pick("*", &ALL), Some(Zstd));
        assert_eq!(pick("zstd;q=0, *", &ALL), Some(Brotli));
        assert_eq!(pick("gzip;q=0.5, *;q=0.1", &ALL), Some(Gzip));
        assert_eq!(pick("*;q=0, gzip", &ALL), Some(Gzip));
    }

    #[test]
    fn identity_wins_only_when_rated_higher() {
        assert_eq!(pick("identity", &ALL), None);
        assert_eq!(pick("gzip;q=0.5, identity", &ALL), None);
        assert_eq!(pick("gzip, identity;q=0.5", &ALL), Some(Gzip));
        assert_eq!(pick("gzip, identity", &ALL), Some(Gzip));
        assert_eq!(pick("gzip, identity;q=0", &ALL), Some(Gzip));
        assert_eq!(pick("gzip;q=0.5", &ALL), Some(Gzip));
    }

    #[test]
    fn no_or_empty_or_broken_headers_mean_identity() {
        assert_eq!(negotiate(&HeaderMap::new(), &ALL), None);
        assert_eq!(pick("", &ALL), None);
        assert_eq!(pick("gzip;q=2", &ALL), None);
        assert_eq!(pick("gzip;q=abc", &ALL), None);
        assert_eq!(pick("gzip;q=0.1234", &ALL), None);
        assert_eq!(pick("gzip;q=1.5, br;q=0.2", &ALL), Some(Brotli));
        assert_eq!(pick(" , ;, gzip ; q=0.3 ", &ALL), Some(Gzip));
        assert_eq!(pick("deflate, compress", &ALL), None);
    }

    #[test]
    fn several_header_lines_are_one_list() {
        assert_eq!(
            negotiate(&accept(&["gzip;q=0.2", "br;q=0.9"]), &ALL),
            Some(Brotli)
        );
    }

    #[test]
    fn qvalues_parse_as_rfc_9110_spells_them() {
        assert_eq!(parse_qvalue(b"1"), Some(1000));
        assert_eq!(parse_qvalue(b"1.000"), Some(1000));
        assert_eq!(parse_qvalue(b"0.5"), Some(500));
        assert_eq!(parse_qvalue(b"0.05"), Some(50));
        assert_eq!(parse_qvalue(b"0."), Some(0));
        assert_eq!(parse_qvalue(b"1.001"), None);
        assert_eq!(parse_qvalue(b".5"), None);
        assert_eq!(parse_qvalue(b"-0"), None);
    }

    fn policy() -> CompressionPolicy {
        CompressionPolicy::new(None, None, None).expect("the defaults are valid")
    }

    fn typed(media_type: &'static str) -> Vec<(HeaderName, HeaderValue)> {
        vec![(CONTENT_TYPE, HeaderValue::from_static(media_type))]
    }

    #[test]
    fn text_at_or_above_min_size_is_compressed() {
        let p = policy();
        let json = typed("application/json");
        assert_eq!(
            p.decide(StatusCode::OK, &json, 1024, Some(Gzip), false),
            Decision::Compress(Gzip)
        );
        assert_eq!(
            p.decide(StatusCode::OK, &json, 1023, Some(Gzip), false),
            Decision::Identity { vary: false }
        );
        assert_eq!(
            p.decide(
                StatusCode::NOT_FOUND,
                &typed("Text/HTML; charset=utf-8"),
                5000,
                Some(Zstd),
                false
            ),
            Decision::Compress(Zstd)
        );
        assert_eq!(
            p.decide(StatusCode::OK, &json, 5000, None, false),
            Decision::Identity { vary: true }
        );
    }

    #[test]
    fn what_must_not_be_compressed_is_not() {
        let p = policy();
        let identity = |vary| Decision::Identity { vary };
        let big = 100_000;
        assert_eq!(
            p.decide(StatusCode::OK, &typed("image/png"), big, Some(Gzip), false),
            identity(false)
        );
        assert_eq!(
            p.decide(StatusCode::OK, &[], big, Some(Gzip), false),
            identity(false)
        );
        let mut encoded = typed("text/plain");
        encoded.push((CONTENT_ENCODING, HeaderValue::from_static("gzip")));
        assert_eq!(
            p.decide(StatusCode::OK, &encoded, big, Some(Brotli), false),
            identity(false)
        );
        let mut no_transform = typed("text/plain");
        no_transform.push((
            CACHE_CONTROL,
            HeaderValue::from_static("max-age=60, No-Transform"),
        ));
        assert_eq!(
            p.decide(StatusCode::OK, &no_transform, big, Some(Gzip), false),
            identity(false)
        );
        for status in [
            StatusCode::NO_CONTENT,
            StatusCode::NOT_MODIFIED,
            StatusCode::PARTIAL_CONTENT,
        ] {
            assert_eq!(
                p.decide(status, &typed("text/plain"), big, Some(Gzip), false),
                identity(false),
                "{status}"
            );
        }
        assert_eq!(
            p.decide(StatusCode::OK, &typed("text/plain"), big, Some(Gzip), true),
            identity(true),
            "HEAD"
        );
    }

    #[test]
    fn min_size_zero_still_skips_empty_bodies() {
        let p = CompressionPolicy::new(Some(ByteSize::b(0)), None, None).unwrap();
        assert_eq!(
            p.decide(StatusCode::OK, &typed("text/plain"), 0, Some(Gzip), false),
            Decision::Identity { vary: false }
        );
        assert_eq!(
            p.decide(StatusCode::OK, &typed("text/plain"), 1, Some(Gzip), false),
            Decision::Compress(Gzip)
        );
    }

    #[test]
    fn the_table_is_checked() {
        assert_eq!(
            CompressionPolicy::new(None, Some(&[]), None),
            Err(CompressionConfigError::NoEncodings)
        );
        assert_eq!(
            CompressionPolicy::new(None, None, Some(&[])),
            Err(CompressionConfigError::NoMediaTypes)
        );
        let bad = vec!["text/".to_owned(), "json".to_owned()];
        let err = CompressionPolicy::new(None, None, Some(&bad)).unwrap_err();
        assert_eq!(err, CompressionConfigError::MediaType("json".to_owned()));
        assert_eq!(err.key(&bad), "compression.media_types[1]");
        let p = CompressionPolicy::new(None, Some(&[Gzip, Gzip, Brotli]), None).unwrap();
        assert_eq!(p.encodings, [Gzip, Brotli]);
    }
}
