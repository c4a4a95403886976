//! XTS-AES on VAES: the AES rounds of two (AVX2, 256-bit) or four (AVX-512,
//! 512-bit) blocks per instruction, and the tweaks of a whole group of
//! blocks advanced with one VPCLMULQDQ per vector.
//!
//! Both widths share one body ([`xts_kernel`]); each module supplies the
//! vector type and its operations. Per data unit: T₀ from AES-NI (eight
//! units' T₀ side by side, [`aesni::tweaks_0`]); a vector of W consecutive
//! tweaks T₀·α⁰…T₀·α^(W−1) and NV such vectors for a group of NV·W blocks;
//! per group, each block vector is xored with its tweak vector and the
//! first round key in one step, goes through the rounds, and takes the
//! tweak again folded into the last round key (`aesenclast(x, k ⊕ t) =
//! aesenclast(x, k) ⊕ t`). The next group's tweak vectors (·α^(NV·W) each,
//! independent of one another) are computed between the first rounds, where
//! the out-of-order window overlaps them with AES work, as in the AES-NI
//! kernel. Odd unit sizes end with whole vectors, then single blocks.
//!
//! ·α^k for k < 64 on each 128-bit lane: shift the lane left by k bits (two
//! 64-bit shifts and the carry moved across by a byte shift), and fold the k
//! bits shifted out back in as their carry-less product with x⁷ + x² + x + 1
//! (at most k + 7 bits, so no second reduction).

use super::aesni::{self, load_schedule, Keys};

const BLOCK: usize = 16;

macro_rules! xts_kernel {
    ($feat:literal, $shift:ty) => {
        const VBYTES: usize = W * BLOCK;
        const GBYTES: usize = NV * VBYTES;

        /// Enciphers `buf` in place; see [`Keys::run`] for the layout.
        #[target_feature(enable = $feat)]
        pub(in crate::crypto::cipher::x86) fn run(keys: &Keys, decrypt: bool, buf: &mut [u8], unit: usize, first: u64, step: u64) {
            let rk = load_schedule(if decrypt { &keys.dec } else { &keys.enc });
            let tk = load_schedule(&keys.tweak);
            match (keys.rounds, decrypt) {
                (10, false) => run_units::<10, false>(&rk, &tk, buf, unit, first, step),
                (10, true) => run_units::<10, true>(&rk, &tk, buf, unit, first, step),
                (_, false) => run_units::<14, false>(&rk, &tk, buf, unit, first, step),
                (_, true) => run_units::<14, true>(&rk, &tk, buf, unit, first, step),
            }
        }

        #[target_feature(enable = $feat)]
        fn run_units<const NR: usize, const DEC: bool>(
            rk128: &[__m128i; 15],
            tk: &[__m128i; 15],
            buf: &mut [u8],
            unit: usize,
            first: u64,
            step: u64,
        ) {
            let mut rk = [broadcast(rk128[0]); 15];
            for (v, k) in rk.iter_mut().zip(rk128) {
                *v = broadcast(*k);
            }
            let mut n = first;
            for batch in buf.chunks_mut(8 * unit) {
                let mut t0 = aesni::tweaks_0::<NR>(tk, n, step);
                n = n.wrapping_add(step.wrapping_mul((batch.len() / unit) as u64));
                for (data, t) in batch.chunks_exact_mut(unit).zip(&t0) {
                    run_unit::<NR, DEC>(&rk, rk128, data, *t);
                }
                for t in &mut t0 {
                    aesni::wipe(t);
                }
            }
            for v in &mut rk {
                wipe(v);
            }
        }

        #[inline]
        #[target_feature(enable = $feat)]
        fn run_unit<const NR: usize, const DEC: bool>(rk: &[V; 15], rk128: &[__m128i; 15], data: &mut [u8], t: __m128i) {
            let mut tw = [lanes_from(t); NV];
            for i in 1..NV {
                tw[i] = step_vector(tw[i - 1]);
            }
            let (groups, rest) = data.as_chunks_mut::<GBYTES>();
            for g in groups {
                let vs = g.as_chunks_mut::<VBYTES>().0;
                let mut b = [zero(); NV];
                for i in 0..NV {
                    b[i] = xor3(load(&vs[i]), tw[i], rk[0]);
                }
                let mut next = [zero(); NV];
                for r in 1..NR {
                    for x in &mut b {
                        *x = round::<DEC>(*x, rk[r]);
                    }
                    if r <= NV {
                        next[r - 1] = step_group(tw[r - 1]);
                    }
                }
                for i in 0..NV {
                    store(&mut vs[i], last_round::<DEC>(b[i], xor(rk[NR], tw[i])));
                }
                tw = next;
            }
            // Units that are not whole groups: whole vectors, then blocks.
            let (vecs, tail) = rest.as_chunks_mut::<VBYTES>();
            for (v, t) in vecs.iter_mut().zip(&tw) {
                let mut x = xor3(load(v), *t, rk[0]);
                for k in &rk[1..NR] {
                    x = round::<DEC>(x, *k);
                }
                store(v, last_round::<DEC>(x, xor(rk[NR], *t)));
            }
            if !tail.is_empty() {
                aesni::single_blocks::<NR, DEC>(rk128, tail.as_chunks_mut::<BLOCK>().0, lane_0(tw[vecs.len()]));
            }
            for v in &mut tw {
                wipe(v);
            }
        }

        #[inline]
        #[target_feature(enable = $feat)]
        fn round<const DEC: bool>(b: V, k: V) -> V {
            if DEC {
                dec(b, k)
            } else {
                enc(b, k)
            }
        }

        #[inline]
        #[target_feature(enable = $feat)]
        fn last_round<const DEC: bool>(b: V, k: V) -> V {
            if DEC {
                dec_last(b, k)
            } else {
                enc_last(b, k)
            }
        }

        /// ·α^K on each 128-bit lane, `R` = 64 − K (see the module comment).
        #[inline]
        #[target_feature(enable = $feat)]
        fn mul_alpha_k<const K: $shift, const R: $shift>(t: V) -> V {
            debug_assert_eq!(K + R, 64);
            let carry = srli_64::<R>(t);
            let fold = clmul_low(bsrli_8(carry), poly());
            xor3(slli_64::<K>(t), bslli_8(carry), fold)
        }

        #[inline]
        #[target_feature(enable = $feat)]
        fn wipe(v: &mut V) {
            *v = zero();
            std::hint::black_box(v);
        }
    };
}

