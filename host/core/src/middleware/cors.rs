//! `[cors]`: cross-origin requests as the Fetch standard's CORS protocol has them, decided in
//! Rust so that a preflight never costs a trip to Python.
//!
//! - A preflight (`OPTIONS` with `Origin` and `Access-Control-Request-Method`) is answered by
//!   [`CorsPolicy::preflight`], on any path, whether or not a route takes `OPTIONS` there:
//!   `204` with the `Access-Control-Allow-*` headers when the origin, the method and every
//!   requested header are allowed; otherwise `403` with the usual JSON `detail` and no CORS
//!   header. Fetch fails a preflight whose status is not 2xx or whose headers do not allow the
//!   request, so the browser refuses either way; a 4xx also says so to a person reading the
//!   network log or the server's access log.
//! - Every other response gets [`CorsPolicy::apply`]: `Access-Control-Allow-Origin` (the
//!   request's origin echoed, or `*` when any origin is allowed without credentials),
//!   `Access-Control-Allow-Credentials` and `Access-Control-Expose-Headers` for an allowed
//!   origin, nothing for another, and `Vary: Origin` whenever the answer depends on the
//!   origin, so a cache cannot hand one origin's response to another. The host owns these
//!   headers: a handler's own are replaced.
//! - `allow_credentials = true` with `allow_origins = ["*"]` is refused when the config is
//!   loaded: Fetch ignores `*` on a credentialed response, and echoing every origin instead
//!   would let any site read any user's responses. List the origins (wildcard subdomains
//!   such as `"https://*.example.com"` are fine).
//!
//! The CORS-safelisted methods (`GET`, `HEAD`, `POST`) need no preflight approval, so they
//! pass the method check whatever `allow_methods` says, as Fetch's own check lets them.

use http::header::{
    ACCESS_CONTROL_ALLOW_CREDENTIALS, ACCESS_CONTROL_ALLOW_HEADERS, ACCESS_CONTROL_ALLOW_METHODS,
    ACCESS_CONTROL_ALLOW_ORIGIN, ACCESS_CONTROL_EXPOSE_HEADERS, ACCESS_CONTROL_MAX_AGE,
    ACCESS_CONTROL_REQUEST_HEADERS, ACCESS_CONTROL_REQUEST_METHOD, ORIGIN,
};
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};

use super::add_vary;
use crate::reply::Reply;

/// Why a `[cors]` value is unusable; [`CorsConfigError::key`] names the key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CorsConfigError {
    /// `allow_origins = []`.
    #[error("expected at least one origin such as \"https://app.example.com\", or \"*\"")]
    NoOrigins,
    /// An `allow_origins` entry that is no origin.
    #[error(
        "expected an origin such as \"https://app.example.com\", \"https://*.example.com\" or \"*\" (scheme, host and optional port; no path), got {entry:?}"
    )]
    Origin {
        /// Its index.
        index: usize,
        /// The entry.
        entry: String,
    },
    /// An `allow_methods` entry that is no method token.
    #[error("expected an HTTP method such as \"PUT\", or \"*\", got {entry:?}")]
    Method {
        /// Its index.
        index: usize,
        /// The entry.
        entry: String,
    },
    /// An `allow_headers` or `expose_headers` entry that is no header name.
    #[error("expected a header name such as \"content-type\", or \"*\", got {entry:?}")]
    Header {
        /// `allow_headers` or `expose_headers`.
        list: &'static str,
        /// Its index.
        index: usize,
        /// The entry.
        entry: String,
    },
    /// `allow_credentials = true` with `allow_origins = ["*"]`.
    #[error(
        "cannot be true with allow_origins = [\"*\"]: the CORS protocol (Fetch standard) forbids a wildcard origin on credentialed responses; list the allowed origins instead"
    )]
    WildcardWithCredentials,
    /// `allow_credentials = true` with `expose_headers = ["*"]`.
    #[error(
        "cannot contain \"*\" when allow_credentials is true: the CORS protocol (Fetch standard) takes it literally on credentialed responses; list the headers instead"
    )]
    ExposeAllWithCredentials,
}

