//! XTS-AES written directly on AES-NI and PCLMULQDQ instructions, through
//! `safe_arch`'s safe wrappers: compiled in when the build enables the
//! `aes` and `pclmulqdq` target features (the workspace's
//! `.cargo/config.toml` does for x86_64); without them [`super::xts`] runs
//! alone.
//!
//! Why a second XTS beside the one on the `aes` crate: that crate picks
//! AES-NI at run time, so its rounds sit behind a call the compiler cannot
//! inline through. Each group of blocks crosses that boundary, the round
//! keys are reloaded, and the tweak arithmetic cannot be scheduled between
//! the rounds. Here the whole unit loop is one function: the data-unit key's
//! round keys are memory operands of `aesenc`, the tweaks are xored into the
//! first and last round keys (`aesenclast(x, k ⊕ t) = aesenclast(x, k) ⊕ t`),
//! and each group's next tweaks are computed between its rounds
//! ([`run_group`] says why each choice).
//! `docs/benchmarks.md` has the measurements.
//!
//! The key schedule is FIPS-197's, by `aeskeygenassist`; the decryption
//! schedule is the equivalent inverse cipher's (`aesimc` of the inner keys).
//! The tests check this module against the `aes`-crate path, the IEEE 1619
//! vectors and OpenSSL.

use safe_arch::{
    add_i64_m128i, aes_decrypt_last_m128i, aes_decrypt_m128i, aes_encrypt_last_m128i, aes_encrypt_m128i,
    aes_inv_mix_columns_m128i, aes_key_gen_assist_m128i, bitand_m128i, bitxor_m128i, byte_shl_imm_u128_m128i,
    byte_shr_imm_u128_m128i, m128i, mul_i64_carryless_m128i, set_i32_m128i, shr_imm_i32_m128i, shuffle_ai_f32_all_m128i,
    zeroed_m128i,
};
use zeroize::Zeroize;

const BLOCK: usize = 16;
/// Blocks enciphered side by side: enough to keep both AES units of a core
/// busy through the 4-cycle round latency. [`mul_alpha_8`] and the tweak
/// steps interleaved with rounds 1–8 assume eight, and so do at least ten
/// rounds.
const GROUP: usize = 8;
const GROUP_BYTES: usize = GROUP * BLOCK;

/// Round keys, wiped on drop. Not `Debug`: `m128i`'s would print them.
struct Schedule([m128i; 15]);

impl Drop for Schedule {
    fn drop(&mut self) {
        self.0.iter_mut().for_each(|k| k.0.zeroize());
    }
}

/// Keys of one XTS cipher: the data-unit key K1 both ways, the tweak key K2
/// for encryption only.
pub(super) struct Keys {
    /// 10 for AES-128 (256-bit XTS key), 14 for AES-256 (512-bit).
    rounds: usize,
    enc: Schedule,
    dec: Schedule,
    tweak: Schedule,
}

impl Keys {
    /// `key` is K1 ‖ K2, 32 or 64 bytes; `None` for other lengths.
    pub(super) fn new(key: &[u8]) -> Option<Keys> {
        let (k1, k2) = key.split_at(key.len() / 2);
        let (rounds, enc, tweak) = match key.len() {
            32 => (10, expand_128(k1), expand_128(k2)),
            64 => (14, expand_256(k1), expand_256(k2)),
            _ => return None,
        };
        let mut dec = Schedule([zeroed_m128i(); 15]);
        dec.0[0] = enc.0[rounds];
        for r in 1..rounds {
            dec.0[r] = aes_inv_mix_columns_m128i(enc.0[rounds - r]);
        }
        dec.0[rounds] = enc.0[0];
        Some(Keys { rounds, enc, dec, tweak })
    }

