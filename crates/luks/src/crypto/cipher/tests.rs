use super::*;
use openssl::cipher::Cipher;
use openssl::cipher_ctx::CipherCtx;

/// IEEE P1619/D16 Annex B, vectors 1–3 (32-byte data units, which only the
/// internal unit API takes), as reproduced in golang.org/x/crypto
/// xts/xts_test.go. Vector 1 has equal key halves (the ECB-built path).
struct XtsVector {
    number: u32,
    key: &'static str,
    data_unit: u64,
    plaintext: &'static str,
    ciphertext: &'static str,
}

const SHORT_VECTORS: &[XtsVector] = &[
    XtsVector {
        number: 1,
        key: "0000000000000000000000000000000000000000000000000000000000000000",
        data_unit: 0,
        plaintext: "0000000000000000000000000000000000000000000000000000000000000000",
        ciphertext: "917cf69ebd68b2ec9b9fe9a3eadda692cd43d2f59598ed858c02c2652fbf922e",
    },
    XtsVector {
        number: 2,
        key: "1111111111111111111111111111111122222222222222222222222222222222",
        data_unit: 0x3333333333,
        plaintext: "4444444444444444444444444444444444444444444444444444444444444444",
        ciphertext: "c454185e6a16936e39334038acef838bfb186fff7480adc4289382ecd6d394f0",
    },
    XtsVector {
        number: 3,
        key: "fffefdfcfbfaf9f8f7f6f5f4f3f2f1f022222222222222222222222222222222",
        data_unit: 0x3333333333,
        plaintext: "4444444444444444444444444444444444444444444444444444444444444444",
        ciphertext: "af85336b597afc1a900b2eb21ec949d292df4c047e0b21532186a5971a227a89",
    },
];

fn unhex(s: &str) -> Vec<u8> {
    hex::decode(s).expect("test vector hex")
}

fn xts() -> CipherSpec {
    CipherSpec::parse("aes-xts-plain64").unwrap()
}

#[test]
fn ieee1619_vectors_1_to_3_with_32_byte_units() {
    for v in SHORT_VECTORS {
        let c = SectorCipher::new(&xts(), &unhex(v.key)).unwrap();
        let mut buf = unhex(v.plaintext);
        c.run_units(Direction::Encrypt, &mut buf, 32, v.data_unit, 1).unwrap();
        assert_eq!(hex::encode(&buf), v.ciphertext, "vector {} encrypt", v.number);
        c.run_units(Direction::Decrypt, &mut buf, 32, v.data_unit, 1).unwrap();
        assert_eq!(hex::encode(&buf), v.plaintext, "vector {} decrypt", v.number);
    }
}

/// OpenSSL's EVP XTS over whole sectors, the IV set per sector: the
/// reference the `aes`-based XTS must match bit for bit.
fn openssl_xts(key: &[u8], data: &[u8], sector_size: usize, first_iv: u64, decrypt: bool) -> Vec<u8> {
    let cipher = Cipher::fetch(None, &format!("AES-{}-XTS", key.len() * 4), None).unwrap();
    let mut ctx = CipherCtx::new().unwrap();
    let mut out = data.to_vec();
    let step = (sector_size / IV_SECTOR_SIZE) as u64;
    for (k, sector) in out.chunks_mut(sector_size).enumerate() {
        let mut iv = [0u8; 16];
        iv[..8].copy_from_slice(&first_iv.wrapping_add(k as u64 * step).to_le_bytes());
        if decrypt {
            ctx.decrypt_init(Some(&cipher), Some(key), Some(&iv)).unwrap();
        } else {
            ctx.encrypt_init(Some(&cipher), Some(key), Some(&iv)).unwrap();
        }
        assert_eq!(ctx.cipher_update_inplace(sector, sector_size).unwrap(), sector_size);
    }
    out
}

