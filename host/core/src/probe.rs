//! One request through [`Admission`], from strings: the entry point of the fuzzer and the
//! property tests. It only builds the request's head (as hyper would hand it over) and then
//! calls the same two functions the service calls. Not a stable API.

use bytes::Bytes;

use crate::admission::Admission;
use crate::config::ServerConfig;
use crate::routing::RouteTable;
use crate::spec::RouteSpec;

/// A route table and the default admission rules.
pub struct Probe {
    table: RouteTable,
    admission: Admission,
}

impl Probe {
    /// A probe of the routes in `specs_json` (a JSON list of SDK route specs); `None` if they
    /// do not build a table.
    pub fn from_specs(specs_json: &str) -> Option<Self> {
        let specs: Vec<RouteSpec> = serde_json::from_str(specs_json).ok()?;
        Some(Self {
            table: RouteTable::build(&specs).ok()?,
            admission: Admission::new(&ServerConfig::default()),
        })
    }

    /// The status the host settles on before dispatching the HTTP/1.1 request `METHOD target`
    /// with `headers` and `body`: 200 when the request would reach its handler, 400 when hyper
    /// would not even hand such a head over (an unparseable method, target or header). A
    /// `host: probe` header is added when `headers` has none, as every HTTP/1.1 client sends
    /// one.
    pub fn status(&self, method: &str, target: &str, headers: &[(&str, &str)], body: &[u8]) -> u16 {
        let mut builder = http::Request::builder().method(method).uri(target);
        if !headers
            .iter()
            .any(|(name, _)| name.eq_ignore_ascii_case("host"))
        {
            builder = builder.header("host", "probe");
        }
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        let Ok(request) = builder.body(()) else {
            return 400;
        };
        let (mut parts, ()) = request.into_parts();
        let routed = match self.admission.route(&self.table, &mut parts) {
            Ok(routed) => routed,
            Err(rejection) => return rejection.reply.status.as_u16(),
        };
        match self.admission.admit(
            parts,
            routed,
            Bytes::copy_from_slice(body),
            None,
            "probe".into(),
        ) {
            Ok(_) => 200,
            Err(rejection) => rejection.reply.status.as_u16(),
        }
    }
}
