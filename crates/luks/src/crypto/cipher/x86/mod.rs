//! XTS kernels for x86_64, chosen at run time, and the one module of this
//! crate allowed `unsafe`.
//!
//! The kernels ([`aesni`], [`vaes`]) are safe code: they are
//! `#[target_feature]` functions, inside which the `std::arch` intrinsics of
//! those features are safe to call. What is unsafe is entering them — on a
//! CPU without the features that is undefined behaviour (in practice
//! SIGILL) — and the unaligned vector loads and stores, which take raw
//! pointers. Both live here and nowhere else: every entry into a kernel sits
//! in an `if` on the `is_x86_feature_detected!` checks of exactly the
//! features that kernel enables, and the loads and stores are small safe
//! functions over fixed-size arrays.
//!
//! The default build targets baseline x86-64 (no `-C target-feature`), so
//! one binary runs everywhere and takes the best kernel the CPU has.

#[deny(unsafe_code)]
mod aesni;
#[deny(unsafe_code)]
mod vaes;

use std::arch::x86_64::{
    __m128i, __m256i, __m512i, _mm256_loadu_si256, _mm256_storeu_si256, _mm512_loadu_si512, _mm512_storeu_si512,
    _mm_loadu_si128, _mm_storeu_si128,
};

use super::XtsImplementation;
use crate::crypto::CryptoError;

pub(super) use aesni::Keys;

/// What the AES-NI kernel and the key schedule enable.
fn has_aesni() -> bool {
    is_x86_feature_detected!("aes") && is_x86_feature_detected!("pclmulqdq")
}

/// What the 256-bit VAES kernel enables (it uses AES-NI for T₀ and tails).
fn has_vaes_avx2() -> bool {
    has_aesni()
        && is_x86_feature_detected!("avx2")
        && is_x86_feature_detected!("vaes")
        && is_x86_feature_detected!("vpclmulqdq")
}

/// What the 512-bit VAES kernel enables: `avx512bw` for the 128-bit-lane
/// byte shifts of the tweak arithmetic.
fn has_vaes_avx512() -> bool {
    has_vaes_avx2() && is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512bw")
}

/// Whether this CPU can run `imp`.
pub(super) fn supported(imp: XtsImplementation) -> bool {
    match imp {
        XtsImplementation::VaesAvx512 => has_vaes_avx512(),
        XtsImplementation::VaesAvx2 => has_vaes_avx2(),
        XtsImplementation::AesNi => has_aesni(),
        XtsImplementation::Portable => true,
    }
}

/// Why `imp` does not run here: the features it needs that the CPU lacks.
pub(super) fn missing_features(imp: XtsImplementation) -> Vec<&'static str> {
    let needed: &[&'static str] = match imp {
        XtsImplementation::VaesAvx512 => &["aes", "pclmulqdq", "avx2", "vaes", "vpclmulqdq", "avx512f", "avx512bw"],
        XtsImplementation::VaesAvx2 => &["aes", "pclmulqdq", "avx2", "vaes", "vpclmulqdq"],
        XtsImplementation::AesNi => &["aes", "pclmulqdq"],
        XtsImplementation::Portable => &[],
    };
    needed.iter().copied().filter(|f| !feature(f)).collect()
}

fn feature(name: &str) -> bool {
    match name {
        "aes" => is_x86_feature_detected!("aes"),
        "pclmulqdq" => is_x86_feature_detected!("pclmulqdq"),
        "avx2" => is_x86_feature_detected!("avx2"),
        "vaes" => is_x86_feature_detected!("vaes"),
        "vpclmulqdq" => is_x86_feature_detected!("vpclmulqdq"),
        "avx512f" => is_x86_feature_detected!("avx512f"),
        "avx512bw" => is_x86_feature_detected!("avx512bw"),
        _ => false,
    }
}

