//! The `[static]` mounts: which requests they take, and which file a request path names.
//!
//! A request whose path is a mount's prefix or under it (`/assets`, `/assets/…`) is the
//! mount's, whatever the routes say: it is answered here, in Rust, before any routing or
//! Python dispatch, and a route under a mounted prefix is never reached (the host warns about
//! such routes at start). Longest prefix first, so `/assets/img` can be mounted apart from
//! `/assets`. `OPTIONS` is left to admission (a CORS preflight is answered on any path). Only
//! `GET` and `HEAD` are served (else 405); the answer is
//! [`super::file`]'s, with the same validators, preconditions and ranges as a `FileResponse`.
//!
//! Why not tower-http's `ServeDir`: it has no `ETag` (so no `If-None-Match` and no `If-Range`
//! by tag), its own range and precondition code would answer differently from
//! `FileResponse`'s, and its path checks would be a second set to keep in line with ours.
//! Sharing [`super::file`] gives both one behaviour and one set of tests.
//!
//! What a path may name, checked segment by segment after percent-decoding each one (so an
//! encoded separator stays inside its segment and is refused there, rather than decoded into
//! one): no `.` or `..` segment, no `/`, `\` or NUL inside a segment, no empty segment, and no
//! name starting with `.` (dotfiles such as `.env` or `.git/` are not served: 404). The file is
//! then resolved with every symlink followed (`canonicalize`, on the blocking pool) and must
//! lie inside the mount's directory, itself canonical since start-up: a symlink inside the
//! directory pointing out of it is 404, one pointing elsewhere inside is followed. (A process
//! able to swap a checked directory for a symlink between the check and the open could race
//! it; that needs write access to the served directory.) A directory is answered with its
//! `index.html` when the path ends with `/`; without the `/` and with an `index.html`, a 308
//! redirect adds it (so the page's relative links work); otherwise 404. No listings.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use http::header::{ALLOW, LOCATION};
use http::{HeaderValue, StatusCode};
use percent_encoding::percent_decode_str;
use pyhost_core::config::StaticMount;
use pyhost_core::reply::Reply;
use pyhost_core::routing::RouteTable;

use super::file::{self, Conditions, FileBody, FileError, FileRequest, Method, Opened};

const INDEX: &str = "index.html";

/// The configured mounts, longest prefix first.
pub(crate) struct StaticFiles {
    mounts: Vec<Mount>,
}

struct Mount {
    prefix: Box<str>,
    root: Arc<Path>,
}

/// A request a mount takes: what serving it needs, owned, so the service's future can hold
/// it.
pub(crate) struct StaticRequest {
    root: Arc<Path>,
    /// The path after the prefix, still percent-encoded (empty or starting with `/`).
    rest: String,
    /// The whole request path, for a redirect.
    path: String,
    query: Option<String>,
    method: http::Method,
    conditions: Conditions,
}

impl StaticFiles {
    /// The mounts of the config; `None` without any (the service then pays one branch).
    pub(crate) fn new(mounts: &[StaticMount]) -> Option<Self> {
        (!mounts.is_empty()).then(|| Self {
            mounts: mounts
                .iter()
                .map(|mount| Mount {
                    prefix: mount.prefix.clone().into_boxed_str(),
                    root: Arc::from(mount.dir.as_path()),
                })
                .collect(),
        })
    }

    /// Logs a warning for each route under a mount: the mount answers its paths, so the
    /// route (or, for a template, its paths under the prefix) is never reached.
    pub(crate) fn warn_shadowed(&self, routes: &RouteTable) {
        for route in routes.routes() {
            let literal = route.template.split('{').next().unwrap_or_default();
            if let Some(prefix) = self.prefix_of(literal) {
                tracing::warn!(
                    "route {} {} ({}) is under the [static] mount {prefix}, which answers its paths first: the route is not reached there",
                    route.method,
                    route.template,
                    route.handler_name,
                );
            }
        }
    }

