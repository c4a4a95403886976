//! Sector ciphers: the keyslot material and data encryption of LUKS.
//!
//! XTS runs on the fastest kernel the CPU has, chosen once at run time
//! ([`XtsImplementation::selected`]): VAES with 512- or 256-bit vectors,
//! AES-NI (module `x86`), or the portable path on the RustCrypto `aes`
//! crate (module `xts`); no per-sector re-initialisation, no allocation, key
//! schedules made once. CBC modes run
//! on OpenSSL's EVP layer: a [`SectorCipher`] keeps a small pool of keyed
//! OpenSSL contexts so that a call only re-initialises the IV per sector.
//! Concurrent callers each take their own context from the pool (XTS needs
//! none), so `&self` is enough and the type is `Send + Sync`.

use std::sync::{Mutex, MutexGuard, PoisonError};

use openssl::cipher::Cipher;
use openssl::cipher_ctx::CipherCtx;
use zeroize::Zeroize;

use super::{CryptoError, HashAlg};
use crate::Secret;

/// Cipher mode and IV generator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// `xts-plain64`.
    XtsPlain64,
    /// `cbc-essiv:sha256`.
    CbcEssivSha256,
    /// `cbc-plain64`.
    CbcPlain64,
}

/// A parsed cipher spec such as `aes-xts-plain64`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CipherSpec {
    /// The mode and IV scheme (the block cipher is always AES here).
    pub mode: Mode,
}

impl CipherSpec {
    /// Parses `aes-xts-plain64`, `aes-cbc-essiv:sha256`, `aes-cbc-plain64`.
    pub fn parse(spec: &str) -> Result<Self, CryptoError> {
        let mode = match spec {
            "aes-xts-plain64" => Mode::XtsPlain64,
            "aes-cbc-essiv:sha256" => Mode::CbcEssivSha256,
            "aes-cbc-plain64" => Mode::CbcPlain64,
            _ => return Err(CryptoError::UnsupportedCipher(spec.to_string())),
        };
        Ok(CipherSpec { mode })
    }
    /// Parses LUKS1's split form: cipher name `aes`, mode `xts-plain64`.
    pub fn from_parts(cipher: &str, mode: &str) -> Result<Self, CryptoError> {
        Self::parse(&format!("{cipher}-{mode}"))
    }
    /// Full spec string, e.g. `aes-xts-plain64`.
    pub fn name(&self) -> String {
        format!("{}-{}", self.cipher_name(), self.mode_name())
    }
    /// `aes`.
    pub fn cipher_name(&self) -> &'static str {
        "aes"
    }
    /// `xts-plain64`, `cbc-essiv:sha256`, `cbc-plain64`.
    pub fn mode_name(&self) -> &'static str {
        match self.mode {
            Mode::XtsPlain64 => "xts-plain64",
            Mode::CbcEssivSha256 => "cbc-essiv:sha256",
            Mode::CbcPlain64 => "cbc-plain64",
        }
    }
    /// Whether `len` bytes is a valid key for this spec.
    pub fn valid_key_len(&self, len: usize) -> bool {
        match self.mode {
            Mode::XtsPlain64 => len == 32 || len == 64,
            Mode::CbcEssivSha256 | Mode::CbcPlain64 => matches!(len, 16 | 24 | 32),
        }
    }
}

/// Smallest sector size LUKS allows; IVs count in these units.
pub const IV_SECTOR_SIZE: usize = 512;
/// Largest sector size LUKS2 allows.
pub const MAX_SECTOR_SIZE: usize = 4096;
const AES_BLOCK: usize = 16;

/// An XTS kernel. Every one computes the same function; they differ in
/// speed and in the CPU features they need.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum XtsImplementation {
    /// VAES and VPCLMULQDQ on 512-bit vectors (AVX-512F/BW): four blocks
    /// per instruction.
    VaesAvx512,
    /// VAES and VPCLMULQDQ on 256-bit vectors (AVX2): two blocks per instruction.
    VaesAvx2,
    /// AES-NI and PCLMULQDQ, eight blocks side by side.
    AesNi,
    /// The RustCrypto `aes` crate: any CPU.
    Portable,
}

