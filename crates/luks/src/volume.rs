//! Operations on a LUKS volume through a [`BlockIo`]: open, format, unlock,
//! add/change/remove keyslots. The only layer that does I/O on headers.
//!
//! Every change writes new state before it destroys old state: a new keyslot
//! is written and committed before the old one is wiped, so a crash at any
//! point leaves a volume that opens with the old or the new passphrase.

use std::collections::BTreeMap;

use serde_json::Map;

use crate::blockio::BlockIo;
use crate::codec::round_up;
use crate::crypto::{af, ct_eq, kdf, Argon2Variant, CipherSpec, HashAlg, KdfParams, SectorCipher};
use crate::error::{Error, Result};
use crate::luks1;
use crate::luks2::{self, binary, json};
use crate::pbkdf::{PbkdfKind, PbkdfOptions};
use crate::Secret;

/// Stripes of the anti-forensic splitter, as cryptsetup writes them.
pub const AF_STRIPES: u32 = 4000;
/// LUKS2 default header copy size.
pub const LUKS2_HDR_SIZE: u64 = 16 << 10;
/// LUKS2 default data offset (metadata + keyslots).
pub const LUKS2_DATA_OFFSET: u64 = 16 << 20;

/// LUKS version.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum Version {
    /// LUKS1.
    Luks1,
    /// LUKS2.
    Luks2,
}

impl Version {
    /// Parses `luks1`, `luks2` (and `luks` = LUKS1, Cinder's provider name).
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "luks1" | "luks" => Ok(Version::Luks1),
            "luks2" => Ok(Version::Luks2),
            _ => Err(Error::InvalidArgument(format!("unknown LUKS type {s:?} (luks1, luks2)"))),
        }
    }
}

/// A decoded header of either version.
#[derive(Clone, Debug, PartialEq)]
pub enum Header {
    /// LUKS1 phdr.
    Luks1(luks1::Header),
    /// LUKS2 header (winning copy).
    Luks2(luks2::Header),
}

/// What `format` should make.
#[derive(Clone, Debug)]
pub struct FormatOptions {
    /// LUKS1 or LUKS2.
    pub version: Version,
    /// Data (and keyslot) cipher.
    pub cipher: CipherSpec,
    /// Volume key size in bits.
    pub key_size_bits: u32,
    /// Encryption sector size (LUKS2: 512..4096).
    pub sector_size: u32,
    /// KDF for the first keyslot.
    pub pbkdf: PbkdfOptions,
    /// LUKS2 label.
    pub label: Option<String>,
    /// LUKS2 subsystem.
    pub subsystem: Option<String>,
    /// UUID; random if absent.
    pub uuid: Option<String>,
    /// Keyslot for the passphrase (default 0).
    pub keyslot: Option<u32>,
    /// The caller knows the device reads as zeros (a volume a backend has
    /// just created): the metadata area is not overwritten with zeros
    /// first, so a thin volume stays thin — its clones then copy a few
    /// hundred KiB of header and keyslot instead of the whole 16 MiB area.
    pub zeroed: bool,
}

impl Default for FormatOptions {
    fn default() -> Self {
        FormatOptions {
            version: Version::Luks2,
            cipher: CipherSpec::parse("aes-xts-plain64").expect("built-in spec"),
            key_size_bits: 512,
            sector_size: 512,
            pbkdf: PbkdfOptions::default(),
            label: None,
            subsystem: None,
            uuid: None,
            keyslot: None,
            zeroed: false,
        }
    }
}

impl FormatOptions {
    /// Checks the options on their own (no device needed), so a caller can
    /// refuse bad input before it creates or touches anything.
    pub fn validate(&self) -> Result<()> {
        let key_len = (self.key_size_bits / 8) as usize;
        if !self.key_size_bits.is_multiple_of(8) || !self.cipher.valid_key_len(key_len) {
            return Err(Error::InvalidArgument(format!(
                "key size {} bits does not fit cipher {}",
                self.key_size_bits,
                self.cipher.name()
            )));
        }
        let (max_slot, ss_ok) = match self.version {
            Version::Luks1 => {
                if self.label.is_some() || self.subsystem.is_some() {
                    return Err(Error::InvalidArgument("LUKS1 has no label or subsystem".into()));
                }
                if self.pbkdf.kind.is_some_and(|k| k != PbkdfKind::Pbkdf2) {
                    return Err(Error::InvalidArgument("LUKS1 keyslots support only pbkdf2".into()));
                }
                (luks1::NUM_KEYSLOTS as u32, self.sector_size == 512)
            }
            Version::Luks2 => {
                (luks2::MAX_KEYSLOTS, (512..=4096).contains(&self.sector_size) && self.sector_size.is_power_of_two())
            }
        };
        if !ss_ok {
            return Err(Error::InvalidArgument(format!("sector size {} not supported here", self.sector_size)));
        }
        if let Some(s) = self.keyslot.filter(|&s| s >= max_slot) {
            return Err(Error::InvalidArgument(format!("keyslot {s} out of range 0..{}", max_slot - 1)));
        }
        for (what, v) in [("label", &self.label), ("subsystem", &self.subsystem)] {
            if v.as_ref().is_some_and(|l| l.len() > 47 || l.contains('\0')) {
                return Err(Error::InvalidArgument(format!("{what} longer than 47 bytes")));
            }
        }
        if let Some(u) = &self.uuid {
            uuid::Uuid::parse_str(u).map_err(|_| Error::InvalidArgument(format!("invalid UUID {u:?}")))?;
        }
        self.pbkdf.check()?;
        Ok(())
    }
}