/// XTS from single AES-ECB blocks and a bytewise α-doubling, written
/// independently of the module: the reference for keys OpenSSL refuses.
fn ecb_reference_xts(key: &[u8], data: &[u8], sector_size: usize, first_iv: u64, decrypt: bool) -> Vec<u8> {
    let half = key.len() / 2;
    let ecb = Cipher::fetch(None, &format!("AES-{}-ECB", half * 8), None).unwrap();
    let block = |k: &[u8], b: &[u8], dec: bool| -> Vec<u8> {
        let mut ctx = CipherCtx::new().unwrap();
        if dec {
            ctx.decrypt_init(Some(&ecb), Some(k), None).unwrap();
        } else {
            ctx.encrypt_init(Some(&ecb), Some(k), None).unwrap();
        }
        ctx.set_padding(false);
        let mut out = vec![0u8; 32];
        assert_eq!(ctx.cipher_update(b, Some(&mut out)).unwrap(), 16);
        out.truncate(16);
        out
    };
    let mut out = data.to_vec();
    let step = (sector_size / IV_SECTOR_SIZE) as u64;
    for (k, sector) in out.chunks_mut(sector_size).enumerate() {
        let mut iv = [0u8; 16];
        iv[..8].copy_from_slice(&first_iv.wrapping_add(k as u64 * step).to_le_bytes());
        let mut t = block(&key[half..], &iv, false);
        for b in sector.chunks_mut(16) {
            let x: Vec<u8> = b.iter().zip(&t).map(|(p, t)| p ^ t).collect();
            let y = block(&key[..half], &x, decrypt);
            for ((d, y), t) in b.iter_mut().zip(&y).zip(&t) {
                *d = y ^ t;
            }
            // t *= α: shift left by one bit across the little-endian bytes.
            let carry = t[15] >> 7;
            for i in (1..16).rev() {
                t[i] = (t[i] << 1) | (t[i - 1] >> 7);
            }
            t[0] = (t[0] << 1) ^ if carry == 1 { 0x87 } else { 0 };
        }
    }
    out
}

/// IVs around the 2^32 and 2^64 boundaries (plain64 wraps at 2^64).
const BOUNDARY_IVS: &[u64] = &[0, 1, 0xffff_fff0, 0xffff_ffff, 0x1_0000_0000, 0xffff_ffff_fff0, u64::MAX - 3, u64::MAX];

#[test]
fn xts_matches_openssl_evp_xts() {
    let mut rng_iv = 0x1234_5678_9abc_def0u64;
    for key_len in [32, 64] {
        for round in 0..4 {
            let key = Secret::random(key_len);
            let c = SectorCipher::new(&xts(), key.expose()).unwrap();
            for sector_size in [512, 1024, 4096] {
                // 2 units take the short path, 5 and 150 the pipelined one
                // (150 at 512 bytes spans several K2 batches of 64).
                let n = [2, 5, 150][round % 3];
                let plain = Secret::random(n * sector_size).expose().to_vec();
                rng_iv = rng_iv.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                let ivs = BOUNDARY_IVS.iter().copied().chain([rng_iv, rng_iv >> 32]);
                for first_iv in ivs {
                    let mut buf = plain.clone();
                    c.encrypt(&mut buf, sector_size, first_iv).unwrap();
                    let want = openssl_xts(key.expose(), &plain, sector_size, first_iv, false);
                    assert!(buf == want, "encrypt: key {key_len} round {round} sector {sector_size} iv {first_iv:#x}");
                    let back = openssl_xts(key.expose(), &buf, sector_size, first_iv, true);
                    assert!(back == plain, "openssl decrypt of ours: key {key_len} sector {sector_size} iv {first_iv:#x}");
                    c.decrypt(&mut buf, sector_size, first_iv).unwrap();
                    assert!(buf == plain, "decrypt: key {key_len} sector {sector_size} iv {first_iv:#x}");
                }
            }
        }
    }
}

#[test]
fn xts_with_equal_key_halves_matches_the_ecb_reference() {
    for key_len in [32, 64] {
        let half = Secret::random(key_len / 2);
        let key = [half.expose(), half.expose()].concat();
        // OpenSSL 3's XTS refuses this key; ours must not.
        let c = SectorCipher::new(&xts(), &key).unwrap();
        for sector_size in [512, 4096] {
            let plain = Secret::random(3 * sector_size).expose().to_vec();
            for &first_iv in &[0, 0xffff_ffff, u64::MAX - 1] {
                let mut buf = plain.clone();
                c.encrypt(&mut buf, sector_size, first_iv).unwrap();
                assert!(buf == ecb_reference_xts(&key, &plain, sector_size, first_iv, false), "key {key_len} sector {sector_size}");
                c.decrypt(&mut buf, sector_size, first_iv).unwrap();
                assert!(buf == plain);
            }
        }
    }
}