/// 512-bit vectors: four blocks each, four vectors (16 blocks) a group.
pub(super) mod avx512 {
    use std::arch::x86_64::{
        __m128i, __m512i, _mm512_aesdec_epi128, _mm512_aesdeclast_epi128, _mm512_aesenc_epi128,
        _mm512_aesenclast_epi128, _mm512_broadcast_i32x4, _mm512_bslli_epi128, _mm512_bsrli_epi128,
        _mm512_castsi128_si512, _mm512_castsi512_si128, _mm512_clmulepi64_epi128, _mm512_inserti32x4,
        _mm512_set1_epi64, _mm512_setzero_si512, _mm512_slli_epi64, _mm512_srli_epi64, _mm512_ternarylogic_epi64,
        _mm512_xor_si512,
    };

    use super::super::{load512, store512};
    use super::{aesni, load_schedule, Keys, BLOCK};

    type V = __m512i;
    const W: usize = 4;
    const NV: usize = 4;

    xts_kernel!("avx512f,avx512bw,vaes,vpclmulqdq,avx2,aes,pclmulqdq", u32);

    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,vaes,vpclmulqdq,avx2,aes,pclmulqdq")]
    fn lanes_from(t: __m128i) -> V {
        let t1 = aesni::mul_alpha(t);
        let t2 = aesni::mul_alpha(t1);
        let t3 = aesni::mul_alpha(t2);
        let v = _mm512_inserti32x4::<1>(_mm512_castsi128_si512(t), t1);
        _mm512_inserti32x4::<3>(_mm512_inserti32x4::<2>(v, t2), t3)
    }

    /// ·α⁴: from one vector of four tweaks to the next.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,vaes,vpclmulqdq,avx2,aes,pclmulqdq")]
    fn step_vector(t: V) -> V {
        mul_alpha_k::<4, 60>(t)
    }

