//! Header backup and restore, byte-compatible with cryptsetup's
//! luksHeaderBackup / luksHeaderRestore: a backup file is the raw metadata
//! region of the device (LUKS2: both header copies and the keyslots area;
//! LUKS1: everything before the payload), zero-padded to 4096 bytes.

use crate::blockio::{BlockIo, MemIo};
use crate::codec::round_up;
use crate::error::{Error, Result};
use crate::volume::{self, Header};

/// Bytes of metadata a header owns at the start of its device.
pub fn metadata_len(h: &Header) -> u64 {
    match h {
        Header::Luks1(h) => h.payload_offset as u64 * 512,
        Header::Luks2(h) => h.keyslots_region().1,
    }
}

/// The backup of the header on `io` (validated before it is copied).
pub fn backup(io: &impl BlockIo) -> Result<Vec<u8>> {
    let h = volume::read_header(io)?;
    let len = metadata_len(&h);
    let mut out = volume::read(io, 0, len as usize)?;
    out.resize(round_up(len, 4096) as usize, 0);
    Ok(out)
}

/// What a restore would replace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Existing {
    /// No LUKS header on the device.
    None,
    /// The same volume (same UUID) as the backup.
    Same,
    /// A different LUKS volume: restoring replaces its keyslots.
    Other(String),
}

/// Checks `file` is a valid backup that fits `io`; returns the bytes to
/// write and what the device holds now. Nothing is written.
pub fn check_restore(io: &impl BlockIo, file: &[u8]) -> Result<(Vec<u8>, Existing)> {
    let mem = MemIo::from_bytes(file.to_vec());
    let h = volume::read_header(&mem).map_err(|e| Error::InvalidArgument(format!("not a LUKS header backup: {e}")))?;
    let len = metadata_len(&h) as usize;
    if len > file.len() {
        return Err(Error::InvalidArgument("header backup file is truncated".into()));
    }
    let dev = io.size().map_err(Error::io("size", 0))?;
    if (len as u64) > dev {
        return Err(Error::InvalidArgument(format!("device of {dev} bytes is smaller than the backup's {len}-byte header")));
    }
    let uuid = |h: &Header| match h {
        Header::Luks1(h) => h.uuid.clone(),
        Header::Luks2(h) => h.uuid.clone(),
    };
    let existing = match volume::read_header(io) {
        Ok(cur) if uuid(&cur) == uuid(&h) => Existing::Same,
        Ok(cur) => Existing::Other(uuid(&cur)),
        Err(_) => Existing::None,
    };
    Ok((file[..len].to_vec(), existing))
}

/// Writes a checked backup (from [`check_restore`]) over the metadata
/// region, then flushes.
pub fn restore(io: &impl BlockIo, bytes: &[u8]) -> Result<()> {
    volume::write(io, 0, bytes)?;
    volume::flush(io)
}
