//! Admitting a request: every decision the host makes about it before a handler sees it.
//!
//! Two steps, because the body is read in between: [`Admission::route`] checks the head (its
//! authority and, with `server.allowed_hosts`, its host; size, number of headers, the target's
//! length and encoding), answers a CORS preflight itself when `[cors]` is on, and routes it;
//! [`Admission::admit`] converts and validates the path and query parameters and the body
//! against the route's declarations and produces the handler's [`RequestData`]. Anything
//! refused comes back as a [`Rejection`], the response to send. The service runs exactly these
//! two functions for every request, and the fuzzer and the property tests run them too, so
//! what is tested is what is served.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{ALLOW, CONTENT_TYPE, HOST};
use http::{HeaderValue, StatusCode};

use crate::authority;
use crate::config::ServerConfig;
use crate::middleware::cors::{self, CorsPolicy};
use crate::middleware::hosts::AllowedHosts;
use crate::reply::Reply;
use crate::request::RequestData;
use crate::routing::{Lookup, Route, RouteTable};
use crate::target::{self, TargetError};
use crate::validation::{self, FieldError};

/// The limits a request's head is held to, and the host name used when it names none.
#[derive(Debug, Clone)]
pub struct Admission {
    max_headers: usize,
    max_head_size: usize,
    max_url_length: usize,
    body_limit: u64,
    default_host: String,
    allowed_hosts: Option<AllowedHosts>,
    cors: Option<CorsPolicy>,
}

/// A refused request, or one the host answers itself (a CORS preflight): the answer, and
/// whether the connection must close after it (what is left of the request in the connection
/// cannot be trusted or is not worth reading).
#[derive(Debug)]
pub struct Rejection {
    /// The response.
    pub reply: Reply,
    /// Close the connection after sending it.
    pub close: bool,
}

impl Rejection {
    fn new(reply: Reply) -> Self {
        Self {
            reply,
            close: false,
        }
    }

    fn closing(reply: Reply) -> Self {
        Self { reply, close: true }
    }
}

/// A request whose head was admitted and routed; its body is still to be read.
#[derive(Debug)]
pub struct Routed {
    /// The route that serves it.
    pub route: Arc<Route>,
    /// A HEAD request served by a GET route.
    pub head: bool,
    /// Path parameter values as they came, percent-encoded.
    raw_params: Vec<(String, String)>,
    path: String,
    query_string: String,
    query_pairs: Vec<(String, String)>,
}

enum BodyProblem {
    Reply(Reply),
    Fields(Vec<FieldError>),
}

impl Admission {
    /// The admission rules of `server`.
    pub fn new(server: &ServerConfig) -> Self {
        Self {
            max_headers: server.max_headers,
            max_head_size: server.max_head_size,
            max_url_length: server.max_url_length,
            body_limit: server.body_limit,
            default_host: server.listen.to_string(),
            allowed_hosts: server.allowed_hosts.clone(),
            cors: None,
        }
    }

    /// The same rules, with CORS preflights answered by `cors` (`[cors]`).
    pub fn with_cors(mut self, cors: Option<CorsPolicy>) -> Self {
        self.cors = cors;
        self
    }

