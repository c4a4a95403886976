//! XTS-AES (IEEE 1619) over the RustCrypto `aes` crate, fused per block group:
//! the portable path, for other architectures and x86 CPUs without AES-NI
//! (the `aes` crate itself still uses AES-NI when it finds it). x86_64 CPUs
//! with AES-NI run a kernel of [`super::x86`] instead.
//!
//! For data unit n with tweak key K2 and data key K1:
//! T₀ = E_K2(le64(n) ‖ 0⁶⁴), Tⱼ₊₁ = Tⱼ·α in GF(2^128) (little-endian, reduction
//! x^128 + x^7 + x^2 + x + 1), block j becomes E_K1(Pⱼ ⊕ Tⱼ) ⊕ Tⱼ
//! (decryption: D_K1(Cⱼ ⊕ Tⱼ) ⊕ Tⱼ). LUKS units are whole AES blocks, so there
//! is no ciphertext stealing; callers reject other lengths before this point.
//!
//! Why this shape and not OpenSSL's XTS: the safe `openssl` crate can only
//! change the IV by re-initialising the context (~160 ns per sector, a sixth
//! of the sector's cost). XTS assembled from OpenSSL AES-ECB, even with one
//! ECB call per 16–256 KiB chunk and the tweaks expanded in Rust, needs
//! separate passes over the data for the tweaks, which overlap neither the
//! AES rounds nor the memory traffic: measured 2026-11-27 at 2.8–3.0 /
//! 2.4–2.6 GB/s (256/512-bit keys, 64 MiB buffer, 4 KiB sectors) against
//! 3.5–3.9 / 2.9–3.3 for this module in the same runs.
//! Here the T₀ of a batch of 64 units come out of one multi-block K2 call;
//! then, inside one call into the `aes` crate's AES-NI backend per batch,
//! each group of 8 blocks is xored with its tweaks, goes through the
//! backend's 8-block routine and is xored again, while the ·α chain of the
//! *next* unit's tweaks (a serial dependency, ~4 cycles a step) is computed
//! a group at a time, so that it overlaps the AES rounds instead of
//! preceding them. Tweaks live in SSE2 registers (see [`Tweak`]).
//! `docs/benchmarks.md` has the measurements behind each choice.

use aes::cipher::consts::U16;
use aes::cipher::typenum::Unsigned;
use aes::cipher::{BlockBackend, BlockClosure, BlockDecrypt, BlockEncrypt, BlockSizeUser, KeyInit, ParBlocks};
use aes::{Aes128, Aes128Enc, Aes256, Aes256Enc, Block};
use zeroize::Zeroize;

use super::super::CryptoError;

const BLOCK: usize = 16;
/// Data units whose T₀ are computed in one K2 call.
const BATCH: usize = 64;

/// Key schedules of the two XTS halves. The `aes` types wipe their round
/// keys on drop (crate feature `zeroize`). Boxed by its one user.
#[allow(clippy::large_enum_variant)]
pub(super) enum XtsKeys {
    Aes128 { data: Aes128, tweak: Aes128Enc },
    Aes256 { data: Aes256, tweak: Aes256Enc },
}

impl XtsKeys {
    /// `key` is K1 ‖ K2, 32 or 64 bytes. Equal halves are accepted: IEEE
    /// 1619-2018 forbids them for new data but the kernel takes them, so a
    /// volume made that way must still open.
    pub(super) fn new(key: &[u8]) -> Result<Self, CryptoError> {
        let bad = || CryptoError::InvalidParameter("XTS key must be 32 or 64 bytes");
        let half = key.len() / 2;
        let (k1, k2) = key.split_at(half);
        match key.len() {
            32 => Ok(XtsKeys::Aes128 {
                data: Aes128::new_from_slice(k1).map_err(|_| bad())?,
                tweak: Aes128Enc::new_from_slice(k2).map_err(|_| bad())?,
            }),
            64 => Ok(XtsKeys::Aes256 {
                data: Aes256::new_from_slice(k1).map_err(|_| bad())?,
                tweak: Aes256Enc::new_from_slice(k2).map_err(|_| bad())?,
            }),
            _ => Err(bad()),
        }
    }

