//! Declared validation, run in Rust before any Python code and without the GIL.
//!
//! Path segments and query parameters are converted to typed values and checked against their
//! constraints; a declared JSON body is checked against its JSON Schema. Every failure becomes a
//! [`FieldError`] so one 422 response can list all of them.

use regex::Regex;
use serde::Serialize;
use serde_json::Value;

use crate::spec::{ParamType, QuerySpec};

/// A converted path or query value, still free of Python objects.
#[derive(Debug, Clone, PartialEq)]
pub enum Typed {
    /// `str` and `path` values.
    Str(String),
    /// `int` values.
    Int(i64),
    /// `float` values.
    Float(f64),
    /// `bool` values.
    Bool(bool),
    /// `uuid` values (hyphenated lower-case form).
    Uuid(uuid::Uuid),
    /// All values of a repeated query key.
    List(Vec<Typed>),
    /// An optional parameter that was not given and has no default.
    None,
}

/// One segment of an error location: a name or a list index.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Loc {
    /// A field or parameter name.
    Key(String),
    /// A position in a list.
    Index(usize),
}

/// One failing field, as listed in a 422 body.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FieldError {
    /// Where: `["query", "limit"]`, `["body", "items", 0, "price"]`.
    pub loc: Vec<Loc>,
    /// What is wrong, for a person.
    pub msg: String,
    /// What is wrong, for a program (`int_parsing`, `missing`, a JSON Schema keyword, ...).
    #[serde(rename = "type")]
    pub kind: String,
}

impl FieldError {
    fn new(loc: Vec<Loc>, kind: &str, msg: impl Into<String>) -> Self {
        Self {
            loc,
            msg: msg.into(),
            kind: kind.to_owned(),
        }
    }
}

/// Parses one raw value as `kind`.
pub fn parse_scalar(kind: ParamType, raw: &str) -> Result<Typed, (&'static str, String)> {
    match kind {
        ParamType::Str | ParamType::Path => Ok(Typed::Str(raw.to_owned())),
        ParamType::Int => raw.trim().parse::<i64>().map(Typed::Int).map_err(|err| {
            let msg = match err.kind() {
                std::num::IntErrorKind::PosOverflow | std::num::IntErrorKind::NegOverflow => {
                    "Input should be an integer between -2^63 and 2^63-1".to_owned()
                }
                _ => "Input should be a valid integer".to_owned(),
            };
            ("int_parsing", msg)
        }),
        ParamType::Float => match raw.trim().parse::<f64>() {
            Ok(value) if value.is_finite() => Ok(Typed::Float(value)),
            _ => Err((
                "float_parsing",
                "Input should be a valid finite number".to_owned(),
            )),
        },
        ParamType::Bool => match raw.trim().to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "on" => Ok(Typed::Bool(true)),
            "false" | "0" | "no" | "off" => Ok(Typed::Bool(false)),
            _ => Err((
                "bool_parsing",
                "Input should be a valid boolean (true/false, 1/0, yes/no, on/off)".to_owned(),
            )),
        },
        ParamType::Uuid => uuid::Uuid::parse_str(raw.trim())
            .map(Typed::Uuid)
            .map_err(|_| ("uuid_parsing", "Input should be a valid UUID".to_owned())),
    }
}

/// Converts the raw values of typed path segments; `raw` is already percent-decoded.
pub fn convert_path(
    params: &[(String, ParamType)],
    raw: &[(String, String)],
) -> Result<Vec<(String, Typed)>, Vec<FieldError>> {
    let mut values = Vec::with_capacity(params.len());
    let mut errors = Vec::new();
    for (name, kind) in params {
        let Some((_, text)) = raw.iter().find(|(key, _)| key == name) else {
            continue;
        };
        match parse_scalar(*kind, text) {
            Ok(value) => values.push((name.clone(), value)),
            Err((error_kind, msg)) => errors.push(FieldError::new(
                vec![Loc::Key("path".into()), Loc::Key(name.clone())],
                error_kind,
                msg,
            )),
        }
    }
    if errors.is_empty() {
        Ok(values)
    } else {
        Err(errors)
    }
}

