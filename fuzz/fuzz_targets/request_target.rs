//! Fuzzes what the host does with untrusted request data before any Python runs: head limits,
//! request-target decoding, routing with typed path segments, declared query validation, and
//! JSON body parsing and schema checks, through the admission functions the service runs.
//! Input: `METHOD\nTARGET\nHEADER: VALUE\n...\n\nBODY...`.

#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use pyhost_core::probe::Probe;

fn table() -> &'static Probe {
    static TABLE: OnceLock<Probe> = OnceLock::new();
    TABLE.get_or_init(|| {
        let specs = serde_json::json!([
            {"methods": ["GET", "POST"], "path": "/users/{id:int}", "name": "m.user",
             "is_async": true, "body_schema": null,
             "query": {"limit": {"type": "int", "required": false, "default": 10, "ge": 1, "le": 100},
                       "tag": {"type": "str", "required": false, "multiple": true, "max_length": 8,
                               "pattern": "^[a-z]+$"}}},
            {"methods": ["GET"], "path": "/users/me", "name": "m.me", "is_async": true,
             "body_schema": null, "query": {}},
            {"methods": ["GET"], "path": "/items/{key:uuid}/{score:float}", "name": "m.item",
             "is_async": false, "body_schema": null,
             "query": {"flag": {"type": "bool", "required": true},
                       "order": {"type": "str", "required": false, "choices": ["asc", "desc"]}}},
            {"methods": ["DELETE"], "path": "/files/{rest:path}", "name": "m.files",
             "is_async": true, "body_schema": null, "query": {}},
            {"methods": ["POST"], "path": "/people/me", "name": "m.new", "is_async": true,
             "query": {},
             "body_schema": {"type": "object", "additionalProperties": false,
                             "required": ["name"],
                             "properties": {"name": {"type": "string", "maxLength": 20},
                                            "age": {"type": "integer", "minimum": 0}}}}
        ]);
        Probe::from_specs(&specs.to_string()).expect("the fuzz table's specs are valid")
    })
}

fuzz_target!(|data: &[u8]| {
    let (head, body) = match data.windows(2).position(|w| w == b"\n\n") {
        Some(at) => (&data[..at], &data[at + 2..]),
        None => (data, &[][..]),
    };
    let head = String::from_utf8_lossy(head);
    let mut lines = head.split('\n');
    let method = lines.next().unwrap_or_default();
    let target = lines.next().unwrap_or_default();
    let headers: Vec<(&str, &str)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim(), value.trim()))
        .collect();
    let status = table().status(method, target, &headers, body);
    assert!(
        matches!(status, 200 | 400 | 404 | 405 | 413 | 414 | 415 | 422 | 431),
        "status {status}"
    );
});
