//! Sector ciphers: the keyslot material and data encryption of LUKS.
//!
//! All modes run on OpenSSL's EVP layer, which uses AES-NI/VAES where the CPU
//! has them. A [`SectorCipher`] keeps a small pool of keyed OpenSSL contexts so
//! that a call only re-initialises the IV per sector: no key schedule, no
//! allocation and no algorithm fetch on the hot path. Concurrent callers each
//! take their own context from the pool, so `&self` is enough and the type is
//! `Send + Sync`.

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

/// How the sectors are enciphered.
enum Engine {
    /// OpenSSL's XTS, one EVP update per sector.
    Xts,
    /// XTS assembled from AES-ECB, only for keys whose two halves are equal:
    /// OpenSSL 3 refuses those (IEEE 1619-2018 §5.1 forbids them for new
    /// data), but the kernel accepts them, so such a volume must still open.
    XtsEqualHalves,
    /// CBC with a per-sector IV, optionally ESSIV-encrypted.
    Cbc {
        /// IVs are ESSIV (encrypted under sha256(key)) rather than plain64.
        essiv: bool,
    },
}

/// One caller's keyed OpenSSL state.
struct Contexts {
    /// The sector cipher (XTS or CBC), keyed, direction fixed.
    data: CipherCtx,
    /// AES-ECB encryption keyed with the ESSIV salt, or with the XTS tweak key
    /// for [`Engine::XtsEqualHalves`].
    aux: Option<CipherCtx>,
}