impl CorsConfigError {
    /// The dotted key at fault.
    pub fn key(&self) -> String {
        match self {
            Self::NoOrigins => "cors.allow_origins".to_owned(),
            Self::Origin { index, .. } => format!("cors.allow_origins[{index}]"),
            Self::Method { index, .. } => format!("cors.allow_methods[{index}]"),
            Self::Header { list, index, .. } => format!("cors.{list}[{index}]"),
            Self::WildcardWithCredentials => "cors.allow_credentials".to_owned(),
            Self::ExposeAllWithCredentials => "cors.expose_headers".to_owned(),
        }
    }
}

/// The `[cors]` table as read from the file.
#[derive(Debug, Clone, Copy)]
pub struct CorsOptions<'a> {
    /// `allow_origins`.
    pub allow_origins: &'a [String],
    /// `allow_methods`; `None`: the default, the CORS-safelisted `GET`, `HEAD`, `POST`.
    pub allow_methods: Option<&'a [String]>,
    /// `allow_headers`.
    pub allow_headers: &'a [String],
    /// `expose_headers`.
    pub expose_headers: &'a [String],
    /// `allow_credentials`.
    pub allow_credentials: bool,
    /// `max_age`, in seconds.
    pub max_age: Option<u64>,
}

/// The checked `[cors]` table, with the header values it sends made once.
#[derive(Debug, Clone)]
pub struct CorsPolicy {
    /// `None`: any origin.
    origins: Option<Vec<OriginPattern>>,
    /// `None`: any method (the requested one is echoed).
    methods: Option<Vec<Method>>,
    methods_value: Option<HeaderValue>,
    /// `None`: any header (the requested ones are echoed).
    headers: Option<Vec<HeaderName>>,
    headers_value: Option<HeaderValue>,
    expose: Option<HeaderValue>,
    credentials: bool,
    max_age: Option<HeaderValue>,
}

/// One `allow_origins` entry other than `*`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct OriginPattern {
    /// Lower case.
    scheme: String,
    /// Lower case; for a wildcard, the `.example.com` every matching host ends with.
    host: String,
    wildcard: bool,
    /// `None`: the scheme's default port (which an origin never spells).
    port: Option<u16>,
}

/// The parts of an origin: `scheme://host[:port]`.
struct Origin<'a> {
    scheme: &'a str,
    host: &'a str,
    port: Option<u16>,
}

impl<'a> Origin<'a> {
    fn parse(text: &'a str) -> Option<Self> {
        let (scheme, rest) = text.split_once("://")?;
        let scheme_ok = scheme.starts_with(|c: char| c.is_ascii_alphabetic())
            && scheme
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b));
        if !scheme_ok || rest.is_empty() || rest.contains(['/', '?', '#', '@', ' ']) {
            return None;
        }
        let (host, port) = if rest.starts_with('[') {
            let end = rest.find(']')?;
            let (host, after) = rest.split_at(end + 1);
            match after.strip_prefix(':') {
                Some(port) => (host, Some(port)),
                None if after.is_empty() => (host, None),
                None => return None,
            }
        } else {
            match rest.split_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (rest, None),
            }
        };
        let port = match port {
            Some(port) => Some(port.parse::<u16>().ok()?),
            None => None,
        };
        let default_port = match scheme.to_ascii_lowercase().as_str() {
            "http" => Some(80),
            "https" => Some(443),
            _ => None,
        };
        let port = port.filter(|p| Some(*p) != default_port);
        (!host.is_empty()).then_some(Self { scheme, host, port })
    }
}

impl OriginPattern {
    fn parse(entry: &str) -> Option<Self> {
        let origin = Origin::parse(entry)?;
        let (wildcard, host) = match origin.host.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, origin.host),
        };
        let host_ok = if host.starts_with('[') {
            !wildcard
        } else {
            host.split('.').all(|label| {
                !label.is_empty()
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            })
        };
        if !host_ok {
            return None;
        }
        let host = host.to_ascii_lowercase();
        Some(Self {
            scheme: origin.scheme.to_ascii_lowercase(),
            host: if wildcard { format!(".{host}") } else { host },
            wildcard,
            port: origin.port,
        })
    }

    fn matches(&self, origin: &Origin<'_>) -> bool {
        if !origin.scheme.eq_ignore_ascii_case(&self.scheme) || origin.port != self.port {
            return false;
        }
        if !self.wildcard {
            return origin.host.eq_ignore_ascii_case(&self.host);
        }
        let host = origin.host;
        host.len() > self.host.len()
            && host.is_char_boundary(host.len() - self.host.len())
            && host[host.len() - self.host.len()..].eq_ignore_ascii_case(&self.host)
            && !host.starts_with('.')
            && !host.contains("..")
    }
}

