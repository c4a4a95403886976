//! Hash algorithms named in LUKS headers.

use openssl::hash::{Hasher, MessageDigest};

use super::CryptoError;

/// A hash usable for PBKDF2, the AF splitter and ESSIV.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum HashAlg {
    /// SHA-1 (LUKS1 default before cryptsetup 1.7).
    Sha1,
    /// SHA-256.
    Sha256,
    /// SHA-512.
    Sha512,
    /// RIPEMD-160 (old LUKS1 images).
    Ripemd160,
}

impl HashAlg {
    /// Parses a header hash name (`sha256`, case-insensitive).
    pub fn from_name(name: &str) -> Result<Self, CryptoError> {
        match name.to_ascii_lowercase().as_str() {
            "sha1" => Ok(HashAlg::Sha1),
            "sha256" => Ok(HashAlg::Sha256),
            "sha512" => Ok(HashAlg::Sha512),
            "ripemd160" => Ok(HashAlg::Ripemd160),
            _ => Err(CryptoError::UnsupportedHash(name.to_string())),
        }
    }

    /// The name as written in headers.
    pub fn name(self) -> &'static str {
        match self {
            HashAlg::Sha1 => "sha1",
            HashAlg::Sha256 => "sha256",
            HashAlg::Sha512 => "sha512",
            HashAlg::Ripemd160 => "ripemd160",
        }
    }

    /// Digest length in bytes.
    pub fn digest_len(self) -> usize {
        match self {
            HashAlg::Sha1 | HashAlg::Ripemd160 => 20,
            HashAlg::Sha256 => 32,
            HashAlg::Sha512 => 64,
        }
    }

    /// The OpenSSL digest.
    pub fn md(self) -> MessageDigest {
        match self {
            HashAlg::Sha1 => MessageDigest::sha1(),
            HashAlg::Sha256 => MessageDigest::sha256(),
            HashAlg::Sha512 => MessageDigest::sha512(),
            HashAlg::Ripemd160 => MessageDigest::ripemd160(),
        }
    }

    /// Hash of the concatenation of `parts`.
    pub fn digest(self, parts: &[&[u8]]) -> Result<Vec<u8>, CryptoError> {
        let mut h = Hasher::new(self.md())?;
        for p in parts {
            h.update(p)?;
        }
        Ok(h.finish()?.to_vec())
    }
}
