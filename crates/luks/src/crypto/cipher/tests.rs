use super::*;

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

#[test]
fn equal_key_halves_take_the_ecb_path() {
    let key = [7u8; 64];
    let c = SectorCipher::new(&xts(), &key).unwrap();
    assert!(matches!(c.engine, Engine::XtsEqualHalves));
    let distinct: Vec<u8> = (0..64).collect();
    let c = SectorCipher::new(&xts(), &distinct).unwrap();
    assert!(matches!(c.engine, Engine::Xts));
}

/// Builds the ECB-composed XTS for any key, to compare it with OpenSSL's XTS.
fn ecb_xts(key: &[u8]) -> SectorCipher {
    let mut c = SectorCipher::new(&xts(), key).unwrap();
    let half = key.len() / 2;
    c.engine = Engine::XtsEqualHalves;
    c.aux_cipher = Some(Cipher::fetch(None, &format!("AES-{}-ECB", half * 8), None).unwrap());
    c.enc_pool = Mutex::new(Vec::new());
    c.dec_pool = Mutex::new(Vec::new());
    c
}

#[test]
fn ecb_composed_xts_matches_openssl_xts() {
    for key_len in [32, 64] {
        let key = Secret::random(key_len);
        let fast = SectorCipher::new(&xts(), key.expose()).unwrap();
        let slow = ecb_xts(key.expose());
        for sector_size in [512, 4096] {
            let mut a = Secret::random(3 * sector_size).expose().to_vec();
            let mut b = a.clone();
            let original = a.clone();
            fast.encrypt(&mut a, sector_size, 0xffff_ffff_fff0).unwrap();
            slow.encrypt(&mut b, sector_size, 0xffff_ffff_fff0).unwrap();
            assert_eq!(a, b, "key {key_len} sector {sector_size}");
            assert_ne!(a, original);
            slow.decrypt(&mut b, sector_size, 0xffff_ffff_fff0).unwrap();
            assert_eq!(b, original);
        }
    }
}

#[test]
fn gf128_alpha_carries_into_the_reduction_polynomial() {
    let mut t = [0u8; 16];
    t[15] = 0x80;
    gf128_mul_alpha(&mut t);
    let mut want = [0u8; 16];
    want[0] = 0x87;
    assert_eq!(t, want);
    let mut t = [0u8; 16];
    t[0] = 0x80;
    gf128_mul_alpha(&mut t);
    let mut want = [0u8; 16];
    want[1] = 0x01;
    assert_eq!(t, want);
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
    let c = SectorCipher::new(&xts(), Secret::random(64).expose()).unwrap();
    let mut buf = vec![0u8; 4096];
    for _ in 0..10 {
        c.encrypt(&mut buf, 512, 0).unwrap();
        c.decrypt(&mut buf, 512, 0).unwrap();
    }
    assert_eq!(c.pool(Direction::Encrypt).len(), 1);
    assert_eq!(c.pool(Direction::Decrypt).len(), 1);
}