/// A list of allowed origins in the syntax of `cors.allow_origins` (exact origins,
/// `https://*.example.com`, or `*`), for checks other than CORS: `websocket.allowed_origins`.
#[derive(Debug, Clone)]
pub struct OriginList {
    /// `None`: any origin.
    patterns: Option<Vec<OriginPattern>>,
}

impl OriginList {
    /// Parses the entries; `Err` gives the index of the first one that is not an origin.
    pub fn new(entries: &[String]) -> Result<Self, usize> {
        let mut patterns = Some(Vec::new());
        for (index, entry) in entries.iter().enumerate() {
            if entry == "*" {
                patterns = None;
                continue;
            }
            let pattern = OriginPattern::parse(entry).ok_or(index)?;
            if let Some(list) = patterns.as_mut() {
                list.push(pattern);
            }
        }
        Ok(Self { patterns })
    }

    /// Whether `origin` (an `Origin` header's value) is on the list.
    pub fn allows(&self, origin: &HeaderValue) -> bool {
        let Some(patterns) = &self.patterns else {
            return true;
        };
        let Some(parsed) = origin.to_str().ok().and_then(Origin::parse) else {
            return false;
        };
        patterns.iter().any(|pattern| pattern.matches(&parsed))
    }
}

/// Whether a request is a CORS preflight, which [`CorsPolicy::preflight`] answers.
pub fn is_preflight(method: &Method, headers: &HeaderMap) -> bool {
    *method == Method::OPTIONS
        && headers.contains_key(ORIGIN)
        && headers.contains_key(ACCESS_CONTROL_REQUEST_METHOD)
}

/// Why a preflight is refused (the 403's `detail`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
enum Refusal {
    #[error("CORS preflight refused: origin not allowed")]
    Origin,
    #[error("CORS preflight refused: method not allowed")]
    Method,
    #[error("CORS preflight refused: request header not allowed")]
    Header,
}

/// The headers the host owns once `[cors]` is on: a handler's own are dropped.
const OWNED: [HeaderName; 6] = [
    ACCESS_CONTROL_ALLOW_ORIGIN,
    ACCESS_CONTROL_ALLOW_CREDENTIALS,
    ACCESS_CONTROL_EXPOSE_HEADERS,
    ACCESS_CONTROL_ALLOW_METHODS,
    ACCESS_CONTROL_ALLOW_HEADERS,
    ACCESS_CONTROL_MAX_AGE,
];