    /// The prefix of the mount that takes `path`, if any.
    pub(crate) fn prefix_of(&self, path: &str) -> Option<&str> {
        self.mount_of(path).map(|mount| &*mount.prefix)
    }

    fn mount_of(&self, path: &str) -> Option<&Mount> {
        self.mounts.iter().find(|mount| {
            path.strip_prefix(&*mount.prefix)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
        })
    }

    /// The request, when a mount takes it.
    pub(crate) fn take(&self, parts: &http::request::Parts) -> Option<StaticRequest> {
        let path = parts.uri.path();
        let mount = self.mount_of(path)?;
        Some(StaticRequest {
            root: mount.root.clone(),
            rest: path[mount.prefix.len()..].to_owned(),
            path: path.to_owned(),
            query: parts.uri.query().map(str::to_owned),
            method: parts.method.clone(),
            conditions: Conditions::from_headers(&parts.headers),
        })
    }
}

/// Why a path names no file of the mount.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
enum Refused {
    /// A segment that could step out of the directory or hide a separator: 400.
    #[error("the path has a '.' or '..' segment, an empty one, or an encoded '/', '\\' or NUL")]
    Malformed,
    /// A name starting with `.`: not served (404).
    #[error("hidden file")]
    Hidden,
}

/// The path under the mount's directory that `rest` (percent-encoded) names, and whether it
/// ended with `/`.
fn relative_path(rest: &str) -> Result<(PathBuf, bool), Refused> {
    // The prefix alone (`/assets`) names the directory without its `/`.
    let slash = rest.ends_with('/');
    let trimmed = rest.strip_prefix('/').unwrap_or(rest);
    let trimmed = trimmed.strip_suffix('/').unwrap_or(trimmed);
    let mut relative = PathBuf::new();
    if trimmed.is_empty() {
        return Ok((relative, slash));
    }
    for raw in trimmed.split('/') {
        let segment: Vec<u8> = percent_decode_str(raw).collect();
        if segment.is_empty()
            || segment == b"."
            || segment == b".."
            || segment.iter().any(|&b| b == b'/' || b == b'\\' || b == 0)
        {
            return Err(Refused::Malformed);
        }
        if segment.starts_with(b".") {
            return Err(Refused::Hidden);
        }
        relative.push(OsStr::from_bytes(&segment));
    }
    Ok((relative, slash))
}

/// What a path names in a mount.
enum Found {
    File(Opened, PathBuf),
    /// A directory with an index, named without its trailing `/`.
    Redirect,
    Missing,
}

/// Resolves and opens the file; blocking, for the blocking pool.
fn find_blocking(root: &Path, relative: &Path, slash: bool) -> Result<Found, FileError> {
    let Some(target) = inside(root, &root.join(relative)) else {
        return Ok(Found::Missing);
    };
    let Ok(meta) = std::fs::metadata(&target) else {
        return Ok(Found::Missing);
    };
    let file = if meta.is_dir() {
        let Some(index) = inside(root, &target.join(INDEX)).filter(|index| index.is_file()) else {
            return Ok(Found::Missing);
        };
        if !slash {
            return Ok(Found::Redirect);
        }
        index
    } else if slash {
        // `/assets/app.js/` names a directory that is not one.
        return Ok(Found::Missing);
    } else {
        target
    };
    match Opened::open_blocking(&file) {
        Ok(opened) => Ok(Found::File(opened, file)),
        Err(FileError::NotFound(_) | FileError::NotAFile(_)) => Ok(Found::Missing),
        Err(err) => Err(err),
    }
}

/// `path` with every symlink resolved, if it exists and lies inside `root` (canonical).
fn inside(root: &Path, path: &Path) -> Option<PathBuf> {
    path.canonicalize()
        .ok()
        .filter(|real| real.starts_with(root))
}