impl XtsImplementation {
    /// Every implementation, fastest first.
    pub const ALL: [XtsImplementation; 4] = [Self::VaesAvx512, Self::VaesAvx2, Self::AesNi, Self::Portable];

    /// The name `rekey luks benchmark` prints: `vaes-avx512`, `vaes-avx2`,
    /// `aesni`, `portable`.
    pub fn name(self) -> &'static str {
        match self {
            Self::VaesAvx512 => "vaes-avx512",
            Self::VaesAvx2 => "vaes-avx2",
            Self::AesNi => "aesni",
            Self::Portable => "portable",
        }
    }

    /// The implementation called `name`, if there is one.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|i| i.name() == name)
    }

    /// Whether this CPU can run it.
    pub fn is_supported(self) -> bool {
        #[cfg(target_arch = "x86_64")]
        return x86::supported(self);
        #[cfg(not(target_arch = "x86_64"))]
        return self == Self::Portable;
    }

    /// The CPU features it needs that this CPU lacks (empty when supported).
    pub fn missing_cpu_features(self) -> Vec<&'static str> {
        #[cfg(target_arch = "x86_64")]
        return x86::missing_features(self);
        #[cfg(not(target_arch = "x86_64"))]
        return if self == Self::Portable { Vec::new() } else { vec!["x86_64"] };
    }

    /// Every implementation this CPU runs, fastest first.
    pub fn supported() -> Vec<Self> {
        Self::ALL.into_iter().filter(|i| i.is_supported()).collect()
    }

    /// What [`SectorCipher::new`] uses: the fastest this CPU runs, detected
    /// once per process.
    pub fn selected() -> Self {
        static SELECTED: std::sync::OnceLock<XtsImplementation> = std::sync::OnceLock::new();
        *SELECTED.get_or_init(|| Self::ALL.into_iter().find(|i| i.is_supported()).unwrap_or(Self::Portable))
    }
}

impl std::fmt::Display for XtsImplementation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Keyed XTS on one implementation. Every implementation also takes keys
/// whose two halves are equal, which OpenSSL 3 refuses but the kernel accepts.
/// Boxed by its one user, so the variants' sizes do not matter.
#[allow(clippy::large_enum_variant)]
enum Xts {
    Portable(xts::XtsKeys),
    #[cfg(target_arch = "x86_64")]
    X86 { imp: XtsImplementation, keys: x86::Keys },
}

impl Xts {
    fn new(imp: XtsImplementation, key: &[u8]) -> Result<Xts, CryptoError> {
        if !imp.is_supported() {
            return Err(CryptoError::InvalidParameter("XTS implementation not supported by this CPU"));
        }
        #[cfg(target_arch = "x86_64")]
        if imp != XtsImplementation::Portable {
            let keys = x86::expand(key).ok_or(CryptoError::InvalidParameter("XTS key must be 32 or 64 bytes"))?;
            return Ok(Xts::X86 { imp, keys });
        }
        Ok(Xts::Portable(xts::XtsKeys::new(key)?))
    }

    fn implementation(&self) -> XtsImplementation {
        match self {
            Xts::Portable(_) => XtsImplementation::Portable,
            #[cfg(target_arch = "x86_64")]
            Xts::X86 { imp, .. } => *imp,
        }
    }

    fn run(&self, decrypt: bool, buf: &mut [u8], unit: usize, first: u64, step: u64) -> Result<(), CryptoError> {
        match self {
            Xts::Portable(keys) => {
                keys.run(decrypt, buf, unit, first, step);
                Ok(())
            }
            #[cfg(target_arch = "x86_64")]
            Xts::X86 { imp, keys } => x86::run(*imp, keys, decrypt, buf, unit, first, step),
        }
    }
}