/// Where the encrypted data lives and how it is encrypted.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct DataSegment {
    /// Byte offset of the first data sector.
    pub offset: u64,
    /// Length in bytes; `None` = to the end of the device.
    pub size: Option<u64>,
    /// Cipher.
    pub cipher: String,
    /// Encryption sector size.
    pub sector_size: u32,
    /// IV of the first sector.
    pub iv_tweak: u64,
}

/// An open LUKS volume: a header and the device it came from.
pub struct Volume<IO: BlockIo> {
    io: IO,
    header: Header,
}

impl<IO: BlockIo> std::fmt::Debug for Volume<IO> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Volume").field("header", &self.header).finish_non_exhaustive()
    }
}

pub(crate) fn read(io: &impl BlockIo, offset: u64, len: usize) -> Result<Vec<u8>> {
    let mut buf = vec![0u8; len];
    io.read_at(&mut buf, offset).map_err(|e| {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            Error::header(format!("device is too small: cannot read {len} bytes at offset {offset}"))
        } else {
            Error::io("read", offset)(e)
        }
    })?;
    Ok(buf)
}

pub(crate) fn write(io: &impl BlockIo, offset: u64, buf: &[u8]) -> Result<()> {
    io.write_at(buf, offset).map_err(Error::io("write", offset))
}

pub(crate) fn flush(io: &impl BlockIo) -> Result<()> {
    io.flush().map_err(Error::io("flush", 0))
}

fn random_uuid() -> String {
    uuid::Uuid::new_v4().to_string()
}

pub(crate) fn random_salt(len: usize) -> Result<Vec<u8>> {
    let mut s = vec![0u8; len];
    openssl::rand::rand_bytes(&mut s).map_err(crate::crypto::CryptoError::from)?;
    Ok(s)
}

/// Reads and decodes a header from `io` (either version).
pub fn read_header(io: &impl BlockIo) -> Result<Header> {
    let size = io.size().map_err(Error::io("size", 0))?;
    if size < 4096 {
        return Err(Error::header(format!("device of {size} bytes is too small for a LUKS header")));
    }
    let first = read(io, 0, 4096)?;
    let version = (first[..6] == luks1::MAGIC).then(|| u16::from_be_bytes([first[6], first[7]]));
    match version {
        Some(1) => {
            let h = luks1::Header::parse(&first)?;
            let end = h.keyslots.iter().map(|k| k.key_material_offset as u64 * 512 + h.material_len(k.stripes)).max();
            if end.unwrap_or(0) > size {
                return Err(Error::header("device is smaller than its LUKS1 key material"));
            }
            Ok(Header::Luks1(h))
        }
        Some(2) => read_luks2(io, size, Some(&first)),
        Some(v) => Err(Error::header(format!("unknown LUKS version {v}"))),
        // Primary damaged or absent: a LUKS2 secondary copy may still be there.
        None => read_luks2(io, size, None).map_err(|_| Error::header("not a LUKS device (no valid header found)")),
    }
}

fn read_luks2(io: &impl BlockIo, size: u64, first: Option<&[u8]>) -> Result<Header> {
    let read_copy = |offset: u64, first_block: Option<&[u8]>| -> Result<(binary::BinaryHeader, json::Metadata)> {
        let block = match first_block {
            Some(b) => b.to_vec(),
            None => read(io, offset, 4096)?,
        };
        let bin = binary::BinaryHeader::parse(&block)?;
        if offset + bin.hdr_size > size {
            return Err(Error::header("header copy extends past the device end"));
        }
        let bytes = read(io, offset, bin.hdr_size as usize)?;
        luks2::decode_copy(&luks2::CopyBytes { offset, bytes })
    };
    let primary = read_copy(0, first);
    let secondary = match &primary {
        Ok((bin, _)) => read_copy(bin.hdr_size, None),
        Err(_) => binary::SECONDARY_OFFSETS
            .iter()
            .filter(|&&o| o + 4096 <= size)
            .map(|&o| read_copy(o, None))
            .find(|r| r.is_ok())
            .unwrap_or_else(|| Err(Error::header("no valid secondary header"))),
    };
    let h = luks2::choose(primary, secondary)?;
    let (_, ks_end) = h.keyslots_region();
    if ks_end > size {
        return Err(Error::header("device is smaller than its LUKS2 keyslots region"));
    }
    Ok(Header::Luks2(h))
}

