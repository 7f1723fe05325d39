//! Why an upstream request or connection failed.

use std::time::Duration;

/// Why an upstream request or connection failed. The kind is a metric label.
#[derive(Debug, Clone, thiserror::Error)]
pub enum UpstreamError {
    #[error("connect to {node}: {reason}")]
    Connect {
        node: String,
        reason: String,
        /// Nothing listens there (the node's process is not running).
        refused: bool,
    },
    #[error("TLS with {node}: {reason}")]
    Tls { node: String, reason: String },
    #[error("login to {node} refused: {reason}")]
    Auth { node: String, reason: String },
    #[error("{node} did not answer within {timeout:?}")]
    Timeout { node: String, timeout: Duration },
    #[error("connection to {node} lost: {reason}")]
    Io { node: String, reason: String },
    #[error("{node} sent a reply that does not match the request in flight")]
    Protocol { node: String },
    #[error("{node} is down")]
    Down { node: String },
    /// What the upstream protocol cannot carry (a meta flag in front of a
    /// binary-only node, say), named for the client's `CLIENT_ERROR`.
    #[error("{0} not supported by the upstream protocol")]
    Unsupported(&'static str),
    /// A command the sidecar does not send to any node, because its reply
    /// could not be matched to it (`stats detail dump`, say).
    #[error("{0} not supported through memgate proxy")]
    NotCarried(&'static str),
}

impl UpstreamError {
    /// Every `kind()`, for exporting each error series at 0 from start-up.
    pub const KINDS: &'static [&'static str] = &[
        "connect",
        "tls",
        "auth",
        "timeout",
        "io",
        "protocol",
        "down",
        "unsupported",
    ];

    /// Whether this failure says something about the node's health. A lost
    /// connection is retried on a fresh one; a refused command or a node
    /// already down is no new evidence.
    pub fn counts_against_health(&self) -> bool {
        !matches!(
            self,
            UpstreamError::Io { .. }
                | UpstreamError::Unsupported(_)
                | UpstreamError::NotCarried(_)
                | UpstreamError::Down { .. }
        )
    }

    /// Whether this failure alone shows the node cannot serve: nothing
    /// listens, its certificate is refused, or it refused our login. Such a
    /// node is marked down at once (and probed); a timeout or a reset only
    /// counts towards the failure limit, since one slow moment is no outage.
    pub fn is_definitive(&self) -> bool {
        matches!(
            self,
            UpstreamError::Connect { refused: true, .. }
                | UpstreamError::Tls { .. }
                | UpstreamError::Auth { .. }
        )
    }

    /// The node it happened on ("" when not known here).
    pub fn node(&self) -> &str {
        match self {
            UpstreamError::Connect { node, .. }
            | UpstreamError::Tls { node, .. }
            | UpstreamError::Auth { node, .. }
            | UpstreamError::Timeout { node, .. }
            | UpstreamError::Io { node, .. }
            | UpstreamError::Protocol { node }
            | UpstreamError::Down { node } => node,
            UpstreamError::Unsupported(_) | UpstreamError::NotCarried(_) => "",
        }
    }

    /// The same error, naming `node` if it did not say which.
    pub fn on(mut self, name: &str) -> UpstreamError {
        if let UpstreamError::Io { node, .. } = &mut self {
            if node.is_empty() {
                name.clone_into(node);
            }
        }
        self
    }

    /// A bounded label for metrics and state-change logs.
    pub fn kind(&self) -> &'static str {
        match self {
            UpstreamError::Connect { .. } => "connect",
            UpstreamError::Tls { .. } => "tls",
            UpstreamError::Auth { .. } => "auth",
            UpstreamError::Timeout { .. } => "timeout",
            UpstreamError::Io { .. } => "io",
            UpstreamError::Protocol { .. } => "protocol",
            UpstreamError::Down { .. } => "down",
            UpstreamError::Unsupported(_) | UpstreamError::NotCarried(_) => "unsupported",
        }
    }
}

/// The error of a request whose connection went away under it; the reader
/// names the node when it knows it (`UpstreamError::on`).
pub(super) fn lost_error() -> UpstreamError {
    UpstreamError::Io {
        node: String::new(),
        reason: "connection closed".into(),
    }
}