/// Expands an XTS key (K1 ‖ K2, 32 or 64 bytes) for the x86 kernels; `None`
/// when the CPU has no AES-NI or the length is wrong.
pub(super) fn expand(key: &[u8]) -> Option<Keys> {
    if !has_aesni() {
        return None;
    }
    // SAFETY: `Keys::new` enables `aes` and `pclmulqdq`, both detected above.
    unsafe { Keys::new(key) }
}

/// Enciphers `buf` in place with kernel `imp` (units of `unit` bytes, a
/// non-zero multiple of 16; unit k has number `first + k * step`).
pub(super) fn run(
    imp: XtsImplementation,
    keys: &Keys,
    decrypt: bool,
    buf: &mut [u8],
    unit: usize,
    first: u64,
    step: u64,
) -> Result<(), CryptoError> {
    match imp {
        XtsImplementation::VaesAvx512 if has_vaes_avx512() => {
            // SAFETY: `vaes::avx512::run` enables avx512f, avx512bw, vaes,
            // vpclmulqdq, avx2, aes and pclmulqdq, all detected in the guard.
            unsafe { vaes::avx512::run(keys, decrypt, buf, unit, first, step) };
        }
        XtsImplementation::VaesAvx2 if has_vaes_avx2() => {
            // SAFETY: `vaes::avx2::run` enables avx2, vaes, vpclmulqdq, aes and
            // pclmulqdq, all detected in the guard.
            unsafe { vaes::avx2::run(keys, decrypt, buf, unit, first, step) };
        }
        XtsImplementation::AesNi if has_aesni() => {
            // SAFETY: `Keys::run` enables aes and pclmulqdq, detected in the guard.
            unsafe { keys.run(decrypt, buf, unit, first, step) };
        }
        // Keys are only made for a kernel the CPU reported; reaching this
        // means the detection changed its answer, which it does not.
        _ => return Err(CryptoError::Backend(format!("XTS kernel {} is not supported by this CPU", imp.name()))),
    }
    Ok(())
}

// Unaligned loads and stores over fixed-size arrays: the only pointer work
// the kernels need.

#[inline(always)]
fn load128(b: &[u8; 16]) -> __m128i {
    // SAFETY: `b` is 16 readable bytes; `loadu` has no alignment
    // requirement; SSE2 is part of the x86-64 baseline.
    unsafe { _mm_loadu_si128(b.as_ptr().cast()) }
}

#[inline(always)]
fn store128(b: &mut [u8; 16], v: __m128i) {
    // SAFETY: `b` is 16 writable bytes; `storeu` has no alignment
    // requirement; SSE2 is part of the x86-64 baseline.
    unsafe { _mm_storeu_si128(b.as_mut_ptr().cast(), v) }
}

#[inline]
#[target_feature(enable = "avx")]
fn load256(b: &[u8; 32]) -> __m256i {
    // SAFETY: `b` is 32 readable bytes, no alignment needed; AVX is
    // enabled on this function, so only AVX kernels reach it.
    unsafe { _mm256_loadu_si256(b.as_ptr().cast()) }
}

#[inline]
#[target_feature(enable = "avx")]
fn store256(b: &mut [u8; 32], v: __m256i) {
    // SAFETY: `b` is 32 writable bytes, no alignment needed; AVX enabled here.
    unsafe { _mm256_storeu_si256(b.as_mut_ptr().cast(), v) }
}

#[inline]
#[target_feature(enable = "avx512f")]
fn load512(b: &[u8; 64]) -> __m512i {
    // SAFETY: `b` is 64 readable bytes, no alignment needed; AVX-512F
    // enabled here.
    unsafe { _mm512_loadu_si512(b.as_ptr().cast()) }
}

#[inline]
#[target_feature(enable = "avx512f")]
fn store512(b: &mut [u8; 64], v: __m512i) {
    // SAFETY: `b` is 64 writable bytes, no alignment needed; AVX-512F
    // enabled here.
    unsafe { _mm512_storeu_si512(b.as_mut_ptr().cast(), v) }
}