/// A declared query parameter, compiled for checking.
#[derive(Debug, Clone)]
pub struct QueryParam {
    /// Parameter name (the query key).
    pub name: String,
    /// The declaration as given.
    pub spec: QuerySpec,
    /// Compiled `spec.pattern`.
    pattern: Option<Regex>,
    /// `spec.choices` converted to the parameter's type.
    choices: Option<Vec<Typed>>,
    /// `spec.default` converted to the parameter's type.
    default: Option<Typed>,
}

/// A query parameter declaration the host cannot use.
#[derive(Debug, thiserror::Error)]
pub enum QueryParamError {
    /// `type` is `path`, which only a path segment can have.
    #[error("type `path` is only for path segments")]
    PathType,
    /// `pattern` does not compile with the engine that matches it.
    #[error(
        "pattern {pattern:?} is not valid in the syntax of Rust's `regex` crate, which matches \
         query values (no look-around, no backreferences):\n{source}"
    )]
    Pattern {
        /// The pattern as declared.
        pattern: String,
        /// The `regex` crate's explanation, pointing at the offending part.
        source: regex::Error,
    },
    /// A `choices` entry or the `default` is not a value of the parameter's type.
    #[error("{value} is not a valid {kind}")]
    Value {
        /// The value, as JSON.
        value: String,
        /// The parameter's type.
        kind: &'static str,
    },
}

impl QueryParam {
    /// Compiles a declaration; the error says which part is unusable.
    ///
    /// The pattern is compiled here, with the engine that runs it at request time, so that a
    /// pattern it cannot run stops the host at start-up instead of failing requests.
    pub fn compile(name: &str, spec: QuerySpec) -> Result<Self, QueryParamError> {
        if spec.kind == ParamType::Path {
            return Err(QueryParamError::PathType);
        }
        let pattern = spec
            .pattern
            .as_deref()
            .map(|pattern| {
                Regex::new(pattern).map_err(|source| QueryParamError::Pattern {
                    pattern: pattern.to_owned(),
                    source,
                })
            })
            .transpose()?;
        let from_json = |value: &Value| -> Result<Typed, QueryParamError> {
            json_to_typed(spec.kind, value).ok_or_else(|| QueryParamError::Value {
                value: value.to_string(),
                kind: spec.kind.as_str(),
            })
        };
        let choices = spec
            .choices
            .as_ref()
            .map(|values| values.iter().map(from_json).collect::<Result<Vec<_>, _>>())
            .transpose()?;
        let default = match (&spec.default, spec.required) {
            (Some(Value::Null) | None, _) => None,
            (Some(Value::Array(items)), false) if spec.multiple => Some(Typed::List(
                items.iter().map(from_json).collect::<Result<Vec<_>, _>>()?,
            )),
            (Some(value), false) => Some(from_json(value)?),
            (Some(_), true) => None,
        };
        Ok(Self {
            name: name.to_owned(),
            spec,
            pattern,
            choices,
            default,
        })
    }

