//! Password-based key derivation: PBKDF2 and Argon2, plus calibration.
//!
//! PBKDF2 runs on OpenSSL; Argon2 (version 0x13) on the RustCrypto `argon2`
//! crate, with lanes spread over threads as libargon2 does in cryptsetup. The
//! limits and the calibration follow cryptsetup 2.6 (lib/utils_pbkdf.c,
//! lib/crypto_backend/pbkdf_check.c) so that parameters chosen here are ones
//! cryptsetup would choose and accept.

use std::time::{Duration, Instant};

use argon2::{Algorithm, Argon2, AssociatedData, Block, ParamsBuilder, Version};
use zeroize::Zeroize;

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

impl Argon2Variant {
    /// The name used in LUKS2 headers (`argon2i`, `argon2id`).
    pub fn name(self) -> &'static str {
        match self {
            Argon2Variant::I => "argon2i",
            Argon2Variant::Id => "argon2id",
        }
    }

    fn algorithm(self) -> Algorithm {
        match self {
            Argon2Variant::I => Algorithm::Argon2i,
            Argon2Variant::Id => Algorithm::Argon2id,
        }
    }
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

/// Fewest PBKDF2 iterations cryptsetup accepts for a new keyslot or digest
/// (NIST SP 800-132's recommendation).
pub const PBKDF2_MIN_ITERATIONS: u32 = 1000;
/// Fewest Argon2 passes cryptsetup accepts for a new keyslot.
pub const ARGON2_MIN_TIME: u32 = 4;
/// Least Argon2 memory cryptsetup accepts, in KiB (and at least 8 per lane).
pub const ARGON2_MIN_MEMORY_KIB: u32 = 32;
/// Most Argon2 memory cryptsetup accepts, in KiB (4 GiB).
pub const ARGON2_MAX_MEMORY_KIB: u32 = 4 * 1024 * 1024;
/// Most Argon2 lanes cryptsetup uses.
pub const ARGON2_MAX_LANES: u32 = 4;
/// cryptsetup's default Argon2 memory for LUKS2 keyslots, in KiB (1 GiB).
pub const ARGON2_DEFAULT_MEMORY_KIB: u32 = 1024 * 1024;
/// cryptsetup's default Argon2 lanes for LUKS2 keyslots.
pub const ARGON2_DEFAULT_LANES: u32 = 4;

/// Argon2's own floor on salt length (RFC 9106 §3.1).
const ARGON2_MIN_SALT_LEN: usize = 8;
/// Argon2's own floor on output length (RFC 9106 §3.1).
const ARGON2_MIN_OUT_LEN: usize = 4;

impl KdfParams {
    /// The KDF's name in LUKS2 headers: `pbkdf2`, `argon2i` or `argon2id`.
    pub fn type_name(&self) -> &'static str {
        match self {
            KdfParams::Pbkdf2 { .. } => "pbkdf2",
            KdfParams::Argon2 { variant, .. } => variant.name(),
        }
    }

    /// Checks the limits cryptsetup enforces on parameters for a NEW keyslot
    /// or digest (`--pbkdf-force-iterations` and friends): PBKDF2 at least
    /// 1000 iterations; Argon2 at least 4 passes, 32 KiB to 4 GiB of memory
    /// (and 8 KiB per lane), 1 to 4 lanes. [`derive`] itself is more lenient,
    /// so that old or foreign headers still open.
    pub fn check_new(&self) -> Result<(), CryptoError> {
        match *self {
            KdfParams::Pbkdf2 { iterations, .. } => {
                if iterations < PBKDF2_MIN_ITERATIONS {
                    return Err(CryptoError::InvalidParameter("PBKDF2 needs at least 1000 iterations"));
                }
            }
            KdfParams::Argon2 { time, memory_kib, lanes, .. } => {
                if time < ARGON2_MIN_TIME {
                    return Err(CryptoError::InvalidParameter("Argon2 needs a time cost of at least 4"));
                }
                if !(1..=ARGON2_MAX_LANES).contains(&lanes) {
                    return Err(CryptoError::InvalidParameter("Argon2 lanes must be 1 to 4"));
                }
                if memory_kib < ARGON2_MIN_MEMORY_KIB.max(8 * lanes) {
                    return Err(CryptoError::InvalidParameter(
                        "Argon2 memory must be at least 32 KiB and 8 KiB per lane",
                    ));
                }
                if memory_kib > ARGON2_MAX_MEMORY_KIB {
                    return Err(CryptoError::KdfMemory {
                        needed_kib: memory_kib.into(),
                        limit_kib: ARGON2_MAX_MEMORY_KIB.into(),
                    });
                }
            }
        }
        Ok(())
    }
}