    /// ·α¹⁶: from one group of sixteen blocks to the next.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,vaes,vpclmulqdq,avx2,aes,pclmulqdq")]
    fn step_group(t: V) -> V {
        mul_alpha_k::<16, 48>(t)
    }

    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,vaes,vpclmulqdq,avx2,aes,pclmulqdq")]
    fn lane_0(t: V) -> __m128i {
        _mm512_castsi512_si128(t)
    }

    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,vaes,vpclmulqdq,avx2,aes,pclmulqdq")]
    fn load(b: &[u8; 64]) -> V {
        load512(b)
    }

    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,vaes,vpclmulqdq,avx2,aes,pclmulqdq")]
    fn store(b: &mut [u8; 64], v: V) {
        store512(b, v)
    }

    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,vaes,vpclmulqdq,avx2,aes,pclmulqdq")]
    fn broadcast(k: __m128i) -> V {
        _mm512_broadcast_i32x4(k)
    }

    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,vaes,vpclmulqdq,avx2,aes,pclmulqdq")]
    fn zero() -> V {
        _mm512_setzero_si512()
    }

    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,vaes,vpclmulqdq,avx2,aes,pclmulqdq")]
    fn xor(a: V, b: V) -> V {
        _mm512_xor_si512(a, b)
    }

    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,vaes,vpclmulqdq,avx2,aes,pclmulqdq")]
    fn xor3(a: V, b: V, c: V) -> V {
        _mm512_ternarylogic_epi64::<0x96>(a, b, c)
    }

    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,vaes,vpclmulqdq,avx2,aes,pclmulqdq")]
    fn enc(b: V, k: V) -> V {
        _mm512_aesenc_epi128(b, k)
    }

    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,vaes,vpclmulqdq,avx2,aes,pclmulqdq")]
    fn enc_last(b: V, k: V) -> V {
        _mm512_aesenclast_epi128(b, k)
    }

    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,vaes,vpclmulqdq,avx2,aes,pclmulqdq")]
    fn dec(b: V, k: V) -> V {
        _mm512_aesdec_epi128(b, k)
    }

    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,vaes,vpclmulqdq,avx2,aes,pclmulqdq")]
    fn dec_last(b: V, k: V) -> V {
        _mm512_aesdeclast_epi128(b, k)
    }

    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,vaes,vpclmulqdq,avx2,aes,pclmulqdq")]
    fn slli_64<const K: u32>(t: V) -> V {
        _mm512_slli_epi64::<K>(t)
    }

    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,vaes,vpclmulqdq,avx2,aes,pclmulqdq")]
    fn srli_64<const R: u32>(t: V) -> V {
        _mm512_srli_epi64::<R>(t)
    }

    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,vaes,vpclmulqdq,avx2,aes,pclmulqdq")]
    fn bslli_8(t: V) -> V {
        _mm512_bslli_epi128::<8>(t)
    }

    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,vaes,vpclmulqdq,avx2,aes,pclmulqdq")]
    fn bsrli_8(t: V) -> V {
        _mm512_bsrli_epi128::<8>(t)
    }

    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,vaes,vpclmulqdq,avx2,aes,pclmulqdq")]
    fn clmul_low(a: V, b: V) -> V {
        _mm512_clmulepi64_epi128::<0>(a, b)
    }

    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,vaes,vpclmulqdq,avx2,aes,pclmulqdq")]
    fn poly() -> V {
        _mm512_set1_epi64(0x87)
    }
}

/// 256-bit vectors: two blocks each, eight vectors (16 blocks) a group.
pub(super) mod avx2 {
    use std::arch::x86_64::{
        __m128i, __m256i, _mm256_aesdec_epi128, _mm256_aesdeclast_epi128, _mm256_aesenc_epi128,
        _mm256_aesenclast_epi128, _mm256_broadcastsi128_si256, _mm256_bslli_epi128, _mm256_bsrli_epi128,
        _mm256_castsi256_si128, _mm256_clmulepi64_epi128, _mm256_set1_epi64x, _mm256_set_m128i, _mm256_setzero_si256,
        _mm256_slli_epi64, _mm256_srli_epi64, _mm256_xor_si256,
    };

    use super::super::{load256, store256};
    use super::{aesni, load_schedule, Keys, BLOCK};

    type V = __m256i;
    const W: usize = 2;
    const NV: usize = 8;

    xts_kernel!("avx2,vaes,vpclmulqdq,aes,pclmulqdq", i32);

    #[inline]
    #[target_feature(enable = "avx2,vaes,vpclmulqdq,aes,pclmulqdq")]
    fn lanes_from(t: __m128i) -> V {
        _mm256_set_m128i(aesni::mul_alpha(t), t)
    }