impl CorsPolicy {
    /// Checks the `[cors]` table.
    pub fn new(options: CorsOptions<'_>) -> Result<Self, CorsConfigError> {
        if options.allow_origins.is_empty() {
            return Err(CorsConfigError::NoOrigins);
        }
        let mut origins = Some(Vec::new());
        for (index, entry) in options.allow_origins.iter().enumerate() {
            if entry == "*" {
                origins = None;
                continue;
            }
            let pattern = OriginPattern::parse(entry).ok_or_else(|| CorsConfigError::Origin {
                index,
                entry: entry.clone(),
            })?;
            if let Some(list) = origins.as_mut() {
                list.push(pattern);
            }
        }
        if origins.is_none() && options.allow_credentials {
            return Err(CorsConfigError::WildcardWithCredentials);
        }

        let default_methods = ["GET", "HEAD", "POST"].map(str::to_owned);
        let mut methods = Some(Vec::new());
        for (index, entry) in options
            .allow_methods
            .unwrap_or(&default_methods)
            .iter()
            .enumerate()
        {
            if entry == "*" {
                methods = None;
                continue;
            }
            let method =
                Method::from_bytes(entry.as_bytes()).map_err(|_| CorsConfigError::Method {
                    index,
                    entry: entry.clone(),
                })?;
            if let Some(list) = methods.as_mut() {
                list.push(method);
            }
        }

        let headers = header_names("allow_headers", options.allow_headers)?;
        let expose = header_names("expose_headers", options.expose_headers)?;
        if expose.is_none() && options.allow_credentials {
            return Err(CorsConfigError::ExposeAllWithCredentials);
        }
        let expose = match expose {
            None => Some(HeaderValue::from_static("*")),
            Some(names) => joined(names.iter().map(HeaderName::as_str)),
        };
        Ok(Self {
            methods_value: methods
                .as_ref()
                .and_then(|list| joined(list.iter().map(Method::as_str))),
            methods,
            headers_value: headers
                .as_ref()
                .and_then(|list| joined(list.iter().map(HeaderName::as_str))),
            headers,
            expose,
            origins,
            credentials: options.allow_credentials,
            max_age: options.max_age.map(HeaderValue::from),
        })
    }

    /// Whether the answer depends on the request's origin (anything but `*` without
    /// credentials), and so carries `Vary: Origin`.
    fn varies(&self) -> bool {
        self.origins.is_some()
    }

    /// The `Access-Control-Allow-Origin` value for a request with this `Origin`, if allowed.
    fn allow_origin(&self, headers: &HeaderMap) -> Option<HeaderValue> {
        let mut values = headers.get_all(ORIGIN).iter();
        let origin = values.next()?;
        if values.next().is_some() {
            return None;
        }
        let Some(patterns) = &self.origins else {
            return Some(HeaderValue::from_static("*"));
        };
        let parsed = Origin::parse(origin.to_str().ok()?)?;
        patterns
            .iter()
            .any(|pattern| pattern.matches(&parsed))
            .then(|| origin.clone())
    }

    /// The answer to a preflight (a request for which [`is_preflight`] holds).
    pub fn preflight(&self, request: &HeaderMap) -> Reply {
        let mut reply = match self.check_preflight(request) {
            Ok(headers) => {
                let mut reply = Reply::empty(StatusCode::NO_CONTENT);
                reply.headers = headers;
                reply
            }
            Err(refusal) => Reply::detail(StatusCode::FORBIDDEN, refusal.to_string()),
        };
        if self.varies() {
            add_vary(&mut reply.headers, "Origin");
        }
        if self.methods.is_none() {
            add_vary(&mut reply.headers, "Access-Control-Request-Method");
        }
        if self.headers.is_none() {
            add_vary(&mut reply.headers, "Access-Control-Request-Headers");
        }
        reply
    }

    fn check_preflight(
        &self,
        request: &HeaderMap,
    ) -> Result<Vec<(HeaderName, HeaderValue)>, Refusal> {
        let origin = self.allow_origin(request).ok_or(Refusal::Origin)?;
        let requested = request
            .get(ACCESS_CONTROL_REQUEST_METHOD)
            .and_then(|value| Method::from_bytes(value.as_bytes()).ok())
            .ok_or(Refusal::Method)?;
        let safelisted = [Method::GET, Method::HEAD, Method::POST].contains(&requested);
        let method_ok = safelisted
            || self
                .methods
                .as_ref()
                .is_none_or(|list| list.contains(&requested));
        if !method_ok {
            return Err(Refusal::Method);
        }
        // The requested names, lower-cased as the response lists them.
        let mut asked: Vec<HeaderName> = Vec::new();
        for value in request.get_all(ACCESS_CONTROL_REQUEST_HEADERS) {
            for item in value.as_bytes().split(|&b| b == b',') {
                let item = item.trim_ascii();
                if item.is_empty() {
                    continue;
                }
                let name = HeaderName::from_bytes(item).map_err(|_| Refusal::Header)?;
                if self
                    .headers
                    .as_ref()
                    .is_some_and(|list| !list.contains(&name))
                {
                    return Err(Refusal::Header);
                }
                asked.push(name);
            }
        }

        let mut headers = vec![(ACCESS_CONTROL_ALLOW_ORIGIN, origin)];
        if self.credentials {
            headers.push((
                ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            ));
        }
        // A `*` list echoes what was asked: the one form every browser takes, with or without
        // credentials (Fetch takes a literal `*` as a wildcard only without them).
        let methods = match &self.methods_value {
            Some(listed) => Some(listed.clone()),
            None if self.methods.is_none() => HeaderValue::from_str(requested.as_str()).ok(),
            None => None,
        };
        if let Some(methods) = methods {
            headers.push((ACCESS_CONTROL_ALLOW_METHODS, methods));
        }
        let allowed_headers = match &self.headers_value {
            Some(listed) => Some(listed.clone()),
            None if self.headers.is_none() => joined(asked.iter().map(HeaderName::as_str)),
            None => None,
        };
        if let Some(allowed_headers) = allowed_headers {
            headers.push((ACCESS_CONTROL_ALLOW_HEADERS, allowed_headers));
        }
        if let Some(max_age) = &self.max_age {
            headers.push((ACCESS_CONTROL_MAX_AGE, max_age.clone()));
        }
        Ok(headers)
    }

