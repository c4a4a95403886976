//! Key material: volume keys, passphrases, derived keys.
//!
//! Every secret lives in a [`Secret`], which zeroizes its buffer on drop and
//! never shows its bytes in `Debug` output, so an error or a log line that
//! carries one by accident still leaks nothing.

use std::fmt;
use zeroize::{Zeroize, Zeroizing};

/// Bytes that must not outlive their use nor appear in any output.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(Zeroizing<Vec<u8>>);

impl Secret {
    /// Takes ownership of `bytes`; they are wiped when the secret drops.
    pub fn new(bytes: Vec<u8>) -> Self {
        Secret(Zeroizing::new(bytes))
    }

    /// A zero-filled secret of `len` bytes, to be filled in place.
    pub fn zeroed(len: usize) -> Self {
        Secret(Zeroizing::new(vec![0; len]))
    }

    /// Copies `bytes` (the caller wipes its own copy).
    pub fn from_slice(bytes: &[u8]) -> Self {
        Secret::new(bytes.to_vec())
    }

    /// `len` bytes from the operating system's CSPRNG.
    pub fn random(len: usize) -> Self {
        let mut s = Secret::zeroed(len);
        openssl::rand::rand_bytes(s.as_mut()).expect("OpenSSL CSPRNG failed");
        s
    }

    /// The bytes.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    /// Number of bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True if there are no bytes.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl AsMut<[u8]> for Secret {
    fn as_mut(&mut self) -> &mut [u8] {
        &mut self.0
    }
}

impl From<Vec<u8>> for Secret {
    fn from(mut v: Vec<u8>) -> Self {
        let s = Secret::from_slice(&v);
        v.zeroize();
        s
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret([REDACTED; {}])", self.0.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_bytes() {
        let s = Secret::from_slice(b"hunter2-very-secret");
        let shown = format!("{s:?} {:?}", Some(&s));
        assert!(!shown.contains("hunter2"));
        assert!(shown.contains("REDACTED; 19"));
    }

    #[test]
    fn random_is_random() {
        assert_ne!(Secret::random(32), Secret::random(32));
    }
}
