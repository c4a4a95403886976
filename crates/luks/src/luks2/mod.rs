//! LUKS2 header: two copies of binary header + JSON metadata. Sans-IO: the
//! functions here take and return bytes; [`crate::volume`] does the I/O.

pub mod binary;
pub mod json;
pub mod reenc;

use std::collections::BTreeSet;

use binary::{BinaryHeader, Copy, BINARY_SIZE};
pub use json::Metadata;

use crate::error::{Error, Result};

/// Most keyslots a LUKS2 header may hold.
pub const MAX_KEYSLOTS: u32 = 32;
/// Requirements this engine knows how to honour. None yet: a volume in the
/// middle of cryptsetup's re-encryption is refused rather than mis-opened.
pub const KNOWN_REQUIREMENTS: &[&str] = &[];

/// A decoded LUKS2 header (the winning copy).
#[derive(Clone, Debug, PartialEq)]
pub struct Header {
    /// Binary plus JSON area size of each copy.
    pub hdr_size: u64,
    /// Sequence id of the winning copy.
    pub seqid: u64,
    /// Label.
    pub label: String,
    /// Subsystem.
    pub subsystem: String,
    /// UUID.
    pub uuid: String,
    /// Checksum algorithm.
    pub csum_alg: String,
    /// Metadata.
    pub meta: Metadata,
    /// True when one copy was damaged or stale; the next write repairs it.
    pub needs_repair: bool,
}

/// One header copy as read from the device, not yet trusted.
#[derive(Debug)]
pub struct CopyBytes {
    /// Where it was read.
    pub offset: u64,
    /// Binary header and JSON area (at least `hdr_size` bytes when valid).
    pub bytes: Vec<u8>,
}

/// Decodes and verifies one copy.
pub fn decode_copy(c: &CopyBytes) -> Result<(BinaryHeader, Metadata)> {
    let bin = BinaryHeader::parse(&c.bytes)?;
    if bin.hdr_offset != c.offset {
        return Err(Error::header(format!("header copy claims offset {} but sits at {}", bin.hdr_offset, c.offset)));
    }
    let expect = if c.offset == 0 { Copy::Primary } else { Copy::Secondary };
    if bin.copy != expect {
        return Err(Error::header("header magic does not match its position"));
    }
    binary::verify(&bin, &c.bytes)?;
    let meta = Metadata::parse(&c.bytes[BINARY_SIZE..bin.hdr_size as usize])?;
    validate(&bin, &meta)?;
    Ok((bin, meta))
}

/// Picks the valid copy with the higher seqid; the other needs repair.
pub fn choose(primary: Result<(BinaryHeader, Metadata)>, secondary: Result<(BinaryHeader, Metadata)>) -> Result<Header> {
    let (winner, repair) = match (primary, secondary) {
        (Ok(p), Ok(s)) => {
            if s.0.seqid > p.0.seqid {
                (s, true)
            } else {
                let stale = p.0.seqid != s.0.seqid || p.0.hdr_size != s.0.hdr_size || p.1 != s.1;
                (p, stale)
            }
        }
        (Ok(p), Err(_)) => (p, true),
        (Err(_), Ok(s)) => (s, true),
        (Err(e), Err(_)) => return Err(e),
    };
    let (bin, meta) = winner;
    Ok(Header {
        hdr_size: bin.hdr_size,
        seqid: bin.seqid,
        label: bin.label,
        subsystem: bin.subsystem,
        uuid: bin.uuid,
        csum_alg: bin.csum_alg,
        meta,
        needs_repair: repair,
    })
}

