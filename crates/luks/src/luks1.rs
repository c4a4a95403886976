//! LUKS1 on-disk header (the 592-byte `phdr`), sans-IO.

use crate::codec::{put_cstr, Reader};
use crate::error::{Error, Result};

/// Magic at offset 0 of every LUKS header.
pub const MAGIC: [u8; 6] = *b"LUKS\xba\xbe";
/// Size of the encoded phdr.
pub const PHDR_SIZE: usize = 592;
/// Number of keyslots.
pub const NUM_KEYSLOTS: usize = 8;
/// Keyslot marker: in use.
pub const KEY_ENABLED: u32 = 0x00AC_71F3;
/// Keyslot marker: free.
pub const KEY_DISABLED: u32 = 0x0000_DEAD;
/// Length of the master-key digest.
pub const DIGEST_SIZE: usize = 20;
/// Length of the salts.
pub const SALT_SIZE: usize = 32;
/// Anti-forensic stripes cryptsetup uses.
pub const STRIPES: u32 = 4000;
/// Sector unit of all offsets.
pub const SECTOR: u64 = 512;
/// Key material areas are aligned to this many bytes.
pub const ALIGN_KEYSLOTS: u64 = 4096;

/// One of the eight keyslot descriptors.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Keyslot {
    /// [`KEY_ENABLED`] or [`KEY_DISABLED`] (anything else is refused on parse).
    pub active: bool,
    /// PBKDF2 iterations.
    pub iterations: u32,
    /// PBKDF2 salt.
    pub salt: [u8; SALT_SIZE],
    /// Start of the key material, in 512-byte sectors.
    pub key_material_offset: u32,
    /// AF stripes.
    pub stripes: u32,
}

/// A parsed LUKS1 header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    /// e.g. `aes`.
    pub cipher_name: String,
    /// e.g. `xts-plain64`.
    pub cipher_mode: String,
    /// PBKDF2 and AF hash, e.g. `sha256`.
    pub hash_spec: String,
    /// Data start, in 512-byte sectors.
    pub payload_offset: u32,
    /// Volume key length in bytes.
    pub key_bytes: u32,
    /// PBKDF2 digest of the volume key.
    pub mk_digest: [u8; DIGEST_SIZE],
    /// Salt of that digest.
    pub mk_digest_salt: [u8; SALT_SIZE],
    /// Iterations of that digest.
    pub mk_digest_iterations: u32,
    /// Text UUID.
    pub uuid: String,
    /// The eight keyslots.
    pub keyslots: [Keyslot; NUM_KEYSLOTS],
}

impl Header {
    /// Parses a phdr from the first [`PHDR_SIZE`] bytes of `buf`.
    pub fn parse(buf: &[u8]) -> Result<Header> {
        let mut r = Reader::new(buf);
        if r.take(6)? != MAGIC {
            return Err(Error::header("no LUKS magic"));
        }
        let version = r.u16()?;
        if version != 1 {
            return Err(Error::header(format!("version {version} is not LUKS1")));
        }
        let cipher_name = r.cstr(32, "cipher name")?;
        let cipher_mode = r.cstr(32, "cipher mode")?;
        let hash_spec = r.cstr(32, "hash spec")?;
        let payload_offset = r.u32()?;
        let key_bytes = r.u32()?;
        let mk_digest = r.array()?;
        let mk_digest_salt = r.array()?;
        let mk_digest_iterations = r.u32()?;
        let uuid = r.cstr(40, "uuid")?;
        let mut slots = Vec::with_capacity(NUM_KEYSLOTS);
        for i in 0..NUM_KEYSLOTS {
            let active = match r.u32()? {
                KEY_ENABLED => true,
                KEY_DISABLED => false,
                other => {
                    return Err(Error::header(format!("keyslot {i} has unknown state {other:#010x}")))
                }
            };
            slots.push(Keyslot {
                active,
                iterations: r.u32()?,
                salt: r.array()?,
                key_material_offset: r.u32()?,
                stripes: r.u32()?,
            });
        }
        debug_assert_eq!(r.pos(), PHDR_SIZE);
        let h = Header {
            cipher_name,
            cipher_mode,
            hash_spec,
            payload_offset,
            key_bytes,
            mk_digest,
            mk_digest_salt,
            mk_digest_iterations,
            uuid,
            keyslots: slots.try_into().expect("eight keyslots"),
        };
        h.validate()?;
        Ok(h)
    }

