//! The route table: path templates compiled into a matchit tree, methods per path, and the
//! validation each route declared. Routing never touches Python.
//!
//! matchit finds one template per path: the most specific (a static segment before a parameter,
//! a parameter before a catch-all, left to right). When that template has no route for the
//! request's method, the less specific templates matching the same path are tried in the same
//! order, so `GET /people/me` reaches `GET /people/{pid}` even though `POST /people/me` exists;
//! only when none of them has the method is the answer 405, its `Allow` listing the methods of
//! every template that matches. Which templates can share a path is worked out when the table
//! is built, so a path only one template matches pays nothing for this.

use std::borrow::Cow;
use std::cmp::Ordering;
use std::collections::HashMap;
use std::sync::Arc;

use http::Method;

use crate::spec::{ParamType, RouteSpec};
use crate::validation::{QueryParam, QueryParamError};

/// A route ready to serve: what to validate and which handler to call.
#[derive(Debug)]
pub struct Route {
    /// Position of the handler in the interpreter's handler table.
    pub id: usize,
    /// The HTTP method this entry answers.
    pub method: Method,
    /// The template as declared, e.g. `/users/{user_id:int}`.
    pub template: Arc<str>,
    /// `module.qualname` of the handler.
    pub handler_name: Arc<str>,
    /// Whether the handler is `async def`.
    pub is_async: bool,
    /// Typed path parameters in template order.
    pub path_params: Vec<(String, ParamType)>,
    /// Declared query parameters.
    pub query: Vec<QueryParam>,
    /// Declared request headers (lower-case names).
    pub headers: Vec<QueryParam>,
    /// Declared cookies.
    pub cookies: Vec<QueryParam>,
    /// Compiled body schema, when a JSON body is declared.
    pub body: Option<jsonschema::Validator>,
    /// The body schema as declared (for `pyhost routes`).
    pub body_schema: Option<serde_json::Value>,
    /// The route's own handler timeout, when it declares one.
    pub timeout: Option<std::time::Duration>,
    /// The handler reads the body as a stream: the request is dispatched before its body is
    /// read (`pyhost/src/streaming/request_body.rs`).
    pub stream: bool,
    /// The route's own body limit in bytes, when it declares one (`server.body_limit` else).
    pub body_limit: Option<u64>,
    /// Declared form fields, when the route declares a form (`form=`): its body is parsed as
    /// one before dispatch.
    pub form: Option<Vec<QueryParam>>,
    /// A WebSocket route: its requests are upgrades (`crate::websocket`).
    pub websocket: bool,
    /// Index of the plugin that owns it.
    pub plugin: usize,
}

/// One segment of a template as the matcher sees it: converters do not take part in matching
/// (a segment an `int` converter refuses is a 422, not another route).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Shape {
    /// A literal segment, compared as the raw (percent-encoded) request path spells it.
    Static(String),
    /// One non-empty segment, named.
    Param(String),
    /// The non-empty rest of the path, slashes included, named.
    CatchAll(String),
}

impl Shape {
    /// How specific the segment is: matchit tries a static child before a parameter before a
    /// catch-all, so a lower rank wins.
    fn rank(&self) -> u8 {
        match self {
            Shape::Static(_) => 0,
            Shape::Param(_) => 1,
            Shape::CatchAll(_) => 2,
        }
    }
}

/// All methods served at one path template.
#[derive(Debug)]
struct Endpoint {
    template: String,
    shape: Vec<Shape>,
    /// Shared, so that a request in flight can hold its route without borrowing the table.
    routes: Vec<Arc<Route>>,
    allow: String,
    /// The less specific endpoints that can match a path this one matches, most specific
    /// first: where to look when this endpoint lacks the request's method. Usually empty.
    fallbacks: Vec<usize>,
}

impl Endpoint {
    fn route_for(&self, method: &Method) -> Option<&Arc<Route>> {
        self.routes.iter().find(|r| r.method == *method)
    }
}

/// The outcome of looking a request up.
#[derive(Debug)]
pub enum Lookup<'a> {
    /// A route answers this method at this path; raw (percent-encoded) parameter values.
    Found {
        /// The matched route.
        route: &'a Arc<Route>,
        /// Raw path parameter values by name.
        params: Vec<(String, String)>,
        /// The request is HEAD served by a GET route.
        head: bool,
    },
    /// The path exists but not for this method; the value is the `Allow` header, which lists
    /// the methods of every template matching the path.
    MethodNotAllowed(Cow<'a, str>),
    /// No route has this path.
    NotFound,
}