/// Derives `out_len` bytes from `passphrase` and `salt`.
pub fn derive(params: &KdfParams, passphrase: &[u8], salt: &[u8], out_len: usize) -> Result<Secret, CryptoError> {
    let mut out = Secret::zeroed(out_len);
    match *params {
        KdfParams::Pbkdf2 { hash, iterations } => pbkdf2(hash, iterations, passphrase, salt, out.as_mut())?,
        KdfParams::Argon2 { variant, time, memory_kib, lanes } => {
            argon2_raw(variant, time, memory_kib, lanes, passphrase, salt, None, &[], out.as_mut())?
        }
    }
    Ok(out)
}

fn pbkdf2(hash: HashAlg, iterations: u32, passphrase: &[u8], salt: &[u8], out: &mut [u8]) -> Result<(), CryptoError> {
    if iterations == 0 {
        return Err(CryptoError::InvalidParameter("PBKDF2 iterations must not be zero"));
    }
    if out.is_empty() {
        return Err(CryptoError::InvalidParameter("KDF output length must not be zero"));
    }
    // OpenSSL takes C ints; the binding would panic on larger values.
    let fits = |n: usize| i32::try_from(n).is_ok();
    if !fits(passphrase.len()) || !fits(salt.len()) || !fits(out.len()) || i32::try_from(iterations).is_err() {
        return Err(CryptoError::InvalidParameter("PBKDF2 input too large"));
    }
    openssl::pkcs5::pbkdf2_hmac(passphrase, salt, iterations as usize, hash.md(), out)?;
    Ok(())
}

