//! The crate's one error type: a kind callers branch on, plus context for logs.

use std::fmt;
use std::io;

/// What went wrong, coarse enough for the service to map onto API answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The volume or snapshot does not exist.
    NotFound,
    /// A volume or snapshot with that id already exists.
    AlreadyExists,
    /// Bad id, size or configuration.
    InvalidArgument,
    /// The object is in use: it has snapshots, or a clone is reading it.
    Busy,
    /// The storage cluster cannot be reached (within the configured timeout).
    Unavailable,
    /// This build or this storage cannot do what was asked (e.g. RBD without
    /// the `rbd` cargo feature).
    Unsupported,
    /// Any other failure of the underlying storage.
    Io,
}

impl ErrorKind {
    fn as_str(self) -> &'static str {
        match self {
            ErrorKind::NotFound => "not found",
            ErrorKind::AlreadyExists => "already exists",
            ErrorKind::InvalidArgument => "invalid argument",
            ErrorKind::Busy => "busy",
            ErrorKind::Unavailable => "storage unavailable",
            ErrorKind::Unsupported => "unsupported",
            ErrorKind::Io => "I/O error",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where an error happened: which backend, which operation, on what.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Context {
    /// `"file"` or `"rbd"`.
    pub backend: Option<&'static str>,
    /// The backend operation, e.g. `"clone_volume"`.
    pub op: Option<&'static str>,
    /// The volume or snapshot id the operation was about.
    pub id: Option<String>,
}

/// A storage error: kind, a human message, the context and the OS cause.
#[derive(Debug)]
#[non_exhaustive]
pub struct Error {
    kind: ErrorKind,
    message: String,
    context: Context,
    source: Option<io::Error>,
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source.as_ref().map(|e| e as _)
    }
}

/// Shorthand for results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// A new error of `kind` with a message saying what happened.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error { kind, message: message.into(), context: Context::default(), source: None }
    }

    /// An error caused by an OS error; the kind follows the OS error where it
    /// maps (not found, exists, no space is `Io`).
    pub fn io(message: impl Into<String>, source: io::Error) -> Self {
        let kind = match source.kind() {
            io::ErrorKind::NotFound => ErrorKind::NotFound,
            io::ErrorKind::AlreadyExists => ErrorKind::AlreadyExists,
            io::ErrorKind::InvalidInput => ErrorKind::InvalidArgument,
            io::ErrorKind::ResourceBusy => ErrorKind::Busy,
            io::ErrorKind::TimedOut
            | io::ErrorKind::ConnectionRefused
            | io::ErrorKind::NotConnected => ErrorKind::Unavailable,
            _ => ErrorKind::Io,
        };
        Error { kind, message: message.into(), context: Context::default(), source: Some(source) }
    }

    /// Replaces the kind (the message and cause stay).
    pub fn with_kind(mut self, kind: ErrorKind) -> Self {
        self.kind = kind;
        self
    }

    /// Fills in the context fields that are not set yet, so the innermost
    /// (most precise) context wins.
    pub fn context(mut self, backend: &'static str, op: &'static str, id: &str) -> Self {
        self.context.backend.get_or_insert(backend);
        self.context.op.get_or_insert(op);
        if self.context.id.is_none() && !id.is_empty() {
            self.context.id = Some(id.to_owned());
        }
        self
    }

    /// What kind of failure this is.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The human-readable message, without context.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// Backend, operation and id, where known.
    pub fn context_info(&self) -> &Context {
        &self.context
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(b) = self.context.backend {
            write!(f, "{b} backend: ")?;
        }
        if let Some(op) = self.context.op {
            write!(f, "{op}")?;
            if let Some(id) = &self.context.id {
                write!(f, " {id}")?;
            }
            f.write_str(": ")?;
        }
        write!(f, "{}: {}", self.kind, self.message)?;
        if let Some(src) = &self.source {
            write!(f, ": {src}")?;
        }
        Ok(())
    }
}

impl From<Error> for io::Error {
    fn from(e: Error) -> io::Error {
        let kind = match e.kind {
            ErrorKind::NotFound => io::ErrorKind::NotFound,
            ErrorKind::AlreadyExists => io::ErrorKind::AlreadyExists,
            ErrorKind::InvalidArgument => io::ErrorKind::InvalidInput,
            ErrorKind::Busy => io::ErrorKind::ResourceBusy,
            ErrorKind::Unavailable => io::ErrorKind::TimedOut,
            ErrorKind::Unsupported => io::ErrorKind::Unsupported,
            _ => io::ErrorKind::Other,
        };
        io::Error::new(kind, e)
    }
}
