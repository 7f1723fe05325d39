//! Configuration errors: what the command line reports when flags, the
//! environment or a TOML file do not make a valid configuration.
//!
//! Units (sizes, durations) are parsed in [`crate::units`]; [`cli`] turns
//! each role's flags into its typed config.

/// A configuration that could not be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// A flag or setting whose value is not acceptable.
    #[error("invalid {what} {value:?}: expected {expected}")]
    Invalid {
        what: &'static str,
        value: String,
        expected: &'static str,
    },
    /// A required setting is missing.
    #[error("missing {what}")]
    Missing { what: &'static str },
    /// A configuration file could not be read or parsed.
    #[error("config file {path}: {reason}")]
    File {
        path: std::path::PathBuf,
        reason: String,
    },
    /// TLS material could not be loaded.
    #[error("TLS: {0}")]
    Tls(String),
    /// The server list is malformed.
    #[error("server list: {0}")]
    Servers(String),
}
