//! Errors of the config file: each names the file, the key and what to fix.

use std::path::PathBuf;

/// A problem with the config file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("config file {}: cannot read it: {source}", file.display())]
    Read {
        /// The config file.
        file: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not valid TOML.
    #[error("config file {}: invalid TOML: {message}", file.display())]
    Syntax {
        /// The config file.
        file: PathBuf,
        /// The parser's message, with line and column.
        message: String,
    },
    /// A key is unknown, missing, of the wrong type or has an unusable value.
    #[error("config file {}: key `{key}`: {message}", file.display())]
    Invalid {
        /// The config file.
        file: PathBuf,
        /// Dotted path of the offending key, such as `server.listen`.
        key: String,
        /// What was wrong and what was expected.
        message: String,
    },
}