#[test]
fn ecb_reference_agrees_with_openssl_xts() {
    // Checks the reference itself, so that the equal-halves test means something.
    let key: Vec<u8> = (0..64).collect();
    let plain = Secret::random(2 * 512).expose().to_vec();
    for &iv in &[0, u64::MAX] {
        assert!(ecb_reference_xts(&key, &plain, 512, iv, false) == openssl_xts(&key, &plain, 512, iv, false));
        assert!(ecb_reference_xts(&key, &plain, 512, iv, true) == openssl_xts(&key, &plain, 512, iv, true));
    }
}

#[test]
fn buffers_split_anywhere_on_sector_boundaries_agree() {
    // One call over many sectors equals one call per sector.
    let c = SectorCipher::new(&xts(), Secret::random(64).expose()).unwrap();
    let plain = Secret::random(200 * 512).expose().to_vec();
    let mut whole = plain.clone();
    c.encrypt(&mut whole, 512, 77).unwrap();
    let mut pieces = plain.clone();
    for (k, s) in pieces.chunks_mut(512).enumerate() {
        c.encrypt(s, 512, 77 + k as u64).unwrap();
    }
    assert!(whole == pieces);
}

#[test]
fn gf128_alpha_carries_into_the_reduction_polynomial() {
    for mul in [xts::mul_alpha, xts::tweak_mul_alpha] {
        assert_eq!(mul(1u128 << 127), 0x87);
        assert_eq!(mul(0x80), 0x100);
        assert_eq!(mul(1u128 << 31), 1u128 << 32);
        assert_eq!(mul(1u128 << 63), 1u128 << 64);
        assert_eq!(mul(1u128 << 95), 1u128 << 96);
        assert_eq!(mul((1u128 << 127) | 1), 0x85);
    }
}

#[test]
fn alpha_k_matches_k_alpha_steps() {
    let mut x = 0x0123_4567_89ab_cdef_fedc_ba98_7654_3210u128;
    for k in 1..=64 {
        let mut want = x;
        for _ in 0..k {
            want = xts::mul_alpha(want);
        }
        assert_eq!(xts::mul_alpha_k_for_tests(x, k), want, "k {k}");
        x = x.rotate_left(23) ^ (1 << 127);
    }
}

#[test]
fn alpha_128_is_alpha_7_2_1_0() {
    // x^128 = x^7 + x^2 + x + 1: the split of a 4 KiB unit's tweak chain.
    let t = 0xdead_beef_0bad_f00d_1234_5678_9abc_def1u128;
    let mut chain = vec![t];
    for _ in 0..128 {
        chain.push(xts::mul_alpha(*chain.last().unwrap()));
    }
    assert_eq!(chain[128], chain[0] ^ chain[1] ^ chain[2] ^ chain[7]);
}

#[test]
fn odd_units_are_refused_not_panicked_on() {
    let c = SectorCipher::new(&xts(), Secret::random(64).expose()).unwrap();
    let mut buf = vec![0u8; 64];
    assert!(matches!(c.run_units(Direction::Encrypt, &mut buf, 24, 0, 1), Err(CryptoError::InvalidParameter(_))));
    assert!(matches!(c.run_units(Direction::Encrypt, &mut buf, 0, 0, 1), Err(CryptoError::InvalidParameter(_))));
    let mut big = vec![0u8; 8192];
    assert!(matches!(c.run_units(Direction::Encrypt, &mut big, 8192, 0, 1), Err(CryptoError::InvalidParameter(_))));
}

#[test]
fn contexts_return_to_the_pool() {
    for spec in ["aes-cbc-plain64", "aes-cbc-essiv:sha256"] {
        let c = SectorCipher::new(&CipherSpec::parse(spec).unwrap(), Secret::random(32).expose()).unwrap();
        let mut buf = vec![0u8; 4096];
        for _ in 0..10 {
            c.encrypt(&mut buf, 512, 0).unwrap();
            c.decrypt(&mut buf, 512, 0).unwrap();
        }
        let Engine::Cbc(cbc) = &c.engine else { panic!("CBC engine expected") };
        assert_eq!(cbc.pool(Direction::Encrypt).len(), 1);
        assert_eq!(cbc.pool(Direction::Decrypt).len(), 1);
    }
}

/// The data-unit shapes every kernel is checked on: 1 to 24 blocks (whole
/// vector groups plus every tail of vectors and single blocks) and around
/// the 128- and 256-block (2 and 4 KiB) units. 29 shapes.
const UNIT_BLOCKS: [usize; 29] = [
    1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 127, 128, 129, 255, 256,
];

