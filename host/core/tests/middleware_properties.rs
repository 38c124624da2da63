//! Property tests of the native middleware's parsers, which read headers any client controls:
//! `Accept-Encoding` negotiation, origin matching and `server.allowed_hosts`.

use http::header::{ACCEPT_ENCODING, ACCESS_CONTROL_ALLOW_ORIGIN};
use http::{HeaderMap, HeaderName, HeaderValue};
use proptest::prelude::*;
use pyhost_core::middleware::cors::{CorsOptions, CorsPolicy};
use pyhost_core::middleware::encoding::{Coding, negotiate};
use pyhost_core::middleware::hosts::AllowedHosts;

const OFFERED: [Coding; 3] = [Coding::Zstd, Coding::Brotli, Coding::Gzip];

fn accept(value: &str) -> Option<HeaderMap> {
    let mut headers = HeaderMap::new();
    headers.insert(ACCEPT_ENCODING, HeaderValue::from_str(value).ok()?);
    Some(headers)
}

/// One `Accept-Encoding` element: a name and maybe a q-value, well formed or not.
fn element() -> impl Strategy<Value = String> {
    let name = prop_oneof![
        Just("gzip"),
        Just("br"),
        Just("zstd"),
        Just("identity"),
        Just("*"),
        Just("deflate"),
        Just("x-gzip"),
    ];
    let q = prop_oneof![
        Just(String::new()),
        (0u16..=1000).prop_map(|q| format!(";q={}.{:03}", q / 1000, q % 1000)),
        "[ -~]{0,6}".prop_map(|junk| format!(";q={junk}")),
    ];
    (name, q).prop_map(|(name, q)| format!("{name}{q}"))
}

fn policy(origins: &[&str]) -> CorsPolicy {
    let origins: Vec<String> = origins.iter().map(|o| (*o).to_owned()).collect();
    CorsPolicy::new(CorsOptions {
        allow_origins: &origins,
        allow_methods: None,
        allow_headers: &[],
        expose_headers: &[],
        allow_credentials: true,
        max_age: None,
    })
    .expect("a valid test policy")
}

fn allow_origin(policy: &CorsPolicy, origin: &HeaderValue) -> Option<HeaderValue> {
    let mut headers: Vec<(HeaderName, HeaderValue)> = Vec::new();
    policy.apply(Some(origin), &mut headers);
    headers
        .into_iter()
        .find(|(name, _)| *name == ACCESS_CONTROL_ALLOW_ORIGIN)
        .map(|(_, value)| value)
}

proptest! {
    #[test]
    fn any_accept_encoding_yields_an_offered_coding_or_identity(value in "[ -~]{0,80}") {
        if let Some(headers) = accept(&value) {
            if let Some(coding) = negotiate(&headers, &OFFERED[..2]) {
                prop_assert!(OFFERED[..2].contains(&coding));
            }
        }
    }

    #[test]
    fn the_order_of_distinct_elements_does_not_matter(
        elements in proptest::collection::vec(element(), 0..6),
        seed in any::<u64>(),
    ) {
        // Each name once: with repeats the first mention counts, and order does matter.
        let mut seen = Vec::new();
        let unique: Vec<String> = elements
            .into_iter()
            .filter(|e| {
                let name = e.split(';').next().unwrap_or_default().to_owned();
                let gzip_alias = if name == "x-gzip" { "gzip".to_owned() } else { name.clone() };
                let fresh = !seen.contains(&gzip_alias);
                seen.push(gzip_alias);
                fresh
            })
            .collect();
        let mut shuffled = unique.clone();
        let len = shuffled.len();
        if len > 1 {
            shuffled.rotate_left(usize::try_from(seed % len as u64).unwrap_or(0));
            shuffled.swap(0, len - 1);
        }
        let a = accept(&unique.join(", "));
        let b = accept(&shuffled.join(", "));
        if let (Some(a), Some(b)) = (a, b) {
            prop_assert_eq!(negotiate(&a, &OFFERED), negotiate(&b, &OFFERED));
        }
    }

    #[test]
    fn a_coding_refused_with_q0_is_never_chosen(
        elements in proptest::collection::vec(element(), 0..6),
        refused in 0usize..3,
    ) {
        let coding = OFFERED[refused];
        let mut list = vec![format!("{};q=0", coding.token())];
        list.extend(elements);
        if let Some(headers) = accept(&list.join(",")) {
            prop_assert_ne!(negotiate(&headers, &OFFERED), Some(coding));
        }
    }

    #[test]
    fn only_matching_origins_are_echoed(origin in "[ -~]{0,60}") {
        let policy = policy(&["https://app.example.com", "https://*.example.org"]);
        if let Ok(value) = HeaderValue::from_str(&origin) {
            if let Some(allowed) = allow_origin(&policy, &value) {
                prop_assert_eq!(allowed, value);
                let lower = origin.to_ascii_lowercase();
                // The default port is the same origin (browsers never spell it).
                let lower = lower.strip_suffix(":443").unwrap_or(&lower);
                prop_assert!(
                    lower == "https://app.example.com" || lower.ends_with(".example.org"),
                    "{origin}"
                );
            }
        }
    }

    #[test]
    fn wildcard_origins_take_every_subdomain_and_no_lookalike(
        labels in proptest::collection::vec("[a-z0-9][a-z0-9-]{0,8}", 1..4),
        other in "[a-z]{1,8}",
    ) {
        let policy = policy(&["https://*.example.org"]);
        let sub = labels.join(".");
        let good = HeaderValue::from_str(&format!("https://{sub}.example.org")).unwrap();
        prop_assert!(allow_origin(&policy, &good).is_some(), "{:?}", good);
        for bad in [
            format!("https://{sub}.example.org.{other}"),
            format!("http://{sub}.example.org"),
            format!("https://{sub}example.org"),
            format!("https://{sub}.example.org:444"),
        ] {
            let bad = HeaderValue::from_str(&bad).unwrap();
            prop_assert!(allow_origin(&policy, &bad).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn allowed_hosts_match_below_the_wildcard_whatever_the_case_and_port(
        labels in proptest::collection::vec("[a-zA-Z0-9][a-zA-Z0-9-]{0,8}", 1..4),
        port in proptest::option::of(any::<u16>()),
        junk in "[ -~]{0,40}",
    ) {
        let entries = vec!["*.Example.com".to_owned(), "exact.test".to_owned()];
        let hosts = AllowedHosts::new(&entries).expect("valid entries");
        let port = port.map(|p| format!(":{p}")).unwrap_or_default();
        let sub = labels.join(".");
        let below = format!("{sub}.EXAMPLE.com{port}");
        prop_assert!(hosts.allows(&below), "{}", below);
        for lookalike in [
            format!("{sub}.example.com.evil{port}"),
            format!("{sub}example.com{port}"),
        ] {
            prop_assert!(!hosts.allows(&lookalike), "{}", lookalike);
        }
        // Arbitrary text never panics, and is allowed only when it names a listed host.
        if hosts.allows(&junk) {
            let host = junk.rsplit_once(':').map_or(junk.as_str(), |(h, _)| h);
            let host = host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase();
            prop_assert!(host == "exact.test" || host.ends_with(".example.com"), "{junk}");
        }
    }
}