    /// Enciphers `buf` (whole units of `unit` bytes, `unit` a non-zero
    /// multiple of 16) in place; unit k has the data unit number
    /// `first + k * step` (wrapping, as plain64 does).
    pub(super) fn run(&self, decrypt: bool, buf: &mut [u8], unit: usize, first: u64, step: u64) {
        match self {
            XtsKeys::Aes128 { data, tweak } => run_with(data, tweak, decrypt, buf, unit, first, step),
            XtsKeys::Aes256 { data, tweak } => run_with(data, tweak, decrypt, buf, unit, first, step),
        }
    }
}

fn run_with<D, T>(data: &D, tweak: &T, decrypt: bool, buf: &mut [u8], unit: usize, first: u64, step: u64)
where
    D: BlockEncrypt + BlockDecrypt + BlockSizeUser<BlockSize = U16>,
    T: BlockEncrypt + BlockSizeUser<BlockSize = U16>,
{
    let mut t0 = [Block::default(); BATCH];
    let mut used = 0;
    let mut n = first;
    for batch in buf.chunks_mut(BATCH * unit) {
        let units = batch.len() / unit;
        used = used.max(units);
        for t in &mut t0[..units] {
            t[..8].copy_from_slice(&n.to_le_bytes());
            t[8..].fill(0);
            n = n.wrapping_add(step);
        }
        tweak.encrypt_blocks(&mut t0[..units]);
        let job = Units { buf: batch, unit, t0: &t0[..units] };
        // Separate closure types, so separately compiled: adding the short
        // path to the main closure changed how LLVM scheduled its loop.
        let few = units < PIPELINE_MIN_UNITS && unit.is_multiple_of(GROUP * BLOCK);
        match (few, decrypt) {
            (true, false) => data.encrypt_with_backend(FewUnits(job)),
            (true, true) => data.decrypt_with_backend(FewUnits(job)),
            (false, false) => data.encrypt_with_backend(job),
            (false, true) => data.decrypt_with_backend(job),
        }
    }
    for t in &mut t0[..used] {
        t.as_mut_slice().zeroize();
    }
}

/// One batch of units and their T₀, run inside the AES backend.
struct Units<'a> {
    buf: &'a mut [u8],
    unit: usize,
    t0: &'a [Block],
}

impl BlockSizeUser for Units<'_> {
    type BlockSize = U16;
}