/// Argon2 version 0x13 with RFC 9106's optional secret and associated data
/// (LUKS uses neither; the RFC's test vectors do).
#[allow(clippy::too_many_arguments)]
pub(crate) fn argon2_raw(
    variant: Argon2Variant,
    time: u32,
    memory_kib: u32,
    lanes: u32,
    passphrase: &[u8],
    salt: &[u8],
    secret: Option<&[u8]>,
    associated_data: &[u8],
    out: &mut [u8],
) -> Result<(), CryptoError> {
    if time == 0 {
        return Err(CryptoError::InvalidParameter("Argon2 time cost must not be zero"));
    }
    if lanes == 0 || lanes > argon2::Params::MAX_P_COST {
        return Err(CryptoError::InvalidParameter("Argon2 lanes out of range"));
    }
    if u64::from(memory_kib) < 8 * u64::from(lanes) {
        return Err(CryptoError::InvalidParameter("Argon2 memory must be at least 8 KiB per lane"));
    }
    if salt.len() < ARGON2_MIN_SALT_LEN {
        return Err(CryptoError::InvalidParameter("Argon2 salt must be at least 8 bytes"));
    }
    if out.len() < ARGON2_MIN_OUT_LEN {
        return Err(CryptoError::InvalidParameter("Argon2 output must be at least 4 bytes"));
    }
    let limit = derive_memory_limit_kib();
    if u64::from(memory_kib) > limit {
        return Err(CryptoError::KdfMemory { needed_kib: memory_kib.into(), limit_kib: limit });
    }
    let backend = |e: argon2::Error| CryptoError::Backend(format!("argon2: {e}"));
    let mut builder = ParamsBuilder::new();
    builder.m_cost(memory_kib).t_cost(time).p_cost(lanes).output_len(out.len());
    if !associated_data.is_empty() {
        builder.data(AssociatedData::new(associated_data).map_err(backend)?);
    }
    let params = builder.build().map_err(backend)?;
    let blocks = params.block_count();
    let ctx = match secret {
        Some(secret) => Argon2::new_with_secret(secret, variant.algorithm(), Version::V0x13, params).map_err(backend)?,
        None => Argon2::new(variant.algorithm(), Version::V0x13, params),
    };
    // Our own memory, so that it can be wiped afterwards as libargon2 does:
    // the blocks are derived from the passphrase.
    let mut memory = Vec::new();
    memory
        .try_reserve_exact(blocks)
        .map_err(|_| CryptoError::KdfMemory { needed_kib: memory_kib.into(), limit_kib: limit })?;
    memory.resize(blocks, Block::new());
    let result = ctx.hash_password_into_with_memory(passphrase, salt, out, &mut memory[..]).map_err(backend);
    memory.zeroize();
    result
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
///
/// PBKDF2: iterations per second of thread CPU time measured over a growing
/// run until one takes over half the target (at least 100 ms, at most
/// 500 ms as in cryptsetup), scaled to `target`, at least 1000. Argon2: time cost 4 and memory grown from the minimum until a run
/// takes 250 ms, then memory scaled towards `target` up to
/// min(`max_memory_kib`, [`memory_limit_kib`], 4 GiB) and time cost beyond
/// that; candidates are re-measured until within 95–110 % of `target`.
/// `lanes` is capped at 4 and at the CPUs online, as cryptsetup does.
pub fn calibrate(kind: KdfKind, target: Duration, max_memory_kib: u32, lanes: u32, key_len: usize) -> Result<KdfParams, CryptoError> {
    let target_ms = u32::try_from(target.as_millis())
        .map_err(|_| CryptoError::InvalidParameter("KDF target time too long"))?;
    if target_ms == 0 {
        return Err(CryptoError::InvalidParameter("KDF target time must be at least 1 ms"));
    }
    match kind {
        KdfKind::Pbkdf2(hash) => calibrate_pbkdf2(hash, target_ms, key_len),
        KdfKind::Argon2(variant) => {
            if lanes == 0 {
                return Err(CryptoError::InvalidParameter("Argon2 lanes must not be zero"));
            }
            let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
            let lanes = lanes.min(ARGON2_MAX_LANES).min(u32::try_from(cpus).unwrap_or(ARGON2_MAX_LANES));
            let limit = u32::try_from(memory_limit_kib()).unwrap_or(u32::MAX);
            let max_m = max_memory_kib.min(limit).min(ARGON2_MAX_MEMORY_KIB);
            calibrate_argon2(variant, target_ms, max_m, lanes, key_len)
        }
    }
}

/// CPU time of the calling thread: PBKDF2 is single-threaded, and CPU time
/// keeps the estimate steady on a busy machine (cryptsetup uses getrusage).
fn thread_cpu_time() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    Duration::new(u64::try_from(t.tv_sec).unwrap_or(0), u32::try_from(t.tv_nsec).unwrap_or(0))
}