/// Answers a request a mount took.
pub(crate) async fn serve(request: StaticRequest) -> (Reply, Option<FileBody>) {
    let method = Method::of(&request.method);
    if method == Method::Other {
        let mut reply = Reply::detail(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed");
        reply
            .headers
            .push((ALLOW, HeaderValue::from_static("GET, HEAD")));
        return (reply, None);
    }
    let (relative, slash) = match relative_path(&request.rest) {
        Ok(found) => found,
        Err(Refused::Malformed) => {
            return (
                Reply::detail(StatusCode::BAD_REQUEST, Refused::Malformed.to_string()),
                None,
            );
        }
        Err(Refused::Hidden) => return (not_found(), None),
    };
    let root = request.root.clone();
    let found = tokio::task::spawn_blocking(move || find_blocking(&root, &relative, slash)).await;
    match found {
        Ok(Ok(Found::File(opened, path))) => file::answer(
            opened,
            &FileRequest {
                path,
                status: StatusCode::OK,
                headers: Vec::new(),
                media_type: None,
                guess_from: None,
                conditions: request.conditions,
                method,
            },
        ),
        Ok(Ok(Found::Redirect)) => {
            let mut location = format!("{}/", request.path);
            if let Some(query) = &request.query {
                location.push('?');
                location.push_str(query);
            }
            let mut reply = Reply::empty(StatusCode::PERMANENT_REDIRECT);
            if let Ok(value) = HeaderValue::from_str(&location) {
                reply.headers.push((LOCATION, value));
            }
            (reply, None)
        }
        Ok(Ok(Found::Missing)) => (not_found(), None),
        Ok(Err(err)) => {
            tracing::error!("static file: {err}");
            (err.reply(), None)
        }
        Err(_) => (FileError::Lost.reply(), None),
    }
}

fn not_found() -> Reply {
    Reply::detail(StatusCode::NOT_FOUND, "Not Found")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_checked_segment_by_segment() {
        let ok =
            |rest: &str| relative_path(rest).map(|(p, s)| (p.to_string_lossy().into_owned(), s));
        assert_eq!(ok(""), Ok((String::new(), false)));
        assert_eq!(ok("/"), Ok((String::new(), true)));
        assert_eq!(ok("/a/b.txt"), Ok(("a/b.txt".to_owned(), false)));
        assert_eq!(ok("/a/"), Ok(("a".to_owned(), true)));
        assert_eq!(ok("/caf%C3%A9.txt"), Ok(("café.txt".to_owned(), false)));
        assert_eq!(ok("/a%20b"), Ok(("a b".to_owned(), false)));
        for malformed in [
            "/..",
            "/../x",
            "/a/../../x",
            "/%2e%2e/x",
            "/%2E%2e/x",
            "/.%2e/x",
            "/a/%2e",
            "/./a",
            "/a%2f..%2fb",
            "/..%2fx",
            "/a%5c..%5cx",
            "/a\\..\\x",
            "/a%00b",
            "//a",
            "/a//b",
        ] {
            assert_eq!(
                relative_path(malformed),
                Err(Refused::Malformed),
                "{malformed}"
            );
        }
        for hidden in ["/.env", "/a/.git/config", "/%2eenv"] {
            assert_eq!(relative_path(hidden), Err(Refused::Hidden), "{hidden}");
        }
    }

    #[test]
    fn a_mount_takes_its_prefix_and_what_is_under_it() {
        let mount = |prefix: &str| Mount {
            prefix: prefix.into(),
            root: Arc::from(Path::new("/tmp")),
        };
        // Longest first, as the config gives them.
        let files = StaticFiles {
            mounts: vec![mount("/assets/img"), mount("/assets")],
        };
        assert_eq!(files.prefix_of("/assets"), Some("/assets"));
        assert_eq!(files.prefix_of("/assets/app.js"), Some("/assets"));
        assert_eq!(files.prefix_of("/assets/img/a.png"), Some("/assets/img"));
        assert_eq!(files.prefix_of("/assetsx"), None);
        assert_eq!(files.prefix_of("/"), None);
    }
}