impl BlockClosure for Units<'_> {
    #[inline(always)]
    fn call<B: BlockBackend<BlockSize = U16>>(self, backend: &mut B) {
        let par = B::ParBlocksSize::USIZE;
        let unit_blocks = self.unit / BLOCK;
        let mut blocks = ParBlocks::<B>::default();
        if par != GROUP || !unit_blocks.is_multiple_of(GROUP) || unit_blocks > MAX_UNIT_BLOCKS {
            return self.one_by_one(backend, &mut blocks[0]);
        }
        // Tweaks of the unit being enciphered and of the next one: the next
        // unit's ·α chain (serial, ~4 cycles a step) is computed a group at
        // a time while the current unit's AES rounds run.
        let mut tweaks = [[Tweak::zero(); MAX_UNIT_BLOCKS]; 2];
        if let Some(t0) = self.t0.first() {
            // The first unit's tweaks have nothing to overlap with: four
            // interleaved chains, each a quarter long, starting at T·α^(qi).
            let q = unit_blocks / 4;
            let t = u128::from_le_bytes((*t0).into());
            let mut starts = [t, mul_alpha_k(t, q), 0, 0];
            starts[2] = mul_alpha_k(starts[1], q);
            starts[3] = mul_alpha_k(starts[2], q);
            let mut c = starts.map(Tweak::from_u128);
            for i in 0..q {
                for (j, c) in c.iter_mut().enumerate() {
                    tweaks[0][j * q + i] = *c;
                    *c = c.mul_alpha();
                }
            }
            starts.zeroize();
            c.iter_mut().for_each(Tweak::zeroize);
        }
        for (k, data) in self.buf.chunks_exact_mut(self.unit).enumerate() {
            let mut t = self.t0.get(k + 1).map_or(Tweak::zero(), Tweak::from_block);
            let (a, b) = tweaks.split_at_mut(1);
            let (cur, next) = if k % 2 == 0 { (&a[0], &mut b[0]) } else { (&b[0], &mut a[0]) };
            let groups = data.chunks_exact_mut(GROUP * BLOCK);
            // For 4 KiB units the next unit's tweaks come from two chains
            // of half the length: blocks 128.. start from T·α^128, which is
            // T·(α^7 + α^2 + α + 1) since x^128 = x^7 + x^2 + x + 1.
            let two_chains = unit_blocks == MAX_UNIT_BLOCKS;
            let (mut pa, mut pb, mut u) = (0, MAX_UNIT_BLOCKS / 2, Tweak::zero());
            for (g, (group, cur)) in groups.zip(cur.chunks_exact(GROUP)).enumerate() {
                for ((src, blk), tw) in group.chunks_exact(BLOCK).zip(blocks.iter_mut()).zip(cur) {
                    tw.xor_into(src, blk);
                }
                // A branch the compiler cannot remove keeps the AES rounds in
                // a scheduling region of their own, where LLVM interleaves
                // them across the 8 blocks; mixed with the tweak code,
                // register pressure made it run them block after block.
                if std::hint::black_box(true) {
                    std::hint::black_box(&mut *backend).proc_par_blocks_inplace(&mut blocks);
                }
                for ((dst, blk), tw) in group.chunks_exact_mut(BLOCK).zip(blocks.iter()).zip(cur) {
                    tw.xor_into(blk, dst);
                }
                if !two_chains || g == 0 {
                    for nx in &mut next[pa..pa + GROUP] {
                        *nx = t;
                        t = t.mul_alpha();
                    }
                    pa += GROUP;
                    if two_chains {
                        u = next[0].xor(next[1]).xor(next[2]).xor(next[7]);
                    }
                } else if pa < MAX_UNIT_BLOCKS / 2 {
                    for i in 0..GROUP / 2 {
                        next[pa + i] = t;
                        t = t.mul_alpha();
                        next[pb + i] = u;
                        u = u.mul_alpha();
                    }
                    pa += GROUP / 2;
                    pb += GROUP / 2;
                } else {
                    for nx in &mut next[pb..pb + GROUP] {
                        *nx = u;
                        u = u.mul_alpha();
                    }
                    pb += GROUP;
                }
            }
            u.zeroize();
            t.zeroize();
        }
        tweaks.iter_mut().flat_map(|t| &mut t[..unit_blocks]).for_each(Tweak::zeroize);
        // `blocks` is left holding the last group's AES output (data ⊕
        // tweak, the tweaks themselves wiped above). Wiping it here made the
        // compiler keep the array in memory and store every group into it,
        // which cost a fifth of the throughput; it is a stack temporary of
        // the same sensitivity as the caller's buffer.
    }
}

/// A batch of a few units (a call of one or two sectors): the tweaks of
/// each group are computed just before its AES rounds; no overlap, but no
/// 8 KiB of tweak buffers to set up and wipe, which would dominate the call.
/// As in [`Units`], the tweaks are wiped and the block buffer is not.
struct FewUnits<'a>(Units<'a>);

impl BlockSizeUser for FewUnits<'_> {
    type BlockSize = U16;
}

