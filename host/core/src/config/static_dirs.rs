//! `[static]`: URL prefixes served from directories, checked when the config is read.
//!
//! ```toml
//! [static]
//! "/assets" = "public"        # GET /assets/app.js serves public/app.js
//! ```
//!
//! A prefix starts with `/`, does not end with one, and is made of plain segments (no `.`,
//! `..`, empty segments, `%`, `{}`, `?`, `#` or `\`). `/` alone is refused: a mount owns every
//! path under its prefix, ahead of the routes, so a mount at `/` would hide them all. A
//! directory is resolved against the config file's directory, must exist, and is kept as its
//! canonical path (symlinks resolved), against which every served file is checked.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::error::ConfigError;

/// One `[static]` entry.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaticMount {
    /// The URL prefix, such as `/assets` (no trailing `/`).
    pub prefix: String,
    /// The directory, absolute and canonical.
    pub dir: PathBuf,
}

/// Checks the `[static]` table; the mounts come out longest prefix first, the order in which
/// a request path is matched against them.
pub(super) fn mounts(
    table: &BTreeMap<String, String>,
    base: &Path,
    invalid: &dyn Fn(&str, String) -> ConfigError,
) -> Result<Vec<StaticMount>, ConfigError> {
    let mut mounts = Vec::with_capacity(table.len());
    for (prefix, dir) in table {
        let key = format!("static.{prefix:?}");
        check_prefix(prefix).map_err(|message| invalid(&key, message))?;
        let resolved = if Path::new(dir).is_absolute() {
            PathBuf::from(dir)
        } else {
            base.join(dir)
        };
        if !resolved.is_dir() {
            return Err(invalid(
                &key,
                format!(
                    "expected a directory to serve, {} is not one",
                    resolved.display()
                ),
            ));
        }
        let dir = resolved.canonicalize().map_err(|err| {
            invalid(
                &key,
                format!("cannot resolve {}: {err}", resolved.display()),
            )
        })?;
        mounts.push(StaticMount {
            prefix: prefix.clone(),
            dir,
        });
    }
    mounts.sort_by_key(|mount| std::cmp::Reverse(mount.prefix.len()));
    Ok(mounts)
}

fn check_prefix(prefix: &str) -> Result<(), String> {
    let expected = || {
        format!(
            "expected a URL prefix such as \"/assets\" (starting with '/', not ending with '/', not '/' alone, made of plain path segments), got {prefix:?}"
        )
    };
    let Some(rest) = prefix.strip_prefix('/') else {
        return Err(expected());
    };
    if rest.is_empty()
        || rest
            .split('/')
            .any(|segment| segment.is_empty() || segment == "." || segment == "..")
        || prefix.contains(['%', '{', '}', '?', '#', '\\', '\0'])
        || prefix.chars().any(|c| c.is_ascii_control() || c == ' ')
    {
        return Err(expected());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_are_plain_paths() {
        for good in ["/a", "/assets", "/a/b-c_d.e"] {
            assert!(check_prefix(good).is_ok(), "{good}");
        }
        for bad in [
            "", "/", "a", "/a/", "//a", "/a//b", "/a/../b", "/./a", "/a%2e", "/{x}", "/a?b",
            "/a b", "/a\\b",
        ] {
            assert!(check_prefix(bad).is_err(), "{bad:?}");
        }
    }
}