/// The compiled table of every route of a router.
#[derive(Debug)]
pub struct RouteTable {
    tree: matchit::Router<usize>,
    endpoints: Vec<Endpoint>,
}

/// A parsed path template.
#[derive(Debug, PartialEq)]
pub struct Template {
    /// The path in matchit's syntax.
    pub matchit: String,
    /// Parameters with their converters, in order.
    pub params: Vec<(String, ParamType)>,
    /// The segments, for matching without matchit.
    shape: Vec<Shape>,
}

/// Parses a template such as `/files/{id:int}/{rest:path}`.
pub fn parse_template(template: &str) -> Result<Template, String> {
    if !template.starts_with('/') {
        return Err(format!("path template {template:?} must start with '/'"));
    }
    let mut matchit = String::with_capacity(template.len());
    let mut params: Vec<(String, ParamType)> = Vec::new();
    let mut shape: Vec<Shape> = Vec::new();
    let segments: Vec<&str> = template[1..].split('/').collect();
    for (index, segment) in segments.iter().enumerate() {
        matchit.push('/');
        let is_last = index + 1 == segments.len();
        if let Some(inner) = segment.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
            let (name, conv) = inner.split_once(':').unwrap_or((inner, "str"));
            let kind = match conv {
                "str" => ParamType::Str,
                "int" => ParamType::Int,
                "float" => ParamType::Float,
                "uuid" => ParamType::Uuid,
                "path" => ParamType::Path,
                other => {
                    return Err(format!(
                        "path template {template:?}: unknown converter {other:?} (expected str, int, float, uuid or path)"
                    ));
                }
            };
            let valid_name = name
                .chars()
                .next()
                .is_some_and(|c| c == '_' || c.is_alphabetic())
                && name.chars().all(|c| c == '_' || c.is_alphanumeric());
            if !valid_name {
                return Err(format!(
                    "path template {template:?}: parameter name {name:?} is not an identifier"
                ));
            }
            if params.iter().any(|(existing, _)| existing == name) {
                return Err(format!(
                    "path template {template:?}: parameter {name:?} appears twice"
                ));
            }
            if kind == ParamType::Path {
                if !is_last {
                    return Err(format!(
                        "path template {template:?}: the path converter must be the last segment"
                    ));
                }
                matchit.push_str(&format!("{{*{name}}}"));
                shape.push(Shape::CatchAll(name.to_owned()));
            } else {
                matchit.push_str(&format!("{{{name}}}"));
                shape.push(Shape::Param(name.to_owned()));
            }
            params.push((name.to_owned(), kind));
        } else if segment.contains(['{', '}']) {
            return Err(format!(
                "path template {template:?}: segment {segment:?} must be all literal or a single {{name}} / {{name:converter}}"
            ));
        } else {
            matchit.push_str(segment);
            shape.push(Shape::Static((*segment).to_owned()));
        }
    }
    Ok(Template {
        matchit,
        params,
        shape,
    })
}

/// A problem in the route declarations, naming the handlers concerned.
#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    /// A template that cannot be parsed, or a bad declaration.
    #[error("handler {handler}: {message}")]
    Invalid {
        /// The handler that declared it.
        handler: String,
        /// What is wrong.
        message: String,
    },
    /// A query parameter declaration the host cannot use, such as a pattern Rust's `regex`
    /// crate does not accept.
    #[error("{methods} {path} (handler {handler}): query parameter `{param}`: {source}")]
    Query {
        /// The route's methods, as declared.
        methods: String,
        /// The route's path template.
        path: String,
        /// The handler that declared it.
        handler: String,
        /// The query parameter.
        param: String,
        /// What is wrong with it (boxed: errors are returned by value and this one is large).
        source: Box<QueryParamError>,
    },
    /// The same method and path declared twice.
    #[error("{method} {template} is declared twice: by {first} and by {second}")]
    Duplicate {
        /// The method.
        method: String,
        /// The template.
        template: String,
        /// The handler declared first.
        first: String,
        /// The handler declared second.
        second: String,
    },
    /// Two templates that match the same paths ambiguously.
    #[error(
        "{second_template} (handler {second}) conflicts with {first_template} (handler {first}): {message}"
    )]
    Conflict {
        /// The template inserted first.
        first_template: String,
        /// Its first handler.
        first: String,
        /// The conflicting template.
        second_template: String,
        /// Its handler.
        second: String,
        /// matchit's explanation.
        message: String,
    },
}

