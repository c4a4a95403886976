use super::*;

/// diffuse written out longhand from the LUKS1 spec, through the
/// lead's one-shot `HashAlg::digest` rather than the reused hasher.
fn diffuse_longhand(buf: &[u8], hash: HashAlg) -> Vec<u8> {
    let d = hash.digest_len();
    let mut out = Vec::new();
    for i in 0..buf.len().div_ceil(d) {
        let chunk = &buf[i * d..buf.len().min((i + 1) * d)];
        let h = hash.digest(&[&(i as u32).to_be_bytes(), chunk]).unwrap();
        out.extend_from_slice(&h[..chunk.len()]);
    }
    out
}

#[test]
fn diffuse_hashes_indexed_chunks_and_truncates_the_last() {
    let input: Vec<u8> = (0..64u8).map(|b| b.wrapping_mul(37)).collect();
    for hash in [HashAlg::Sha1, HashAlg::Sha256, HashAlg::Sha512, HashAlg::Ripemd160] {
        for len in [16, 20, 32, 33, 64] {
            let mut buf = input[..len].to_vec();
            Diffuser::new(hash).unwrap().diffuse(&mut buf).unwrap();
            assert_eq!(buf, diffuse_longhand(&input[..len], hash), "{hash:?} len {len}");
        }
    }
}

#[test]
fn one_stripe_is_the_key_itself() {
    let key = [0x5au8; 32];
    let m = split(&key, 1, HashAlg::Sha256).unwrap();
    assert_eq!(m.expose(), &key);
}

#[test]
fn bad_sizes_are_errors() {
    assert!(matches!(split(&[], 4000, HashAlg::Sha256), Err(CryptoError::InvalidParameter(_))));
    assert!(matches!(split(&[1; 32], 0, HashAlg::Sha256), Err(CryptoError::InvalidParameter(_))));
    assert!(matches!(merge(&[0; 100], 32, 4, HashAlg::Sha256), Err(CryptoError::InvalidParameter(_))));
    assert!(matches!(merge(&[0; 128], 0, 4, HashAlg::Sha256), Err(CryptoError::InvalidParameter(_))));
    assert!(matches!(merge(&[0; 128], 32, 0, HashAlg::Sha256), Err(CryptoError::InvalidParameter(_))));
    assert!(matches!(
        merge(&[0; 128], usize::MAX / 2, u32::MAX, HashAlg::Sha256),
        Err(CryptoError::InvalidParameter(_))
    ));
}

#[test]
fn every_stripe_matters() {
    let key = Secret::random(32);
    let mut m = split(key.expose(), 8, HashAlg::Sha256).unwrap();
    for stripe in 0..8 {
        m.as_mut()[stripe * 32] ^= 1;
        let got = merge(m.expose(), 32, 8, HashAlg::Sha256).unwrap();
        assert_ne!(got.expose(), key.expose(), "stripe {stripe}");
        m.as_mut()[stripe * 32] ^= 1;
    }
    assert_eq!(merge(m.expose(), 32, 8, HashAlg::Sha256).unwrap().expose(), key.expose());
}
