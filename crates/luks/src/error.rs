//! The engine's error type.

use std::io;

use crate::crypto::CryptoError;

/// Broad class of an [`Error`], for exit codes and API mapping.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// No keyslot opens with the passphrase given.
    WrongPassphrase,
    /// Not a LUKS volume, or a header that fails its checks.
    InvalidHeader,
    /// A header feature this engine refuses to touch.
    Unsupported,
    /// Arguments that cannot work (slot out of range, no free slot, ...).
    InvalidArgument,
    /// A resource (keyslot, area) is not there.
    NotFound,
    /// Reading or writing the volume failed.
    Io,
    /// The crypto layer failed.
    Crypto,
}

/// An error from the LUKS engine. Never carries key material.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No keyslot (or not the one asked for) opens with the passphrase.
    #[error("no key available with this passphrase")]
    WrongPassphrase,
    /// The bytes are not a LUKS header this engine accepts.
    #[error("invalid LUKS header: {0}")]
    InvalidHeader(String),
    /// A feature this engine does not implement or refuses.
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// A request that cannot be met.
    #[error("{0}")]
    InvalidArgument(String),
    /// Something named does not exist.
    #[error("{0}")]
    NotFound(String),
    /// I/O on the volume failed.
    #[error("{op} at offset {offset}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// Where.
        offset: u64,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// Crypto failure.
    #[error(transparent)]
    Crypto(#[from] CryptoError),
}

impl Error {
    /// The class of this error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::WrongPassphrase => ErrorKind::WrongPassphrase,
            Error::InvalidHeader(_) => ErrorKind::InvalidHeader,
            Error::Unsupported(_) => ErrorKind::Unsupported,
            Error::InvalidArgument(_) => ErrorKind::InvalidArgument,
            Error::NotFound(_) => ErrorKind::NotFound,
            Error::Io { .. } => ErrorKind::Io,
            Error::Crypto(_) => ErrorKind::Crypto,
        }
    }

    pub(crate) fn io(op: &'static str, offset: u64) -> impl FnOnce(io::Error) -> Error {
        move |source| Error::Io { op, offset, source }
    }

    pub(crate) fn header(msg: impl Into<String>) -> Error {
        Error::InvalidHeader(msg.into())
    }
}

/// Result with the engine's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