impl<IO: BlockIo> Volume<IO> {
    /// Opens the LUKS volume on `io`.
    pub fn open(io: IO) -> Result<Self> {
        let header = read_header(&io)?;
        Ok(Volume { io, header })
    }

    /// The decoded header.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// The device.
    pub fn io(&self) -> &IO {
        &self.io
    }

    /// Gives the device back.
    pub fn into_io(self) -> IO {
        self.io
    }

    /// LUKS version.
    pub fn version(&self) -> Version {
        match self.header {
            Header::Luks1(_) => Version::Luks1,
            Header::Luks2(_) => Version::Luks2,
        }
    }

    /// Formats `io` as a new LUKS volume whose keyslot opens with `passphrase`.
    /// `volume_key` is generated when `None`. Wipes the whole metadata area.
    pub fn format(io: IO, opts: &FormatOptions, passphrase: &[u8], volume_key: Option<Secret>) -> Result<Self> {
        opts.validate()?;
        let key_len = (opts.key_size_bits / 8) as usize;
        let vk = match volume_key {
            Some(k) if k.len() != key_len => {
                return Err(Error::InvalidArgument("volume key length does not match --key-size".into()))
            }
            Some(k) => k,
            None => Secret::random(key_len),
        };
        let uuid = match &opts.uuid {
            Some(u) => uuid::Uuid::parse_str(u)
                .map_err(|_| Error::InvalidArgument(format!("invalid UUID {u:?}")))?
                .hyphenated()
                .to_string(),
            None => random_uuid(),
        };
        let size = io.size().map_err(Error::io("size", 0))?;
        let slot = opts.keyslot.unwrap_or(0);
        let header = match opts.version {
            Version::Luks1 => {
                if opts.sector_size != 512 {
                    return Err(Error::InvalidArgument("LUKS1 supports only 512-byte sectors".into()));
                }
                if opts.label.is_some() || opts.subsystem.is_some() {
                    return Err(Error::InvalidArgument("LUKS1 has no label or subsystem".into()));
                }
                if slot as usize >= luks1::NUM_KEYSLOTS {
                    return Err(Error::InvalidArgument(format!("LUKS1 keyslot {slot} out of range 0..7")));
                }
                let (offsets, payload) = luks1::Header::layout(key_len as u32);
                if (payload as u64) * 512 + 512 > size {
                    return Err(Error::InvalidArgument(format!(
                        "device of {size} bytes is too small for LUKS1 (needs more than {} bytes)",
                        payload as u64 * 512
                    )));
                }
                let hash = opts.pbkdf.hash;
                let iters = opts.pbkdf.digest_iterations(hash, key_len)?;
                let salt: [u8; 32] = random_salt(32)?.try_into().expect("32 bytes");
                let digest = kdf::derive(&KdfParams::Pbkdf2 { hash, iterations: iters }, vk.expose(), &salt, 20)?;
                let keyslots = offsets.map(|o| luks1::Keyslot {
                    active: false,
                    iterations: 0,
                    salt: [0; 32],
                    key_material_offset: o,
                    stripes: AF_STRIPES,
                });
                Header::Luks1(luks1::Header {
                    cipher_name: opts.cipher.cipher_name().to_string(),
                    cipher_mode: opts.cipher.mode_name().to_string(),
                    hash_spec: hash.name().to_string(),
                    payload_offset: payload,
                    key_bytes: key_len as u32,
                    mk_digest: digest.expose().try_into().expect("20 bytes"),
                    mk_digest_salt: salt,
                    mk_digest_iterations: iters,
                    uuid,
                    keyslots,
                })
            }
            Version::Luks2 => {
                let ss = opts.sector_size;
                if !(512..=4096).contains(&ss) || !ss.is_power_of_two() {
                    return Err(Error::InvalidArgument(format!("sector size {ss} not a power of two in 512..4096")));
                }
                if slot >= luks2::MAX_KEYSLOTS {
                    return Err(Error::InvalidArgument(format!("LUKS2 keyslot {slot} out of range 0..31")));
                }
                if size < LUKS2_DATA_OFFSET + ss as u64 {
                    return Err(Error::InvalidArgument(format!(
                        "device of {size} bytes is too small for LUKS2 (needs more than {LUKS2_DATA_OFFSET} bytes)"
                    )));
                }
                let hash = opts.pbkdf.hash;
                let iters = opts.pbkdf.digest_iterations(hash, key_len)?;
                let salt = random_salt(32)?;
                let digest =
                    kdf::derive(&KdfParams::Pbkdf2 { hash, iterations: iters }, vk.expose(), &salt, hash.digest_len())?;
                let mut segments = BTreeMap::new();
                segments.insert(
                    0,
                    json::Segment {
                        kind: "crypt".into(),
                        offset: LUKS2_DATA_OFFSET,
                        size: json::SegmentSize::Dynamic,
                        iv_tweak: Some(0),
                        encryption: Some(opts.cipher.name()),
                        sector_size: Some(ss),
                        flags: None,
                        extra: Map::new(),
                    },
                );
                let mut digests = BTreeMap::new();
                digests.insert(
                    0,
                    json::Digest {
                        kind: "pbkdf2".into(),
                        keyslots: vec![],
                        segments: vec!["0".into()],
                        hash: Some(hash.name().into()),
                        iterations: Some(iters),
                        salt,
                        digest: digest.expose().to_vec(),
                        extra: Map::new(),
                    },
                );
                Header::Luks2(luks2::Header {
                    hdr_size: LUKS2_HDR_SIZE,
                    seqid: 0,
                    label: opts.label.clone().unwrap_or_default(),
                    subsystem: opts.subsystem.clone().unwrap_or_default(),
                    uuid,
                    csum_alg: "sha256".into(),
                    meta: json::Metadata {
                        keyslots: BTreeMap::new(),
                        tokens: BTreeMap::new(),
                        segments,
                        digests,
                        config: json::Config {
                            json_size: LUKS2_HDR_SIZE - 4096,
                            keyslots_size: LUKS2_DATA_OFFSET - 2 * LUKS2_HDR_SIZE,
                            flags: None,
                            requirements: None,
                            extra: Map::new(),
                        },
                        extra: Map::new(),
                    },
                    needs_repair: false,
                })
            }
        };
        // Stale keyslot material from an earlier format must not survive.
        let meta_end = match &header {
            Header::Luks1(h) => h.payload_offset as u64 * 512,
            Header::Luks2(_) => LUKS2_DATA_OFFSET,
        };
        let zeros = vec![0u8; 1 << 20];
        let mut off = if opts.zeroed { meta_end } else { 0 };
        while off < meta_end {
            let n = (meta_end - off).min(zeros.len() as u64) as usize;
            write(&io, off, &zeros[..n])?;
            off += n as u64;
        }
        let mut v = Volume { io, header };
        v.add_keyslot_with_key(&vk, passphrase, Some(slot), &opts.pbkdf)?;
        Ok(v)
    }