impl BlockClosure for FewUnits<'_> {
    #[inline(always)]
    fn call<B: BlockBackend<BlockSize = U16>>(self, backend: &mut B) {
        let mut blocks = ParBlocks::<B>::default();
        if B::ParBlocksSize::USIZE != GROUP {
            return self.0.one_by_one(backend, &mut blocks[0]);
        }
        let mut tweaks = [Tweak::zero(); GROUP];
        for (data, t0) in self.0.buf.chunks_exact_mut(self.0.unit).zip(self.0.t0) {
            let mut t = Tweak::from_block(t0);
            for group in data.chunks_exact_mut(GROUP * BLOCK) {
                for ((src, blk), tw) in group.chunks_exact(BLOCK).zip(blocks.iter_mut()).zip(&mut tweaks) {
                    t.xor_into(src, blk);
                    *tw = t;
                    t = t.mul_alpha();
                }
                if std::hint::black_box(true) {
                    std::hint::black_box(&mut *backend).proc_par_blocks_inplace(&mut blocks);
                }
                for ((dst, blk), tw) in group.chunks_exact_mut(BLOCK).zip(blocks.iter()).zip(&tweaks) {
                    tw.xor_into(blk, dst);
                }
            }
            t.zeroize();
        }
        tweaks.iter_mut().for_each(Tweak::zeroize);
    }
}

impl Units<'_> {
    /// One block at a time: units that are not whole groups (only the
    /// 32-byte IEEE vectors), or a backend that takes another number of blocks.
    fn one_by_one<B: BlockBackend<BlockSize = U16>>(self, backend: &mut B, blk: &mut Block) {
        for (data, t0) in self.buf.chunks_exact_mut(self.unit).zip(self.t0) {
            let mut t = Tweak::from_block(t0);
            for dst in data.chunks_exact_mut(BLOCK) {
                t.xor_into(dst, blk);
                backend.proc_block_inplace(blk);
                t.xor_into(blk, dst);
                t = t.mul_alpha();
            }
            t.zeroize();
        }
        blk.as_mut_slice().zeroize();
    }
}

/// Batches of fewer units take [`FewUnits`].
const PIPELINE_MIN_UNITS: usize = 4;

/// Blocks in the largest LUKS sector.
const MAX_UNIT_BLOCKS: usize = 4096 / BLOCK;

/// Blocks per AES call: what the `aes` crate's AES-NI backend takes at once.
const GROUP: usize = 8;

/// An XTS tweak in an SSE2 register: ·α and the xors stay in the vector
/// unit, next to the AES rounds, instead of a 128-bit shift in general
/// registers (which compiles to `shld`, slow on AMD cores). The operations
/// are `safe_arch`'s safe wrappers of SSE2 intrinsics (SSE2 is part of
/// x86-64), so this module stays free of `unsafe`.
#[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
#[derive(Clone, Copy)]
struct Tweak(safe_arch::m128i);

#[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
impl Tweak {
    #[inline(always)]
    fn zero() -> Tweak {
        Tweak(safe_arch::zeroed_m128i())
    }

    #[inline(always)]
    fn from_block(b: &Block) -> Tweak {
        let bytes: [u8; BLOCK] = (*b).into();
        Tweak(bytes.into())
    }

    #[inline(always)]
    fn from_u128(t: u128) -> Tweak {
        Tweak(t.to_le_bytes().into())
    }

    /// `dst = src ⊕ self`, both 16 bytes.
    #[inline(always)]
    fn xor_into(&self, src: &[u8], dst: &mut [u8]) {
        let bytes: [u8; BLOCK] = src.try_into().expect("16-byte block");
        let x: [u8; BLOCK] = safe_arch::bitxor_m128i(bytes.into(), self.0).into();
        dst.copy_from_slice(&x);
    }

    #[inline(always)]
    fn xor(self, other: Tweak) -> Tweak {
        Tweak(safe_arch::bitxor_m128i(self.0, other.0))
    }