    /// Enciphers `buf` (whole units of `unit` bytes, `unit` a non-zero
    /// multiple of 16) in place; unit k has the data unit number
    /// `first + k * step` (wrapping, as plain64 does).
    pub(super) fn run(&self, decrypt: bool, buf: &mut [u8], unit: usize, first: u64, step: u64) {
        let rk = if decrypt { &self.dec.0 } else { &self.enc.0 };
        let tk = &self.tweak.0;
        match (self.rounds, decrypt) {
            (10, false) => run_units::<10, false>(rk, tk, buf, unit, first, step),
            (10, true) => run_units::<10, true>(rk, tk, buf, unit, first, step),
            (_, false) => run_units::<14, false>(rk, tk, buf, unit, first, step),
            (_, true) => run_units::<14, true>(rk, tk, buf, unit, first, step),
        }
    }
}

/// `k ⊕ (k ≪ 32) ⊕ (k ≪ 64) ⊕ (k ≪ 96) ⊕ t`: the running xor of the
/// previous round key's words, plus the `aeskeygenassist` word `t`.
#[inline(always)]
fn next_round_key(k: m128i, t: m128i) -> m128i {
    let k = bitxor_m128i(k, byte_shl_imm_u128_m128i::<4>(k));
    let k = bitxor_m128i(k, byte_shl_imm_u128_m128i::<8>(k));
    bitxor_m128i(k, t)
}

fn load_key(bytes: &[u8]) -> m128i {
    let mut b: [u8; BLOCK] = bytes.try_into().expect("16-byte key half");
    let k = m128i::from(b);
    b.zeroize();
    k
}