    /// The data segment (LUKS2: segment 0's live segment).
    pub fn data_segment(&self) -> Result<DataSegment> {
        if let Header::Luks2(h) = &self.header {
            h.check_requirements()?;
        }
        self.data_segment_raw()
    }

    /// The data segment, even while the header carries requirements (for the
    /// re-encryption code that understands them).
    pub(crate) fn data_segment_raw(&self) -> Result<DataSegment> {
        match &self.header {
            Header::Luks1(h) => Ok(DataSegment {
                offset: h.payload_offset as u64 * 512,
                size: None,
                cipher: format!("{}-{}", h.cipher_name, h.cipher_mode),
                sector_size: 512,
                iv_tweak: 0,
            }),
            Header::Luks2(h) => {
                let (_, seg) = h
                    .meta
                    .segments
                    .iter()
                    .find(|(_, s)| s.kind == "crypt" && s.flags.as_ref().is_none_or(|f| f.is_empty()))
                    .ok_or_else(|| Error::Unsupported("no crypt data segment".into()))?;
                Ok(DataSegment {
                    offset: seg.offset,
                    size: match seg.size {
                        json::SegmentSize::Dynamic => None,
                        json::SegmentSize::Bytes(n) => Some(n),
                    },
                    cipher: seg.encryption.clone().unwrap_or_default(),
                    sector_size: seg.sector_size.unwrap_or(512),
                    iv_tweak: seg.iv_tweak.unwrap_or(0),
                })
            }
        }
    }

    /// Active keyslot numbers.
    pub fn active_keyslots(&self) -> Vec<u32> {
        match &self.header {
            Header::Luks1(h) => (0..8).filter(|&i| h.keyslots[i as usize].active).collect(),
            Header::Luks2(h) => h.meta.keyslots.iter().filter(|(_, k)| k.kind == "luks2").map(|(n, _)| *n).collect(),
        }
    }

    /// Finds the volume key: tries `slot`, or every active keyslot (LUKS2 in
    /// priority order, skipping priority-0 slots as cryptsetup does).
    pub fn unlock(&self, passphrase: &[u8], slot: Option<u32>) -> Result<(u32, Secret)> {
        let candidates: Vec<u32> = match slot {
            Some(s) => {
                if !self.active_keyslots().contains(&s) {
                    return Err(Error::NotFound(format!("keyslot {s} is not active")));
                }
                vec![s]
            }
            None => match &self.header {
                Header::Luks1(_) => self.active_keyslots(),
                Header::Luks2(h) => {
                    let mut v: Vec<(i32, u32)> = h
                        .meta
                        .keyslots
                        .iter()
                        .filter(|(_, k)| k.kind == "luks2")
                        .map(|(n, k)| (k.priority.unwrap_or(1), *n))
                        .filter(|(p, _)| *p != 0)
                        .collect();
                    v.sort_by_key(|&(p, n)| (std::cmp::Reverse(p), n));
                    v.into_iter().map(|(_, n)| n).collect()
                }
            },
        };
        if let Header::Luks2(h) = &self.header {
            h.check_requirements()?;
        }
        for s in candidates {
            if let Some(vk) = self.try_keyslot(s, passphrase)? {
                return Ok((s, vk));
            }
        }
        Err(Error::WrongPassphrase)
    }