/// How the sectors are enciphered.
enum Engine {
    /// XTS on one of the [`XtsImplementation`]s.
    Xts(Box<Xts>),
    /// CBC on OpenSSL with a per-sector IV, optionally ESSIV-encrypted.
    Cbc(Box<Cbc>),
}

/// Keyed OpenSSL state of a CBC cipher.
struct Cbc {
    /// IVs are ESSIV (encrypted under sha256(key)) rather than plain64.
    essiv: bool,
    /// Algorithm implementations, fetched once: an implicit fetch on every
    /// `EVP_*Init` call costs more than enciphering a small sector.
    data_cipher: Cipher,
    aux_cipher: Option<Cipher>,
    key: Secret,
    /// sha256(key) for ESSIV.
    aux_key: Option<Secret>,
    enc_pool: Mutex<Vec<Contexts>>,
    dec_pool: Mutex<Vec<Contexts>>,
}

/// One caller's keyed OpenSSL state.
struct Contexts {
    /// The CBC cipher, keyed, direction fixed.
    data: CipherCtx,
    /// AES-ECB encryption keyed with the ESSIV salt.
    aux: Option<CipherCtx>,
}

/// A keyed sector cipher, shareable across threads.
pub struct SectorCipher {
    engine: Engine,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Direction {
    Encrypt,
    Decrypt,
}

impl SectorCipher {
    /// Keys the cipher; fails for a key length the spec does not take.
    pub fn new(spec: &CipherSpec, key: &[u8]) -> Result<Self, CryptoError> {
        if !spec.valid_key_len(key.len()) {
            return Err(CryptoError::InvalidKeySize { cipher: spec.name(), got: key.len() });
        }
        let essiv = match spec.mode {
            Mode::XtsPlain64 => return Self::with_xts_implementation(key, XtsImplementation::selected()),
            Mode::CbcPlain64 => false,
            Mode::CbcEssivSha256 => true,
        };
        let data_cipher = Cipher::fetch(None, &format!("AES-{}-CBC", key.len() * 8), None)?;
        let (aux_cipher, aux_key) = if essiv {
            let salt = Secret::new(HashAlg::Sha256.digest(&[key])?);
            (Some(Cipher::fetch(None, &format!("AES-{}-ECB", salt.len() * 8), None)?), Some(salt))
        } else {
            (None, None)
        };
        let cbc = Cbc {
            essiv,
            data_cipher,
            aux_cipher,
            key: Secret::from_slice(key),
            aux_key,
            enc_pool: Mutex::new(Vec::new()),
            dec_pool: Mutex::new(Vec::new()),
        };
        // Key both directions now, so that a backend refusal shows up here
        // rather than on the first sector.
        for dir in [Direction::Encrypt, Direction::Decrypt] {
            let ctxs = cbc.new_contexts(dir)?;
            cbc.pool(dir).push(ctxs);
        }
        Ok(SectorCipher { engine: Engine::Cbc(Box::new(cbc)) })
    }

    /// `aes-xts-plain64` keyed for a given implementation (benchmarks and
    /// tests); fails if this CPU cannot run it.
    pub fn with_xts_implementation(key: &[u8], imp: XtsImplementation) -> Result<Self, CryptoError> {
        if key.len() != 32 && key.len() != 64 {
            return Err(CryptoError::InvalidKeySize { cipher: "aes-xts-plain64".into(), got: key.len() });
        }
        Ok(SectorCipher { engine: Engine::Xts(Box::new(Xts::new(imp, key)?)) })
    }

    /// The XTS implementation this cipher runs; `None` for CBC.
    pub fn xts_implementation(&self) -> Option<XtsImplementation> {
        match &self.engine {
            Engine::Xts(x) => Some(x.implementation()),
            Engine::Cbc(_) => None,
        }
    }