/// Declared parameters by name, as the spec has them.
type Declared = indexmap::IndexMap<String, crate::spec::QuerySpec>;

/// The route's body options, checked against each other: whether it streams, its body limit
/// and its declared form.
fn body_options(spec: &RouteSpec) -> Result<(bool, Option<u64>, Option<&Declared>), String> {
    let body_limit = spec.body_limit.map(|size| size.as_u64());
    if body_limit == Some(0) {
        return Err("body_limit must be above zero, such as \"64 MiB\" or 1048576".to_owned());
    }
    if spec.stream && spec.form.is_some() {
        return Err(
            "a stream=True route cannot declare a form: the host parses a declared form \
             itself, before the handler runs"
                .to_owned(),
        );
    }
    if spec.body_schema.is_some() && (spec.stream || spec.form.is_some()) {
        return Err(
            "a route with a JSON body schema (body=) cannot also be stream=True or declare a form"
                .to_owned(),
        );
    }
    Ok((spec.stream, body_limit, spec.form.as_ref()))
}

const KNOWN_METHODS: [&str; 6] = ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"];

impl RouteTable {
    /// Compiles route specs; `specs[i]` becomes route id `i`.
    pub fn build(specs: &[RouteSpec]) -> Result<Self, RouteError> {
        let mut tree = matchit::Router::new();
        let mut endpoints: Vec<Endpoint> = Vec::new();
        let mut by_matchit: HashMap<String, usize> = HashMap::new();
        for (id, spec) in specs.iter().enumerate() {
            let invalid = |message: String| RouteError::Invalid {
                handler: spec.name.clone(),
                message,
            };
            let template = parse_template(&spec.path).map_err(invalid)?;
            if spec.methods.is_empty() {
                return Err(invalid(format!("route {} declares no method", spec.path)));
            }
            let query = spec
                .query
                .iter()
                .map(|(name, q)| {
                    QueryParam::compile(name, q.clone()).map_err(|source| RouteError::Query {
                        methods: spec.methods.join(", ").to_ascii_uppercase(),
                        path: spec.path.clone(),
                        handler: spec.name.clone(),
                        param: name.clone(),
                        source: Box::new(source),
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            let compile_named = |declared: &indexmap::IndexMap<String, crate::spec::QuerySpec>,
                                 what: &str| {
                declared
                    .iter()
                    .map(|(name, q)| {
                        let name = if what == "header" {
                            name.to_ascii_lowercase()
                        } else {
                            name.clone()
                        };
                        QueryParam::compile(&name, q.clone())
                            .map_err(|source| invalid(format!("{what} `{name}`: {source}")))
                    })
                    .collect::<Result<Vec<_>, _>>()
            };
            let headers = compile_named(&spec.headers, "header")?;
            let cookies = compile_named(&spec.cookies, "cookie")?;
            let body = spec
                .body_schema
                .as_ref()
                .map(jsonschema::validator_for)
                .transpose()
                .map_err(|err| invalid(format!("invalid body JSON Schema: {err}")))?;

            let timeout = match spec.timeout {
                None => None,
                Some(seconds) if seconds.is_finite() && seconds > 0.0 => {
                    Some(std::time::Duration::from_secs_f64(seconds))
                }
                Some(seconds) => {
                    return Err(invalid(format!(
                        "timeout {seconds} is not a positive number of seconds"
                    )));
                }
            };
            let (stream, body_limit, form) = body_options(spec).map_err(invalid)?;
            let form = form
                .map(|declared| compile_named(declared, "form"))
                .transpose()?;
            let index = match by_matchit.get(&template.matchit) {
                Some(&index) => {
                    if endpoints[index].template != spec.path {
                        let first = &endpoints[index];
                        return Err(RouteError::Conflict {
                            first_template: first.template.clone(),
                            first: first.routes[0].handler_name.to_string(),
                            second_template: spec.path.clone(),
                            second: spec.name.clone(),
                            message: "both templates match the same paths".to_owned(),
                        });
                    }
                    index
                }
                None => {
                    let index = endpoints.len();
                    tree.insert(template.matchit.clone(), index)
                        .map_err(|err| {
                            let (first_template, first) = endpoints
                                .iter()
                                .find(|e| conflicts_with(&err, &e.template))
                                .map(|e| (e.template.clone(), e.routes[0].handler_name.to_string()))
                                .unwrap_or_else(|| {
                                    ("another route".to_owned(), "unknown".to_owned())
                                });
                            RouteError::Conflict {
                                first_template,
                                first,
                                second_template: spec.path.clone(),
                                second: spec.name.clone(),
                                message: err.to_string(),
                            }
                        })?;
                    by_matchit.insert(template.matchit.clone(), index);
                    endpoints.push(Endpoint {
                        template: spec.path.clone(),
                        shape: template.shape.clone(),
                        routes: Vec::new(),
                        allow: String::new(),
                        fallbacks: Vec::new(),
                    });
                    index
                }
            };

            for name in &spec.methods {
                let upper = name.to_ascii_uppercase();
                if !KNOWN_METHODS.contains(&upper.as_str()) {
                    return Err(invalid(format!(
                        "unsupported method {name:?} (expected one of {})",
                        KNOWN_METHODS.join(", ")
                    )));
                }
                let method = Method::from_bytes(upper.as_bytes())
                    .map_err(|_| invalid(format!("invalid method {name:?}")))?;
                let endpoint = &mut endpoints[index];
                if let Some(existing) = endpoint.routes.iter().find(|r| r.method == method) {
                    return Err(RouteError::Duplicate {
                        method: upper,
                        template: spec.path.clone(),
                        first: existing.handler_name.to_string(),
                        second: spec.name.clone(),
                    });
                }
                endpoint.routes.push(Arc::new(Route {
                    id,
                    method,
                    template: Arc::from(spec.path.as_str()),
                    handler_name: Arc::from(spec.name.as_str()),
                    is_async: spec.is_async,
                    path_params: template.params.clone(),
                    query: query.clone(),
                    headers: headers.clone(),
                    cookies: cookies.clone(),
                    body: body.clone(),
                    body_schema: spec.body_schema.clone(),
                    timeout,
                    stream,
                    body_limit,
                    form: form.clone(),
                    websocket: spec.websocket,
                    plugin: spec.plugin,
                }));
            }
        }
        for endpoint in &mut endpoints {
            endpoint.allow = allow_header(endpoint.routes.iter().map(|r| &r.method));
        }
        // Quadratic in the number of templates, once at start-up; a few hundred routes take
        // well under a millisecond.
        let fallbacks: Vec<Vec<usize>> = endpoints
            .iter()
            .enumerate()
            .map(|(index, endpoint)| {
                let mut less_specific: Vec<usize> = endpoints
                    .iter()
                    .enumerate()
                    .filter(|&(other, candidate)| {
                        other != index
                            && specificity(&candidate.shape, &endpoint.shape) == Ordering::Greater
                            && may_share_a_path(&endpoint.shape, &candidate.shape)
                    })
                    .map(|(other, _)| other)
                    .collect();
                less_specific
                    .sort_by(|&a, &b| specificity(&endpoints[a].shape, &endpoints[b].shape));
                less_specific
            })
            .collect();
        for (endpoint, fallbacks) in endpoints.iter_mut().zip(fallbacks) {
            endpoint.fallbacks = fallbacks;
        }
        Ok(Self { tree, endpoints })
    }

    /// Finds the route for `method` and `path` (the raw request path, without the query).
    pub fn lookup(&self, method: &Method, path: &str) -> Lookup<'_> {
        let Ok(matched) = self.tree.at(path) else {
            return Lookup::NotFound;
        };
        let endpoint = &self.endpoints[*matched.value];
        let head = *method == Method::HEAD;
        let wanted = if head { &Method::GET } else { method };
        if let Some(route) = endpoint.route_for(wanted) {
            return Lookup::Found {
                route,
                params: matched
                    .params
                    .iter()
                    .map(|(k, v)| (k.to_owned(), v.to_owned()))
                    .collect(),
                head,
            };
        }
        if endpoint.fallbacks.is_empty() {
            return Lookup::MethodNotAllowed(Cow::Borrowed(&endpoint.allow));
        }
        self.fall_back(endpoint, wanted, head, path)
    }

    /// The most specific less specific template that matches `path` and has `wanted`, or 405
    /// naming the methods of every template that matches.
    #[cold]
    fn fall_back<'a>(
        &'a self,
        endpoint: &'a Endpoint,
        wanted: &Method,
        head: bool,
        path: &str,
    ) -> Lookup<'a> {
        let mut matching: Vec<&Endpoint> = vec![endpoint];
        for &index in &endpoint.fallbacks {
            let candidate = &self.endpoints[index];
            let Some(params) = match_shape(&candidate.shape, path) else {
                continue;
            };
            if let Some(route) = candidate.route_for(wanted) {
                return Lookup::Found {
                    route,
                    params,
                    head,
                };
            }
            matching.push(candidate);
        }
        if matching.len() == 1 {
            return Lookup::MethodNotAllowed(Cow::Borrowed(&endpoint.allow));
        }
        Lookup::MethodNotAllowed(Cow::Owned(allow_header(
            matching
                .iter()
                .flat_map(|e| e.routes.iter().map(|r| &r.method)),
        )))
    }

    /// Every route, in declaration order of their paths.
    pub fn routes(&self) -> impl Iterator<Item = &Route> {
        self.endpoints
            .iter()
            .flat_map(|e| e.routes.iter().map(|route| &**route))
    }

    /// Number of routes (method and path pairs).
    pub fn len(&self) -> usize {
        self.routes().count()
    }

    /// Whether no route is declared.
    pub fn is_empty(&self) -> bool {
        self.endpoints.is_empty()
    }
}

/// The `Allow` header for a set of methods: sorted, without repeats, HEAD wherever GET is.
fn allow_header<'m>(methods: impl Iterator<Item = &'m Method>) -> String {
    let mut allow: Vec<&str> = methods.map(Method::as_str).collect();
    if allow.contains(&"GET") {
        allow.push("HEAD");
    }
    allow.sort_unstable();
    allow.dedup();
    allow.join(", ")
}

