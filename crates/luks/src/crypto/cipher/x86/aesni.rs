//! XTS-AES on AES-NI and PCLMULQDQ, eight blocks at a time: the kernel for
//! x86 CPUs without VAES, and the key schedule every x86 kernel uses.
//!
//! Why not the `aes` crate's AES-NI backend ([`super::super::xts`], the
//! portable path): its rounds sit behind a call the compiler cannot inline
//! through, so each group of blocks crosses that boundary, the round keys
//! are reloaded, and the tweak arithmetic cannot be scheduled between the
//! rounds. Here the whole unit loop is one function: the tweaks are xored
//! into the first and last round keys (`aesenclast(x, k ⊕ t) =
//! aesenclast(x, k) ⊕ t`), and each group's next tweaks are computed
//! between its rounds ([`run_group`] says why each choice).
//! `docs/benchmarks.md` has the measurements.
//!
//! The key schedule is FIPS-197's, by `aeskeygenassist`; the decryption
//! schedule is the equivalent inverse cipher's (`aesimc` of the inner keys).
//! Every function here is `#[target_feature(enable = "aes,pclmulqdq")]`;
//! [`super`] enters them only after detecting both.

use std::arch::x86_64::{
    __m128i, _mm_add_epi64, _mm_aesdec_si128, _mm_aesdeclast_si128, _mm_aesenc_si128, _mm_aesenclast_si128,
    _mm_aesimc_si128, _mm_aeskeygenassist_si128, _mm_and_si128, _mm_clmulepi64_si128, _mm_set_epi32, _mm_set_epi64x,
    _mm_setzero_si128, _mm_shuffle_epi32, _mm_slli_si128, _mm_srai_epi32, _mm_srli_si128, _mm_xor_si128,
};

use zeroize::{Zeroize, ZeroizeOnDrop};

use super::{load128, store128};

const BLOCK: usize = 16;
/// Blocks enciphered side by side: enough to keep both AES units of a core
/// busy through the 4-cycle round latency. [`mul_alpha_8`] and the tweak
/// steps interleaved with rounds 1–8 assume eight, and so do at least ten
/// rounds.
const GROUP: usize = 8;
const GROUP_BYTES: usize = GROUP * BLOCK;

/// Round keys as bytes, wiped on drop; each kernel loads them into
/// registers per call.
#[derive(Zeroize, ZeroizeOnDrop)]
pub(super) struct Schedule(pub(super) [[u8; BLOCK]; 15]);

/// Keys of one XTS cipher: the data-unit key K1 both ways, the tweak key K2
/// for encryption only. Not `Debug`.
pub(in crate::crypto::cipher) struct Keys {
    /// 10 for AES-128 (256-bit XTS key), 14 for AES-256 (512-bit).
    pub(super) rounds: usize,
    pub(super) enc: Schedule,
    pub(super) dec: Schedule,
    pub(super) tweak: Schedule,
}

impl Keys {
    /// `key` is K1 ‖ K2, 32 or 64 bytes; `None` for other lengths.
    #[target_feature(enable = "aes,pclmulqdq")]
    pub(super) fn new(key: &[u8]) -> Option<Keys> {
        let (k1, k2) = key.split_at(key.len() / 2);
        let (rounds, mut enc, mut tweak) = match key.len() {
            32 => (10, expand_128(k1), expand_128(k2)),
            64 => (14, expand_256(k1), expand_256(k2)),
            _ => return None,
        };
        let mut dec = [_mm_setzero_si128(); 15];
        dec[0] = enc[rounds];
        for r in 1..rounds {
            dec[r] = _mm_aesimc_si128(enc[rounds - r]);
        }
        dec[rounds] = enc[0];
        let keys = Keys { rounds, enc: to_bytes(&enc), dec: to_bytes(&dec), tweak: to_bytes(&tweak) };
        for s in [&mut enc, &mut dec, &mut tweak] {
            s.iter_mut().for_each(|k| *k = _mm_setzero_si128());
            std::hint::black_box(s);
        }
        Some(keys)
    }

