//! Fuzzes what the host does with untrusted request data before any Python runs: request
//! target decoding, routing with typed path segments, declared query validation, and JSON body
//! parsing. Input: `METHOD\nPATH\nQUERY\nBODY...`.

#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use pyhost::fuzzing::{FuzzTable, decode_query, decode_target, parse_json};

fn table() -> &'static FuzzTable {
    static TABLE: OnceLock<FuzzTable> = OnceLock::new();
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
             "is_async": true, "body_schema": null, "query": {}}
        ]);
        FuzzTable::from_specs(&specs.to_string()).expect("the fuzz table's specs are valid")
    })
}

fuzz_target!(|data: &[u8]| {
    let mut parts = data.splitn(4, |&b| b == b'\n');
    let method = String::from_utf8_lossy(parts.next().unwrap_or_default());
    let path = String::from_utf8_lossy(parts.next().unwrap_or_default());
    let query = String::from_utf8_lossy(parts.next().unwrap_or_default());
    let body = parts.next().unwrap_or_default();

    let decoded = decode_target(&path, &query);
    let status = table().check(&method, &path, &query);
    assert!(
        matches!(status, 200 | 400 | 404 | 405 | 422),
        "status {status}"
    );
    if !decoded {
        assert!(
            status == 400 || decode_query(&query).is_some(),
            "bad target got {status}"
        );
    }
    let _ = parse_json(body);
});
