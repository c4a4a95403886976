//! The 4096-byte LUKS2 binary header that precedes each JSON area.

use crate::codec::{put_cstr, Reader};
use crate::crypto::{ct_eq, HashAlg};
use crate::error::{Error, Result};

/// Magic of the primary header.
pub const MAGIC_PRIMARY: [u8; 6] = *b"LUKS\xba\xbe";
/// Magic of the secondary header.
pub const MAGIC_SECONDARY: [u8; 6] = *b"SKUL\xba\xbe";
/// Size of the binary part.
pub const BINARY_SIZE: usize = 4096;
/// Offset of the checksum field.
const CSUM_OFFSET: usize = 448;
/// Header (binary + JSON) sizes cryptsetup accepts.
pub const VALID_HDR_SIZES: [u64; 9] = [
    16 << 10,
    32 << 10,
    64 << 10,
    128 << 10,
    256 << 10,
    512 << 10,
    1 << 20,
    2 << 20,
    4 << 20,
];
/// Offsets at which a secondary header may sit (one per valid size).
pub const SECONDARY_OFFSETS: [u64; 9] = VALID_HDR_SIZES;

/// Which copy a binary header claims to be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Copy {
    /// At offset 0.
    Primary,
    /// At offset `hdr_size`.
    Secondary,
}

/// The fields of a LUKS2 binary header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BinaryHeader {
    /// Primary or secondary.
    pub copy: Copy,
    /// Binary plus JSON area size.
    pub hdr_size: u64,
    /// Incremented on every write.
    pub seqid: u64,
    /// Label (up to 47 bytes).
    pub label: String,
    /// Checksum algorithm, `sha256` in practice.
    pub csum_alg: String,
    /// Per-copy random salt.
    pub salt: [u8; 64],
    /// Text UUID.
    pub uuid: String,
    /// Subsystem (up to 47 bytes).
    pub subsystem: String,
    /// Offset of this copy from the device start.
    pub hdr_offset: u64,
    /// Stored checksum (first digest-length bytes used).
    pub csum: [u8; 64],
}

impl BinaryHeader {
    /// Parses the binary part (at least [`BINARY_SIZE`] bytes of `buf`).
    pub fn parse(buf: &[u8]) -> Result<BinaryHeader> {
        let mut r = Reader::new(buf);
        let copy = match r.array::<6>()? {
            MAGIC_PRIMARY => Copy::Primary,
            MAGIC_SECONDARY => Copy::Secondary,
            _ => return Err(Error::header("no LUKS2 magic")),
        };
        let version = r.u16()?;
        if version != 2 {
            return Err(Error::header(format!("version {version} is not LUKS2")));
        }
        let hdr_size = r.u64()?;
        let seqid = r.u64()?;
        let label = r.cstr(48, "label")?;
        let csum_alg = r.cstr(32, "checksum algorithm")?;
        let salt = r.array()?;
        let uuid = r.cstr(40, "uuid")?;
        let subsystem = r.cstr(48, "subsystem")?;
        let hdr_offset = r.u64()?;
        r.take(184)?;
        let csum = r.array()?;
        r.take(7 * 512)?;
        if !VALID_HDR_SIZES.contains(&hdr_size) {
            return Err(Error::header(format!("invalid header size {hdr_size}")));
        }
        Ok(BinaryHeader {
            copy,
            hdr_size,
            seqid,
            label,
            csum_alg,
            salt,
            uuid,
            subsystem,
            hdr_offset,
            csum,
        })
    }

    /// Encodes the binary part with a zero checksum field.
    pub fn encode_unsummed(&self) -> Result<Vec<u8>> {
        let mut out = Vec::with_capacity(BINARY_SIZE);
        out.extend_from_slice(match self.copy {
            Copy::Primary => &MAGIC_PRIMARY,
            Copy::Secondary => &MAGIC_SECONDARY,
        });
        out.extend_from_slice(&2u16.to_be_bytes());
        out.extend_from_slice(&self.hdr_size.to_be_bytes());
        out.extend_from_slice(&self.seqid.to_be_bytes());
        put_cstr(&mut out, &self.label, 48, "label")?;
        put_cstr(&mut out, &self.csum_alg, 32, "checksum algorithm")?;
        out.extend_from_slice(&self.salt);
        put_cstr(&mut out, &self.uuid, 40, "uuid")?;
        put_cstr(&mut out, &self.subsystem, 48, "subsystem")?;
        out.extend_from_slice(&self.hdr_offset.to_be_bytes());
        out.resize(BINARY_SIZE, 0);
        Ok(out)
    }
}

/// Checksum of a header copy: hash of the binary part (checksum zeroed) and
/// the whole JSON area.
pub fn checksum(alg: &str, binary_zeroed: &[u8], json_area: &[u8]) -> Result<Vec<u8>> {
    let hash = HashAlg::from_name(alg).map_err(|_| Error::header(format!("unknown checksum algorithm {alg:?}")))?;
    Ok(hash.digest(&[binary_zeroed, json_area])?)
}

/// Verifies the checksum of a whole header copy (`bytes` = binary + JSON area).
pub fn verify(hdr: &BinaryHeader, bytes: &[u8]) -> Result<()> {
    let size = hdr.hdr_size as usize;
    if bytes.len() < size {
        return Err(Error::header("header copy is truncated"));
    }
    let mut binary = bytes[..BINARY_SIZE].to_vec();
    binary[CSUM_OFFSET..CSUM_OFFSET + 64].fill(0);
    let sum = checksum(&hdr.csum_alg, &binary, &bytes[BINARY_SIZE..size])?;
    if !ct_eq(&sum, &hdr.csum[..sum.len()]) {
        return Err(Error::header("header checksum mismatch"));
    }
    Ok(())
}

/// Builds a whole header copy: binary part with its checksum, then `json_area`.
pub fn seal(hdr: &BinaryHeader, json_area: &[u8]) -> Result<Vec<u8>> {
    if json_area.len() as u64 + BINARY_SIZE as u64 != hdr.hdr_size {
        return Err(Error::InvalidArgument("JSON area does not match header size".into()));
    }
    let mut binary = hdr.encode_unsummed()?;
    let sum = checksum(&hdr.csum_alg, &binary, json_area)?;
    binary[CSUM_OFFSET..CSUM_OFFSET + sum.len()].copy_from_slice(&sum);
    binary.extend_from_slice(json_area);
    Ok(binary)
}