fn calibrate_pbkdf2(hash: HashAlg, target_ms: u32, key_len: usize) -> Result<KdfParams, CryptoError> {
    if key_len == 0 {
        return Err(CryptoError::InvalidParameter("KDF output length must not be zero"));
    }
    // cryptsetup measures until a run exceeds 500 ms; a short target (the
    // volume-key digest's 125 ms) needs less precision, so stop earlier there.
    let enough = Duration::from_millis(u64::from(target_ms / 2).clamp(100, 500));
    let mut out = Secret::zeroed(key_len);
    let mut iterations: u32 = 1 << 14;
    loop {
        let start = thread_cpu_time();
        pbkdf2(hash, iterations, b"foo", b"0123456789abcdef0123456789abcdef", out.as_mut())?;
        let spent = thread_cpu_time().saturating_sub(start);
        if spent > enough {
            let per_ms = f64::from(iterations) / (spent.as_secs_f64() * 1000.0);
            let wanted = per_ms * f64::from(target_ms);
            if wanted > f64::from(u32::MAX) {
                return Err(CryptoError::InvalidParameter("PBKDF2 iteration count for this target exceeds 2^32"));
            }
            let iterations = (wanted as u32).max(PBKDF2_MIN_ITERATIONS);
            return Ok(KdfParams::Pbkdf2 { hash, iterations });
        }
        // Aim a little past the threshold from what this run took (cryptsetup
        // grows in fixed ×2…×16 steps, which can overshoot the threshold many
        // times over and make a short calibration slow).
        let factor = (enough.as_secs_f64() * 1.2 / spent.as_secs_f64().max(1e-4)).clamp(2.0, 16.0);
        let next = f64::from(iterations) * factor;
        if next > f64::from(i32::MAX) {
            return Err(CryptoError::InvalidParameter("PBKDF2 benchmark did not converge"));
        }
        iterations = next as u32;
    }
}

/// Times one Argon2 run, wall clock (the lanes run on several threads).
fn time_argon2(variant: Argon2Variant, time: u32, memory_kib: u32, lanes: u32, out: &mut [u8]) -> Result<u64, CryptoError> {
    let start = Instant::now();
    argon2_raw(variant, time, memory_kib, lanes, b"foo", b"0123456789abcdef0123456789abcdef", None, &[], out)?;
    Ok(u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX))
}

fn calibrate_argon2(variant: Argon2Variant, target_ms: u32, max_m: u32, lanes: u32, key_len: usize) -> Result<KdfParams, CryptoError> {
    const MIN_RUN_MS: u64 = 250;
    const FAST_MS: u64 = 10;
    let min_t = ARGON2_MIN_TIME;
    let min_m = ARGON2_MIN_MEMORY_KIB.max(8 * lanes);
    if max_m < min_m {
        return Err(CryptoError::KdfMemory { needed_kib: min_m.into(), limit_kib: max_m.into() });
    }
    let mut out = Secret::zeroed(key_len.max(ARGON2_MIN_OUT_LEN));
    let started = Instant::now();
    let target = u64::from(target_ms);

    // 1. Small parameters that run at least 250 ms (or the target, if
    //    shorter), growing memory first, then passes.
    let min_run = MIN_RUN_MS.min(target);
    let (mut t, mut m) = (min_t, min_m);
    let mut ms = time_argon2(variant, t, m, lanes, out.as_mut())?;
    while ms < min_run {
        let (nt, nm) = if m == max_m {
            let nt = if ms < FAST_MS { t.saturating_mul(16) } else { scale(t, min_run, ms.max(1)) };
            (nt, m)
        } else {
            let nm = if ms < FAST_MS { m.saturating_mul(16) } else { scale(m, min_run, ms.max(1)) };
            (t, nm.min(max_m))
        };
        if (nt, nm) == (t, m) {
            break;
        }
        (t, m) = (nt, nm);
        ms = time_argon2(variant, t, m, lanes, out.as_mut())?;
    }

    // 2. Extrapolate to the target and re-measure until within 95–110 %.
    //    Once the calibration has used the target's time, the next estimate
    //    (now based on a run close to the target) is taken unmeasured.
    let (at_least, at_most) = (target * 95 / 100, target * 110 / 100);
    loop {
        let next = next_argon2(t, m, min_t, min_m, max_m, ms.max(1), target);
        (t, m) = (next.time, next.memory_kib);
        if next.is_final || started.elapsed() >= Duration::from_millis(target) {
            break;
        }
        ms = time_argon2(variant, t, m, lanes, out.as_mut())?;
        if (at_least..=at_most).contains(&ms) {
            break;
        }
    }
    Ok(KdfParams::Argon2 { variant, time: t, memory_kib: m, lanes })
}