    /// The CORS headers of a response to an actual (not preflight) request whose `Origin` is
    /// `origin`, replacing any the handler set.
    pub fn apply(
        &self,
        origin: Option<&HeaderValue>,
        headers: &mut Vec<(HeaderName, HeaderValue)>,
    ) {
        if headers.iter().any(|(name, _)| OWNED.contains(name)) {
            headers.retain(|(name, _)| !OWNED.contains(name));
        }
        if self.varies() {
            add_vary(headers, "Origin");
        }
        let Some(origin) = origin else { return };
        let allowed = match &self.origins {
            None => Some(HeaderValue::from_static("*")),
            Some(patterns) => origin
                .to_str()
                .ok()
                .and_then(Origin::parse)
                .filter(|parsed| patterns.iter().any(|p| p.matches(parsed)))
                .map(|_| origin.clone()),
        };
        let Some(allowed) = allowed else { return };
        headers.push((ACCESS_CONTROL_ALLOW_ORIGIN, allowed));
        if self.credentials {
            headers.push((
                ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            ));
        }
        if let Some(expose) = &self.expose {
            headers.push((ACCESS_CONTROL_EXPOSE_HEADERS, expose.clone()));
        }
    }
}

/// Header names from a config list; `None` when it holds `*`.
fn header_names(
    list: &'static str,
    entries: &[String],
) -> Result<Option<Vec<HeaderName>>, CorsConfigError> {
    let mut names = Vec::with_capacity(entries.len());
    let mut any = false;
    for (index, entry) in entries.iter().enumerate() {
        if entry == "*" {
            any = true;
            continue;
        }
        let name =
            HeaderName::from_bytes(entry.as_bytes()).map_err(|_| CorsConfigError::Header {
                list,
                index,
                entry: entry.clone(),
            })?;
        if !names.contains(&name) {
            names.push(name);
        }
    }
    Ok((!any).then_some(names))
}