    /// Decrypts keyslot `slot` with `passphrase`; `None` if the key does not verify.
    fn try_keyslot(&self, slot: u32, passphrase: &[u8]) -> Result<Option<Secret>> {
        match &self.header {
            Header::Luks1(h) => {
                let ks = &h.keyslots[slot as usize];
                let hash = HashAlg::from_name(&h.hash_spec)?;
                let cipher = CipherSpec::from_parts(&h.cipher_name, &h.cipher_mode)?;
                let key_len = h.key_bytes as usize;
                let kdf = KdfParams::Pbkdf2 { hash, iterations: ks.iterations };
                let derived = kdf::derive(&kdf, passphrase, &ks.salt, key_len)?;
                let offset = ks.key_material_offset as u64 * 512;
                let mut material = Secret::new(read(&self.io, offset, h.material_len(ks.stripes) as usize)?);
                SectorCipher::new(&cipher, derived.expose())?.decrypt(material.as_mut(), 512, 0)?;
                let vk = af::merge(&material.expose()[..key_len * ks.stripes as usize], key_len, ks.stripes, hash)?;
                let check = kdf::derive(
                    &KdfParams::Pbkdf2 { hash, iterations: h.mk_digest_iterations },
                    vk.expose(),
                    &h.mk_digest_salt,
                    luks1::DIGEST_SIZE,
                )?;
                Ok(ct_eq(check.expose(), &h.mk_digest).then_some(vk))
            }
            Header::Luks2(h) => {
                let Some((_, digest)) = h.meta.digest_for_keyslot(slot) else {
                    return Ok(None);
                };
                open_luks2_keyslot(&self.io, h, slot, passphrase, digest)
            }
        }
    }

    /// Checks `vk` against the digest of the data segment.
    pub fn verify_volume_key(&self, vk: &Secret) -> Result<bool> {
        match &self.header {
            Header::Luks1(h) => {
                if vk.len() != h.key_bytes as usize {
                    return Ok(false);
                }
                let hash = HashAlg::from_name(&h.hash_spec)?;
                let check = kdf::derive(
                    &KdfParams::Pbkdf2 { hash, iterations: h.mk_digest_iterations },
                    vk.expose(),
                    &h.mk_digest_salt,
                    luks1::DIGEST_SIZE,
                )?;
                Ok(ct_eq(check.expose(), &h.mk_digest))
            }
            Header::Luks2(h) => {
                let Some((_, d)) = h.meta.digest_for_segment(0) else {
                    return Err(Error::header("no digest for segment 0"));
                };
                verify_digest(d, vk)
            }
        }
    }

    /// Adds a keyslot for `new_passphrase`, unlocking with `passphrase`.
    pub fn add_keyslot(
        &mut self,
        passphrase: &[u8],
        new_passphrase: &[u8],
        slot: Option<u32>,
        pbkdf: &PbkdfOptions,
    ) -> Result<u32> {
        let (_, vk) = self.unlock(passphrase, None)?;
        self.add_keyslot_with_key(&vk, new_passphrase, slot, pbkdf)
    }

