//! The anti-forensic information splitter (LUKS1 and LUKS2 `af.type = luks1`).

use super::{CryptoError, HashAlg};
use crate::Secret;

/// Splits `key` into `stripes` stripes; the result is `key.len() * stripes` bytes.
pub fn split(key: &[u8], stripes: u32, hash: HashAlg) -> Result<Secret, CryptoError> {
    let _ = (key, stripes, hash);
    todo!("crypto helper")
}

/// Recovers the `key_len`-byte key from `material` (`key_len * stripes` bytes).
pub fn merge(material: &[u8], key_len: usize, stripes: u32, hash: HashAlg) -> Result<Secret, CryptoError> {
    let _ = (material, key_len, stripes, hash);
    todo!("crypto helper")
}
