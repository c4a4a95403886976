//! Password-based key derivation: PBKDF2 and Argon2, plus calibration.

use std::time::Duration;

use super::{CryptoError, HashAlg};
use crate::Secret;

/// Argon2 flavour.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Argon2Variant {
    /// Argon2i.
    I,
    /// Argon2id.
    Id,
}

/// A fully specified KDF.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KdfParams {
    /// PBKDF2-HMAC.
    Pbkdf2 {
        /// PRF hash.
        hash: HashAlg,
        /// Iteration count.
        iterations: u32,
    },
    /// Argon2 (version 0x13).
    Argon2 {
        /// i or id.
        variant: Argon2Variant,
        /// Time cost (passes).
        time: u32,
        /// Memory cost in KiB.
        memory_kib: u32,
        /// Lanes (cryptsetup's "cpus"/parallel).
        lanes: u32,
    },
}

/// Derives `out_len` bytes from `passphrase` and `salt`.
pub fn derive(params: &KdfParams, passphrase: &[u8], salt: &[u8], out_len: usize) -> Result<Secret, CryptoError> {
    let _ = (params, passphrase, salt, out_len);
    todo!("crypto helper")
}

/// Which KDF to calibrate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KdfKind {
    /// PBKDF2 with the given hash.
    Pbkdf2(HashAlg),
    /// Argon2.
    Argon2(Argon2Variant),
}

/// Picks parameters that take about `target` on this machine, as cryptsetup does.
pub fn calibrate(kind: KdfKind, target: Duration, max_memory_kib: u32, lanes: u32, key_len: usize) -> Result<KdfParams, CryptoError> {
    let _ = (kind, target, max_memory_kib, lanes, key_len);
    todo!("crypto helper")
}

/// Memory an Argon2 KDF may use here: cryptsetup's rule (half of physical RAM).
pub fn memory_limit_kib() -> u64 {
    todo!("crypto helper")
}