/// OpenSSL's XTS on units of any length, unit k numbered `first + k * step`.
fn openssl_xts_units(key: &[u8], data: &[u8], unit: usize, first: u64, step: u64, decrypt: bool) -> Vec<u8> {
    let cipher = Cipher::fetch(None, &format!("AES-{}-XTS", key.len() * 4), None).unwrap();
    let mut ctx = CipherCtx::new().unwrap();
    let mut out = data.to_vec();
    for (k, u) in out.chunks_mut(unit).enumerate() {
        let mut iv = [0u8; 16];
        iv[..8].copy_from_slice(&first.wrapping_add(step.wrapping_mul(k as u64)).to_le_bytes());
        if decrypt {
            ctx.decrypt_init(Some(&cipher), Some(key), Some(&iv)).unwrap();
        } else {
            ctx.encrypt_init(Some(&cipher), Some(key), Some(&iv)).unwrap();
        }
        assert_eq!(ctx.cipher_update_inplace(u, unit).unwrap(), unit);
    }
    out
}

/// The whole check of one kernel: IEEE 1619 vectors 1–3, OpenSSL on every
/// unit shape (one to eleven units per call, IVs that wrap), LUKS sector
/// sizes through the public API at boundary IVs, equal key halves against
/// the ECB reference. A kernel this CPU cannot run fails the test, naming
/// what is missing: "not run on this CPU" must never read as a pass.
fn check_kernel(imp: XtsImplementation) {
    assert!(
        imp.is_supported(),
        "{imp} XTS kernel NOT RUN ON THIS CPU: it lacks {:?}; the kernel is only checked where the CPU has them",
        imp.missing_cpu_features()
    );
    for v in SHORT_VECTORS {
        let c = SectorCipher::with_xts_implementation(&unhex(v.key), imp).unwrap();
        assert_eq!(c.xts_implementation(), Some(imp));
        let mut buf = unhex(v.plaintext);
        c.run_units(Direction::Encrypt, &mut buf, 32, v.data_unit, 1).unwrap();
        assert_eq!(hex::encode(&buf), v.ciphertext, "{imp}: IEEE vector {} encrypt", v.number);
        c.run_units(Direction::Decrypt, &mut buf, 32, v.data_unit, 1).unwrap();
        assert_eq!(hex::encode(&buf), v.plaintext, "{imp}: IEEE vector {} decrypt", v.number);
    }
    let mut seed = 0x9e37_79b9_7f4a_7c15u64 ^ imp.name().len() as u64;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for key_len in [32, 64] {
        let key = Secret::random(key_len);
        let c = SectorCipher::with_xts_implementation(key.expose(), imp).unwrap();
        for blocks in UNIT_BLOCKS {
            let unit = blocks * 16;
            for units in [1, 1 + (next() % 11) as usize] {
                let (first, step) = (next() | 0xffff_ffff_ffff_fff0, 1 + next() % 8);
                let plain = Secret::random(units * unit).expose().to_vec();
                let mut buf = plain.clone();
                c.run_units(Direction::Encrypt, &mut buf, unit, first, step).unwrap();
                let want = openssl_xts_units(key.expose(), &plain, unit, first, step, false);
                assert!(buf == want, "{imp}: encrypt key {key_len} unit {unit} units {units}");
                c.run_units(Direction::Decrypt, &mut buf, unit, first, step).unwrap();
                assert!(buf == plain, "{imp}: decrypt key {key_len} unit {unit} units {units}");
            }
        }
        for sector_size in [512, 1024, 2048, 4096] {
            let plain = Secret::random(9 * sector_size).expose().to_vec();
            for &first_iv in BOUNDARY_IVS {
                let mut buf = plain.clone();
                c.encrypt(&mut buf, sector_size, first_iv).unwrap();
                let want = openssl_xts(key.expose(), &plain, sector_size, first_iv, false);
                assert!(buf == want, "{imp}: key {key_len} sector {sector_size} iv {first_iv:#x}");
                c.decrypt(&mut buf, sector_size, first_iv).unwrap();
                assert!(buf == plain, "{imp}: decrypt key {key_len} sector {sector_size} iv {first_iv:#x}");
            }
        }
        let half = Secret::random(key_len / 2);
        let equal = [half.expose(), half.expose()].concat();
        let c = SectorCipher::with_xts_implementation(&equal, imp).unwrap();
        let plain = Secret::random(3 * 4096).expose().to_vec();
        let mut buf = plain.clone();
        c.encrypt(&mut buf, 4096, u64::MAX - 1).unwrap();
        assert!(buf == ecb_reference_xts(&equal, &plain, 4096, u64::MAX - 1, false), "{imp}: equal halves, key {key_len}");
        c.decrypt(&mut buf, 4096, u64::MAX - 1).unwrap();
        assert!(buf == plain);
    }
}