    /// Adds a keyslot holding `vk` (which must verify) for `passphrase`.
    /// Material is written and flushed before the header that points to it.
    pub fn add_keyslot_with_key(
        &mut self,
        vk: &Secret,
        passphrase: &[u8],
        slot: Option<u32>,
        pbkdf: &PbkdfOptions,
    ) -> Result<u32> {
        if !self.verify_volume_key(vk)? {
            return Err(Error::InvalidArgument("volume key does not match this volume".into()));
        }
        match &mut self.header {
            Header::Luks1(h) => {
                let slot = match slot {
                    Some(s) if s as usize >= luks1::NUM_KEYSLOTS => {
                        return Err(Error::InvalidArgument(format!("keyslot {s} out of range 0..7")))
                    }
                    Some(s) if h.keyslots[s as usize].active => {
                        return Err(Error::InvalidArgument(format!("keyslot {s} is in use")))
                    }
                    Some(s) => s,
                    None => (0..8u32)
                        .find(|&i| !h.keyslots[i as usize].active)
                        .ok_or_else(|| Error::InvalidArgument("all 8 LUKS1 keyslots are in use".into()))?,
                };
                if pbkdf.kind.is_some_and(|k| k != PbkdfKind::Pbkdf2) {
                    return Err(Error::InvalidArgument("LUKS1 keyslots support only pbkdf2".into()));
                }
                let hash = HashAlg::from_name(&h.hash_spec)?;
                let opts = PbkdfOptions { hash, ..pbkdf.clone() };
                let KdfParams::Pbkdf2 { iterations, .. } = opts.resolve(PbkdfKind::Pbkdf2, vk.len())? else {
                    unreachable!("pbkdf2 asked for")
                };
                let salt: [u8; 32] = random_salt(32)?.try_into().expect("32 bytes");
                let cipher = CipherSpec::from_parts(&h.cipher_name, &h.cipher_mode)?;
                let derived =
                    kdf::derive(&KdfParams::Pbkdf2 { hash, iterations }, passphrase, &salt, vk.len())?;
                let ks = &h.keyslots[slot as usize];
                let stripes = AF_STRIPES;
                let mut material = af::split(vk.expose(), stripes, hash)?;
                let mut padded = Secret::zeroed(h.material_len(stripes) as usize);
                padded.as_mut()[..material.len()].copy_from_slice(material.expose());
                material = padded;
                SectorCipher::new(&cipher, derived.expose())?.encrypt(material.as_mut(), 512, 0)?;
                let offset = ks.key_material_offset as u64 * 512;
                let mut next = h.clone();
                next.keyslots[slot as usize] =
                    luks1::Keyslot { active: true, iterations, salt, key_material_offset: ks.key_material_offset, stripes };
                next.validate()?;
                let phdr = next.encode()?;
                write(&self.io, offset, material.expose())?;
                flush(&self.io)?;
                write(&self.io, 0, &phdr)?;
                flush(&self.io)?;
                *h = next;
                Ok(slot)
            }
            Header::Luks2(h) => {
                h.check_requirements()?;
                let mut next = h.clone();
                let (dnum, _) = next
                    .meta
                    .digest_for_segment(0)
                    .ok_or_else(|| Error::header("no digest for segment 0"))?;
                let slot = write_luks2_keyslot(&self.io, &mut next, vk, passphrase, slot, pbkdf, dnum, None)?;
                write_luks2(&self.io, &mut next)?;
                *h = next;
                Ok(slot)
            }
        }
    }

    /// Replaces the passphrase: new keyslot first, committed, then the old
    /// keyslot destroyed. Refuses when no keyslot is free, because rewriting a
    /// keyslot in place can lock the volume if the write is interrupted.
    /// Returns (old slot, new slot).
    pub fn change_key(
        &mut self,
        passphrase: &[u8],
        new_passphrase: &[u8],
        slot: Option<u32>,
        pbkdf: &PbkdfOptions,
    ) -> Result<(u32, u32)> {
        let (old, vk) = self.unlock(passphrase, slot)?;
        let new = self.add_keyslot_with_key(&vk, new_passphrase, None, pbkdf).map_err(|e| match e {
            Error::InvalidArgument(m) if m.contains("in use") || m.contains("no room") => Error::InvalidArgument(
                format!("{m}; no free keyslot for a safe change (remove a key first)"),
            ),
            e => e,
        })?;
        self.destroy_keyslot(old)?;
        Ok((old, new))
    }

    /// Destroys keyslot `slot`: its whole area is overwritten with random
    /// bytes and flushed, discarded where the backend can, then the header
    /// forgets it.
    pub fn destroy_keyslot(&mut self, slot: u32) -> Result<()> {
        let (offset, len) = match &self.header {
            Header::Luks1(h) => {
                let ks = h
                    .keyslots
                    .get(slot as usize)
                    .filter(|k| k.active)
                    .ok_or_else(|| Error::NotFound(format!("keyslot {slot} is not active")))?;
                let len = round_up(h.key_bytes as u64 * ks.stripes as u64, luks1::ALIGN_KEYSLOTS);
                (ks.key_material_offset as u64 * 512, len)
            }
            Header::Luks2(h) => {
                h.check_requirements()?;
                let ks = h
                    .meta
                    .keyslots
                    .get(&slot)
                    .ok_or_else(|| Error::NotFound(format!("keyslot {slot} is not active")))?;
                (ks.area.offset, ks.area.size)
            }
        };
        // Header first would leave readable material behind if we crashed
        // before the wipe; wiping first leaves at worst a dead keyslot.
        wipe_area(&self.io, offset, len)?;
        match &mut self.header {
            Header::Luks1(h) => {
                let mut next = h.clone();
                let ks = &mut next.keyslots[slot as usize];
                ks.active = false;
                ks.iterations = 0;
                ks.salt = [0; 32];
                let phdr = next.encode()?;
                write(&self.io, 0, &phdr)?;
                flush(&self.io)?;
                *h = next;
            }
            Header::Luks2(h) => {
                let mut next = h.clone();
                next.meta.keyslots.remove(&slot);
                let s = slot.to_string();
                for d in next.meta.digests.values_mut() {
                    d.keyslots.retain(|k| *k != s);
                }
                write_luks2(&self.io, &mut next)?;
                *h = next;
            }
        }
        Ok(())
    }

    /// Writes the header again (both LUKS2 copies), repairing a damaged copy.
    pub fn repair(&mut self) -> Result<()> {
        match &mut self.header {
            Header::Luks1(_) => Ok(()),
            Header::Luks2(h) => {
                let mut next = h.clone();
                write_luks2(&self.io, &mut next)?;
                *h = next;
                Ok(())
            }
        }
    }