    /// ·α on four 32-bit lanes: each lane shifts left by one and takes the
    /// bit shifted out of the lane below; lane 0 takes 0x87 when bit 127
    /// fell out. Branch-free.
    #[inline(always)]
    fn mul_alpha(self) -> Tweak {
        use safe_arch::{bitand_m128i, bitxor_m128i, set_i32_m128i, shl_imm_u32_m128i, shr_imm_i32_m128i, shuffle_ai_f32_all_m128i};
        let out = shr_imm_i32_m128i::<31>(self.0);
        // Lane i gets lane i-1's top bit, lane 0 lane 3's (0x93 = 2,1,0,3).
        let carry = bitand_m128i(shuffle_ai_f32_all_m128i::<0x93>(out), set_i32_m128i(1, 1, 1, 0x87));
        Tweak(bitxor_m128i(shl_imm_u32_m128i::<1>(self.0), carry))
    }

    #[inline(always)]
    fn zeroize(&mut self) {
        self.0 .0.zeroize();
    }
}

/// Portable tweak for other architectures: a `u128`.
#[cfg(not(all(target_arch = "x86_64", target_feature = "sse2")))]
#[derive(Clone, Copy)]
struct Tweak(u128);

#[cfg(not(all(target_arch = "x86_64", target_feature = "sse2")))]
impl Tweak {
    #[inline(always)]
    fn zero() -> Tweak {
        Tweak(0)
    }

    #[inline(always)]
    fn from_block(b: &Block) -> Tweak {
        Tweak(u128::from_le_bytes((*b).into()))
    }

    #[inline(always)]
    fn from_u128(t: u128) -> Tweak {
        Tweak(t)
    }

    #[inline(always)]
    fn xor_into(&self, src: &[u8], dst: &mut [u8]) {
        let x = u128::from_le_bytes(src.try_into().expect("16-byte block")) ^ self.0;
        dst.copy_from_slice(&x.to_le_bytes());
    }

    #[inline(always)]
    fn mul_alpha(self) -> Tweak {
        Tweak(mul_alpha(self.0))
    }

    #[inline(always)]
    fn xor(self, other: Tweak) -> Tweak {
        Tweak(self.0 ^ other.0)
    }

    #[inline(always)]
    fn zeroize(&mut self) {
        self.0.zeroize();
    }
}

/// Multiplies a tweak by α^k for 1 ≤ k ≤ 64: a shift by k, the k bits shifted
/// out folded back times x^7 + x^2 + x + 1 (carry-less, at most k + 7 bits,
/// so no second reduction). Branch-free for a given k.
fn mul_alpha_k(t: u128, k: usize) -> u128 {
    debug_assert!((1..=64).contains(&k));
    let top = t >> (128 - k);
    (t << k) ^ top ^ (top << 1) ^ (top << 2) ^ (top << 7)
}

/// Multiplies a tweak by α (x), branch-free: the carry out of bit 127 folds
/// back as x^7 + x^2 + x + 1 (0x87).
#[cfg_attr(all(target_arch = "x86_64", target_feature = "sse2"), allow(dead_code))]
#[inline(always)]
pub(super) fn mul_alpha(t: u128) -> u128 {
    let carry = ((t as i128) >> 127) as u128;
    (t << 1) ^ (carry & 0x87)
}

#[cfg(test)]
pub(super) fn mul_alpha_k_for_tests(t: u128, k: usize) -> u128 {
    mul_alpha_k(t, k)
}

/// The tweak type's ·α on a little-endian `u128`, for tests.
#[cfg(test)]
pub(super) fn tweak_mul_alpha(t: u128) -> u128 {
    let mut b = Block::default();
    b.copy_from_slice(&t.to_le_bytes());
    let t = Tweak::from_block(&b).mul_alpha();
    let mut out = [0u8; BLOCK];
    t.xor_into(&[0; BLOCK], &mut out);
    u128::from_le_bytes(out)
}