    /// Checks the invariants cryptsetup relies on, so a crafted header cannot
    /// make us read or write outside the header area.
    pub fn validate(&self) -> Result<()> {
        if !matches!(self.key_bytes, 16 | 24 | 32 | 48 | 64) {
            return Err(Error::header(format!("invalid key size {}", self.key_bytes)));
        }
        if self.mk_digest_iterations == 0 {
            return Err(Error::header("digest iterations are zero"));
        }
        let payload = self.payload_offset as u64 * SECTOR;
        let phdr_end = PHDR_SIZE as u64;
        let mut areas: Vec<(u64, u64, usize)> = Vec::new();
        for (i, ks) in self.keyslots.iter().enumerate() {
            if ks.stripes == 0 || ks.stripes > 1_000_000 {
                // cryptsetup writes 4000; a zero or absurd count is corruption.
                if ks.active {
                    return Err(Error::header(format!("keyslot {i} has {} stripes", ks.stripes)));
                }
                continue;
            }
            let start = ks.key_material_offset as u64 * SECTOR;
            let len = self.material_len(ks.stripes);
            if start < phdr_end {
                return Err(Error::header(format!("keyslot {i} overlaps the header")));
            }
            if payload != 0 && start + len > payload {
                return Err(Error::header(format!("keyslot {i} overlaps the data area")));
            }
            if ks.active && ks.iterations == 0 {
                return Err(Error::header(format!("keyslot {i} has zero iterations")));
            }
            areas.push((start, start + len, i));
        }
        areas.sort();
        for w in areas.windows(2) {
            if w[0].1 > w[1].0 {
                return Err(Error::header(format!("keyslots {} and {} overlap", w[0].2, w[1].2)));
            }
        }
        Ok(())
    }

    /// Bytes of key material for `stripes` stripes, padded to whole sectors.
    pub fn material_len(&self, stripes: u32) -> u64 {
        crate::codec::round_up(self.key_bytes as u64 * stripes as u64, SECTOR)
    }

    /// Encodes the phdr ([`PHDR_SIZE`] bytes).
    pub fn encode(&self) -> Result<Vec<u8>> {
        let mut out = Vec::with_capacity(PHDR_SIZE);
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(&1u16.to_be_bytes());
        put_cstr(&mut out, &self.cipher_name, 32, "cipher name")?;
        put_cstr(&mut out, &self.cipher_mode, 32, "cipher mode")?;
        put_cstr(&mut out, &self.hash_spec, 32, "hash spec")?;
        out.extend_from_slice(&self.payload_offset.to_be_bytes());
        out.extend_from_slice(&self.key_bytes.to_be_bytes());
        out.extend_from_slice(&self.mk_digest);
        out.extend_from_slice(&self.mk_digest_salt);
        out.extend_from_slice(&self.mk_digest_iterations.to_be_bytes());
        put_cstr(&mut out, &self.uuid, 40, "uuid")?;
        for ks in &self.keyslots {
            let state = if ks.active { KEY_ENABLED } else { KEY_DISABLED };
            out.extend_from_slice(&state.to_be_bytes());
            out.extend_from_slice(&ks.iterations.to_be_bytes());
            out.extend_from_slice(&ks.salt);
            out.extend_from_slice(&ks.key_material_offset.to_be_bytes());
            out.extend_from_slice(&ks.stripes.to_be_bytes());
        }
        debug_assert_eq!(out.len(), PHDR_SIZE);
        Ok(out)
    }

    /// The standard layout for a new header: key material areas from sector 8,
    /// each 4096-aligned, data after the last one (1 MiB-aligned as cryptsetup).
    pub fn layout(key_bytes: u32) -> ([u32; NUM_KEYSLOTS], u32) {
        let per_slot = crate::codec::round_up(key_bytes as u64 * STRIPES as u64, ALIGN_KEYSLOTS);
        let mut offsets = [0u32; NUM_KEYSLOTS];
        let mut pos = ALIGN_KEYSLOTS;
        for o in offsets.iter_mut() {
            *o = (pos / SECTOR) as u32;
            pos += per_slot;
        }
        let payload = crate::codec::round_up(pos, 1 << 20);
        (offsets, (payload / SECTOR) as u32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_matches_cryptsetup_for_512_bit_keys() {
        let (offsets, payload) = Header::layout(64);
        assert_eq!(offsets[0], 8);
        assert_eq!(offsets[1], 512);
        assert_eq!(offsets[2], 1016);
        assert_eq!(payload, 4096);
    }

    #[test]
    fn layout_matches_cryptsetup_for_256_bit_keys() {
        let (offsets, payload) = Header::layout(32);
        assert_eq!(&offsets[..3], &[8, 264, 520]);
        assert_eq!(payload, 4096);
    }
}