/// `a, b, c`, or `None` for no items.
fn joined<'a>(items: impl Iterator<Item = &'a str>) -> Option<HeaderValue> {
    let text = items.collect::<Vec<_>>().join(", ");
    if text.is_empty() {
        return None;
    }
    HeaderValue::from_str(&text).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::header::VARY;

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| (*s).to_owned()).collect()
    }

    struct Table {
        origins: Vec<String>,
        methods: Option<Vec<String>>,
        headers: Vec<String>,
        expose: Vec<String>,
        credentials: bool,
        max_age: Option<u64>,
    }

    impl Table {
        fn new(origins: &[&str]) -> Self {
            Self {
                origins: strings(origins),
                methods: None,
                headers: Vec::new(),
                expose: Vec::new(),
                credentials: false,
                max_age: None,
            }
        }

        fn build(&self) -> Result<CorsPolicy, CorsConfigError> {
            CorsPolicy::new(CorsOptions {
                allow_origins: &self.origins,
                allow_methods: self.methods.as_deref(),
                allow_headers: &self.headers,
                expose_headers: &self.expose,
                allow_credentials: self.credentials,
                max_age: self.max_age,
            })
        }

        fn policy(&self) -> CorsPolicy {
            self.build().expect("a valid test table")
        }
    }

    fn request(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.append(*name, HeaderValue::from_str(value).unwrap());
        }
        headers
    }

    fn get<'a>(headers: &'a [(HeaderName, HeaderValue)], name: &HeaderName) -> Option<&'a str> {
        headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.to_str().unwrap_or("?"))
    }

    fn actual(policy: &CorsPolicy, origin: Option<&str>) -> Vec<(HeaderName, HeaderValue)> {
        let origin = origin.map(|o| HeaderValue::from_str(o).unwrap());
        let mut headers = Vec::new();
        policy.apply(origin.as_ref(), &mut headers);
        headers
    }

    #[test]
    fn exact_origins_are_echoed_with_vary() {
        let policy = Table::new(&["https://app.example.com", "http://localhost:3000"]).policy();
        let headers = actual(&policy, Some("https://app.example.com"));
        assert_eq!(
            get(&headers, &ACCESS_CONTROL_ALLOW_ORIGIN),
            Some("https://app.example.com")
        );
        assert_eq!(get(&headers, &VARY), Some("Origin"));
        assert_eq!(get(&headers, &ACCESS_CONTROL_ALLOW_CREDENTIALS), None);
        let headers = actual(&policy, Some("http://localhost:3000"));
        assert_eq!(
            get(&headers, &ACCESS_CONTROL_ALLOW_ORIGIN),
            Some("http://localhost:3000")
        );
        for other in [
            "https://evil.test",
            "http://app.example.com",
            "https://app.example.com:8443",
            "https://app.example.com.evil.test",
            "http://localhost:3001",
            "http://localhost",
            "null",
            "https://app.example.com/",
        ] {
            let headers = actual(&policy, Some(other));
            assert_eq!(get(&headers, &ACCESS_CONTROL_ALLOW_ORIGIN), None, "{other}");
            assert_eq!(get(&headers, &VARY), Some("Origin"), "{other}");
        }
        // No Origin: no CORS header, but the response still varies with it.
        let headers = actual(&policy, None);
        assert_eq!(headers.len(), 1);
        assert_eq!(get(&headers, &VARY), Some("Origin"));
    }

    #[test]
    fn default_ports_are_the_same_origin() {
        let policy = Table::new(&["https://app.example.com:443"]).policy();
        let headers = actual(&policy, Some("https://app.example.com"));
        assert!(get(&headers, &ACCESS_CONTROL_ALLOW_ORIGIN).is_some());
    }

    #[test]
    fn wildcard_origins_take_subdomains_of_the_same_scheme_and_port() {
        let policy = Table::new(&["https://*.example.com"]).policy();
        for ok in [
            "https://a.example.com",
            "https://a.b.example.com",
            "https://A.Example.COM",
        ] {
            let headers = actual(&policy, Some(ok));
            assert_eq!(
                get(&headers, &ACCESS_CONTROL_ALLOW_ORIGIN),
                Some(ok),
                "{ok}"
            );
        }
        for bad in [
            "https://example.com",
            "http://a.example.com",
            "https://a.example.com:8443",
            "https://aexample.com",
            "https://a.example.com.evil.test",
            "https://.example.com",
            "https://a..example.com",
        ] {
            let headers = actual(&policy, Some(bad));
            assert_eq!(get(&headers, &ACCESS_CONTROL_ALLOW_ORIGIN), None, "{bad}");
        }
    }

    #[test]
    fn any_origin_without_credentials_is_a_star_without_vary() {
        let mut table = Table::new(&["*"]);
        table.expose = strings(&["x-total"]);
        let policy = table.policy();
        let headers = actual(&policy, Some("https://whoever.test"));
        assert_eq!(get(&headers, &ACCESS_CONTROL_ALLOW_ORIGIN), Some("*"));
        assert_eq!(
            get(&headers, &ACCESS_CONTROL_EXPOSE_HEADERS),
            Some("x-total")
        );
        assert_eq!(get(&headers, &VARY), None);
        assert!(actual(&policy, None).is_empty());
    }

    #[test]
    fn credentials_are_allowed_for_listed_origins_only() {
        let mut table = Table::new(&["https://app.example.com"]);
        table.credentials = true;
        table.expose = strings(&["X-Request-Id", "x-total"]);
        let policy = table.policy();
        let headers = actual(&policy, Some("https://app.example.com"));
        assert_eq!(
            get(&headers, &ACCESS_CONTROL_ALLOW_ORIGIN),
            Some("https://app.example.com")
        );
        assert_eq!(
            get(&headers, &ACCESS_CONTROL_ALLOW_CREDENTIALS),
            Some("true")
        );
        assert_eq!(
            get(&headers, &ACCESS_CONTROL_EXPOSE_HEADERS),
            Some("x-request-id, x-total")
        );
        let headers = actual(&policy, Some("https://evil.test"));
        assert_eq!(get(&headers, &ACCESS_CONTROL_ALLOW_CREDENTIALS), None);

        let mut star = Table::new(&["*"]);
        star.credentials = true;
        let err = star.build().unwrap_err();
        assert_eq!(err, CorsConfigError::WildcardWithCredentials);
        assert_eq!(err.key(), "cors.allow_credentials");
        let mut expose_all = Table::new(&["https://a.test"]);
        expose_all.credentials = true;
        expose_all.expose = strings(&["*"]);
        assert_eq!(
            expose_all.build().unwrap_err(),
            CorsConfigError::ExposeAllWithCredentials
        );
    }

    #[test]
    fn handler_cors_headers_are_replaced() {
        let policy = Table::new(&["https://app.example.com"]).policy();
        let mut headers = vec![
            (ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*")),
            (VARY, HeaderValue::from_static("Cookie")),
        ];
        policy.apply(None, &mut headers);
        assert_eq!(get(&headers, &ACCESS_CONTROL_ALLOW_ORIGIN), None);
        assert_eq!(get(&headers, &VARY), Some("Cookie, Origin"));
    }

    fn preflight(policy: &CorsPolicy, pairs: &[(&'static str, &str)]) -> Reply {
        let headers = request(pairs);
        assert!(is_preflight(&Method::OPTIONS, &headers));
        policy.preflight(&headers)
    }

    #[test]
    fn an_allowed_preflight_gets_204_and_the_headers() {
        let mut table = Table::new(&["https://app.example.com"]);
        table.methods = Some(strings(&["GET", "PUT", "DELETE"]));
        table.headers = strings(&["Content-Type", "x-token"]);
        table.credentials = true;
        table.max_age = Some(600);
        let policy = table.policy();
        let reply = preflight(
            &policy,
            &[
                ("origin", "https://app.example.com"),
                ("access-control-request-method", "PUT"),
                ("access-control-request-headers", "content-type,X-Token"),
            ],
        );
        assert_eq!(reply.status, StatusCode::NO_CONTENT);
        assert!(reply.body.is_empty());
        let h = &reply.headers;
        assert_eq!(
            get(h, &ACCESS_CONTROL_ALLOW_ORIGIN),
            Some("https://app.example.com")
        );
        assert_eq!(
            get(h, &ACCESS_CONTROL_ALLOW_METHODS),
            Some("GET, PUT, DELETE")
        );
        assert_eq!(
            get(h, &ACCESS_CONTROL_ALLOW_HEADERS),
            Some("content-type, x-token")
        );
        assert_eq!(get(h, &ACCESS_CONTROL_ALLOW_CREDENTIALS), Some("true"));
        assert_eq!(get(h, &ACCESS_CONTROL_MAX_AGE), Some("600"));
        assert_eq!(get(h, &VARY), Some("Origin"));
    }

    #[test]
    fn a_refused_preflight_gets_403_and_no_cors_header() {
        let mut table = Table::new(&["https://app.example.com"]);
        table.headers = strings(&["x-token"]);
        let policy = table.policy();
        for pairs in [
            &[
                ("origin", "https://evil.test"),
                ("access-control-request-method", "GET"),
            ][..],
            &[
                ("origin", "https://app.example.com"),
                ("access-control-request-method", "DELETE"),
            ][..],
            &[
                ("origin", "https://app.example.com"),
                ("access-control-request-method", "GET"),
                ("access-control-request-headers", "x-token, x-other"),
            ][..],
            &[
                ("origin", "https://app.example.com"),
                ("access-control-request-method", "GE T"),
            ][..],
        ] {
            let reply = preflight(&policy, pairs);
            assert_eq!(reply.status, StatusCode::FORBIDDEN, "{pairs:?}");
            assert!(
                reply
                    .headers
                    .iter()
                    .all(|(name, _)| !name.as_str().starts_with("access-control-")),
                "{pairs:?}: {:?}",
                reply.headers
            );
            assert_eq!(get(&reply.headers, &VARY), Some("Origin"));
        }
    }

    #[test]
    fn safelisted_methods_pass_and_stars_echo_the_request() {
        let mut table = Table::new(&["https://app.example.com"]);
        table.methods = Some(strings(&["PUT"]));
        let policy = table.policy();
        let reply = preflight(
            &policy,
            &[
                ("origin", "https://app.example.com"),
                ("access-control-request-method", "POST"),
            ],
        );
        assert_eq!(reply.status, StatusCode::NO_CONTENT);

        let mut table = Table::new(&["https://app.example.com"]);
        table.methods = Some(strings(&["*"]));
        table.headers = strings(&["*"]);
        table.credentials = true;
        let policy = table.policy();
        let reply = preflight(
            &policy,
            &[
                ("origin", "https://app.example.com"),
                ("access-control-request-method", "PATCH"),
                ("access-control-request-headers", "authorization, x-a"),
            ],
        );
        assert_eq!(reply.status, StatusCode::NO_CONTENT);
        assert_eq!(
            get(&reply.headers, &ACCESS_CONTROL_ALLOW_METHODS),
            Some("PATCH")
        );
        assert_eq!(
            get(&reply.headers, &ACCESS_CONTROL_ALLOW_HEADERS),
            Some("authorization, x-a")
        );
        assert_eq!(
            get(&reply.headers, &VARY),
            Some("Origin, Access-Control-Request-Method, Access-Control-Request-Headers")
        );
    }

    #[test]
    fn only_options_with_both_headers_is_a_preflight() {
        let both = request(&[
            ("origin", "https://a.test"),
            ("access-control-request-method", "PUT"),
        ]);
        assert!(is_preflight(&Method::OPTIONS, &both));
        assert!(!is_preflight(&Method::GET, &both));
        assert!(!is_preflight(
            &Method::OPTIONS,
            &request(&[("origin", "https://a.test")])
        ));
        assert!(!is_preflight(
            &Method::OPTIONS,
            &request(&[("access-control-request-method", "PUT")])
        ));
    }

    #[test]
    fn bad_entries_name_their_key() {
        for (origins, index) in [
            (&["https://a.test/"][..], 0),
            (&["https://a.test", "a.test"][..], 1),
            (&["https://a.test/path"][..], 0),
            (&["null"][..], 0),
            (&["https://*.[::1]"][..], 0),
            (&["https://a.*.test"][..], 0),
            (&["https://a.test:99999"][..], 0),
        ] {
            let err = Table::new(origins).build().unwrap_err();
            assert_eq!(
                err.key(),
                format!("cors.allow_origins[{index}]"),
                "{origins:?}"
            );
        }
        assert_eq!(
            Table::new(&[]).build().unwrap_err().key(),
            "cors.allow_origins"
        );
        let mut table = Table::new(&["*"]);
        table.methods = Some(strings(&["GET", "BAD METHOD"]));
        assert_eq!(table.build().unwrap_err().key(), "cors.allow_methods[1]");
        let mut table = Table::new(&["*"]);
        table.headers = strings(&["ok", "not ok"]);
        assert_eq!(table.build().unwrap_err().key(), "cors.allow_headers[1]");
        let mut table = Table::new(&["*"]);
        table.expose = strings(&["x:y"]);
        assert_eq!(table.build().unwrap_err().key(), "cors.expose_headers[0]");
    }
}
