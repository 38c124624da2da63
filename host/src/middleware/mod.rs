//! The host's own middleware around every request: CORS headers (`[cors]`) and response
//! compression (`[compression]`). The decisions are `pyhost_core::middleware`'s; this module
//! carries what they need from the request to its response, and moves the bytes.
//!
//! The service asks [`Middleware::see`] about the request before consuming it and
//! [`Middleware::finish`] about the reply before sending it. A server with neither table
//! configured has no [`Middleware`] at all, so it pays one branch on each side. Preflights
//! and `server.allowed_hosts` are answered earlier, in admission, since they need no handler.

mod compression;

use http::{HeaderValue, Method, Request};
use pyhost_core::config::Config;
use pyhost_core::middleware::cors::{self, CorsPolicy};
use pyhost_core::middleware::encoding::{Coding, CompressionPolicy};
use pyhost_core::reply::Reply;

/// The configured middleware.
pub(crate) struct Middleware {
    cors: Option<CorsPolicy>,
    compression: Option<CompressionPolicy>,
}

/// What the middleware keeps of a request until its reply is in. It is boxed: the request's
/// future holds it across the wait, and hyper keeps a box of that future's size for every
/// connection (see `service.rs`), so without middleware it costs a pointer there, not this.
pub(crate) struct Seen {
    /// The request's `Origin`, when CORS headers are to be added (not for a preflight, whose
    /// answer admission made complete).
    origin: Option<HeaderValue>,
    cors: bool,
    coding: Option<Coding>,
    head: bool,
}

impl Middleware {
    /// The middleware `config` asks for; `None` when it asks for none.
    pub(crate) fn new(config: &Config) -> Option<Self> {
        (config.cors.is_some() || config.compression.is_some()).then(|| Self {
            cors: config.cors.clone(),
            compression: config.compression.clone(),
        })
    }

    /// Takes note of what the reply will depend on.
    pub(crate) fn see<B>(&self, request: &Request<B>) -> Box<Seen> {
        let headers = request.headers();
        let cors = self.cors.is_some() && !cors::is_preflight(request.method(), headers);
        Box::new(Seen {
            origin: if cors {
                headers.get(http::header::ORIGIN).cloned()
            } else {
                None
            },
            cors,
            coding: self
                .compression
                .as_ref()
                .and_then(|policy| policy.negotiate(headers)),
            head: request.method() == Method::HEAD,
        })
    }

    /// Adds the CORS headers and compresses the body, as configured. A streamed body
    /// (`streamed`: it follows the head, `reply` has none) is not compressed: see `compression`.
    pub(crate) fn finish(&self, seen: &Seen, reply: &mut Reply, streamed: bool) {
        if let Some(cors) = &self.cors
            && seen.cors
        {
            cors.apply(seen.origin.as_ref(), &mut reply.headers);
        }
        if let Some(policy) = &self.compression
            && !streamed
        {
            compression::apply(policy, seen.coding, seen.head, reply);
        }
    }
}
