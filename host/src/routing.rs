//! The route table: path templates compiled into a matchit tree, methods per path, and the
//! validation each route declared. Routing never touches Python.

use std::collections::HashMap;
use std::sync::Arc;

use http::Method;

use crate::spec::{ParamType, RouteSpec};
use crate::validation::QueryParam;

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
    /// Compiled body schema, when a JSON body is declared.
    pub body: Option<jsonschema::Validator>,
    /// The body schema as declared (for `pyhost routes`).
    pub body_schema: Option<serde_json::Value>,
    /// The route's own handler timeout, when it declares one.
    pub timeout: Option<std::time::Duration>,
    /// Index of the plugin that owns it.
    pub plugin: usize,
}

/// All methods served at one path template.
#[derive(Debug)]
struct Endpoint {
    template: String,
    /// Shared, so that a request in flight can hold its route without borrowing the table.
    routes: Vec<Arc<Route>>,
    allow: String,
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
    /// The path exists but not for this method; the value is the `Allow` header.
    MethodNotAllowed(&'a str),
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
}

/// Parses a template such as `/files/{id:int}/{rest:path}`.
pub fn parse_template(template: &str) -> Result<Template, String> {
    if !template.starts_with('/') {
        return Err(format!("path template {template:?} must start with '/'"));
    }
    let mut matchit = String::with_capacity(template.len());
    let mut params: Vec<(String, ParamType)> = Vec::new();
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
            } else {
                matchit.push_str(&format!("{{{name}}}"));
            }
            params.push((name.to_owned(), kind));
        } else if segment.contains(['{', '}']) {
            return Err(format!(
                "path template {template:?}: segment {segment:?} must be all literal or a single {{name}} / {{name:converter}}"
            ));
        } else {
            matchit.push_str(segment);
        }
    }
    Ok(Template { matchit, params })
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
                .map(|(name, q)| QueryParam::compile(name, q.clone()))
                .collect::<Result<Vec<_>, _>>()
                .map_err(invalid)?;
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
                        routes: Vec::new(),
                        allow: String::new(),
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
                    body: body.clone(),
                    body_schema: spec.body_schema.clone(),
                    timeout,
                    plugin: spec.plugin,
                }));
            }
        }
        for endpoint in &mut endpoints {
            let mut allow: Vec<&str> = endpoint.routes.iter().map(|r| r.method.as_str()).collect();
            if allow.contains(&"GET") {
                allow.push("HEAD");
            }
            allow.sort_unstable();
            endpoint.allow = allow.join(", ");
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
        match endpoint.routes.iter().find(|r| r.method == *wanted) {
            Some(route) => Lookup::Found {
                route,
                params: matched
                    .params
                    .iter()
                    .map(|(k, v)| (k.to_owned(), v.to_owned()))
                    .collect(),
                head,
            },
            None => Lookup::MethodNotAllowed(&endpoint.allow),
        }
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
            Lookup::MethodNotAllowed(allow) => assert_eq!(allow, "DELETE, GET, HEAD"),
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
}