    /// ·α²: from one vector of two tweaks to the next.
    #[inline]
    #[target_feature(enable = "avx2,vaes,vpclmulqdq,aes,pclmulqdq")]
    fn step_vector(t: V) -> V {
        mul_alpha_k::<2, 62>(t)
    }

    /// ·α¹⁶: from one group of sixteen blocks to the next.
    #[inline]
    #[target_feature(enable = "avx2,vaes,vpclmulqdq,aes,pclmulqdq")]
    fn step_group(t: V) -> V {
        mul_alpha_k::<16, 48>(t)
    }

    #[inline]
    #[target_feature(enable = "avx2,vaes,vpclmulqdq,aes,pclmulqdq")]
    fn lane_0(t: V) -> __m128i {
        _mm256_castsi256_si128(t)
    }

    #[inline]
    #[target_feature(enable = "avx2,vaes,vpclmulqdq,aes,pclmulqdq")]
    fn load(b: &[u8; 32]) -> V {
        load256(b)
    }

    #[inline]
    #[target_feature(enable = "avx2,vaes,vpclmulqdq,aes,pclmulqdq")]
    fn store(b: &mut [u8; 32], v: V) {
        store256(b, v)
    }

    #[inline]
    #[target_feature(enable = "avx2,vaes,vpclmulqdq,aes,pclmulqdq")]
    fn broadcast(k: __m128i) -> V {
        _mm256_broadcastsi128_si256(k)
    }

    #[inline]
    #[target_feature(enable = "avx2,vaes,vpclmulqdq,aes,pclmulqdq")]
    fn zero() -> V {
        _mm256_setzero_si256()
    }

    #[inline]
    #[target_feature(enable = "avx2,vaes,vpclmulqdq,aes,pclmulqdq")]
    fn xor(a: V, b: V) -> V {
        _mm256_xor_si256(a, b)
    }

    #[inline]
    #[target_feature(enable = "avx2,vaes,vpclmulqdq,aes,pclmulqdq")]
    fn xor3(a: V, b: V, c: V) -> V {
        _mm256_xor_si256(_mm256_xor_si256(a, b), c)
    }

    #[inline]
    #[target_feature(enable = "avx2,vaes,vpclmulqdq,aes,pclmulqdq")]
    fn enc(b: V, k: V) -> V {
        _mm256_aesenc_epi128(b, k)
    }

    #[inline]
    #[target_feature(enable = "avx2,vaes,vpclmulqdq,aes,pclmulqdq")]
    fn enc_last(b: V, k: V) -> V {
        _mm256_aesenclast_epi128(b, k)
    }

    #[inline]
    #[target_feature(enable = "avx2,vaes,vpclmulqdq,aes,pclmulqdq")]
    fn dec(b: V, k: V) -> V {
        _mm256_aesdec_epi128(b, k)
    }

    #[inline]
    #[target_feature(enable = "avx2,vaes,vpclmulqdq,aes,pclmulqdq")]
    fn dec_last(b: V, k: V) -> V {
        _mm256_aesdeclast_epi128(b, k)
    }

    #[inline]
    #[target_feature(enable = "avx2,vaes,vpclmulqdq,aes,pclmulqdq")]
    fn slli_64<const K: i32>(t: V) -> V {
        _mm256_slli_epi64::<K>(t)
    }

    #[inline]
    #[target_feature(enable = "avx2,vaes,vpclmulqdq,aes,pclmulqdq")]
    fn srli_64<const R: i32>(t: V) -> V {
        _mm256_srli_epi64::<R>(t)
    }

    #[inline]
    #[target_feature(enable = "avx2,vaes,vpclmulqdq,aes,pclmulqdq")]
    fn bslli_8(t: V) -> V {
        _mm256_bslli_epi128::<8>(t)
    }

    #[inline]
    #[target_feature(enable = "avx2,vaes,vpclmulqdq,aes,pclmulqdq")]
    fn bsrli_8(t: V) -> V {
        _mm256_bsrli_epi128::<8>(t)
    }

    #[inline]
    #[target_feature(enable = "avx2,vaes,vpclmulqdq,aes,pclmulqdq")]
    fn clmul_low(a: V, b: V) -> V {
        _mm256_clmulepi64_epi128::<0>(a, b)
    }

    #[inline]
    #[target_feature(enable = "avx2,vaes,vpclmulqdq,aes,pclmulqdq")]
    fn poly() -> V {
        _mm256_set1_epi64x(0x87)
    }
}
