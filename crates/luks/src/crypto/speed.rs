//! Cipher speed as `cryptsetup benchmark` measures it for dm-crypt: in
//! memory, one core, one 4 KiB data unit per call on a hot buffer, a new
//! sector number each call, bytes per second of thread CPU time. What
//! `rekey luks benchmark` prints and what `benches/crypto.rs` compares with
//! `openssl speed -bytes 4096` (the same loop, so the same figures).

use std::time::Duration;

use super::{CipherSpec, CryptoError, SectorCipher, XtsImplementation};
use crate::Secret;

/// Data unit per call.
pub const UNIT: usize = 4096;

/// One cipher, key size and implementation, measured.
#[derive(Clone, Debug, PartialEq)]
pub struct CipherSpeed {
    /// e.g. `aes-xts-plain64`.
    pub cipher: String,
    /// Key size in bits, as LUKS counts it (512 for AES-256-XTS).
    pub key_size: u32,
    /// An [`XtsImplementation`] name for XTS; `openssl` for CBC.
    pub implementation: String,
    /// Bytes enciphered per CPU-second.
    pub encrypt_bytes_per_s: f64,
    /// Bytes deciphered per CPU-second.
    pub decrypt_bytes_per_s: f64,
}

/// One thing to measure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Candidate {
    /// The cipher spec.
    pub spec: CipherSpec,
    /// Key size in bits.
    pub key_size: u32,
    /// The XTS kernel; `None` for CBC (OpenSSL).
    pub xts: Option<XtsImplementation>,
}

/// Every cipher and key size the engine offers, XTS once per kernel this
/// CPU runs (fastest first), optionally only `cipher` and/or `key_size`.
pub fn candidates(cipher: Option<&CipherSpec>, key_size: Option<u32>) -> Vec<Candidate> {
    let mut all = Vec::new();
    for name in ["aes-xts-plain64", "aes-cbc-essiv:sha256", "aes-cbc-plain64"] {
        let Ok(spec) = CipherSpec::parse(name) else { continue };
        if cipher.is_some_and(|c| *c != spec) {
            continue;
        }
        for bits in [128u32, 192, 256, 512] {
            if !spec.valid_key_len(bits as usize / 8) || key_size.is_some_and(|k| k != bits) {
                continue;
            }
            if spec.mode == super::cipher::Mode::XtsPlain64 {
                all.extend(XtsImplementation::supported().into_iter().map(|i| Candidate { spec, key_size: bits, xts: Some(i) }));
            } else {
                all.push(Candidate { spec, key_size: bits, xts: None });
            }
        }
    }
    all
}

fn thread_cpu_time() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
}

/// Bytes per CPU-second of one direction, over at least `budget` of CPU time.
pub fn unit_speed(c: &SectorCipher, decrypt: bool, budget: Duration) -> Result<f64, CryptoError> {
    let mut unit = vec![0x5au8; UNIT];
    let start = thread_cpu_time();
    let mut calls = 0u64;
    loop {
        // Read the clock every 256 calls: it costs about one 4 KiB call.
        for _ in 0..256 {
            let iv = calls * (UNIT as u64 / 512);
            if decrypt {
                c.decrypt(&mut unit, UNIT, iv)?;
            } else {
                c.encrypt(&mut unit, UNIT, iv)?;
            }
            calls += 1;
        }
        let spent = thread_cpu_time().saturating_sub(start);
        if spent >= budget {
            std::hint::black_box(&unit);
            return Ok((calls * UNIT as u64) as f64 / spent.as_secs_f64());
        }
    }
}

/// Measures one candidate, each direction over `budget` of CPU time, with a
/// random key.
pub fn measure(candidate: &Candidate, budget: Duration) -> Result<CipherSpeed, CryptoError> {
    let key = Secret::random(candidate.key_size as usize / 8);
    let c = match candidate.xts {
        Some(imp) => SectorCipher::with_xts_implementation(key.expose(), imp)?,
        None => SectorCipher::new(&candidate.spec, key.expose())?,
    };
    Ok(CipherSpeed {
        cipher: candidate.spec.name(),
        key_size: candidate.key_size,
        implementation: candidate.xts.map_or("openssl", XtsImplementation::name).to_string(),
        encrypt_bytes_per_s: unit_speed(&c, false, budget)?,
        decrypt_bytes_per_s: unit_speed(&c, true, budget)?,
    })
}
