//! The nouns every key manager shares: projects, key ids and key bytes.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use crate::error::KeyError;

/// The largest key this crate creates or stores, in bits (1 KiB). Volume keys
/// are 256 or 512 bits; the bound keeps a typo from allocating gigabytes.
pub const MAX_BIT_LENGTH: u32 = 8192;

/// A project (tenant) id, as Keystone and Barbican spell it.
///
/// Printable ASCII without spaces, 1 to 255 bytes, so it can travel in an
/// `X-Project-Id` header and in a log line unchanged.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Project(String);

impl Project {
    /// Checks and wraps a project id.
    pub fn new(id: impl Into<String>) -> Result<Self, KeyError> {
        let id = id.into();
        if id.is_empty() || id.len() > 255 {
            return Err(KeyError::invalid(
                "project id",
                format!("must be 1 to 255 bytes, got {}", id.len()),
            ));
        }
        if !id.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(KeyError::invalid(
                "project id",
                "only printable ASCII without spaces is allowed",
            ));
        }
        Ok(Project(id))
    }

    /// The id as given.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Project {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Project {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Project({:?})", self.0)
    }
}

impl FromStr for Project {
    type Err = KeyError;
    fn from_str(s: &str) -> Result<Self, KeyError> {
        Project::new(s)
    }
}

/// The id of a key: a UUID in lowercase hyphenated form. With Barbican it is
/// the secret's UUID (the last segment of its `secret_ref`), which is what
/// Cinder stores as a volume's `encryption_key_id`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct KeyId(String);

impl KeyId {
    /// Parses any UUID spelling and normalises it to lowercase hyphenated.
    pub fn parse(s: &str) -> Result<Self, KeyError> {
        let uuid = uuid::Uuid::try_parse(s)
            .map_err(|_| KeyError::invalid("key id", format!("{s:?} is not a UUID")))?;
        Ok(KeyId(uuid.hyphenated().to_string()))
    }

    /// A fresh random (v4) id.
    pub(crate) fn random() -> Self {
        KeyId(uuid::Uuid::new_v4().hyphenated().to_string())
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyId({})", self.0)
    }
}

impl FromStr for KeyId {
    type Err = KeyError;
    fn from_str(s: &str) -> Result<Self, KeyError> {
        KeyId::parse(s)
    }
}

impl TryFrom<String> for KeyId {
    type Error = KeyError;
    fn try_from(s: String) -> Result<Self, KeyError> {
        KeyId::parse(&s)
    }
}

impl From<KeyId> for String {
    fn from(id: KeyId) -> String {
        id.0
    }
}

/// The bytes of a key. Wiped on drop, compared in constant time, never shown
/// by `Debug`.
#[derive(Clone)]
pub struct KeyBytes(Zeroizing<Vec<u8>>);

impl KeyBytes {
    /// Takes ownership of `bytes`; they are wiped when the key drops.
    pub fn new(bytes: Vec<u8>) -> Self {
        KeyBytes(Zeroizing::new(bytes))
    }

    /// Copies `bytes` (the caller wipes its own copy).
    pub fn from_slice(bytes: &[u8]) -> Self {
        KeyBytes::new(bytes.to_vec())
    }

    /// `len` bytes from OpenSSL's CSPRNG.
    pub fn random(len: usize) -> Result<Self, KeyError> {
        let mut bytes = Zeroizing::new(vec![0u8; len]);
        openssl::rand::rand_bytes(&mut bytes)
            .map_err(|e| KeyError::storage("random key generation", e))?;
        Ok(KeyBytes(bytes))
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

impl PartialEq for KeyBytes {
    fn eq(&self, other: &Self) -> bool {
        self.0.len() == other.0.len() && bool::from(self.0.ct_eq(&other.0))
    }
}

impl Eq for KeyBytes {}

impl fmt::Debug for KeyBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyBytes([REDACTED; {} bytes])", self.0.len())
    }
}

/// Checks a key name (see [`crate::KeyManager::create_named_key`]).
pub(crate) fn check_name(name: &str) -> Result<(), KeyError> {
    if name.is_empty()
        || name.len() > 200
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
    {
        return Err(KeyError::invalid(
            "name",
            format!("{name:?} must be 1 to 200 ASCII letters, digits, '.', '_', ':' or '-'"),
        ));
    }
    Ok(())
}

/// Checks an algorithm name and a bit length before they reach a backend.
pub(crate) fn check_spec(algorithm: &str, bit_length: u32) -> Result<(), KeyError> {
    if algorithm.is_empty()
        || algorithm.len() > 64
        || !algorithm
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(KeyError::invalid(
            "algorithm",
            format!("{algorithm:?} must be 1 to 64 ASCII letters, digits, '-' or '_'"),
        ));
    }
    if bit_length == 0 || !bit_length.is_multiple_of(8) || bit_length > MAX_BIT_LENGTH {
        return Err(KeyError::invalid(
            "bit length",
            format!("{bit_length} must be a positive multiple of 8 up to {MAX_BIT_LENGTH}"),
        ));
    }
    Ok(())
}

/// [`check_spec`] plus: the given bytes have exactly `bit_length` bits.
pub(crate) fn check_stored(
    key: &KeyBytes,
    algorithm: &str,
    bit_length: u32,
) -> Result<(), KeyError> {
    check_spec(algorithm, bit_length)?;
    if key.len() as u64 * 8 != u64::from(bit_length) {
        return Err(KeyError::invalid(
            "bit length",
            format!("{bit_length} does not match a key of {} bytes", key.len()),
        ));
    }
    Ok(())
}
