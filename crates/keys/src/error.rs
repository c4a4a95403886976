//! The one error type of this crate.
//!
//! Errors carry project and key ids (safe to log) and causes from the
//! transport or the database, never key bytes: no variant has a field that
//! could hold them, and Barbican error descriptions are scrubbed of the
//! payload before they get here.

use crate::types::{KeyId, Project};

/// What went wrong, coarsely, for callers that branch on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The key does not exist (or, in the embedded store, belongs to another
    /// project).
    NotFound,
    /// The key manager refused the caller (another project's Barbican secret,
    /// a rejected token, a policy).
    Forbidden,
    /// The key manager could not be reached or did not answer in time, or
    /// answered 5xx after every retry. Worth retrying later.
    Unavailable,
    /// The request or the configuration is invalid.
    Invalid,
    /// Anything else: corrupt or tampered data, unexpected answers, storage
    /// failures.
    Other,
}

/// An error from a key manager.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The key does not exist for this project.
    #[error("key {id} not found in project {project}")]
    NotFound {
        /// The project that asked.
        project: Project,
        /// The key asked for.
        id: KeyId,
    },
    /// The key manager refused the operation.
    #[error("{op} refused for project {project}: {detail}")]
    Forbidden {
        /// The operation, e.g. `"get key"`.
        op: &'static str,
        /// The project that asked.
        project: Project,
        /// What the key manager said.
        detail: String,
    },
    /// The key manager is down, slow or failing.
    #[error("key manager unavailable during {op}: {cause}")]
    Unavailable {
        /// The operation, e.g. `"get key"`.
        op: &'static str,
        /// Timeout, connection refused, HTTP 5xx..., and how many attempts.
        cause: String,
    },
    /// Bad input: an argument, a configuration value, a KEK.
    #[error("invalid {what}: {reason}")]
    Invalid {
        /// What was invalid, e.g. `"bit length"`.
        what: &'static str,
        /// Why.
        reason: String,
    },
    /// A stored key failed authentication: wrong KEK, a tampered row, or a
    /// row moved to another project or id.
    #[error(
        "key {id} of project {project} failed its integrity check (wrong KEK or tampered store)"
    )]
    Integrity {
        /// The project that asked.
        project: Project,
        /// The key.
        id: KeyId,
    },
    /// The embedded store's database or files failed.
    #[error("key store {op} failed: {cause}")]
    Storage {
        /// The operation.
        op: &'static str,
        /// The database or I/O error.
        cause: String,
    },
    /// Barbican or Vault answered something this client does not understand,
    /// or Barbican could not carry out an order.
    #[error("unexpected answer from the key manager during {op}: {cause}")]
    Protocol {
        /// The operation.
        op: &'static str,
        /// What was unexpected.
        cause: String,
    },
}

impl KeyError {
    /// The coarse kind of this error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            KeyError::NotFound { .. } => ErrorKind::NotFound,
            KeyError::Forbidden { .. } => ErrorKind::Forbidden,
            KeyError::Unavailable { .. } => ErrorKind::Unavailable,
            KeyError::Invalid { .. } => ErrorKind::Invalid,
            KeyError::Integrity { .. } | KeyError::Storage { .. } | KeyError::Protocol { .. } => {
                ErrorKind::Other
            }
        }
    }

    pub(crate) fn invalid(what: &'static str, reason: impl Into<String>) -> Self {
        KeyError::Invalid {
            what,
            reason: reason.into(),
        }
    }

    pub(crate) fn storage(op: &'static str, cause: impl std::fmt::Display) -> Self {
        KeyError::Storage {
            op,
            cause: cause.to_string(),
        }
    }
}