    /// Overwrites a LUKS2 header's metadata with `next` (both copies), after
    /// validating it. For layers (re-encryption) that edit the JSON.
    pub fn commit_luks2(&mut self, mut next: luks2::Header) -> Result<()> {
        let Header::Luks2(h) = &mut self.header else {
            return Err(Error::InvalidArgument("not a LUKS2 volume".into()));
        };
        next.seqid = h.seqid;
        write_luks2(&self.io, &mut next)?;
        *h = next;
        Ok(())
    }
}

/// Writes both copies: primary, flush, secondary, flush. A crash tears at
/// most one copy, and the reader then takes the other.
pub(crate) fn write_luks2(io: &impl BlockIo, h: &mut luks2::Header) -> Result<()> {
    let (primary, secondary) = encode_checked(h)?;
    write(io, 0, &primary)?;
    flush(io)?;
    write(io, h.hdr_size, &secondary)?;
    flush(io)
}

/// Encodes the next copies of `h`, refusing metadata this engine would not
/// read back: never write a header that leaves the volume unopenable.
pub(crate) fn encode_checked(h: &mut luks2::Header) -> Result<(Vec<u8>, Vec<u8>)> {
    let (primary, secondary) = h.encode_next()?;
    luks2::decode_copy(&luks2::CopyBytes { offset: 0, bytes: primary.clone() })?;
    Ok((primary, secondary))
}

/// Writes (and flushes) the material of a new LUKS2 keyslot holding `vk` for
/// `passphrase`, and records it in `h` under digest `digest`, without
/// committing `h`. The keyslot encrypts its material with `cipher` (default:
/// segment 0's cipher).
#[allow(clippy::too_many_arguments)]
pub(crate) fn write_luks2_keyslot(
    io: &impl BlockIo,
    h: &mut luks2::Header,
    vk: &Secret,
    passphrase: &[u8],
    slot: Option<u32>,
    pbkdf: &PbkdfOptions,
    digest: u32,
    cipher: Option<CipherSpec>,
) -> Result<u32> {
    let slot = match slot {
        Some(s) if s >= luks2::MAX_KEYSLOTS => {
            return Err(Error::InvalidArgument(format!("keyslot {s} out of range 0..31")))
        }
        Some(s) if h.meta.keyslots.contains_key(&s) => {
            return Err(Error::InvalidArgument(format!("keyslot {s} is in use")))
        }
        Some(s) => s,
        None => h.free_keyslot().ok_or_else(|| Error::InvalidArgument("all 32 LUKS2 keyslots are in use".into()))?,
    };
    let cipher = match cipher {
        Some(c) => c,
        None => {
            let seg_cipher = h.meta.segments.get(&0).and_then(|s| s.encryption.clone());
            CipherSpec::parse(seg_cipher.as_deref().unwrap_or("aes-xts-plain64"))?
        }
    };
    let key_len = vk.len();
    if !cipher.valid_key_len(key_len) {
        return Err(Error::Unsupported(format!("keyslot cipher {} with a {key_len}-byte key", cipher.name())));
    }
    let params = pbkdf.resolve(PbkdfKind::Argon2id, key_len)?;
    let salt = random_salt(32)?;
    let derived = kdf::derive(&params, passphrase, &salt, key_len)?;
    let stripes = AF_STRIPES;
    let af_hash = pbkdf.hash;
    let split = af::split(vk.expose(), stripes, af_hash)?;
    let mat_len = round_up(split.len() as u64, 512) as usize;
    let area_size = round_up(split.len() as u64, 4096);
    let offset = h
        .allocate_area(area_size)
        .ok_or_else(|| Error::InvalidArgument("no room left in the LUKS2 keyslots area".into()))?;
    let mut material = Secret::zeroed(mat_len);
    material.as_mut()[..split.len()].copy_from_slice(split.expose());
    SectorCipher::new(&cipher, derived.expose())?.encrypt(material.as_mut(), 512, 0)?;
    h.meta.keyslots.insert(
        slot,
        json::Keyslot {
            kind: "luks2".into(),
            key_size: key_len as u32,
            area: json::Area {
                kind: "raw".into(),
                offset,
                size: area_size,
                encryption: Some(cipher.name()),
                key_size: Some(key_len as u32),
                extra: Map::new(),
            },
            kdf: Some(kdf_to_json(&params, salt)),
            af: Some(json::Af { kind: "luks1".into(), stripes, hash: af_hash.name().into(), extra: Map::new() }),
            priority: None,
            extra: Map::new(),
        },
    );
    let d = h.meta.digests.get_mut(&digest).ok_or_else(|| Error::header(format!("no digest {digest}")))?;
    d.keyslots.push(slot.to_string());
    sort_digest_slots(&mut h.meta);
    write(io, offset, material.expose())?;
    flush(io)?;
    Ok(slot)
}