/// Structural checks on metadata, so a crafted header can neither make us
/// touch bytes outside its keyslot areas nor confuse which key is which.
pub fn validate(bin: &BinaryHeader, meta: &Metadata) -> Result<()> {
    let hdr_size = bin.hdr_size;
    if meta.config.json_size != hdr_size - BINARY_SIZE as u64 {
        return Err(Error::header("config.json_size does not match the header size"));
    }
    let ks_start = 2 * hdr_size;
    let ks_end = ks_start
        .checked_add(meta.config.keyslots_size)
        .ok_or_else(|| Error::header("keyslots_size overflows"))?;
    if !meta.config.keyslots_size.is_multiple_of(4096) {
        return Err(Error::header("keyslots_size is not 4096-aligned"));
    }
    let mut areas = Vec::new();
    for (&n, ks) in &meta.keyslots {
        if n >= MAX_KEYSLOTS {
            return Err(Error::header(format!("keyslot number {n} out of range")));
        }
        let a = &ks.area;
        let end = a.offset.checked_add(a.size).ok_or_else(|| Error::header("keyslot area overflows"))?;
        if a.offset < ks_start || end > ks_end {
            return Err(Error::header(format!("keyslot {n} area lies outside the keyslots region")));
        }
        if ks.kind == "luks2" {
            let af = ks.af.as_ref().ok_or_else(|| Error::header(format!("keyslot {n} has no af")))?;
            if ks.kdf.is_none() {
                return Err(Error::header(format!("keyslot {n} has no kdf")));
            }
            if af.stripes == 0 || ks.key_size == 0 || ks.key_size > 512 {
                return Err(Error::header(format!("keyslot {n} has bad key size or stripes")));
            }
            let need = ks.key_size as u64 * af.stripes as u64;
            if a.size < need {
                return Err(Error::header(format!("keyslot {n} area is too small")));
            }
        }
        areas.push((a.offset, end, n));
    }
    areas.sort();
    for w in areas.windows(2) {
        if w[0].1 > w[1].0 {
            return Err(Error::header(format!("keyslots {} and {} overlap", w[0].2, w[1].2)));
        }
    }
    let slot_ids: BTreeSet<String> = meta.keyslots.keys().map(|k| k.to_string()).collect();
    let seg_ids: BTreeSet<String> = meta.segments.keys().map(|k| k.to_string()).collect();
    for (n, d) in &meta.digests {
        for k in &d.keyslots {
            if !slot_ids.contains(k) {
                return Err(Error::header(format!("digest {n} names missing keyslot {k}")));
            }
        }
        for s in &d.segments {
            if !seg_ids.contains(s) {
                return Err(Error::header(format!("digest {n} names missing segment {s}")));
            }
        }
    }
    // Data at offset 0 means a detached header (cryptsetup's --header), the
    // one layout where segments and metadata may share offsets.
    let detached = meta.segments.values().any(|s| s.offset == 0 && s.kind != "linear");
    for (n, s) in &meta.segments {
        if !detached && s.offset < ks_end && s.kind != "linear" {
            return Err(Error::header(format!("segment {n} overlaps the metadata")));
        }
        if let Some(ss) = s.sector_size {
            if !(512..=4096).contains(&ss) || !ss.is_power_of_two() {
                return Err(Error::header(format!("segment {n} has bad sector size {ss}")));
            }
        }
    }
    Ok(())
}

impl Header {
    /// Refuses metadata with mandatory requirements this engine does not know.
    pub fn check_requirements(&self) -> Result<()> {
        for r in self.meta.mandatory_requirements() {
            if crate::reencrypt::requirement_format(r).is_some() {
                return Err(Error::Unsupported(
                    "volume is being re-encrypted; finish with `rekey luks reencrypt --resume`".into(),
                ));
            }
            if reenc::requirement_version(r).is_some() {
                return Err(Error::Unsupported(
                    "volume is being re-encrypted; finish with `rekey luks reencrypt --resume` \
                     or `cryptsetup reencrypt --resume-only`"
                        .into(),
                ));
            }
            if !KNOWN_REQUIREMENTS.contains(&r.as_str()) {
                return Err(Error::Unsupported(format!(
                    "header has unknown mandatory requirement {r:?}; refusing to touch it"
                )));
            }
        }
        Ok(())
    }

    /// Encodes both copies for the next write, with `seqid` bumped and fresh
    /// salts. Returns (primary, secondary); the secondary goes at `hdr_size`.
    pub fn encode_next(&mut self) -> Result<(Vec<u8>, Vec<u8>)> {
        self.seqid += 1;
        let json_len = (self.hdr_size - BINARY_SIZE as u64) as usize;
        self.meta.config.json_size = json_len as u64;
        let area = self.meta.encode(json_len)?;
        let mut out = Vec::with_capacity(2);
        for (copy, offset) in [(Copy::Primary, 0), (Copy::Secondary, self.hdr_size)] {
            let mut salt = [0u8; 64];
            openssl::rand::rand_bytes(&mut salt).map_err(crate::crypto::CryptoError::from)?;
            let bin = BinaryHeader {
                copy,
                hdr_size: self.hdr_size,
                seqid: self.seqid,
                label: self.label.clone(),
                csum_alg: self.csum_alg.clone(),
                salt,
                uuid: self.uuid.clone(),
                subsystem: self.subsystem.clone(),
                hdr_offset: offset,
                csum: [0; 64],
            };
            out.push(binary::seal(&bin, &area)?);
        }
        let secondary = out.pop().expect("two copies");
        let primary = out.pop().expect("two copies");
        self.needs_repair = false;
        Ok((primary, secondary))
    }

    /// Start and end of the keyslots region.
    pub fn keyslots_region(&self) -> (u64, u64) {
        (2 * self.hdr_size, 2 * self.hdr_size + self.meta.config.keyslots_size)
    }

    /// Finds `size` free bytes (4096-aligned) in the keyslots region.
    pub fn allocate_area(&self, size: u64) -> Option<u64> {
        let (start, end) = self.keyslots_region();
        let mut used: Vec<(u64, u64)> =
            self.meta.keyslots.values().map(|k| (k.area.offset, k.area.offset + k.area.size)).collect();
        used.sort();
        let mut pos = start;
        for (s, e) in used {
            if s >= pos + size {
                break;
            }
            pos = pos.max(crate::codec::round_up(e, 4096));
        }
        (pos + size <= end).then_some(pos)
    }

    /// Lowest free keyslot number.
    pub fn free_keyslot(&self) -> Option<u32> {
        (0..MAX_KEYSLOTS).find(|n| !self.meta.keyslots.contains_key(n))
    }
}
