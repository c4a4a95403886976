//! Cryptographic primitives LUKS is built from: hashes, KDFs, the
//! anti-forensic splitter and sector ciphers. Sans-IO: bytes in, bytes out.

pub mod af;
pub mod cipher;
pub mod hash;
pub mod kdf;
pub mod speed;

pub use cipher::{CipherSpec, SectorCipher, XtsImplementation};
pub use hash::HashAlg;
pub use kdf::{Argon2Variant, KdfParams};

/// What can go wrong below the LUKS format.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CryptoError {
    /// A cipher or mode string this engine does not implement.
    #[error("unsupported cipher {0:?}")]
    UnsupportedCipher(String),
    /// A hash name this engine does not implement.
    #[error("unsupported hash {0:?}")]
    UnsupportedHash(String),
    /// A key of the wrong size for the cipher.
    #[error("invalid key size {got} bytes for {cipher}")]
    InvalidKeySize {
        /// Cipher spec.
        cipher: String,
        /// Key size given, in bytes.
        got: usize,
    },
    /// A parameter out of range (buffer not a multiple of the sector size, ...).
    #[error("invalid parameter: {0}")]
    InvalidParameter(&'static str),
    /// The KDF needs more memory than it may use.
    #[error("KDF needs {needed_kib} KiB of memory, more than the {limit_kib} KiB allowed")]
    KdfMemory {
        /// Memory asked for.
        needed_kib: u64,
        /// Memory available.
        limit_kib: u64,
    },
    /// The crypto backend (OpenSSL, argon2) reported an error.
    #[error("crypto backend: {0}")]
    Backend(String),
}

impl From<openssl::error::ErrorStack> for CryptoError {
    fn from(e: openssl::error::ErrorStack) -> Self {
        CryptoError::Backend(e.to_string())
    }
}

/// Compares two byte strings in time independent of where they differ.
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    a.len() == b.len() && bool::from(a.ct_eq(b))
}