/// A keyed sector cipher, shareable across threads.
pub struct SectorCipher {
    engine: Engine,
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
        let aes_ecb = |len: usize| -> Result<Cipher, CryptoError> {
            Ok(Cipher::fetch(None, &format!("AES-{}-ECB", len * 8), None)?)
        };
        let (engine, data_cipher, aux_cipher, aux_key) = match spec.mode {
            Mode::XtsPlain64 => {
                let half = key.len() / 2;
                let data_cipher = Cipher::fetch(None, &format!("AES-{}-XTS", half * 8), None)?;
                if key[..half] == key[half..] {
                    (Engine::XtsEqualHalves, data_cipher, Some(aes_ecb(half)?), None)
                } else {
                    (Engine::Xts, data_cipher, None, None)
                }
            }
            Mode::CbcPlain64 => {
                let data_cipher = Cipher::fetch(None, &format!("AES-{}-CBC", key.len() * 8), None)?;
                (Engine::Cbc { essiv: false }, data_cipher, None, None)
            }
            Mode::CbcEssivSha256 => {
                let data_cipher = Cipher::fetch(None, &format!("AES-{}-CBC", key.len() * 8), None)?;
                let salt = Secret::new(HashAlg::Sha256.digest(&[key])?);
                (Engine::Cbc { essiv: true }, data_cipher, Some(aes_ecb(salt.len())?), Some(salt))
            }
        };
        let cipher = SectorCipher {
            engine,
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
            let ctxs = cipher.new_contexts(dir)?;
            cipher.pool(dir).push(ctxs);
        }
        Ok(cipher)
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
        let aux = match (&self.engine, &self.aux_cipher) {
            (Engine::XtsEqualHalves, Some(ecb)) => {
                // Key1 enciphers the data, Key2 the tweak (equal here, but
                // the construction does not rely on it).
                let half = self.key.len() / 2;
                let mut tweak = CipherCtx::new()?;
                tweak.encrypt_init(Some(ecb), Some(&self.key.expose()[half..]), None)?;
                tweak.set_padding(false);
                let mut blocks = CipherCtx::new()?;
                match dir {
                    Direction::Encrypt => blocks.encrypt_init(Some(ecb), Some(&self.key.expose()[..half]), None)?,
                    Direction::Decrypt => blocks.decrypt_init(Some(ecb), Some(&self.key.expose()[..half]), None)?,
                }
                blocks.set_padding(false);
                return Ok(Contexts { data: blocks, aux: Some(tweak) });
            }
            (Engine::Cbc { essiv: true }, Some(ecb)) => {
                let salt = self.aux_key.as_ref().ok_or(CryptoError::Backend("ESSIV key missing".into()))?;
                let mut essiv = CipherCtx::new()?;
                essiv.encrypt_init(Some(ecb), Some(salt.expose()), None)?;
                essiv.set_padding(false);
                Some(essiv)
            }
            _ => None,
        };
        match dir {
            Direction::Encrypt => data.encrypt_init(Some(&self.data_cipher), Some(self.key.expose()), None)?,
            Direction::Decrypt => data.decrypt_init(Some(&self.data_cipher), Some(self.key.expose()), None)?,
        }
        data.set_padding(false);
        Ok(Contexts { data, aux })
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
            match self.engine {
                Engine::Xts => {
                    set_iv(&mut ctxs.data, dir, &iv)?;
                    let n = ctxs.data.cipher_update_inplace(sector, sector_size)?;
                    if n != sector_size {
                        return Err(CryptoError::Backend(format!("XTS returned {n} of {sector_size} bytes")));
                    }
                }
                Engine::XtsEqualHalves => {
                    let tweak_ctx = ctxs.aux.as_mut().ok_or(CryptoError::Backend("XTS tweak context missing".into()))?;
                    let mut tweak = ecb_block(tweak_ctx, &iv)?;
                    xts_sector_ecb(&mut ctxs.data, &mut tweak, sector)?;
                    tweak.zeroize();
                }
                Engine::Cbc { essiv } => {
                    if essiv {
                        let essiv_ctx = ctxs.aux.as_mut().ok_or(CryptoError::Backend("ESSIV context missing".into()))?;
                        let mut encrypted_iv = ecb_block(essiv_ctx, &iv)?;
                        set_iv(&mut ctxs.data, dir, &encrypted_iv)?;
                        encrypted_iv.zeroize();
                    } else {
                        set_iv(&mut ctxs.data, dir, &iv)?;
                    }
                    cbc_sector(&mut ctxs.data, sector)?;
                }
            }
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

/// XTS (IEEE 1619) over one sector from AES-ECB: C = E(P ⊕ T) ⊕ T, with T
/// multiplied by α in GF(2^128) after each block. `ctx` runs the data key in
/// the wanted direction; `tweak` holds E_K2(IV) on entry.
fn xts_sector_ecb(ctx: &mut CipherCtx, tweak: &mut [u8; AES_BLOCK], sector: &mut [u8]) -> Result<(), CryptoError> {
    // Batch the ECB calls: build P ⊕ T for a run of blocks, encipher the run
    // in one call, then xor the same tweaks back.
    const RUN: usize = 32;
    let mut tweaks = [0u8; RUN * AES_BLOCK];
    let mut scratch = [0u8; (RUN + 1) * AES_BLOCK];
    let mut result = Ok(());
    for run in sector.chunks_mut(RUN * AES_BLOCK) {
        for (block, t) in run.chunks_exact_mut(AES_BLOCK).zip(tweaks.chunks_exact_mut(AES_BLOCK)) {
            t.copy_from_slice(tweak);
            xor_in_place(block, t);
            gf128_mul_alpha(tweak);
        }
        let n = ctx.cipher_update(run, Some(&mut scratch))?;
        if n != run.len() {
            result = Err(CryptoError::Backend(format!("AES-ECB returned {n} of {} bytes", run.len())));
            break;
        }
        run.copy_from_slice(&scratch[..n]);
        for (block, t) in run.chunks_exact_mut(AES_BLOCK).zip(tweaks.chunks_exact(AES_BLOCK)) {
            xor_in_place(block, t);
        }
    }
    tweaks.zeroize();
    scratch.zeroize();
    result
}

fn xor_in_place(dst: &mut [u8], src: &[u8]) {
    for (d, s) in dst.iter_mut().zip(src) {
        *d ^= s;
    }
}

/// Multiplies the little-endian 128-bit tweak by α (x) modulo x^128 + x^7 + x^2 + x + 1.
fn gf128_mul_alpha(t: &mut [u8; AES_BLOCK]) {
    let v = u128::from_le_bytes(*t);
    let carry = (v >> 127) as u8;
    let mut shifted = (v << 1).to_le_bytes();
    shifted[0] ^= 0x87 * carry;
    *t = shifted;
}

impl std::fmt::Debug for SectorCipher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SectorCipher([REDACTED])")
    }
}

#[cfg(test)]
mod tests;