    /// Encrypts `buf` in place: `buf.len()` is a multiple of `sector_size`;
    /// sector k of `buf` uses IV number `iv_sector + k * sector_size / 512`.
    pub fn encrypt(&self, buf: &mut [u8], sector_size: usize, iv_sector: u64) -> Result<(), CryptoError> {
        self.run(Direction::Encrypt, buf, sector_size, iv_sector)
    }

    /// Decrypts `buf` in place; same layout as [`SectorCipher::encrypt`].
    pub fn decrypt(&self, buf: &mut [u8], sector_size: usize, iv_sector: u64) -> Result<(), CryptoError> {
        self.run(Direction::Decrypt, buf, sector_size, iv_sector)
    }

    fn run(&self, dir: Direction, buf: &mut [u8], sector_size: usize, iv_sector: u64) -> Result<(), CryptoError> {
        check_layout(buf.len(), sector_size)?;
        // Bounded by check_layout: 1..=8.
        let iv_step = (sector_size / IV_SECTOR_SIZE) as u64;
        self.run_units(dir, buf, sector_size, iv_sector, iv_step)
    }

    /// Enciphers `buf` as consecutive data units of `unit` bytes, the first
    /// with IV number `first_iv`, each next one `iv_step` further. Units other
    /// than LUKS sector sizes exist only for the IEEE 1619 test vectors.
    fn run_units(
        &self,
        dir: Direction,
        buf: &mut [u8],
        unit: usize,
        first_iv: u64,
        iv_step: u64,
    ) -> Result<(), CryptoError> {
        if unit == 0 || !unit.is_multiple_of(AES_BLOCK) || unit > MAX_SECTOR_SIZE || !buf.len().is_multiple_of(unit) {
            return Err(CryptoError::InvalidParameter("data unit must be whole AES blocks, at most 4096 bytes"));
        }
        if buf.is_empty() {
            return Ok(());
        }
        match &self.engine {
            Engine::Xts(xts) => xts.run(dir == Direction::Decrypt, buf, unit, first_iv, iv_step),
            Engine::Cbc(cbc) => cbc.run_units(dir, buf, unit, first_iv, iv_step),
        }
    }
}

impl Cbc {
    fn pool(&self, dir: Direction) -> MutexGuard<'_, Vec<Contexts>> {
        let pool = match dir {
            Direction::Encrypt => &self.enc_pool,
            Direction::Decrypt => &self.dec_pool,
        };
        // The pool is only pushed to and popped from; a panic elsewhere
        // cannot leave it inconsistent.
        pool.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn new_contexts(&self, dir: Direction) -> Result<Contexts, CryptoError> {
        let mut data = CipherCtx::new()?;
        let aux = match (self.essiv, &self.aux_cipher, &self.aux_key) {
            (true, Some(ecb), Some(salt)) => {
                let mut essiv = CipherCtx::new()?;
                essiv.encrypt_init(Some(ecb), Some(salt.expose()), None)?;
                essiv.set_padding(false);
                Some(essiv)
            }
            (true, _, _) => return Err(CryptoError::Backend("ESSIV key missing".into())),
            (false, _, _) => None,
        };
        match dir {
            Direction::Encrypt => data.encrypt_init(Some(&self.data_cipher), Some(self.key.expose()), None)?,
            Direction::Decrypt => data.decrypt_init(Some(&self.data_cipher), Some(self.key.expose()), None)?,
        }
        data.set_padding(false);
        Ok(Contexts { data, aux })
    }

    fn run_units(&self, dir: Direction, buf: &mut [u8], unit: usize, first_iv: u64, iv_step: u64) -> Result<(), CryptoError> {
        let taken = self.pool(dir).pop();
        let mut ctxs = match taken {
            Some(c) => c,
            None => self.new_contexts(dir)?,
        };
        let result = self.run_with(&mut ctxs, dir, buf, unit, first_iv, iv_step);
        // A context that failed mid-way may hold a half-set state; drop it
        // (OpenSSL wipes it) instead of returning it to the pool.
        if result.is_ok() {
            self.pool(dir).push(ctxs);
        }
        result
    }

