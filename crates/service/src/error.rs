//! The service's one error type. Domain code knows nothing of HTTP; the API
//! maps each kind onto a Cinder status code and body in one place
//! (`api::error`).

/// What went wrong, coarsely, for the API mapping and for callers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// Bad input: a malformed body, an invalid value, an operation the
    /// resource's state does not allow.
    Invalid,
    /// The resource does not exist for this caller.
    NotFound,
    /// The caller may not do this.
    Forbidden,
    /// A limit (size, quota) would be exceeded.
    OverLimit,
    /// The resource exists already (a duplicate name where names are unique).
    Conflict,
    /// A dependency (key manager, storage) is down; worth retrying.
    Unavailable,
    /// Anything else: a bug or a broken store.
    Internal,
}

/// An error from the service's domain layer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServiceError {
    /// Bad input or a state that forbids the operation.
    #[error("{0}")]
    Invalid(String),
    /// No such resource (for this project).
    #[error("{what} {id} could not be found.")]
    NotFound {
        /// `"Volume"`, `"Volume type"`, ...
        what: &'static str,
        /// The id asked for.
        id: String,
    },
    /// Not allowed.
    #[error("{0}")]
    Forbidden(String),
    /// A limit would be exceeded.
    #[error("{0}")]
    OverLimit(String),
    /// Already exists.
    #[error("{0}")]
    Conflict(String),
    /// The key manager failed.
    #[error("key manager: {0}")]
    Keys(#[from] rekey_keys::KeyError),
    /// The storage backend failed.
    #[error("storage: {0}")]
    Storage(#[from] rekey_storage::Error),
    /// The LUKS engine failed.
    #[error("LUKS: {0}")]
    Luks(#[from] rekey_luks::Error),
    /// The database failed.
    #[error("database {op}: {cause}")]
    Db {
        /// What was being done.
        op: &'static str,
        /// The driver's message.
        cause: String,
    },
    /// Configuration or startup problem.
    #[error("configuration: {0}")]
    Config(String),
    /// A part of this node cannot serve now (the NBD listener could not bind).
    #[error("{0}")]
    Unavailable(String),
    /// A background task died (panicked or was cancelled).
    #[error("internal: {0}")]
    Internal(String),
}

impl ServiceError {
    /// The coarse kind.
    pub fn kind(&self) -> ErrorKind {
        use rekey_keys::ErrorKind as K;
        use rekey_storage::ErrorKind as S;
        match self {
            ServiceError::Invalid(_) | ServiceError::Config(_) => ErrorKind::Invalid,
            ServiceError::NotFound { .. } => ErrorKind::NotFound,
            ServiceError::Forbidden(_) => ErrorKind::Forbidden,
            ServiceError::OverLimit(_) => ErrorKind::OverLimit,
            ServiceError::Conflict(_) => ErrorKind::Conflict,
            ServiceError::Unavailable(_) => ErrorKind::Unavailable,
            ServiceError::Keys(e) => match e.kind() {
                K::Unavailable => ErrorKind::Unavailable,
                K::Invalid => ErrorKind::Invalid,
                _ => ErrorKind::Internal,
            },
            ServiceError::Storage(e) => match e.kind() {
                S::Unavailable => ErrorKind::Unavailable,
                S::Busy => ErrorKind::Invalid,
                _ => ErrorKind::Internal,
            },
            ServiceError::Luks(_) | ServiceError::Db { .. } | ServiceError::Internal(_) => ErrorKind::Internal,
        }
    }

    pub(crate) fn invalid(msg: impl Into<String>) -> Self {
        ServiceError::Invalid(msg.into())
    }

    pub(crate) fn not_found(what: &'static str, id: impl Into<String>) -> Self {
        ServiceError::NotFound { what, id: id.into() }
    }
}

/// Maps a sqlx error into [`ServiceError::Db`] for operation `op`.
pub(crate) fn db(op: &'static str) -> impl Fn(sqlx::Error) -> ServiceError {
    move |e| ServiceError::Db { op, cause: e.to_string() }
}

/// Result alias.
pub type Result<T, E = ServiceError> = std::result::Result<T, E>;