    fn check(&self, raw: &str, loc: Vec<Loc>) -> Result<Typed, FieldError> {
        let value = parse_scalar(self.spec.kind, raw)
            .map_err(|(kind, msg)| FieldError::new(loc.clone(), kind, msg))?;
        let spec = &self.spec;
        let number = match value {
            Typed::Int(n) => Some(n as f64),
            Typed::Float(f) => Some(f),
            _ => None,
        };
        if let Some(n) = number {
            let bounds = [
                (
                    spec.ge,
                    "greater_than_equal",
                    "greater than or equal to",
                    n >= spec.ge.unwrap_or(0.0),
                ),
                (
                    spec.gt,
                    "greater_than",
                    "greater than",
                    n > spec.gt.unwrap_or(0.0),
                ),
                (
                    spec.le,
                    "less_than_equal",
                    "less than or equal to",
                    n <= spec.le.unwrap_or(0.0),
                ),
                (
                    spec.lt,
                    "less_than",
                    "less than",
                    n < spec.lt.unwrap_or(0.0),
                ),
            ];
            for (bound, kind, words, ok) in bounds {
                if let Some(bound) = bound
                    && !ok
                {
                    return Err(FieldError::new(
                        loc,
                        kind,
                        format!("Input should be {words} {}", format_number(bound)),
                    ));
                }
            }
        }
        if let Typed::Str(text) = &value {
            let chars = text.chars().count();
            if let Some(min) = spec.min_length
                && chars < min
            {
                return Err(FieldError::new(
                    loc,
                    "string_too_short",
                    format!("String should have at least {min} characters"),
                ));
            }
            if let Some(max) = spec.max_length
                && chars > max
            {
                return Err(FieldError::new(
                    loc,
                    "string_too_long",
                    format!("String should have at most {max} characters"),
                ));
            }
            if let Some(pattern) = &self.pattern
                && !pattern.is_match(text)
            {
                return Err(FieldError::new(
                    loc,
                    "string_pattern_mismatch",
                    format!("String should match pattern '{}'", pattern.as_str()),
                ));
            }
        }
        if let Some(choices) = &self.choices
            && !choices.contains(&value)
        {
            let listed: Vec<String> = choices.iter().map(display_typed).collect();
            return Err(FieldError::new(
                loc,
                "enum",
                format!("Input should be one of: {}", listed.join(", ")),
            ));
        }
        Ok(value)
    }
}

/// Checks the declared query parameters against the request's query pairs.
pub fn validate_query(
    params: &[QueryParam],
    pairs: &[(String, String)],
) -> Result<Vec<(String, Typed)>, Vec<FieldError>> {
    validate_params("query", params, pairs)
}

/// Checks declared parameters found at `location` (`query`, `header`, `cookie`) against the
/// request's name/value pairs for it; entries are located at `[location, name]`.
pub fn validate_params(
    location: &str,
    params: &[QueryParam],
    pairs: &[(String, String)],
) -> Result<Vec<(String, Typed)>, Vec<FieldError>> {
    let mut values = Vec::with_capacity(params.len());
    let mut errors = Vec::new();
    for param in params {
        let loc = || vec![Loc::Key(location.into()), Loc::Key(param.name.clone())];
        let mut raw = pairs
            .iter()
            .filter(|(key, _)| *key == param.name)
            .map(|(_, value)| value.as_str())
            .peekable();
        if raw.peek().is_none() {
            if param.spec.required {
                errors.push(FieldError::new(loc(), "missing", "Field required"));
            } else {
                match (&param.default, param.spec.multiple) {
                    (Some(default), _) => values.push((param.name.clone(), default.clone())),
                    (None, true) => values.push((param.name.clone(), Typed::List(Vec::new()))),
                    (None, false) => values.push((param.name.clone(), Typed::None)),
                }
            }
            continue;
        }
        if param.spec.multiple {
            let mut items = Vec::new();
            for (index, text) in raw.enumerate() {
                let mut at = loc();
                at.push(Loc::Index(index));
                match param.check(text, at) {
                    Ok(value) => items.push(value),
                    Err(error) => errors.push(error),
                }
            }
            values.push((param.name.clone(), Typed::List(items)));
        } else {
            // A repeated key for a single-valued parameter: the last one wins, as in
            // `QueryParams.__getitem__`.
            let text = raw.last().unwrap_or_default();
            match param.check(text, loc()) {
                Ok(value) => values.push((param.name.clone(), value)),
                Err(error) => errors.push(error),
            }
        }
    }
    if errors.is_empty() {
        Ok(values)
    } else {
        Err(errors)
    }
}

/// `type` of an entry for a property the schema does not allow, as pydantic names it.
const EXTRA_FORBIDDEN: &str = "extra_forbidden";
/// `msg` of such an entry, as pydantic words it.
const EXTRA_FORBIDDEN_MSG: &str = "Extra inputs are not permitted";

