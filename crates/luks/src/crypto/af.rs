//! The anti-forensic information splitter (LUKS1 and LUKS2 `af.type = luks1`).
//!
//! A key of n bytes becomes `stripes` stripes of n bytes. All but the last
//! are random; the last is the key xor the diffused running xor of the
//! others, so every stripe is needed to recover the key and destroying any
//! part of the material destroys the key.

use sha2::Digest;
use zeroize::Zeroize;

use super::{CryptoError, HashAlg};
use crate::Secret;

/// Splits `key` into `stripes` stripes; the result is `key.len() * stripes` bytes.
pub fn split(key: &[u8], stripes: u32, hash: HashAlg) -> Result<Secret, CryptoError> {
    let total = material_len(key.len(), stripes)?;
    let len = key.len();
    let mut out = Secret::zeroed(total);
    let material = out.as_mut();
    let (random, last) = material.split_at_mut(total - len);
    openssl::rand::rand_bytes(random)?;

    let mut buf = Secret::zeroed(len);
    let mut diffuser = Diffuser::new(hash)?;
    for stripe in random.chunks_exact(len) {
        xor_in_place(buf.as_mut(), stripe);
        diffuser.diffuse(buf.as_mut())?;
    }
    last.copy_from_slice(key);
    xor_in_place(last, buf.expose());
    Ok(out)
}

/// Recovers the `key_len`-byte key from `material` (`key_len * stripes` bytes).
pub fn merge(material: &[u8], key_len: usize, stripes: u32, hash: HashAlg) -> Result<Secret, CryptoError> {
    let total = material_len(key_len, stripes)?;
    if material.len() != total {
        return Err(CryptoError::InvalidParameter("AF material length is not key length times stripes"));
    }
    let (random, last) = material.split_at(total - key_len);
    let mut key = Secret::zeroed(key_len);
    let mut diffuser = Diffuser::new(hash)?;
    for stripe in random.chunks_exact(key_len) {
        xor_in_place(key.as_mut(), stripe);
        diffuser.diffuse(key.as_mut())?;
    }
    xor_in_place(key.as_mut(), last);
    Ok(key)
}

/// Size of the split material, refusing empty keys, zero stripes and overflow.
fn material_len(key_len: usize, stripes: u32) -> Result<usize, CryptoError> {
    if key_len == 0 {
        return Err(CryptoError::InvalidParameter("AF key length must not be zero"));
    }
    if stripes == 0 {
        return Err(CryptoError::InvalidParameter("AF stripes must not be zero"));
    }
    usize::try_from(stripes)
        .ok()
        .and_then(|s| s.checked_mul(key_len))
        .ok_or(CryptoError::InvalidParameter("AF material size overflows"))
}

fn xor_in_place(dst: &mut [u8], src: &[u8]) {
    for (d, s) in dst.iter_mut().zip(src) {
        *d ^= s;
    }
}

/// The diffusion step: each digest-sized chunk i of the buffer becomes
/// H(be32(i) ‖ chunk); a shorter last chunk takes the leading bytes.
///
/// RustCrypto's digests, not OpenSSL's: a merge hashes one short chunk per
/// stripe (4000 per keyslot), and an OpenSSL `EVP_DigestInit` per chunk
/// (a provider fetch under a lock) cost more than the hashing — a third of
/// a keyslot-mode clone's CPU time in `bench/nodes.sh`.
struct Diffuser {
    hash: HashAlg,
}

impl Diffuser {
    fn new(hash: HashAlg) -> Result<Self, CryptoError> {
        Ok(Diffuser { hash })
    }

    fn diffuse(&mut self, buf: &mut [u8]) -> Result<(), CryptoError> {
        match self.hash {
            HashAlg::Sha1 => diffuse_with::<sha1::Sha1>(buf),
            HashAlg::Sha256 => diffuse_with::<sha2::Sha256>(buf),
            HashAlg::Sha512 => diffuse_with::<sha2::Sha512>(buf),
            HashAlg::Ripemd160 => diffuse_with::<ripemd::Ripemd160>(buf),
        }
    }
}

fn diffuse_with<D: Digest>(buf: &mut [u8]) -> Result<(), CryptoError> {
    for (i, chunk) in buf.chunks_mut(<D as Digest>::output_size()).enumerate() {
        let index = u32::try_from(i).map_err(|_| CryptoError::InvalidParameter("AF key too long"))?;
        let mut h = D::new();
        h.update(index.to_be_bytes());
        h.update(&*chunk);
        let mut digest = h.finalize();
        let n = chunk.len();
        chunk.copy_from_slice(&digest[..n]);
        digest.as_mut_slice().zeroize();
    }
    Ok(())
}

#[cfg(test)]
mod tests;
