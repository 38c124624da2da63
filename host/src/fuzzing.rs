//! Entry points for fuzzing and property tests: the parts of a request's journey that see
//! untrusted bytes before any Python runs. Not a stable API.

use crate::routing::{Lookup, RouteTable};
use crate::spec::RouteSpec;

/// Decodes a request target's path and query as the service does; never panics.
pub fn decode_target(path: &str, query: &str) -> bool {
    crate::target::decode_path(path).is_ok() && crate::target::decode_query(query).is_ok()
}

/// Splits and decodes a query string as the service does.
pub fn decode_query(query: &str) -> Option<Vec<(String, String)>> {
    crate::target::decode_query(query).ok()
}

/// Parses a JSON body as the service does (with the 64-bit integer check); never panics.
pub fn parse_json(body: &[u8]) -> bool {
    crate::validation::parse_json(body).is_ok()
}

/// A route table built from SDK-style route specs (JSON list), for fuzzing lookups.
pub struct FuzzTable(RouteTable);

impl FuzzTable {
    /// Builds a table from a JSON list of route specs; `None` if the specs are invalid.
    pub fn from_specs(specs_json: &str) -> Option<Self> {
        let specs: Vec<RouteSpec> = serde_json::from_str(specs_json).ok()?;
        RouteTable::build(&specs).ok().map(FuzzTable)
    }

    /// Looks a request up and runs path and query validation for the matched route, as the
    /// service does. Returns the HTTP status the host would settle on before dispatching
    /// (200 meaning "would reach the handler").
    pub fn check(&self, method: &str, path: &str, query: &str) -> u16 {
        let Ok(method) = http::Method::from_bytes(method.as_bytes()) else {
            return 400;
        };
        let Ok(pairs) = crate::target::decode_query(query) else {
            return 400;
        };
        if crate::target::decode_path(path).is_err() {
            return 400;
        }
        match self.0.lookup(&method, path) {
            Lookup::NotFound => 404,
            Lookup::MethodNotAllowed(_) => 405,
            Lookup::Found { route, params, .. } => {
                let mut decoded = Vec::new();
                for (name, raw) in params {
                    match crate::target::decode_path(&raw) {
                        Ok(text) => decoded.push((name, text)),
                        Err(_) => return 400,
                    }
                }
                let path_ok = crate::validation::convert_path(&route.path_params, &decoded).is_ok();
                let query_ok = crate::validation::validate_query(&route.query, &pairs).is_ok();
                if path_ok && query_ok { 200 } else { 422 }
            }
        }
    }
}
