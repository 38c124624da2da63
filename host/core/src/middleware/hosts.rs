//! `server.allowed_hosts`: the host names this server answers to.
//!
//! DNS rebinding: a page on `evil.test` points its own name at 127.0.0.1 and then talks to a
//! server on the victim's machine as if it were same-origin. The browser still sends
//! `Host: evil.test`, so a server that knows its own names can refuse the request. The check
//! runs on the request's authority after [`crate::authority::settle`], so `Host` and HTTP/2's
//! `:authority` are held to the same list.
//!
//! Entries are exact names (`"api.example.com"`, `"127.0.0.1"`, `"[::1]"`), `"*.example.com"`
//! (any name below `example.com`, not `example.com` itself) or `"*"` (any). Matching ignores
//! ASCII case, the port and a trailing dot (`example.com.` is the same name).

/// Why an `allowed_hosts` entry is unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HostPatternError {
    /// The list is empty, which would refuse every request.
    #[error("expected at least one host name; leave the key out to allow any host")]
    Empty,
    /// An entry is not a host name, an IP address or a `*.` wildcard.
    #[error(
        "expected a host name such as \"example.com\", \"*.example.com\", \"127.0.0.1\" or \"[::1]\" (no scheme, port or path), got {0:?}"
    )]
    Invalid(String),
}

impl HostPatternError {
    /// The index of the offending entry, when one entry is at fault.
    pub fn index(&self, entries: &[String]) -> Option<usize> {
        match self {
            Self::Empty => None,
            Self::Invalid(entry) => entries.iter().position(|e| e == entry),
        }
    }
}

/// The checked `server.allowed_hosts` list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowedHosts {
    any: bool,
    /// Lower-case names without a trailing dot.
    exact: Vec<String>,
    /// Lower-case `.example.com` suffixes of the `*.` entries.
    suffixes: Vec<String>,
}

impl AllowedHosts {
    /// Checks the entries of `server.allowed_hosts`.
    pub fn new(entries: &[String]) -> Result<Self, HostPatternError> {
        if entries.is_empty() {
            return Err(HostPatternError::Empty);
        }
        let mut hosts = Self {
            any: false,
            exact: Vec::new(),
            suffixes: Vec::new(),
        };
        for entry in entries {
            let invalid = || HostPatternError::Invalid(entry.clone());
            if entry == "*" {
                hosts.any = true;
                continue;
            }
            let (wildcard, name) = match entry.strip_prefix("*.") {
                Some(rest) => (true, rest),
                None => (false, entry.as_str()),
            };
            let name = name.strip_suffix('.').unwrap_or(name);
            if !is_host_name(name) || (wildcard && name.starts_with('[')) {
                return Err(invalid());
            }
            let name = name.to_ascii_lowercase();
            if wildcard {
                hosts.suffixes.push(format!(".{name}"));
            } else {
                hosts.exact.push(name);
            }
        }
        Ok(hosts)
    }

    /// Whether a request whose authority is `authority` (`host[:port]`) may be served.
    pub fn allows(&self, authority: &str) -> bool {
        if self.any {
            return true;
        }
        let host = strip_port(authority);
        let host = host.strip_suffix('.').unwrap_or(host);
        if host.is_empty() {
            return false;
        }
        self.exact
            .iter()
            .any(|name| name.eq_ignore_ascii_case(host))
            || self.suffixes.iter().any(|suffix| {
                host.len() > suffix.len()
                    && host.is_char_boundary(host.len() - suffix.len())
                    && host[host.len() - suffix.len()..].eq_ignore_ascii_case(suffix)
            })
    }
}

/// The host part of `host[:port]` (an IPv6 literal keeps its brackets).
fn strip_port(authority: &str) -> &str {
    if authority.starts_with('[') {
        return match authority.find(']') {
            Some(end) => &authority[..=end],
            None => authority,
        };
    }
    match authority.rsplit_once(':') {
        Some((host, _port)) => host,
        None => authority,
    }
}

/// A DNS name or IPv4 address (letters, digits, `-`, `_`, dots between non-empty labels), or
/// a bracketed IPv6 literal.
fn is_host_name(name: &str) -> bool {
    if let Some(inner) = name.strip_prefix('[').and_then(|n| n.strip_suffix(']')) {
        return inner.parse::<std::net::Ipv6Addr>().is_ok();
    }
    !name.is_empty()
        && name.split('.').all(|label| {
            !label.is_empty()
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hosts(entries: &[&str]) -> AllowedHosts {
        let entries: Vec<String> = entries.iter().map(|e| (*e).to_owned()).collect();
        AllowedHosts::new(&entries).expect("valid test entries")
    }

    #[test]
    fn exact_names_ignore_case_port_and_trailing_dot() {
        let allowed = hosts(&["api.example.com", "127.0.0.1", "[::1]", "Local.Test."]);
        for host in [
            "api.example.com",
            "API.Example.COM:8443",
            "api.example.com.",
            "api.example.com.:80",
            "127.0.0.1:8000",
            "[::1]:9",
            "[::1]",
            "local.test",
        ] {
            assert!(allowed.allows(host), "{host}");
        }
        for host in [
            "example.com",
            "xapi.example.com",
            "api.example.com.evil.test",
            "127.0.0.2",
            "[::2]",
            "",
            ":80",
        ] {
            assert!(!allowed.allows(host), "{host}");
        }
    }

    #[test]
    fn a_wildcard_takes_every_name_below_it_not_itself() {
        let allowed = hosts(&["*.example.com"]);
        assert!(allowed.allows("a.example.com"));
        assert!(allowed.allows("a.b.example.com:80"));
        assert!(allowed.allows("A.EXAMPLE.COM"));
        assert!(!allowed.allows("example.com"));
        assert!(!allowed.allows(".example.com"));
        assert!(!allowed.allows("badexample.com"));
        assert!(!allowed.allows("example.com.evil.test"));
    }

    #[test]
    fn a_star_takes_any_host() {
        assert!(hosts(&["*"]).allows("whatever.test:1"));
    }

    #[test]
    fn bad_entries_are_refused() {
        for entry in [
            "",
            "http://example.com",
            "example.com:80",
            "example.com/",
            "*example.com",
            "a.*.example.com",
            "*.",
            "*.[::1]",
            "a..b",
            "[::zz]",
            "exa mple.com",
        ] {
            let entries = vec![entry.to_owned()];
            assert_eq!(
                AllowedHosts::new(&entries),
                Err(HostPatternError::Invalid(entry.to_owned())),
                "{entry:?}"
            );
        }
        assert_eq!(AllowedHosts::new(&[]), Err(HostPatternError::Empty));
    }
}