    /// Enciphers `buf` (whole units of `unit` bytes, `unit` a non-zero
    /// multiple of 16) in place; unit k has the data unit number
    /// `first + k * step` (wrapping, as plain64 does).
    #[target_feature(enable = "aes,pclmulqdq")]
    pub(super) fn run(&self, decrypt: bool, buf: &mut [u8], unit: usize, first: u64, step: u64) {
        let rk = load_schedule(if decrypt { &self.dec } else { &self.enc });
        let tk = load_schedule(&self.tweak);
        match (self.rounds, decrypt) {
            (10, false) => run_units::<10, false>(&rk, &tk, buf, unit, first, step),
            (10, true) => run_units::<10, true>(&rk, &tk, buf, unit, first, step),
            (_, false) => run_units::<14, false>(&rk, &tk, buf, unit, first, step),
            (_, true) => run_units::<14, true>(&rk, &tk, buf, unit, first, step),
        }
    }
}

fn to_bytes(keys: &[__m128i; 15]) -> Schedule {
    let mut s = Schedule([[0; BLOCK]; 15]);
    for (b, k) in s.0.iter_mut().zip(keys) {
        store128(b, *k);
    }
    s
}

/// The schedule in registers (the compiler keeps what does not fit on the
/// stack, as it would any spilled key).
#[inline]
#[target_feature(enable = "aes,pclmulqdq")]
pub(super) fn load_schedule(s: &Schedule) -> [__m128i; 15] {
    let mut k = [_mm_setzero_si128(); 15];
    for (k, b) in k.iter_mut().zip(&s.0) {
        *k = load128(b);
    }
    k
}

/// `k ⊕ (k ≪ 32) ⊕ (k ≪ 64) ⊕ (k ≪ 96) ⊕ t`: the running xor of the
/// previous round key's words, plus the `aeskeygenassist` word `t`.
#[inline]
#[target_feature(enable = "aes,pclmulqdq")]
fn next_round_key(k: __m128i, t: __m128i) -> __m128i {
    let k = _mm_xor_si128(k, _mm_slli_si128::<4>(k));
    let k = _mm_xor_si128(k, _mm_slli_si128::<8>(k));
    _mm_xor_si128(k, t)
}

fn load_key(bytes: &[u8]) -> __m128i {
    let mut b: [u8; BLOCK] = bytes.try_into().expect("16-byte key half");
    let k = load128(&b);
    b.zeroize();
    k
}

#[target_feature(enable = "aes,pclmulqdq")]
fn expand_128(key: &[u8]) -> [__m128i; 15] {
    let mut rk = [_mm_setzero_si128(); 15];
    rk[0] = load_key(key);
    macro_rules! round {
        ($i:literal, $rcon:literal) => {
            let t = _mm_aeskeygenassist_si128::<$rcon>(rk[$i - 1]);
            rk[$i] = next_round_key(rk[$i - 1], _mm_shuffle_epi32::<0xff>(t));
        };
    }
    round!(1, 0x01);
    round!(2, 0x02);
    round!(3, 0x04);
    round!(4, 0x08);
    round!(5, 0x10);
    round!(6, 0x20);
    round!(7, 0x40);
    round!(8, 0x80);
    round!(9, 0x1b);
    round!(10, 0x36);
    rk
}

#[target_feature(enable = "aes,pclmulqdq")]
fn expand_256(key: &[u8]) -> [__m128i; 15] {
    let mut rk = [_mm_setzero_si128(); 15];
    rk[0] = load_key(&key[..BLOCK]);
    rk[1] = load_key(&key[BLOCK..]);
    // Even round keys take SubWord(RotWord(w)) ⊕ rcon of the previous key's
    // last word; odd ones SubWord(w) alone.
    macro_rules! even {
        ($i:literal, $rcon:literal) => {
            let t = _mm_aeskeygenassist_si128::<$rcon>(rk[$i - 1]);
            rk[$i] = next_round_key(rk[$i - 2], _mm_shuffle_epi32::<0xff>(t));
        };
    }
    macro_rules! odd {
        ($i:literal) => {
            let t = _mm_aeskeygenassist_si128::<0>(rk[$i - 1]);
            rk[$i] = next_round_key(rk[$i - 2], _mm_shuffle_epi32::<0xaa>(t));
        };
    }
    even!(2, 0x01);
    odd!(3);
    even!(4, 0x02);
    odd!(5);
    even!(6, 0x04);
    odd!(7);
    even!(8, 0x08);
    odd!(9);
    even!(10, 0x10);
    odd!(11);
    even!(12, 0x20);
    odd!(13);
    even!(14, 0x40);
    rk
}