    /// Checks the head and routes it: everything decided before the body is read.
    ///
    /// The request's authority is settled first ([`crate::authority`]): afterwards its one
    /// `Host` header names it, whichever protocol carried the request, and that is the host
    /// `server.allowed_hosts` is checked against. A CORS preflight comes back as a
    /// [`Rejection`] holding its answer ([`crate::middleware::cors`]).
    pub fn route(
        &self,
        table: &RouteTable,
        parts: &mut http::request::Parts,
    ) -> Result<Routed, Rejection> {
        authority::settle(parts).map_err(|err| Rejection::new(err.into_reply()))?;
        if let Some(allowed) = &self.allowed_hosts {
            let host = parts.headers.get(HOST).and_then(|v| v.to_str().ok());
            // HTTP/1.0 may name no host; with a list to hold it to, that is no allowed one.
            if !host.is_some_and(|host| allowed.allows(host)) {
                return Err(Rejection::new(
                    authority::AuthorityError::NotAllowed.into_reply(),
                ));
            }
        }
        let target_length = parts.uri.path_and_query().map_or(0, |p| p.as_str().len());
        // Both head limits are enforced here rather than by hyper, whose own answer has no
        // body and no request id: hyper stops only heads far beyond them (the server's
        // builders). Its bound on the head size is also its read buffer's, which varies with
        // how the bytes arrived; this makes `max_head_size` exact.
        if parts.headers.len() > self.max_headers {
            return Err(Rejection::closing(Reply::detail(
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                format!(
                    "too many request headers: the limit is {}",
                    self.max_headers
                ),
            )));
        }
        if head_size(parts, target_length) > self.max_head_size {
            return Err(Rejection::closing(Reply::detail(
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                format!(
                    "request head too large: the limit is {} bytes",
                    self.max_head_size
                ),
            )));
        }
        if target_length > self.max_url_length {
            return Err(Rejection::closing(Reply::detail(
                StatusCode::URI_TOO_LONG,
                format!("URL too long: the limit is {} bytes", self.max_url_length),
            )));
        }
        // The target is checked before routing, so a bad one is 400 whether or not a route
        // would have matched it.
        let path = target::decode_path(parts.uri.path()).map_err(bad_target)?;
        let query_string = parts.uri.query().unwrap_or_default().to_owned();
        let query_pairs = target::decode_query(&query_string).map_err(bad_target)?;
        // A preflight is the host's to answer on any path, before routing: the handler of an
        // `OPTIONS` route never sees one.
        if let Some(cors) = &self.cors
            && cors::is_preflight(&parts.method, &parts.headers)
        {
            return Err(Rejection::new(cors.preflight(&parts.headers)));
        }
        match table.lookup(&parts.method, parts.uri.path()) {
            Lookup::NotFound => Err(Rejection::new(Reply::detail(
                StatusCode::NOT_FOUND,
                "Not Found",
            ))),
            Lookup::MethodNotAllowed(allow) => {
                let mut reply = Reply::detail(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed");
                if let Ok(value) = HeaderValue::from_str(&allow) {
                    reply.headers.push((ALLOW, value));
                }
                Err(Rejection::new(reply))
            }
            Lookup::Found {
                route,
                params,
                head,
            } => Ok(Routed {
                route: route.clone(),
                head,
                raw_params: params,
                path,
                query_string,
                query_pairs,
            }),
        }
    }

    /// Converts and validates the path and query parameters and the body against the route's
    /// declarations: the handler's request data, or a 400 / 415 / 422 answer.
    pub fn admit(
        &self,
        parts: http::request::Parts,
        routed: Routed,
        body: Bytes,
        client: Option<SocketAddr>,
        request_id: Arc<str>,
    ) -> Result<RequestData, Rejection> {
        let Routed {
            route,
            raw_params,
            path,
            query_string,
            query_pairs,
            ..
        } = routed;
        let mut params = Vec::with_capacity(raw_params.len());
        for (name, raw) in raw_params {
            params.push((name, target::decode_path(&raw).map_err(bad_target)?));
        }

        let mut errors: Vec<FieldError> = Vec::new();
        let path_params =
            validation::convert_path(&route.path_params, &params).unwrap_or_else(|mut e| {
                errors.append(&mut e);
                Vec::new()
            });
        let query =
            validation::validate_query(&route.query, &query_pairs).unwrap_or_else(|mut e| {
                errors.append(&mut e);
                Vec::new()
            });
        // Declared headers and cookies: nothing to do (and nothing paid) for a route without.
        let header_params = if route.headers.is_empty() {
            Vec::new()
        } else {
            let pairs = header_pairs(&parts.headers);
            validation::validate_params("header", &route.headers, &pairs).unwrap_or_else(|mut e| {
                errors.append(&mut e);
                Vec::new()
            })
        };
        let cookies = if route.cookies.is_empty() {
            Vec::new()
        } else {
            let pairs = cookie_pairs(&parts.headers);
            validation::validate_params("cookie", &route.cookies, &pairs).unwrap_or_else(|mut e| {
                errors.append(&mut e);
                Vec::new()
            })
        };
        let json = match check_body(&route, &parts.headers, &body) {
            Ok(json) => json,
            Err(BodyProblem::Reply(reply)) => return Err(Rejection::new(reply)),
            Err(BodyProblem::Fields(mut fields)) => {
                errors.append(&mut fields);
                None
            }
        };
        if !errors.is_empty() {
            return Err(Rejection::new(Reply::json(
                StatusCode::UNPROCESSABLE_ENTITY,
                &serde_json::json!({ "detail": errors }),
            )));
        }

        let host = parts
            .headers
            .get(HOST)
            .and_then(|v| v.to_str().ok())
            .or_else(|| parts.uri.authority().map(|a| a.as_str()))
            .unwrap_or(&self.default_host);
        let path_and_query = parts
            .uri
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/");
        Ok(RequestData {
            path,
            url: format!("http://{host}{path_and_query}"),
            method: parts.method,
            query_string,
            query_pairs,
            path_params,
            query,
            header_params,
            cookies,
            form: Vec::new(),
            headers: parts.headers,
            body,
            json,
            client,
            request_id,
            route: route.template.clone(),
            plugin: u32::try_from(route.plugin).unwrap_or(u32::MAX),
        })
    }

    /// The answer to a body over `limit` (the route's body limit).
    pub fn too_large(&self, limit: u64) -> Rejection {
        // The rest of the body is never read, so the connection cannot carry another request.
        Rejection::closing(Reply::detail(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("Request body too large: the limit is {limit} bytes"),
        ))
    }

    /// The largest body admitted on `route`, in bytes: its own `body_limit=`, else
    /// `server.body_limit`.
    pub fn body_limit(&self, route: &Route) -> u64 {
        route.body_limit.unwrap_or(self.body_limit)
    }

    /// Checks the declared form fields of a request whose form was parsed, after
    /// [`Admission::admit`]: fills `data.form`, or answers 422.
    pub fn admit_form(
        &self,
        route: &Route,
        data: &mut RequestData,
        form: &crate::form::ParsedForm,
    ) -> Result<(), Rejection> {
        let Some(declared) = &route.form else {
            return Ok(());
        };
        match crate::form::validate_fields(declared, form) {
            Ok(values) => {
                data.form = values;
                Ok(())
            }
            Err(errors) => Err(Rejection::new(Reply::json(
                StatusCode::UNPROCESSABLE_ENTITY,
                &serde_json::json!({ "detail": errors }),
            ))),
        }
    }
}

fn check_body(
    route: &Route,
    headers: &http::HeaderMap,
    body: &Bytes,
) -> Result<Option<serde_json::Value>, BodyProblem> {
    let Some(validator) = &route.body else {
        return Ok(None);
    };
    if let Some(content_type) = headers.get(CONTENT_TYPE) {
        let essence = content_type
            .to_str()
            .unwrap_or_default()
            .split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase();
        if essence != "application/json" && !essence.ends_with("+json") {
            return Err(BodyProblem::Reply(Reply::detail(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                format!("Unsupported media type {essence:?}: this route expects application/json"),
            )));
        }
    }
    let value = validation::parse_json(body).map_err(|err| {
        BodyProblem::Reply(Reply::detail(
            StatusCode::BAD_REQUEST,
            format!("Malformed JSON body: {err}"),
        ))
    })?;
    validation::validate_body(validator, &value).map_err(BodyProblem::Fields)?;
    Ok(Some(value))
}

/// The size of the request head as HTTP/1.1 spells it: the request line, each header line
/// (`name: value` and CRLF) and the empty line.
fn head_size(parts: &http::request::Parts, target_length: usize) -> usize {
    const REQUEST_LINE_EXTRA: usize = " ".len() + " HTTP/1.1\r\n".len();
    const HEADER_LINE_EXTRA: usize = ": \r\n".len();
    let headers: usize = parts
        .headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + HEADER_LINE_EXTRA)
        .sum();
    parts.method.as_str().len() + target_length + REQUEST_LINE_EXTRA + headers + "\r\n".len()
}