/// `v * num / den`, saturating at u32::MAX.
fn scale(v: u32, num: u64, den: u64) -> u32 {
    u32::try_from(u64::from(v) * num / den).unwrap_or(u32::MAX)
}

/// An Argon2 calibration candidate.
struct Candidate {
    time: u32,
    memory_kib: u32,
    /// A bound was hit or nothing changed: stop here without measuring.
    is_final: bool,
}

/// The next candidate after a run of `ms` with (t, m): too slow lowers
/// passes, then memory; too fast raises memory, then passes
/// (cryptsetup's next_argon2_params).
fn next_argon2(t: u32, m: u32, min_t: u32, min_m: u32, max_m: u32, ms: u64, target: u64) -> Candidate {
    let work = u64::from(t) * u64::from(m);
    let (time, memory_kib, at_bound) = if ms > target {
        let nt = scale(t, target, ms);
        if nt >= min_t {
            (nt, m, false)
        } else {
            let nm = u32::try_from(work * target / (u64::from(min_t) * ms)).unwrap_or(u32::MAX);
            if nm < min_m {
                (min_t, min_m, true)
            } else {
                (min_t, nm, false)
            }
        }
    } else {
        let nm = scale(m, target, ms);
        if nm > max_m {
            let nt = u32::try_from(work * target / (u64::from(max_m) * ms)).unwrap_or(u32::MAX);
            if nt <= min_t {
                (min_t, max_m, true)
            } else {
                (nt, max_m, false)
            }
        } else if nm < min_m {
            (t, min_m, true)
        } else {
            (t, nm, false)
        }
    };
    Candidate { time, memory_kib, is_final: at_bound || (time, memory_kib) == (t, m) }
}

/// Memory an Argon2 KDF may use here: cryptsetup's rule (half of physical RAM).
///
/// As in Debian's cryptsetup 2.6.1: half of MemTotal (1 GiB if MemTotal looks
/// bogus: under 128 MiB or over 4 TiB); on a machine without swap, half of
/// MemFree instead when that is smaller but above 64 MiB.
pub fn memory_limit_kib() -> u64 {
    let Some(info) = MemInfo::read() else {
        return ARGON2_DEFAULT_MEMORY_KIB.into();
    };
    if info.total_kib < 128 * 1024 || info.total_kib > u64::from(u32::MAX) {
        return ARGON2_DEFAULT_MEMORY_KIB.into();
    }
    let half = info.total_kib / 2;
    if info.swap_kib == 0 {
        let free_half = info.free_kib / 2;
        if free_half > 64 * 1024 && free_half < half {
            return free_half;
        }
    }
    half
}

/// Most memory [`derive`] will give Argon2: the cryptsetup maximum, and no
/// more than the machine has (an oversized header must fail, not get the
/// process killed).
fn derive_memory_limit_kib() -> u64 {
    let max = u64::from(ARGON2_MAX_MEMORY_KIB);
    MemInfo::read().map_or(max, |i| if i.total_kib > 0 { max.min(i.total_kib) } else { max })
}

struct MemInfo {
    total_kib: u64,
    free_kib: u64,
    swap_kib: u64,
}

impl MemInfo {
    fn read() -> Option<Self> {
        let text = std::fs::read_to_string("/proc/meminfo").ok()?;
        Self::parse(&text)
    }

    fn parse(text: &str) -> Option<Self> {
        let field = |name: &str| -> Option<u64> {
            text.lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        };
        Some(MemInfo {
            total_kib: field("MemTotal:")?,
            free_kib: field("MemFree:").unwrap_or(0),
            // cryptsetup assumes swap when it cannot tell.
            swap_kib: field("SwapTotal:").unwrap_or(1),
        })
    }
}

#[cfg(test)]
mod tests;