/// ·α in GF(2^128): each 64-bit half shifts left by one (`paddq`); bit 63
/// carries into bit 64 and bit 127 folds back as 0x87. The two carries are
/// the sign bits of 32-bit lanes 1 and 3, moved to lanes 2 and 0.
#[inline]
#[target_feature(enable = "aes,pclmulqdq")]
pub(super) fn mul_alpha(t: __m128i) -> __m128i {
    let signs = _mm_srai_epi32::<31>(t);
    let carry = _mm_and_si128(_mm_shuffle_epi32::<0x13>(signs), _mm_set_epi32(0, 1, 0, 0x87));
    _mm_xor_si128(_mm_add_epi64(t, t), carry)
}

/// ·α⁸: a one-byte shift of the whole tweak; the byte shifted out folds
/// back times x⁷ + x² + x + 1 (a carry-less product of at most 15 bits, so
/// no second reduction).
#[inline]
#[target_feature(enable = "aes,pclmulqdq")]
fn mul_alpha_8(t: __m128i) -> __m128i {
    let top = _mm_srli_si128::<15>(t);
    let fold = _mm_clmulepi64_si128::<0>(top, _mm_set_epi32(0, 0, 0, 0x87));
    _mm_xor_si128(_mm_slli_si128::<1>(t), fold)
}

#[inline]
#[target_feature(enable = "aes,pclmulqdq")]
pub(super) fn round<const DEC: bool>(b: __m128i, k: __m128i) -> __m128i {
    if DEC {
        _mm_aesdec_si128(b, k)
    } else {
        _mm_aesenc_si128(b, k)
    }
}

#[inline]
#[target_feature(enable = "aes,pclmulqdq")]
pub(super) fn last_round<const DEC: bool>(b: __m128i, k: __m128i) -> __m128i {
    if DEC {
        _mm_aesdeclast_si128(b, k)
    } else {
        _mm_aesenclast_si128(b, k)
    }
}

/// The T₀ of eight data units `n, n + step, …` under the tweak key: the
/// IV blocks encrypted side by side. Units past the caller's last are
/// computed and ignored.
#[inline]
#[target_feature(enable = "aes,pclmulqdq")]
pub(super) fn tweaks_0<const NR: usize>(tk: &[__m128i; 15], n: u64, step: u64) -> [__m128i; GROUP] {
    let mut b = [_mm_setzero_si128(); GROUP];
    for (k, x) in b.iter_mut().enumerate() {
        let iv = n.wrapping_add(step.wrapping_mul(k as u64));
        *x = _mm_xor_si128(_mm_set_epi64x(0, iv as i64), tk[0]);
    }
    for k in &tk[1..NR] {
        for x in b.iter_mut() {
            *x = _mm_aesenc_si128(*x, *k);
        }
    }
    for x in b.iter_mut() {
        *x = _mm_aesenclast_si128(*x, tk[NR]);
    }
    b
}

/// Blocks of a unit past its last whole vector group, one at a time with
/// the serial ·α chain from `t`; returns nothing (the chain ends with the unit).
#[inline]
#[target_feature(enable = "aes,pclmulqdq")]
pub(super) fn single_blocks<const NR: usize, const DEC: bool>(rk: &[__m128i; 15], blocks: &mut [[u8; BLOCK]], t: __m128i) {
    let mut x = t;
    for blk in blocks {
        let b = _mm_xor_si128(load128(blk), _mm_xor_si128(x, rk[0]));
        let mut b = b;
        for k in &rk[1..NR] {
            b = round::<DEC>(b, *k);
        }
        store128(blk, last_round::<DEC>(b, _mm_xor_si128(rk[NR], x)));
        x = mul_alpha(x);
    }
    wipe(&mut x);
}

/// Overwrites a register-held secret (tweaks); `black_box` keeps the store.
#[inline]
#[target_feature(enable = "aes,pclmulqdq")]
pub(super) fn wipe(x: &mut __m128i) {
    *x = _mm_setzero_si128();
    std::hint::black_box(x);
}

