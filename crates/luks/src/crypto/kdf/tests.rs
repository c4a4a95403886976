use super::*;

/// RFC 9106 §5.2 (Argon2i) and §5.3 (Argon2id): m=32 KiB, t=3, p=4,
/// password 32×0x01, salt 16×0x02, secret 8×0x03, associated data 12×0x04.
#[test]
fn rfc9106_test_vectors() {
    let cases = [
        (Argon2Variant::I, "c814d9d1dc7f37aa13f0d77f2494bda1c8de6b016dd388d29952a4c4672b6ce8"),
        (Argon2Variant::Id, "0d640df58d78766c08c037a34a8b53c9d01ef0452d75b65eb52520e96b01e659"),
    ];
    for (variant, tag) in cases {
        let mut out = [0u8; 32];
        argon2_raw(variant, 3, 32, 4, &[1; 32], &[2; 16], Some(&[3; 8]), &[4; 12], &mut out).unwrap();
        assert_eq!(hex::encode(out), tag, "{variant:?}");
    }
}

#[test]
fn argon2_secret_and_data_change_the_output() {
    let mut a = [0u8; 32];
    let mut b = [0u8; 32];
    argon2_raw(Argon2Variant::Id, 3, 32, 4, &[1; 32], &[2; 16], Some(&[3; 8]), &[4; 12], &mut a).unwrap();
    argon2_raw(Argon2Variant::Id, 3, 32, 4, &[1; 32], &[2; 16], None, &[], &mut b).unwrap();
    assert_ne!(a, b);
}

#[test]
fn derive_refuses_bad_parameters_with_errors() {
    let bad = [
        KdfParams::Pbkdf2 { hash: HashAlg::Sha256, iterations: 0 },
        KdfParams::Pbkdf2 { hash: HashAlg::Sha256, iterations: u32::MAX },
        KdfParams::Argon2 { variant: Argon2Variant::Id, time: 0, memory_kib: 64, lanes: 1 },
        KdfParams::Argon2 { variant: Argon2Variant::Id, time: 1, memory_kib: 64, lanes: 0 },
        KdfParams::Argon2 { variant: Argon2Variant::Id, time: 1, memory_kib: 31, lanes: 4 },
    ];
    for p in &bad {
        assert!(matches!(derive(p, b"pw", &[0; 32], 32), Err(CryptoError::InvalidParameter(_))), "{p:?}");
    }
    let argon = KdfParams::Argon2 { variant: Argon2Variant::I, time: 1, memory_kib: 64, lanes: 1 };
    assert!(matches!(derive(&argon, b"pw", &[0; 7], 32), Err(CryptoError::InvalidParameter(_))));
    assert!(matches!(derive(&argon, b"pw", &[0; 8], 3), Err(CryptoError::InvalidParameter(_))));
    let pbkdf2 = KdfParams::Pbkdf2 { hash: HashAlg::Sha1, iterations: 1 };
    assert!(matches!(derive(&pbkdf2, b"pw", b"salt", 0), Err(CryptoError::InvalidParameter(_))));
}

#[test]
fn derive_refuses_more_memory_than_cryptsetup_allows() {
    let huge = KdfParams::Argon2 { variant: Argon2Variant::Id, time: 1, memory_kib: ARGON2_MAX_MEMORY_KIB + 1, lanes: 1 };
    assert!(matches!(derive(&huge, b"pw", &[0; 32], 32), Err(CryptoError::KdfMemory { .. })));
}

#[test]
fn new_keyslot_limits_follow_cryptsetup() {
    let ok = [
        KdfParams::Pbkdf2 { hash: HashAlg::Sha256, iterations: 1000 },
        KdfParams::Argon2 { variant: Argon2Variant::Id, time: 4, memory_kib: 32, lanes: 4 },
        KdfParams::Argon2 { variant: Argon2Variant::I, time: 4, memory_kib: ARGON2_MAX_MEMORY_KIB, lanes: 1 },
    ];
    for p in &ok {
        p.check_new().unwrap();
    }
    let bad = [
        KdfParams::Pbkdf2 { hash: HashAlg::Sha256, iterations: 999 },
        KdfParams::Argon2 { variant: Argon2Variant::Id, time: 3, memory_kib: 1024, lanes: 1 },
        KdfParams::Argon2 { variant: Argon2Variant::Id, time: 4, memory_kib: 31, lanes: 1 },
        KdfParams::Argon2 { variant: Argon2Variant::Id, time: 4, memory_kib: 1024, lanes: 5 },
        KdfParams::Argon2 { variant: Argon2Variant::Id, time: 4, memory_kib: 1024, lanes: 0 },
        KdfParams::Argon2 { variant: Argon2Variant::Id, time: 4, memory_kib: ARGON2_MAX_MEMORY_KIB + 1, lanes: 1 },
    ];
    for p in &bad {
        assert!(p.check_new().is_err(), "{p:?}");
    }
    assert_eq!(ok[0].type_name(), "pbkdf2");
    assert_eq!(ok[1].type_name(), "argon2id");
    assert_eq!(ok[2].type_name(), "argon2i");
}