fn bad_target(err: TargetError) -> Rejection {
    Rejection::new(Reply::detail(
        StatusCode::BAD_REQUEST,
        format!("Bad request target: {err}"),
    ))
}

/// The request's headers as (lower-case name, value) pairs; a value that is not visible ASCII
/// or UTF-8 text is read lossily, so that a constraint, not a decoding error, judges it.
fn header_pairs(headers: &http::HeaderMap) -> Vec<(String, String)> {
    headers
        .iter()
        .map(|(name, value)| {
            (
                name.as_str().to_owned(),
                String::from_utf8_lossy(value.as_bytes()).into_owned(),
            )
        })
        .collect()
}

/// The cookies of every `Cookie` header (RFC 6265 section 5.4: `name=value` pairs separated by
/// `; `), values unquoted; pairs without `=` are ignored, as browsers send none.
fn cookie_pairs(headers: &http::HeaderMap) -> Vec<(String, String)> {
    let mut pairs = Vec::new();
    for value in headers.get_all(http::header::COOKIE) {
        let text = String::from_utf8_lossy(value.as_bytes());
        for pair in text.split(';') {
            if let Some((name, value)) = pair.trim().split_once('=') {
                let value = value.trim();
                let value = value
                    .strip_prefix('"')
                    .and_then(|v| v.strip_suffix('"'))
                    .unwrap_or(value);
                pairs.push((name.trim().to_owned(), value.to_owned()));
            }
        }
    }
    pairs
}

#[cfg(test)]
mod cookie_tests {
    use super::*;

    #[test]
    fn cookies_are_read_from_every_cookie_header() {
        let mut headers = http::HeaderMap::new();
        headers.append(
            http::header::COOKIE,
            "session=abc; theme=\"dark\"".parse().unwrap(),
        );
        headers.append(http::header::COOKIE, "lang=en;flag".parse().unwrap());
        assert_eq!(
            cookie_pairs(&headers),
            [("session", "abc"), ("theme", "dark"), ("lang", "en")]
                .map(|(n, v)| (n.to_owned(), v.to_owned()))
        );
    }
}