/// Overwrites `len` bytes at `offset` with random bytes, flushes, then
/// discards the range where the backend can.
pub(crate) fn wipe_area(io: &impl BlockIo, offset: u64, len: u64) -> Result<()> {
    let noise = Secret::random(len.min(1 << 20) as usize);
    let mut pos = 0;
    while pos < len {
        let n = (len - pos).min(noise.len() as u64) as usize;
        write(io, offset + pos, &noise.expose()[..n])?;
        pos += n as u64;
    }
    flush(io)?;
    io.discard(offset, len).map_err(Error::io("discard", offset))?;
    Ok(())
}

/// Decrypts LUKS2 keyslot `slot` with `passphrase` and checks the key against
/// digest `digest`; `None` if it does not verify.
pub(crate) fn open_luks2_keyslot(
    io: &impl BlockIo,
    h: &luks2::Header,
    slot: u32,
    passphrase: &[u8],
    digest: &json::Digest,
) -> Result<Option<Secret>> {
    let ks = h.meta.keyslots.get(&slot).ok_or_else(|| Error::NotFound(format!("keyslot {slot} is not active")))?;
    let (kdf_json, af_json) = match (&ks.kdf, &ks.af) {
        (Some(k), Some(a)) => (k, a),
        _ => return Ok(None),
    };
    let params = kdf_from_json(kdf_json)?;
    let area_key_len = ks.area.key_size.unwrap_or(ks.key_size) as usize;
    let cipher = CipherSpec::parse(ks.area.encryption.as_deref().unwrap_or(""))?;
    let derived = kdf::derive(&params, passphrase, &kdf_json.salt, area_key_len)?;
    let key_len = ks.key_size as usize;
    let mat_len = round_up(key_len as u64 * af_json.stripes as u64, 512);
    if mat_len > ks.area.size {
        return Err(Error::header(format!("keyslot {slot} area too small")));
    }
    let mut material = Secret::new(read(io, ks.area.offset, mat_len as usize)?);
    SectorCipher::new(&cipher, derived.expose())?.decrypt(material.as_mut(), 512, 0)?;
    let af_hash = HashAlg::from_name(&af_json.hash)?;
    let vk = af::merge(&material.expose()[..key_len * af_json.stripes as usize], key_len, af_json.stripes, af_hash)?;
    Ok(verify_digest(digest, &vk)?.then_some(vk))
}

fn sort_digest_slots(meta: &mut json::Metadata) {
    for d in meta.digests.values_mut() {
        d.keyslots.sort_by_key(|k| k.parse::<u32>().unwrap_or(u32::MAX));
    }
}

pub(crate) fn verify_digest(d: &json::Digest, vk: &Secret) -> Result<bool> {
    if d.kind != "pbkdf2" {
        return Err(Error::Unsupported(format!("digest type {:?}", d.kind)));
    }
    let hash = HashAlg::from_name(d.hash.as_deref().unwrap_or("sha256"))?;
    let iterations = d.iterations.ok_or_else(|| Error::header("digest without iterations"))?;
    if d.digest.is_empty() || d.digest.len() > 64 {
        return Err(Error::header("digest has a bad length"));
    }
    let check = kdf::derive(&KdfParams::Pbkdf2 { hash, iterations }, vk.expose(), &d.salt, d.digest.len())?;
    Ok(ct_eq(check.expose(), &d.digest))
}

/// KDF parameters from a keyslot's JSON.
pub fn kdf_from_json(k: &json::Kdf) -> Result<KdfParams> {
    let missing = |f: &str| Error::header(format!("{} kdf without {f}", k.kind));
    match k.kind.as_str() {
        "pbkdf2" => Ok(KdfParams::Pbkdf2 {
            hash: HashAlg::from_name(k.hash.as_deref().ok_or_else(|| missing("hash"))?)?,
            iterations: k.iterations.ok_or_else(|| missing("iterations"))?,
        }),
        "argon2i" | "argon2id" => Ok(KdfParams::Argon2 {
            variant: if k.kind == "argon2i" { Argon2Variant::I } else { Argon2Variant::Id },
            time: k.time.ok_or_else(|| missing("time"))?,
            memory_kib: k.memory.ok_or_else(|| missing("memory"))?,
            lanes: k.cpus.ok_or_else(|| missing("cpus"))?,
        }),
        other => Err(Error::Unsupported(format!("keyslot kdf {other:?}"))),
    }
}

fn kdf_to_json(p: &KdfParams, salt: Vec<u8>) -> json::Kdf {
    match *p {
        KdfParams::Pbkdf2 { hash, iterations } => json::Kdf {
            kind: "pbkdf2".into(),
            hash: Some(hash.name().into()),
            iterations: Some(iterations),
            time: None,
            memory: None,
            cpus: None,
            salt,
            extra: Map::new(),
        },
        KdfParams::Argon2 { variant, time, memory_kib, lanes } => json::Kdf {
            kind: if variant == Argon2Variant::I { "argon2i" } else { "argon2id" }.into(),
            hash: None,
            iterations: None,
            time: Some(time),
            memory: Some(memory_kib),
            cpus: Some(lanes),
            salt,
            extra: Map::new(),
        },
    }
}