fn expand_128(key: &[u8]) -> Schedule {
    let mut s = Schedule([zeroed_m128i(); 15]);
    let rk = &mut s.0;
    rk[0] = load_key(key);
    macro_rules! round {
        ($i:literal, $rcon:literal) => {
            let t = aes_key_gen_assist_m128i::<$rcon>(rk[$i - 1]);
            rk[$i] = next_round_key(rk[$i - 1], shuffle_ai_f32_all_m128i::<0xff>(t));
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
    s
}

fn expand_256(key: &[u8]) -> Schedule {
    let mut s = Schedule([zeroed_m128i(); 15]);
    let rk = &mut s.0;
    rk[0] = load_key(&key[..BLOCK]);
    rk[1] = load_key(&key[BLOCK..]);
    // Even round keys take SubWord(RotWord(w)) ⊕ rcon of the previous key's
    // last word; odd ones SubWord(w) alone.
    macro_rules! even {
        ($i:literal, $rcon:literal) => {
            let t = aes_key_gen_assist_m128i::<$rcon>(rk[$i - 1]);
            rk[$i] = next_round_key(rk[$i - 2], shuffle_ai_f32_all_m128i::<0xff>(t));
        };
    }
    macro_rules! odd {
        ($i:literal) => {
            let t = aes_key_gen_assist_m128i::<0>(rk[$i - 1]);
            rk[$i] = next_round_key(rk[$i - 2], shuffle_ai_f32_all_m128i::<0xaa>(t));
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
    s
}

/// ·α in GF(2^128): each 64-bit half shifts left by one (`paddq`); bit 63
/// carries into bit 64 and bit 127 folds back as 0x87. The two carries are
/// the sign bits of 32-bit lanes 1 and 3, moved to lanes 2 and 0.
#[inline(always)]
fn mul_alpha(t: m128i) -> m128i {
    let signs = shr_imm_i32_m128i::<31>(t);
    let carry = bitand_m128i(shuffle_ai_f32_all_m128i::<0x13>(signs), set_i32_m128i(0, 1, 0, 0x87));
    bitxor_m128i(add_i64_m128i(t, t), carry)
}

/// ·α⁸: a one-byte shift of the whole tweak; the byte shifted out folds
/// back times x⁷ + x² + x + 1 (a carry-less product of at most 15 bits, so
/// no second reduction).
#[inline(always)]
fn mul_alpha_8(t: m128i) -> m128i {
    let top = byte_shr_imm_u128_m128i::<15>(t);
    let fold = mul_i64_carryless_m128i::<0>(top, set_i32_m128i(0, 0, 0, 0x87));
    bitxor_m128i(byte_shl_imm_u128_m128i::<1>(t), fold)
}

#[inline(always)]
fn round<const DEC: bool>(b: m128i, k: m128i) -> m128i {
    if DEC {
        aes_decrypt_m128i(b, k)
    } else {
        aes_encrypt_m128i(b, k)
    }
}

#[inline(always)]
fn last_round<const DEC: bool>(b: m128i, k: m128i) -> m128i {
    if DEC {
        aes_decrypt_last_m128i(b, k)
    } else {
        aes_encrypt_last_m128i(b, k)
    }
}

/// AES-encrypts eight blocks in place (the tweak key's T₀ of eight units).
#[inline(always)]
fn encrypt_8<const NR: usize>(rk: &[m128i; 15], b: &mut [m128i; GROUP]) {
    for x in b.iter_mut() {
        *x = bitxor_m128i(*x, rk[0]);
    }
    for k in &rk[1..NR] {
        for x in b.iter_mut() {
            *x = aes_encrypt_m128i(*x, *k);
        }
    }
    for x in b.iter_mut() {
        *x = aes_encrypt_last_m128i(*x, rk[NR]);
    }
}

fn run_units<const NR: usize, const DEC: bool>(
    rk: &[m128i; 15],
    tk: &[m128i; 15],
    buf: &mut [u8],
    unit: usize,
    first: u64,
    step: u64,
) {
    let mut n = first;
    let mut t0 = [zeroed_m128i(); GROUP];
    for batch in buf.chunks_mut(GROUP * unit) {
        // Eight T₀ at once; a short last batch leaves the extra ones unused.
        for (k, t) in t0.iter_mut().enumerate() {
            *t = m128i::from(u128::from(n.wrapping_add(step.wrapping_mul(k as u64))));
        }
        encrypt_8::<NR>(tk, &mut t0);
        n = n.wrapping_add(step.wrapping_mul((batch.len() / unit) as u64));
        for (data, t) in batch.chunks_exact_mut(unit).zip(&t0) {
            run_unit::<NR, DEC>(rk, data, *t);
        }
    }
    t0.iter_mut().for_each(|t| t.0.zeroize());
}

/// One data unit with initial tweak `t`.
#[inline(always)]
fn run_unit<const NR: usize, const DEC: bool>(rk: &[m128i; 15], data: &mut [u8], t: m128i) {
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
        let mut next = [zeroed_m128i(); GROUP];
        run_group::<NR, DEC>(rk, late, g, &tw, &mut next);
        tw = next;
    }
    // Units that are not whole groups (only the 32-byte IEEE vectors).
    let mut x = tw[0];
    for blk in rest.as_chunks_mut::<BLOCK>().0 {
        let b = bitxor_m128i(m128i::from(*blk), bitxor_m128i(x, rk[0]));
        let b = rk[1..NR].iter().fold(b, |b, k| round::<DEC>(b, *k));
        *blk = last_round::<DEC>(b, bitxor_m128i(rk[NR], x)).into();
        x = mul_alpha(x);
    }
    x.0.zeroize();
    tw.iter_mut().for_each(|t| t.0.zeroize());
}

/// Eight blocks: xor with tweak and first round key; rounds 1–8 across all
/// eight blocks, each followed by one of the next group's tweaks
/// (`next[i] = tw[i]·α⁸`); the remaining rounds (`late`); the last round
/// with the tweak folded into its key.
///
/// The shape is measured, on the 2-CPU EPYC (Zen 1) of docs/benchmarks.md:
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
///   tweaks; the serial SSE2 ·α chain cost 15–20 % here.
#[inline(always)]
fn run_group<const NR: usize, const DEC: bool>(
    rk: &[m128i; 15],
    late: &[m128i],
    g: &mut [u8; GROUP_BYTES],
    tw: &[m128i; GROUP],
    next: &mut [m128i; GROUP],
) {
    let blocks = g.as_chunks_mut::<BLOCK>().0;
    let mut b = [zeroed_m128i(); GROUP];
    for ((x, blk), t) in b.iter_mut().zip(blocks.iter()).zip(tw) {
        *x = bitxor_m128i(m128i::from(*blk), bitxor_m128i(*t, rk[0]));
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
        *blk = last_round::<DEC>(*x, bitxor_m128i(rk[NR], *t)).into();
    }
}