#[target_feature(enable = "aes,pclmulqdq")]
fn run_units<const NR: usize, const DEC: bool>(
    rk: &[__m128i; 15],
    tk: &[__m128i; 15],
    buf: &mut [u8],
    unit: usize,
    first: u64,
    step: u64,
) {
    let mut n = first;
    for batch in buf.chunks_mut(GROUP * unit) {
        // Eight T₀ at once; a short last batch leaves the extra ones unused.
        let mut t0 = tweaks_0::<NR>(tk, n, step);
        n = n.wrapping_add(step.wrapping_mul((batch.len() / unit) as u64));
        for (data, t) in batch.chunks_exact_mut(unit).zip(&t0) {
            run_unit::<NR, DEC>(rk, data, *t);
        }
        t0.iter_mut().for_each(|t| wipe(t));
    }
}

/// One data unit with initial tweak `t`.
#[inline]
#[target_feature(enable = "aes,pclmulqdq")]
fn run_unit<const NR: usize, const DEC: bool>(rk: &[__m128i; 15], data: &mut [u8], t: __m128i) {
    let mut tw = [t; GROUP];
    for i in 1..GROUP {
        tw[i] = mul_alpha(tw[i - 1]);
    }
    // Rounds after the eighth, as a loop whose length the compiler does not
    // know (see [`run_group`]).
    let late = &rk[GROUP + 1..std::hint::black_box(NR)];
    let (groups, rest) = data.as_chunks_mut::<GROUP_BYTES>();
    for g in groups {
        // A fresh array per group: one declared outside the loop and reused
        // made the compiler keep it in memory (5.2 → 4.2 GB/s).
        let mut next = [_mm_setzero_si128(); GROUP];
        run_group::<NR, DEC>(rk, late, g, &tw, &mut next);
        tw = next;
    }
    // Units that are not whole groups (only the unit API's odd shapes).
    single_blocks::<NR, DEC>(rk, rest.as_chunks_mut::<BLOCK>().0, tw[0]);
    tw.iter_mut().for_each(|t| wipe(t));
}

/// Eight blocks: xor with tweak and first round key; rounds 1–8 across all
/// eight blocks, each followed by one of the next group's tweaks
/// (`next[i] = tw[i]·α⁸`); the remaining rounds (`late`); the last round
/// with the tweak folded into its key.
///
/// The shape was measured on a Zen 1 EPYC (docs/benchmarks.md):
/// - the next tweaks placed between the rounds, rather than all before or
///   after them, took AES-128-XTS from 4.3 to 5.2 GB/s (cache-hot): the
///   out-of-order window then holds tweak work and independent AES rounds
///   together instead of one after the other;
/// - the rounds after the eighth as a loop: with every round unrolled and
///   nothing between them, LLVM's scheduler regroups the rounds two blocks
///   at a time, and the CPU cannot look far enough ahead to keep eight
///   blocks in flight (AES-128-ECB alone: 6.0 unrolled, 7.4 as a loop,
///   OpenSSL 7.4); rounds 1–8 keep their order because the tweak steps
///   separate them;
/// - ·α⁸ by `pclmulqdq` (shift the tweak by one byte, fold the byte shifted
///   out back times 0x87): four instructions, independent across the eight
///   tweaks; the serial SSE2 ·α chain cost 15–20 % there.
#[inline]
#[target_feature(enable = "aes,pclmulqdq")]
fn run_group<const NR: usize, const DEC: bool>(
    rk: &[__m128i; 15],
    late: &[__m128i],
    g: &mut [u8; GROUP_BYTES],
    tw: &[__m128i; GROUP],
    next: &mut [__m128i; GROUP],
) {
    let blocks = g.as_chunks_mut::<BLOCK>().0;
    let mut b = [_mm_setzero_si128(); GROUP];
    for ((x, blk), t) in b.iter_mut().zip(blocks.iter()).zip(tw) {
        *x = _mm_xor_si128(load128(blk), _mm_xor_si128(*t, rk[0]));
    }
    for (i, k) in rk[1..=GROUP].iter().enumerate() {
        for x in &mut b {
            *x = round::<DEC>(*x, *k);
        }
        next[i] = mul_alpha_8(tw[i]);
    }
    for k in late {
        for x in &mut b {
            *x = round::<DEC>(*x, *k);
        }
    }
    for ((x, blk), t) in b.iter().zip(blocks.iter_mut()).zip(tw) {
        store128(blk, last_round::<DEC>(*x, _mm_xor_si128(rk[NR], *t)));
    }
}