/// Checks a parsed JSON body against its compiled schema.
///
/// One entry per failing field: jsonschema reports all the properties an object may not have
/// (`additionalProperties: false`, `unevaluatedProperties: false`) as one error at the object,
/// which becomes one `extra_forbidden` entry per property, located at the property.
pub fn validate_body(
    validator: &jsonschema::Validator,
    body: &Value,
) -> Result<(), Vec<FieldError>> {
    use jsonschema::error::ValidationErrorKind;

    let mut errors: Vec<FieldError> = Vec::new();
    for error in validator.iter_errors(body) {
        let mut loc = vec![Loc::Key("body".into())];
        for segment in error.instance_path().iter() {
            loc.push(match segment {
                jsonschema::paths::LocationSegment::Property(name) => Loc::Key(name.into_owned()),
                jsonschema::paths::LocationSegment::Index(index) => Loc::Index(index),
            });
        }
        let extra = |name: &str| {
            let mut at = loc.clone();
            at.push(Loc::Key(name.to_owned()));
            FieldError::new(at, EXTRA_FORBIDDEN, EXTRA_FORBIDDEN_MSG)
        };
        match error.kind() {
            ValidationErrorKind::AdditionalProperties { unexpected }
            | ValidationErrorKind::UnevaluatedProperties { unexpected } => {
                errors.extend(unexpected.iter().map(|name| extra(name)));
                continue;
            }
            // `additionalProperties: false` without `properties` or `patternProperties` makes
            // every property unexpected; jsonschema then reports only the first, as a false
            // schema, so the others are read off the object itself.
            ValidationErrorKind::FalseSchema
                if error
                    .schema_path()
                    .as_str()
                    .ends_with("/additionalProperties") =>
            {
                if let Some(Value::Object(object)) = body.pointer(error.instance_path().as_str()) {
                    errors.extend(object.keys().map(|name| extra(name)));
                    continue;
                }
            }
            ValidationErrorKind::Required { property } => {
                loc.push(Loc::Key(
                    property
                        .as_str()
                        .map(str::to_owned)
                        .unwrap_or_else(|| property.to_string()),
                ));
            }
            _ => {}
        }
        errors.push(FieldError {
            loc,
            msg: error.to_string(),
            kind: error.kind().keyword().to_owned(),
        });
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

/// Parses a JSON body, refusing integers that do not fit in 64 bits: serde_json would turn
/// them into rounded floats, and a handler must never see a silently changed number.
pub fn parse_json(body: &[u8]) -> Result<Value, String> {
    check_integer_widths(body)?;
    serde_json::from_slice(body).map_err(|err| err.to_string())
}

/// Scans the JSON text for integer literals (numbers without fraction or exponent) outside
/// the i64/u64 range. Strings are skipped; malformed input is left to the parser.
pub fn check_integer_widths(body: &[u8]) -> Result<(), String> {
    let mut index = 0;
    let mut in_string = false;
    while index < body.len() {
        let byte = body[index];
        if in_string {
            match byte {
                b'\\' => index += 1,
                b'"' => in_string = false,
                _ => {}
            }
            index += 1;
            continue;
        }
        match byte {
            b'"' => {
                in_string = true;
                index += 1;
            }
            b'-' | b'0'..=b'9' => {
                let start = index;
                index += 1;
                while index < body.len()
                    && matches!(body[index], b'0'..=b'9' | b'.' | b'e' | b'E' | b'+' | b'-')
                {
                    index += 1;
                }
                let token = &body[start..index];
                let is_integer = !token.iter().any(|b| matches!(b, b'.' | b'e' | b'E'));
                if is_integer {
                    let text = std::str::from_utf8(token).unwrap_or_default();
                    if text.parse::<i64>().is_err() && text.parse::<u64>().is_err() && text != "-" {
                        let shown: String = text.chars().take(40).collect();
                        return Err(format!(
                            "the integer {shown}{} does not fit in 64 bits",
                            if text.len() > 40 { "..." } else { "" }
                        ));
                    }
                }
            }
            _ => index += 1,
        }
    }
    Ok(())
}

fn json_to_typed(kind: ParamType, value: &Value) -> Option<Typed> {
    match (kind, value) {
        (ParamType::Str | ParamType::Path, Value::String(s)) => Some(Typed::Str(s.clone())),
        (ParamType::Int, Value::Number(n)) => n.as_i64().map(Typed::Int),
        (ParamType::Float, Value::Number(n)) => n.as_f64().map(Typed::Float),
        (ParamType::Bool, Value::Bool(b)) => Some(Typed::Bool(*b)),
        (ParamType::Uuid, Value::String(s)) => uuid::Uuid::parse_str(s).ok().map(Typed::Uuid),
        _ => None,
    }
}

fn display_typed(value: &Typed) -> String {
    match value {
        Typed::Str(s) => format!("'{s}'"),
        Typed::Int(n) => n.to_string(),
        Typed::Float(f) => format_number(*f),
        Typed::Bool(b) => b.to_string(),
        Typed::Uuid(u) => u.to_string(),
        Typed::List(items) => items
            .iter()
            .map(display_typed)
            .collect::<Vec<_>>()
            .join(", "),
        Typed::None => "None".to_owned(),
    }
}

fn format_number(value: f64) -> String {
    if value.fract() == 0.0 && value.abs() < 1e15 {
        format!("{}", value as i64)
    } else {
        value.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec(value: Value) -> QuerySpec {
        serde_json::from_value(value).expect("valid spec")
    }

    fn pairs(items: &[(&str, &str)]) -> Vec<(String, String)> {
        items
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn int_bounds_and_defaults() {
        let param = QueryParam::compile(
            "limit",
            spec(json!({"type": "int", "required": false, "default": 10, "ge": 1, "le": 100})),
        )
        .unwrap();
        let params = [param];
        assert_eq!(
            validate_query(&params, &[]).unwrap(),
            vec![("limit".into(), Typed::Int(10))]
        );
        assert_eq!(
            validate_query(&params, &pairs(&[("limit", "5")])).unwrap(),
            vec![("limit".into(), Typed::Int(5))]
        );
        let errors = validate_query(&params, &pairs(&[("limit", "0")])).unwrap_err();
        assert_eq!(errors[0].kind, "greater_than_equal");
        assert_eq!(
            errors[0].loc,
            vec![Loc::Key("query".into()), Loc::Key("limit".into())]
        );
        let errors = validate_query(&params, &pairs(&[("limit", "x")])).unwrap_err();
        assert_eq!(errors[0].kind, "int_parsing");
    }

    #[test]
    fn missing_required_and_multiple_with_index() {
        let params = [
            QueryParam::compile("q", spec(json!({"type": "str", "required": true}))).unwrap(),
            QueryParam::compile(
                "tag",
                spec(json!({"type": "int", "required": false, "multiple": true})),
            )
            .unwrap(),
        ];
        let errors = validate_query(&params, &pairs(&[("tag", "1"), ("tag", "b")])).unwrap_err();
        assert_eq!(errors.len(), 2);
        assert_eq!(errors[0].kind, "missing");
        assert_eq!(
            errors[1].loc,
            vec![
                Loc::Key("query".into()),
                Loc::Key("tag".into()),
                Loc::Index(1)
            ]
        );
    }

    #[test]
    fn string_constraints() {
        let param = QueryParam::compile(
            "s",
            spec(
                json!({"type": "str", "required": true, "min_length": 2, "max_length": 4,
                        "pattern": "^[a-z]+$", "choices": null}),
            ),
        )
        .unwrap();
        let params = [param];
        let kind = |v: &str| {
            validate_query(&params, &pairs(&[("s", v)])).unwrap_err()[0]
                .kind
                .clone()
        };
        assert_eq!(kind("a"), "string_too_short");
        assert_eq!(kind("abcde"), "string_too_long");
        assert_eq!(kind("AB"), "string_pattern_mismatch");
        assert!(validate_query(&params, &pairs(&[("s", "abc")])).is_ok());
    }

    #[test]
    fn choices_are_compared_typed() {
        let param = QueryParam::compile(
            "order",
            spec(json!({"type": "str", "required": true, "choices": ["asc", "desc"]})),
        )
        .unwrap();
        let params = [param];
        assert!(validate_query(&params, &pairs(&[("order", "asc")])).is_ok());
        assert_eq!(
            validate_query(&params, &pairs(&[("order", "up")])).unwrap_err()[0].kind,
            "enum"
        );
    }

    #[test]
    fn scalars_parse() {
        assert_eq!(
            parse_scalar(ParamType::Bool, "Yes").unwrap(),
            Typed::Bool(true)
        );
        assert!(parse_scalar(ParamType::Float, "nan").is_err());
        assert!(parse_scalar(ParamType::Int, "99999999999999999999").is_err());
        assert!(parse_scalar(ParamType::Uuid, "not-a-uuid").is_err());
    }

    #[test]
    fn integers_beyond_64_bits_are_refused() {
        assert!(parse_json(b"{\"a\": 18446744073709551615}").is_ok());
        assert!(
            parse_json(b"[-9223372036854775808, 1.5e300, \"99999999999999999999999\"]").is_ok()
        );
        assert!(parse_json(b"18446744073709551616").is_err());
        assert!(parse_json(b"{\"n\": -9223372036854775809}").is_err());
        assert!(parse_json(b"[1, \"\\\"\", 123456789012345678901234567890]").is_err());
    }

    #[test]
    fn body_errors_have_locations() {
        let schema = json!({
            "type": "object",
            "properties": {"name": {"type": "string"}, "tags": {"type": "array", "items": {"type": "integer"}}},
            "required": ["name"]
        });
        let validator = jsonschema::validator_for(&schema).unwrap();
        let errors = validate_body(&validator, &json!({"tags": [1, "x"]})).unwrap_err();
        let locs: Vec<_> = errors
            .iter()
            .map(|e| serde_json::to_value(&e.loc).unwrap())
            .collect();
        assert!(locs.contains(&json!(["body", "name"])), "{locs:?}");
        assert!(locs.contains(&json!(["body", "tags", 1])), "{locs:?}");
    }

    fn entries(schema: Value, body: Value) -> Vec<(Value, String, String)> {
        let validator = jsonschema::validator_for(&schema).unwrap();
        validate_body(&validator, &body)
            .unwrap_err()
            .into_iter()
            .map(|e| (serde_json::to_value(&e.loc).unwrap(), e.kind, e.msg))
            .collect()
    }

    fn extra(loc: Value) -> (Value, String, String) {
        (
            loc,
            "extra_forbidden".to_owned(),
            "Extra inputs are not permitted".to_owned(),
        )
    }

    #[test]
    fn each_unexpected_property_is_an_entry_of_its_own() {
        let schema = json!({
            "type": "object",
            "properties": {
                "name": {"type": "string"},
                "outer": {
                    "type": "object",
                    "properties": {"x": {"type": "integer"}},
                    "additionalProperties": false
                }
            },
            "additionalProperties": false
        });
        let body = json!({
            "name": "n", "surplus_a": 1, "surplus_b": 2,
            "outer": {"x": 1, "surplus": 3}
        });
        let mut found = entries(schema, body);
        found.sort_by_key(|(loc, _, _)| loc.to_string());
        assert_eq!(
            found,
            vec![
                extra(json!(["body", "outer", "surplus"])),
                extra(json!(["body", "surplus_a"])),
                extra(json!(["body", "surplus_b"])),
            ]
        );
    }

    #[test]
    fn unexpected_properties_beside_other_failures() {
        let schema = json!({
            "type": "object",
            "properties": {"n": {"type": "integer"}},
            "required": ["n", "m"],
            "patternProperties": {"^x-": {"type": "string"}},
            "additionalProperties": false
        });
        let mut found = entries(schema, json!({"n": "one", "x-ok": "a", "y": 1}));
        found.sort_by_key(|(loc, _, _)| loc.to_string());
        let kinds: Vec<(Value, &str)> = found
            .iter()
            .map(|(l, k, _)| (l.clone(), k.as_str()))
            .collect();
        assert_eq!(
            kinds,
            vec![
                (json!(["body", "m"]), "required"),
                (json!(["body", "n"]), "type"),
                (json!(["body", "y"]), "extra_forbidden"),
            ]
        );
    }

    #[test]
    fn an_object_that_allows_no_property_lists_them_all() {
        // No `properties`: jsonschema reports only the first property, as a false schema.
        let schema = json!({"type": "object", "additionalProperties": false});
        assert_eq!(
            entries(schema, json!({"a": 1, "b": {"c": 2}})),
            vec![extra(json!(["body", "a"])), extra(json!(["body", "b"]))]
        );
        let nested = json!({
            "type": "array",
            "items": {"type": "object", "additionalProperties": false}
        });
        assert_eq!(
            entries(nested, json!([{}, {"z": 1}])),
            vec![extra(json!(["body", 1, "z"]))]
        );
    }

    #[test]
    fn unevaluated_properties_are_listed_one_by_one() {
        let schema = json!({
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "type": "object",
            "properties": {"a": {}},
            "unevaluatedProperties": false
        });
        let mut found = entries(schema, json!({"a": 1, "b": 2, "c": 3}));
        found.sort_by_key(|(loc, _, _)| loc.to_string());
        assert_eq!(
            found,
            vec![extra(json!(["body", "b"])), extra(json!(["body", "c"]))]
        );
    }

    #[test]
    fn a_schema_for_additional_properties_still_locates_each_value() {
        let schema = json!({"type": "object", "additionalProperties": {"type": "integer"}});
        let found = entries(schema, json!({"a": 1, "b": "x", "c": "y"}));
        let locs: Vec<&Value> = found.iter().map(|(l, _, _)| l).collect();
        assert_eq!(locs, [&json!(["body", "b"]), &json!(["body", "c"])]);
        assert!(found.iter().all(|(_, k, _)| k == "type"), "{found:?}");
    }

    fn pattern_param(pattern: &str) -> Result<QueryParam, QueryParamError> {
        QueryParam::compile(
            "s",
            spec(json!({"type": "str", "required": true, "pattern": pattern})),
        )
    }

    #[test]
    fn patterns_are_judged_by_the_engine_that_runs_them() {
        // The same corpus drives the SDK's test: the SDK never refuses what passes here.
        let corpus: Value =
            serde_json::from_str(include_str!("../../../tests/data/query_patterns.json")).unwrap();
        for entry in corpus["patterns"].as_array().unwrap() {
            let pattern = entry["pattern"].as_str().unwrap();
            let accepts = entry["rust_accepts"].as_bool().unwrap();
            assert_eq!(pattern_param(pattern).is_ok(), accepts, "{entry}");
        }
    }

    #[test]
    fn a_pattern_error_carries_the_engine_message() {
        let err = pattern_param("(?=a)b").unwrap_err().to_string();
        assert!(err.contains("(?=a)b"), "{err}");
        assert!(err.contains("Rust's `regex` crate"), "{err}");
        assert!(err.contains("look-around"), "{err}");
    }

    #[test]
    fn patterns_are_searched_not_anchored() {
        let matches = |pattern: &str, value: &str| {
            let params = [pattern_param(pattern).unwrap()];
            validate_query(&params, &pairs(&[("s", value)])).is_ok()
        };
        assert!(matches("a", "ba"));
        assert!(!matches("^a", "ba"));
        assert!(matches("^a", "ab"));
        assert!(!matches("^a$", "ab"));
        // `$` is the very end: no newline before it is skipped, unlike Python's `re`.
        assert!(!matches("^a$", "a\n"));
        assert!(matches(r"^\p{L}+$", "Öl"));
    }
}