    fn run_with(
        &self,
        ctxs: &mut Contexts,
        dir: Direction,
        buf: &mut [u8],
        sector_size: usize,
        iv_sector: u64,
        iv_step: u64,
    ) -> Result<(), CryptoError> {
        let mut iv = [0u8; AES_BLOCK];
        let mut sector_no = iv_sector;
        for sector in buf.chunks_exact_mut(sector_size) {
            iv[..8].copy_from_slice(&sector_no.to_le_bytes());
            if self.essiv {
                let essiv_ctx = ctxs.aux.as_mut().ok_or(CryptoError::Backend("ESSIV context missing".into()))?;
                let mut encrypted_iv = ecb_block(essiv_ctx, &iv)?;
                set_iv(&mut ctxs.data, dir, &encrypted_iv)?;
                encrypted_iv.zeroize();
            } else {
                set_iv(&mut ctxs.data, dir, &iv)?;
            }
            cbc_sector(&mut ctxs.data, sector)?;
            sector_no = sector_no.wrapping_add(iv_step);
        }
        Ok(())
    }
}

/// Rejects sector sizes LUKS does not use and buffers that are not whole sectors.
fn check_layout(len: usize, sector_size: usize) -> Result<(), CryptoError> {
    if !(IV_SECTOR_SIZE..=MAX_SECTOR_SIZE).contains(&sector_size) || !sector_size.is_power_of_two() {
        return Err(CryptoError::InvalidParameter("sector size must be a power of two from 512 to 4096"));
    }
    if !len.is_multiple_of(sector_size) {
        return Err(CryptoError::InvalidParameter("buffer length is not a multiple of the sector size"));
    }
    Ok(())
}

/// Re-initialises only the IV: key schedule and algorithm stay in the context.
fn set_iv(ctx: &mut CipherCtx, dir: Direction, iv: &[u8; AES_BLOCK]) -> Result<(), CryptoError> {
    match dir {
        Direction::Encrypt => ctx.encrypt_init(None, None, Some(iv))?,
        Direction::Decrypt => ctx.decrypt_init(None, None, Some(iv))?,
    }
    Ok(())
}

/// One AES-ECB block through an unpadded encryption context.
fn ecb_block(ctx: &mut CipherCtx, block: &[u8; AES_BLOCK]) -> Result<[u8; AES_BLOCK], CryptoError> {
    // EVP wants room for one extra block of output from a block cipher.
    let mut out = [0u8; 2 * AES_BLOCK];
    let n = ctx.cipher_update(block, Some(&mut out))?;
    let mut result = [0u8; AES_BLOCK];
    if n == AES_BLOCK {
        result.copy_from_slice(&out[..AES_BLOCK]);
    }
    out.zeroize();
    if n != AES_BLOCK {
        return Err(CryptoError::Backend(format!("AES-ECB returned {n} bytes for one block")));
    }
    Ok(result)
}

/// CBC over one sector. EVP insists on an output buffer one block larger than
/// the input for block ciphers, so the sector goes through a stack buffer.
fn cbc_sector(ctx: &mut CipherCtx, sector: &mut [u8]) -> Result<(), CryptoError> {
    let mut scratch = [0u8; MAX_SECTOR_SIZE + AES_BLOCK];
    let n = ctx.cipher_update(sector, Some(&mut scratch))?;
    if n == sector.len() {
        sector.copy_from_slice(&scratch[..n]);
    }
    scratch.zeroize();
    if n != sector.len() {
        return Err(CryptoError::Backend(format!("AES-CBC returned {n} of {} bytes", sector.len())));
    }
    Ok(())
}

impl std::fmt::Debug for SectorCipher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SectorCipher([REDACTED])")
    }
}

#[cfg(test)]
mod tests;
// The one module allowed `unsafe`: entering `#[target_feature]` kernels
// after detecting their features, and unaligned vector loads and stores.
#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
mod x86;
mod xts;