#[test]
fn next_candidate_scales_memory_then_time() {
    // Too fast, room for memory: memory grows in proportion.
    let c = next_argon2(4, 1000, 4, 32, 1 << 20, 250, 2000);
    assert_eq!((c.time, c.memory_kib, c.is_final), (4, 8000, false));
    // Too fast, memory capped: the rest goes into passes.
    let c = next_argon2(4, 1 << 20, 4, 32, 1 << 20, 500, 2000);
    assert_eq!((c.time, c.memory_kib, c.is_final), (16, 1 << 20, false));
    // Too slow with passes to spare: passes shrink first.
    let c = next_argon2(16, 1 << 20, 4, 32, 1 << 20, 4000, 2000);
    assert_eq!((c.time, c.memory_kib, c.is_final), (8, 1 << 20, false));
    // Too slow at minimum passes: memory shrinks.
    let c = next_argon2(4, 1 << 20, 4, 32, 1 << 20, 4000, 2000);
    assert_eq!((c.time, c.memory_kib, c.is_final), (4, 1 << 19, false));
    // Cannot go below the minimum: final.
    let c = next_argon2(4, 32, 4, 32, 1 << 20, 4000, 2000);
    assert!(c.is_final);
    assert_eq!((c.time, c.memory_kib), (4, 32));
}

#[test]
fn meminfo_rules() {
    let info = MemInfo::parse("MemTotal:       24683656 kB\nMemFree:        23550060 kB\nSwapTotal:             0 kB\n").unwrap();
    assert_eq!((info.total_kib, info.free_kib, info.swap_kib), (24683656, 23550060, 0));
    assert!(MemInfo::parse("garbage").is_none());
    // The limit itself is half of RAM or less, and never zero.
    let limit = memory_limit_kib();
    assert!(limit > 0);
    if let Some(info) = MemInfo::read() {
        if info.total_kib >= 128 * 1024 {
            assert!(limit <= info.total_kib / 2);
        }
    }
}

#[test]
fn calibrated_pbkdf2_is_at_least_the_minimum_and_grows_with_the_target() {
    let iterations = |ms| match calibrate(KdfKind::Pbkdf2(HashAlg::Sha256), Duration::from_millis(ms), 0, 0, 32) {
        Ok(KdfParams::Pbkdf2 { hash: HashAlg::Sha256, iterations }) => iterations,
        other => panic!("unexpected {other:?}"),
    };
    let short = iterations(1);
    let long = iterations(200);
    assert!(short >= PBKDF2_MIN_ITERATIONS, "{short}");
    assert!(long > short, "{long} <= {short}");
    assert!(calibrate(KdfKind::Pbkdf2(HashAlg::Sha256), Duration::from_millis(10), 0, 0, 0).is_err());
}

#[test]
fn calibrated_argon2_respects_limits() {
    let p = calibrate(KdfKind::Argon2(Argon2Variant::Id), Duration::from_millis(50), 8 * 1024, 16, 64).unwrap();
    let KdfParams::Argon2 { variant, time, memory_kib, lanes } = p else { panic!("not argon2: {p:?}") };
    assert_eq!(variant, Argon2Variant::Id);
    assert!(time >= ARGON2_MIN_TIME);
    assert!((32..=8 * 1024).contains(&memory_kib));
    let cpus = std::thread::available_parallelism().unwrap().get() as u32;
    assert_eq!(lanes, 4.min(cpus));
    p.check_new().unwrap();
    assert!(calibrate(KdfKind::Argon2(Argon2Variant::Id), Duration::ZERO, 1024, 1, 32).is_err());
    assert!(calibrate(KdfKind::Argon2(Argon2Variant::Id), Duration::from_millis(10), 1024, 0, 32).is_err());
    assert!(calibrate(KdfKind::Argon2(Argon2Variant::Id), Duration::from_millis(10), 16, 4, 32).is_err());
}
