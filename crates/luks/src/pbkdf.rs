//! How new keyslots derive their key: the cryptsetup `--pbkdf*` options
//! turned into concrete KDF parameters.

use std::time::Duration;

use crate::crypto::kdf::{self, KdfKind};
use crate::crypto::{Argon2Variant, HashAlg, KdfParams};
use crate::error::{Error, Result};

/// cryptsetup's default Argon2 memory cost (1 GiB), before the RAM cap.
pub const DEFAULT_ARGON2_MEMORY_KIB: u32 = 1 << 20;
/// cryptsetup's default unlock time target.
pub const DEFAULT_ITER_TIME_MS: u32 = 2000;
/// Fewest PBKDF2 iterations cryptsetup accepts.
pub const MIN_PBKDF2_ITERATIONS: u32 = 1000;
/// Fewest Argon2 passes cryptsetup accepts.
pub const MIN_ARGON2_TIME: u32 = 4;
/// Most Argon2 lanes cryptsetup uses by default.
pub const MAX_ARGON2_LANES: u32 = 4;

/// KDF family for a new keyslot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PbkdfKind {
    /// PBKDF2-HMAC (the only choice for LUKS1).
    Pbkdf2,
    /// Argon2i.
    Argon2i,
    /// Argon2id (LUKS2 default).
    Argon2id,
}

impl PbkdfKind {
    /// Parses `pbkdf2`, `argon2i`, `argon2id`.
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "pbkdf2" => Ok(PbkdfKind::Pbkdf2),
            "argon2i" => Ok(PbkdfKind::Argon2i),
            "argon2id" => Ok(PbkdfKind::Argon2id),
            _ => Err(Error::InvalidArgument(format!("unknown PBKDF {s:?} (pbkdf2, argon2i, argon2id)"))),
        }
    }
}

/// The `--pbkdf*`, `--hash` and `--iter-time` options of cryptsetup.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PbkdfOptions {
    /// KDF family; `None` = the format's default (argon2id for LUKS2, pbkdf2 for LUKS1).
    pub kind: Option<PbkdfKind>,
    /// Hash for PBKDF2 and the AF splitter.
    pub hash: HashAlg,
    /// Fixed iterations (PBKDF2) or passes (Argon2): skips calibration.
    pub force_iterations: Option<u32>,
    /// Calibration target.
    pub iter_time_ms: u32,
    /// Argon2 memory cost in KiB.
    pub memory_kib: Option<u32>,
    /// Argon2 lanes/threads.
    pub parallel: Option<u32>,
}

impl Default for PbkdfOptions {
    fn default() -> Self {
        PbkdfOptions {
            kind: None,
            hash: HashAlg::Sha256,
            force_iterations: None,
            iter_time_ms: DEFAULT_ITER_TIME_MS,
            memory_kib: None,
            parallel: None,
        }
    }
}

impl PbkdfOptions {
    /// The cheapest KDF cryptsetup allows: PBKDF2-SHA256, 1000 iterations.
    ///
    /// Right for machine-generated, full-entropy passphrases (a 256-bit key
    /// hex-encoded), where a slow KDF adds cost but no security: nobody can
    /// guess 2^256 candidates however cheap each one is.
    pub fn minimal() -> Self {
        PbkdfOptions {
            kind: Some(PbkdfKind::Pbkdf2),
            force_iterations: Some(MIN_PBKDF2_ITERATIONS),
            ..Default::default()
        }
    }

    /// Range checks that need no benchmark.
    pub fn check(&self) -> Result<()> {
        if self.parallel == Some(0) {
            return Err(Error::InvalidArgument("--pbkdf-parallel must be at least 1".into()));
        }
        match (self.kind, self.force_iterations) {
            (Some(PbkdfKind::Pbkdf2), Some(it)) if it < MIN_PBKDF2_ITERATIONS => Err(
                Error::InvalidArgument(format!("PBKDF2 needs at least {MIN_PBKDF2_ITERATIONS} iterations")),
            ),
            (Some(PbkdfKind::Argon2i | PbkdfKind::Argon2id), Some(t)) if t < MIN_ARGON2_TIME => {
                Err(Error::InvalidArgument(format!("Argon2 needs at least {MIN_ARGON2_TIME} passes")))
            }
            _ => Ok(()),
        }
    }

    /// Whether calibration is skipped (cryptsetup's CRYPT_PBKDF_NO_BENCHMARK).
    pub fn is_forced(&self) -> bool {
        self.force_iterations.is_some()
    }

    /// Concrete parameters for a keyslot holding a `key_len`-byte key.
    pub fn resolve(&self, default_kind: PbkdfKind, key_len: usize) -> Result<KdfParams> {
        let kind = self.kind.unwrap_or(default_kind);
        // cryptsetup caps lanes at four, silently, even when asked for more.
        let lanes = self.parallel.unwrap_or_else(default_lanes).min(MAX_ARGON2_LANES);
        let limit = kdf::memory_limit_kib().min(u32::MAX as u64) as u32;
        let memory = self.memory_kib.unwrap_or(DEFAULT_ARGON2_MEMORY_KIB.min(limit));
        if kind != PbkdfKind::Pbkdf2 && (memory < 8 * lanes || memory > 4 << 20) {
            return Err(Error::InvalidArgument(format!("--pbkdf-memory {memory} KiB out of range")));
        }
        let variant = if kind == PbkdfKind::Argon2i { Argon2Variant::I } else { Argon2Variant::Id };
        match (kind, self.force_iterations) {
            (PbkdfKind::Pbkdf2, Some(it)) => {
                if it < MIN_PBKDF2_ITERATIONS {
                    return Err(Error::InvalidArgument(format!(
                        "PBKDF2 needs at least {MIN_PBKDF2_ITERATIONS} iterations"
                    )));
                }
                Ok(KdfParams::Pbkdf2 { hash: self.hash, iterations: it })
            }
            (_, Some(t)) => {
                if t < MIN_ARGON2_TIME {
                    return Err(Error::InvalidArgument(format!("Argon2 needs at least {MIN_ARGON2_TIME} passes")));
                }
                Ok(KdfParams::Argon2 { variant, time: t, memory_kib: memory, lanes })
            }
            (PbkdfKind::Pbkdf2, None) => Ok(kdf::calibrate(
                KdfKind::Pbkdf2(self.hash),
                Duration::from_millis(self.iter_time_ms as u64),
                memory,
                lanes,
                key_len,
            )?),
            (_, None) => Ok(kdf::calibrate(
                KdfKind::Argon2(variant),
                Duration::from_millis(self.iter_time_ms as u64),
                memory,
                lanes,
                key_len,
            )?),
        }
    }

    /// Iterations for a volume-key digest: about 125 ms of PBKDF2, as
    /// cryptsetup does, or its minimum when calibration is off.
    pub fn digest_iterations(&self, hash: HashAlg, key_len: usize) -> Result<u32> {
        if self.is_forced() {
            return Ok(MIN_PBKDF2_ITERATIONS);
        }
        match kdf::calibrate(KdfKind::Pbkdf2(hash), Duration::from_millis(125), 0, 1, key_len)? {
            KdfParams::Pbkdf2 { iterations, .. } => Ok(iterations.max(MIN_PBKDF2_ITERATIONS)),
            KdfParams::Argon2 { .. } => Ok(MIN_PBKDF2_ITERATIONS),
        }
    }
}

/// cryptsetup: as many lanes as online CPUs, at most four.
pub fn default_lanes() -> u32 {
    std::thread::available_parallelism().map(|n| n.get() as u32).unwrap_or(1).min(MAX_ARGON2_LANES)
}