/// Which of two templates matchit prefers for a path both match: `Less` when `a` wins. Both
/// matching one path means their static segments agree wherever both have one, so the first
/// segment where their kinds differ decides, as matchit's depth-first search (static child,
/// then parameter, then catch-all) does.
fn specificity(a: &[Shape], b: &[Shape]) -> Ordering {
    a.iter().map(Shape::rank).cmp(b.iter().map(Shape::rank))
}

/// Whether some path could match both shapes. It may say yes for two shapes that never share
/// a path (the lookup checks the real path anyway), never no for two that do.
fn may_share_a_path(a: &[Shape], b: &[Shape]) -> bool {
    for (index, (x, y)) in a.iter().zip(b).enumerate() {
        match (x, y) {
            (Shape::CatchAll(_), _) => return b.len() > index,
            (_, Shape::CatchAll(_)) => return a.len() > index,
            (Shape::Static(x), Shape::Static(y)) if x != y => return false,
            // A parameter never matches an empty segment.
            (Shape::Static(s), Shape::Param(_)) | (Shape::Param(_), Shape::Static(s))
                if s.is_empty() =>
            {
                return false;
            }
            _ => {}
        }
    }
    a.len() == b.len()
}

/// Matches a raw request path against a shape as matchit would, with the parameter values
/// (still percent-encoded) by name.
fn match_shape(shape: &[Shape], path: &str) -> Option<Vec<(String, String)>> {
    let mut rest = path.strip_prefix('/')?;
    let mut params = Vec::new();
    for (index, segment) in shape.iter().enumerate() {
        let is_last = index + 1 == shape.len();
        if let Shape::CatchAll(name) = segment {
            if rest.is_empty() {
                return None;
            }
            params.push((name.clone(), rest.to_owned()));
            return Some(params);
        }
        let (value, after) = match rest.split_once('/') {
            Some((value, after)) if !is_last => (value, after),
            Some(_) => return None,
            None if is_last => (rest, ""),
            None => return None,
        };
        match segment {
            Shape::Static(literal) if literal != value => return None,
            Shape::Param(_) if value.is_empty() => return None,
            Shape::Param(name) => params.push((name.clone(), value.to_owned())),
            _ => {}
        }
        rest = after;
    }
    Some(params)
}

