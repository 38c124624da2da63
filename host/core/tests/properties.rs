//! Property tests of what the host does with untrusted input before any Python runs: routing,
//! query decoding, declared-parameter validation and JSON parsing, through the admission
//! functions the service runs.

use proptest::prelude::*;
use pyhost_core::probe::Probe;
use pyhost_core::{target, validation};
use serde_json::json;

fn decode_target(path: &str, query: &str) -> bool {
    target::decode_path(path).is_ok() && target::decode_query(query).is_ok()
}

fn decode_query(query: &str) -> Option<Vec<(String, String)>> {
    target::decode_query(query).ok()
}

fn parse_json(body: &[u8]) -> bool {
    validation::parse_json(body).is_ok()
}

/// `probe.check(method, path, query)`: the status of a request without headers or body.
trait Check {
    fn check(&self, method: &str, path: &str, query: &str) -> u16;
}

impl Check for Probe {
    fn check(&self, method: &str, path: &str, query: &str) -> u16 {
        let target = if query.is_empty() {
            path.to_owned()
        } else {
            format!("{path}?{query}")
        };
        self.status(method, &target, &[], b"")
    }
}

#[derive(Debug, Clone)]
enum Segment {
    Literal(String),
    Int,
    Str,
}

fn segment() -> impl Strategy<Value = Segment> {
    prop_oneof![
        "[a-z]{1,6}".prop_map(Segment::Literal),
        Just(Segment::Int),
        Just(Segment::Str),
    ]
}

fn table(template: &str, query: serde_json::Value) -> Probe {
    let specs = json!([{
        "methods": ["GET"], "path": template, "name": "m.handler",
        "is_async": true, "query": query, "body_schema": null
    }]);
    Probe::from_specs(&specs.to_string()).expect("valid specs")
}

/// Percent-encodes every byte outside the unreserved set.
fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'~' => (b as char).to_string(),
            other => format!("%{other:02X}"),
        })
        .collect()
}

proptest! {
    #[test]
    fn generated_paths_reach_their_route(
        segments in prop::collection::vec(segment(), 1..6),
        ints in prop::collection::vec(any::<i64>(), 6),
        strs in prop::collection::vec("[a-zA-Z0-9_~-]{1,8}", 6),
    ) {
        let mut template = String::new();
        let mut path = String::new();
        for (index, segment) in segments.iter().enumerate() {
            match segment {
                Segment::Literal(text) => {
                    template.push_str(&format!("/{text}"));
                    path.push_str(&format!("/{text}"));
                }
                Segment::Int => {
                    template.push_str(&format!("/{{p{index}:int}}"));
                    path.push_str(&format!("/{}", ints[index]));
                }
                Segment::Str => {
                    template.push_str(&format!("/{{p{index}}}"));
                    path.push_str(&format!("/{}", strs[index]));
                }
            }
        }
        let table = table(&template, json!({}));
        prop_assert_eq!(table.check("GET", &path, ""), 200);
        prop_assert_eq!(table.check("HEAD", &path, ""), 200);
        prop_assert_eq!(table.check("POST", &path, ""), 405);
        prop_assert_eq!(table.check("GET", &format!("{path}/extra/segments"), ""), 404);
    }

    #[test]
    fn query_pairs_round_trip_through_percent_encoding(
        pairs in prop::collection::vec(("\\PC{0,8}", "\\PC{0,8}"), 0..8),
    ) {
        let query: Vec<String> = pairs
            .iter()
            .map(|(key, value)| format!("{}={}", encode(key), encode(value)))
            .collect();
        let query = query.join("&");
        // Every pair encodes to at least "=", so none is dropped as empty.
        prop_assert_eq!(decode_query(&query), Some(pairs));
        prop_assert_eq!(table("/q", json!({})).check("GET", "/q", &query), 200);
    }

    #[test]
    fn declared_int_bounds_decide_the_status(
        low in -1000i64..1000,
        span in 0i64..1000,
        value in -3000i64..3000,
    ) {
        let high = low + span;
        let table = table(
            "/n",
            json!({"n": {"type": "int", "required": true, "ge": low, "le": high}}),
        );
        let expected = if (low..=high).contains(&value) { 200 } else { 422 };
        prop_assert_eq!(table.check("GET", "/n", &format!("n={value}")), expected);
    }

    #[test]
    fn untrusted_targets_and_bodies_never_panic(
        path in "\\PC{0,40}",
        query in "\\PC{0,40}",
        body in prop::collection::vec(any::<u8>(), 0..64),
    ) {
        let _ = decode_target(&path, &query);
        let _ = parse_json(&body);
        let table = table("/a/{x:int}/{rest:path}", json!({}));
        let status = table.check("GET", &format!("/{path}"), &query);
        prop_assert!([200, 400, 404, 422].contains(&status), "status {}", status);
    }
}

#[test]
fn dot_segments_and_bad_utf8_are_refused() {
    assert!(!decode_target("/a/../b", ""));
    assert!(!decode_target("/a/%2e%2e/b", ""));
    assert!(!decode_target("/a", "x=%ff"));
    assert!(decode_target("/a/b.c", "x=%C3%A9"));
}