#[test]
fn xts_kernel_vaes_avx512_matches_openssl_and_ieee_1619() {
    check_kernel(XtsImplementation::VaesAvx512);
}

#[test]
fn xts_kernel_vaes_avx2_matches_openssl_and_ieee_1619() {
    check_kernel(XtsImplementation::VaesAvx2);
}

#[test]
fn xts_kernel_aesni_matches_openssl_and_ieee_1619() {
    check_kernel(XtsImplementation::AesNi);
}

#[test]
fn xts_kernel_portable_matches_openssl_and_ieee_1619() {
    check_kernel(XtsImplementation::Portable);
}

/// The kernel the CPU should get, from a source other than the detection
/// under test: `REKEY_EXPECT_XTS` when set (the QEMU runs of
/// scripts/xts-qemu.sh, where /proc/cpuinfo is the host's), otherwise the
/// flags the kernel reports in /proc/cpuinfo (set only when the OS also
/// saves the vector state).
fn expected_kernel() -> XtsImplementation {
    if let Ok(name) = std::env::var("REKEY_EXPECT_XTS") {
        return XtsImplementation::from_name(&name).unwrap_or_else(|| panic!("REKEY_EXPECT_XTS={name:?} names no kernel"));
    }
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").expect("read /proc/cpuinfo");
    let flags: Vec<&str> = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("flags"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, f)| f.split_whitespace().collect())
        .expect("flags line in /proc/cpuinfo");
    let has = |all: &[&str]| all.iter().all(|f| flags.contains(f));
    let aesni = ["aes", "pclmulqdq"];
    let avx2 = ["aes", "pclmulqdq", "avx2", "vaes", "vpclmulqdq"];
    let avx512 = ["aes", "pclmulqdq", "avx2", "vaes", "vpclmulqdq", "avx512f", "avx512bw"];
    if !cfg!(target_arch = "x86_64") {
        XtsImplementation::Portable
    } else if has(&avx512) {
        XtsImplementation::VaesAvx512
    } else if has(&avx2) {
        XtsImplementation::VaesAvx2
    } else if has(&aesni) {
        XtsImplementation::AesNi
    } else {
        XtsImplementation::Portable
    }
}

#[test]
fn dispatcher_selects_the_best_kernel_the_cpu_reports() {
    let want = expected_kernel();
    println!("XTS kernel selected on this CPU: {} (expected {want})", XtsImplementation::selected());
    assert_eq!(XtsImplementation::selected(), want);
    let c = SectorCipher::new(&xts(), Secret::random(64).expose()).unwrap();
    assert_eq!(c.xts_implementation(), Some(want));
    // Everything at or below the selected one runs; nothing above it does.
    let rank = |i: XtsImplementation| XtsImplementation::ALL.iter().position(|&x| x == i).unwrap();
    for imp in XtsImplementation::ALL {
        assert_eq!(imp.is_supported(), rank(imp) >= rank(want) || imp == XtsImplementation::Portable, "{imp}");
    }
    assert_eq!(XtsImplementation::supported().first(), Some(&want));
}

#[test]
fn unsupported_kernels_are_refused_not_run() {
    for imp in XtsImplementation::ALL.into_iter().filter(|i| !i.is_supported()) {
        assert!(SectorCipher::with_xts_implementation(&[7; 64], imp).is_err(), "{imp}");
        assert!(!imp.missing_cpu_features().is_empty(), "{imp}");
    }
    assert!(SectorCipher::with_xts_implementation(&[7; 48], XtsImplementation::Portable).is_err());
}

#[test]
fn kernel_names_round_trip() {
    for imp in XtsImplementation::ALL {
        assert_eq!(XtsImplementation::from_name(imp.name()), Some(imp));
    }
    assert_eq!(XtsImplementation::from_name("aes-ni"), None);
}