fn conflicts_with(err: &matchit::InsertError, template: &str) -> bool {
    match err {
        matchit::InsertError::Conflict { with } => parse_template(template)
            .map(|t| t.matchit == *with)
            .unwrap_or(false),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(methods: &[&str], path: &str, name: &str) -> RouteSpec {
        serde_json::from_value(serde_json::json!({
            "methods": methods, "path": path, "name": name, "is_async": true,
            "query": {}, "body_schema": null
        }))
        .unwrap()
    }

    fn body_spec(extra: serde_json::Value) -> RouteSpec {
        let mut value = serde_json::json!({
            "methods": ["POST"], "path": "/up", "name": "m.up", "is_async": true,
        });
        for (key, item) in extra.as_object().unwrap() {
            value[key] = item.clone();
        }
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn body_options_are_compiled_and_checked() {
        let table = RouteTable::build(&[body_spec(serde_json::json!({
            "stream": true, "body_limit": "64 MiB"
        }))])
        .unwrap();
        let Lookup::Found { route, .. } = table.lookup(&Method::POST, "/up") else {
            panic!("no route");
        };
        assert!(route.stream);
        assert_eq!(route.body_limit, Some(64 * 1024 * 1024));
        assert!(route.form.is_none());

        let table = RouteTable::build(&[body_spec(serde_json::json!({
            "body_limit": 1000,
            "form": {"name": {"type": "str", "required": true}},
        }))])
        .unwrap();
        let Lookup::Found { route, .. } = table.lookup(&Method::POST, "/up") else {
            panic!("no route");
        };
        assert_eq!(route.body_limit, Some(1000));
        assert_eq!(route.form.as_ref().map(Vec::len), Some(1));

        for (extra, problem) in [
            (serde_json::json!({"body_limit": 0}), "above zero"),
            (
                serde_json::json!({"stream": true, "form": {}}),
                "cannot declare a form",
            ),
            (
                serde_json::json!({"form": {}, "body_schema": {"type": "object"}}),
                "JSON body schema",
            ),
        ] {
            let err = RouteTable::build(&[body_spec(extra)]).unwrap_err();
            assert!(err.to_string().contains(problem), "{err}");
        }
    }

    #[test]
    fn templates_parse() {
        let t = parse_template("/users/{id:int}/files/{rest:path}").unwrap();
        assert_eq!(t.matchit, "/users/{id}/files/{*rest}");
        assert_eq!(
            t.params,
            vec![
                ("id".into(), ParamType::Int),
                ("rest".into(), ParamType::Path)
            ]
        );
        assert!(parse_template("users").is_err());
        assert!(parse_template("/a/{x:nope}").is_err());
        assert!(parse_template("/a/{rest:path}/b").is_err());
        assert!(parse_template("/a/x{y}").is_err());
        assert!(parse_template("/a/{x}/{x}").is_err());
    }

    #[test]
    fn lookup_distinguishes_404_405_and_head() {
        let table = RouteTable::build(&[
            spec(&["GET"], "/items/{id:int}", "m.get_item"),
            spec(&["DELETE"], "/items/{id:int}", "m.delete_item"),
            spec(&["POST"], "/items", "m.create"),
        ])
        .unwrap();
        assert!(matches!(
            table.lookup(&Method::GET, "/nothing"),
            Lookup::NotFound
        ));
        match table.lookup(&Method::PUT, "/items/3") {
            Lookup::MethodNotAllowed(allow) => assert_eq!(&*allow, "DELETE, GET, HEAD"),
            other => panic!("{other:?}"),
        }
        match table.lookup(&Method::HEAD, "/items/3") {
            Lookup::Found {
                route,
                params,
                head,
            } => {
                assert!(head);
                assert_eq!(&*route.handler_name, "m.get_item");
                assert_eq!(params, vec![("id".to_owned(), "3".to_owned())]);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn duplicates_name_both_handlers() {
        let err = RouteTable::build(&[
            spec(&["GET"], "/x", "m.first"),
            spec(&["GET"], "/x", "m.second"),
        ])
        .unwrap_err()
        .to_string();
        assert!(err.contains("m.first") && err.contains("m.second"), "{err}");
    }

    #[test]
    fn a_bad_pattern_names_the_route_the_handler_and_the_parameter() {
        let mut bad = spec(&["GET", "post"], "/search", "m.search");
        bad.query = [(
            "code".to_owned(),
            serde_json::from_value(serde_json::json!({
                "type": "str", "required": true, "pattern": "a{,3}"
            }))
            .unwrap(),
        )]
        .into_iter()
        .collect();
        let err = RouteTable::build(&[spec(&["GET"], "/", "m.index"), bad])
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("GET, POST /search (handler m.search): query parameter `code`: "),
            "{err}"
        );
        assert!(
            err.contains("repetition quantifier expects a valid decimal"),
            "{err}"
        );
    }

    #[test]
    fn same_shape_different_names_conflict() {
        let err = RouteTable::build(&[
            spec(&["GET"], "/x/{a}", "m.first"),
            spec(&["POST"], "/x/{b:int}", "m.second"),
        ])
        .unwrap_err()
        .to_string();
        assert!(err.contains("m.first") && err.contains("m.second"), "{err}");
    }

    #[test]
    fn static_segments_win_over_parameters() {
        let table = RouteTable::build(&[
            spec(&["GET"], "/users/me", "m.me"),
            spec(&["GET"], "/users/{id:int}", "m.user"),
        ])
        .unwrap();
        match table.lookup(&Method::GET, "/users/me") {
            Lookup::Found { route, .. } => assert_eq!(&*route.handler_name, "m.me"),
            other => panic!("{other:?}"),
        }
    }

    fn handler_of(lookup: Lookup<'_>) -> String {
        match lookup {
            Lookup::Found { route, .. } => route.handler_name.to_string(),
            Lookup::MethodNotAllowed(allow) => format!("405 {allow}"),
            Lookup::NotFound => "404".to_owned(),
        }
    }

    #[test]
    fn a_parameter_route_serves_a_method_the_static_route_lacks() {
        let table = RouteTable::build(&[
            spec(&["GET"], "/people/{pid}", "m.person"),
            spec(&["POST"], "/people/me", "m.update_me"),
        ])
        .unwrap();
        match table.lookup(&Method::GET, "/people/me") {
            Lookup::Found {
                route,
                params,
                head,
            } => {
                assert_eq!(&*route.handler_name, "m.person");
                assert_eq!(params, vec![("pid".to_owned(), "me".to_owned())]);
                assert!(!head);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            handler_of(table.lookup(&Method::POST, "/people/me")),
            "m.update_me"
        );
        assert_eq!(
            handler_of(table.lookup(&Method::HEAD, "/people/me")),
            "m.person"
        );
        assert_eq!(
            handler_of(table.lookup(&Method::PUT, "/people/me")),
            "405 GET, HEAD, POST"
        );
        // Only the parameter route matches here: its own methods.
        assert_eq!(
            handler_of(table.lookup(&Method::PUT, "/people/42")),
            "405 GET, HEAD"
        );
    }

    #[test]
    fn fallback_goes_from_the_most_to_the_least_specific_template() {
        // A parameter and a catch-all cannot share a position (matchit refuses the pair), so
        // the catch-all sits one level up.
        let table = RouteTable::build(&[
            spec(&["GET"], "/a/{x}/c", "m.x_c"),
            spec(&["POST"], "/a/b/{y}", "m.b_y"),
            spec(&["PUT"], "/a/b/c", "m.b_c"),
            spec(&["DELETE"], "/{all:path}", "m.all"),
        ])
        .unwrap();
        let at = |method: Method| handler_of(table.lookup(&method, "/a/b/c"));
        assert_eq!(at(Method::PUT), "m.b_c");
        assert_eq!(at(Method::POST), "m.b_y");
        assert_eq!(at(Method::GET), "m.x_c");
        assert_eq!(at(Method::HEAD), "m.x_c");
        assert_eq!(at(Method::DELETE), "m.all");
        assert_eq!(at(Method::OPTIONS), "405 DELETE, GET, HEAD, POST, PUT");
        // `/a/b/d` is neither `/a/{x}/c` nor `/a/b/c`.
        assert_eq!(
            handler_of(table.lookup(&Method::OPTIONS, "/a/b/d")),
            "405 DELETE, POST"
        );
        match table.lookup(&Method::GET, "/a/b/c") {
            Lookup::Found { params, .. } => {
                assert_eq!(params, vec![("x".to_owned(), "b".to_owned())]);
            }
            other => panic!("{other:?}"),
        }
        match table.lookup(&Method::DELETE, "/a/b/c") {
            Lookup::Found { params, .. } => {
                assert_eq!(params, vec![("all".to_owned(), "a/b/c".to_owned())]);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn only_templates_that_can_share_a_path_are_fallbacks() {
        let table = RouteTable::build(&[
            spec(&["GET"], "/users/me", "m.me"),
            spec(&["POST"], "/users/{id}", "m.user"),
            spec(&["GET"], "/orders/{id}", "m.order"),
            spec(&["GET"], "/", "m.root"),
            spec(&["GET"], "/{page}", "m.page"),
        ])
        .unwrap();
        let fallbacks = |template: &str| {
            let endpoint = table
                .endpoints
                .iter()
                .find(|e| e.template == template)
                .unwrap();
            endpoint
                .fallbacks
                .iter()
                .map(|&i| table.endpoints[i].template.as_str())
                .collect::<Vec<_>>()
        };
        assert_eq!(fallbacks("/users/me"), ["/users/{id}"]);
        assert!(fallbacks("/users/{id}").is_empty());
        assert!(fallbacks("/orders/{id}").is_empty());
        // A parameter never matches the empty segment of `/`.
        assert!(fallbacks("/").is_empty());
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        /// A template of up to four segments over a tiny alphabet, so that templates overlap
        /// often; parameters are named after their position, so that equal shapes are equal
        /// templates.
        fn template() -> impl Strategy<Value = String> {
            let segment = prop_oneof![
                Just("a".to_owned()),
                Just("b".to_owned()),
                Just("ab".to_owned()),
                Just(String::new()),
                Just("{p}".to_owned()),
            ];
            (prop::collection::vec(segment, 1..4), any::<bool>()).prop_map(|(segments, rest)| {
                let mut template = String::new();
                for (index, segment) in segments.iter().enumerate() {
                    template.push('/');
                    template.push_str(&segment.replace("{p}", &format!("{{p{index}}}")));
                }
                if rest {
                    template.push_str(&format!("/{{r{}:path}}", segments.len()));
                }
                template
            })
        }

        fn path() -> impl Strategy<Value = String> {
            prop::collection::vec(
                prop::sample::select(vec!["a", "b", "ab", "", "x", "%2F"]),
                1..6,
            )
            .prop_map(|segments| format!("/{}", segments.join("/")))
        }

        const METHODS: [&str; 3] = ["GET", "POST", "PUT"];

        /// Builds a table from the templates that matchit accepts together, each with a
        /// non-empty subset of `METHODS`.
        fn build(templates: &[(String, u8)]) -> RouteTable {
            let mut accepted: Vec<RouteSpec> = Vec::new();
            for (index, (template, methods)) in templates.iter().enumerate() {
                if accepted.iter().any(|s| s.path == *template) {
                    continue;
                }
                let methods: Vec<&str> = METHODS
                    .iter()
                    .enumerate()
                    .filter(|(bit, _)| methods & (1 << bit) != 0)
                    .map(|(_, m)| *m)
                    .collect();
                let methods = if methods.is_empty() {
                    vec!["GET"]
                } else {
                    methods
                };
                accepted.push(spec(&methods, template, &format!("h{index}")));
                if RouteTable::build(&accepted).is_err() {
                    accepted.pop();
                }
            }
            RouteTable::build(&accepted).expect("accepted templates build")
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(2000))]

            #[test]
            fn shapes_match_as_matchit_does(
                template in template(),
                path in path(),
            ) {
                let parsed = parse_template(&template).unwrap();
                let mut router = matchit::Router::new();
                router.insert(parsed.matchit.clone(), ()).unwrap();
                let expected = router.at(&path).ok().map(|m| {
                    m.params.iter().map(|(k, v)| (k.to_owned(), v.to_owned())).collect::<Vec<_>>()
                });
                prop_assert_eq!(match_shape(&parsed.shape, &path), expected);
            }

            #[test]
            fn lookup_serves_the_most_specific_template_with_the_method(
                templates in prop::collection::vec((template(), 1u8..8), 1..8),
                path in path(),
            ) {
                let table = build(&templates);
                let mut matching: Vec<(&Endpoint, Vec<(String, String)>)> = table
                    .endpoints
                    .iter()
                    .filter_map(|e| match_shape(&e.shape, &path).map(|params| (e, params)))
                    .collect();
                matching.sort_by(|a, b| specificity(&a.0.shape, &b.0.shape));
                // The most specific template is matchit's own choice.
                let winner = table.tree.at(&path).ok().map(|m| &table.endpoints[*m.value].template);
                prop_assert_eq!(winner, matching.first().map(|(e, _)| &e.template));

                for method in ["GET", "HEAD", "POST", "PUT", "DELETE"] {
                    let method = Method::from_bytes(method.as_bytes()).unwrap();
                    let wanted = if method == Method::HEAD { Method::GET } else { method.clone() };
                    let served = matching
                        .iter()
                        .find_map(|(e, params)| e.route_for(&wanted).map(|r| (r, params)));
                    match (table.lookup(&method, &path), served) {
                        (Lookup::Found { route, params, head }, Some((expected, expected_params))) => {
                            prop_assert_eq!(&route.handler_name, &expected.handler_name);
                            prop_assert_eq!(&params, expected_params);
                            prop_assert_eq!(head, method == Method::HEAD);
                        }
                        (Lookup::MethodNotAllowed(allow), None) if !matching.is_empty() => {
                            let every = allow_header(
                                matching.iter().flat_map(|(e, _)| e.routes.iter().map(|r| &r.method)),
                            );
                            prop_assert_eq!(&*allow, every.as_str());
                        }
                        (Lookup::NotFound, None) if matching.is_empty() => {}
                        (got, expected) => {
                            prop_assert!(false, "{} {}: got {:?}, expected {:?}", method, path, got, expected);
                        }
                    }
                }
            }
        }
    }
}
