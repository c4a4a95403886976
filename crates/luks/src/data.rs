//! The decrypted view of a LUKS volume: plaintext reads and writes at any
//! offset and length over any [`BlockIo`], sector-aligned internally.
//!
//! A [`Decrypted`] is itself a [`BlockIo`] (of the plaintext), so anything
//! that copies between block devices can copy plaintext too.

use std::io;

use crate::blockio::BlockIo;
use crate::crypto::{CipherSpec, SectorCipher};
use crate::error::{Error, Result};
use crate::volume::{DataSegment, Volume};
use crate::Secret;

/// Plaintext access to a volume's data segment.
pub struct Decrypted<IO: BlockIo> {
    io: IO,
    cipher: SectorCipher,
    offset: u64,
    size: u64,
    sector: u64,
    iv_tweak: u64,
}

impl<IO: BlockIo> std::fmt::Debug for Decrypted<IO> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Decrypted").field("offset", &self.offset).field("size", &self.size).finish_non_exhaustive()
    }
}

impl<IO: BlockIo> Decrypted<IO> {
    /// A view of `seg` on `io`, keyed with `vk` (the caller verified it).
    pub fn new(io: IO, seg: &DataSegment, vk: &Secret) -> Result<Self> {
        let spec = CipherSpec::parse(&seg.cipher)?;
        let cipher = SectorCipher::new(&spec, vk.expose())?;
        let dev = io.size().map_err(Error::io("size", 0))?;
        let size = match seg.size {
            Some(s) => s,
            None => dev.saturating_sub(seg.offset),
        };
        let sector = seg.sector_size as u64;
        // A trailing partial sector cannot be encrypted; it is not data.
        let size = size - size % sector;
        if seg.offset + size > dev {
            return Err(Error::header("data segment extends past the device end"));
        }
        Ok(Decrypted { io, cipher, offset: seg.offset, size, sector, iv_tweak: seg.iv_tweak })
    }

    /// Plaintext size in bytes.
    pub fn len(&self) -> u64 {
        self.size
    }

    /// True for an empty data segment.
    pub fn is_empty(&self) -> bool {
        self.size == 0
    }

    /// Byte offset of the data on the ciphertext device.
    pub fn data_offset(&self) -> u64 {
        self.offset
    }

    /// Encryption sector size.
    pub fn sector_size(&self) -> u64 {
        self.sector
    }

    /// The ciphertext device.
    pub fn io(&self) -> &IO {
        &self.io
    }

    /// The keyed cipher.
    pub fn cipher(&self) -> &SectorCipher {
        &self.cipher
    }

    /// IV number of the data sector at plaintext byte `pos` (512-byte units,
    /// as cryptsetup counts even for 4096-byte sectors).
    pub fn iv_at(&self, pos: u64) -> u64 {
        self.iv_tweak + pos / 512
    }

    fn check_range(&self, offset: u64, len: usize) -> io::Result<()> {
        match offset.checked_add(len as u64) {
            Some(end) if end <= self.size => Ok(()),
            _ => Err(io::Error::new(io::ErrorKind::UnexpectedEof, "beyond the end of the encrypted data")),
        }
    }

    /// Whether `len` bytes at `offset` are whole sectors inside the data.
    fn whole_sectors(&self, offset: u64, len: usize) -> bool {
        len != 0 && (offset | len as u64).is_multiple_of(self.sector) && self.check_range(offset, len).is_ok()
    }

    /// Reads and decrypts whole sectors at sector-aligned `pos` into `buf`.
    pub fn read_sectors(&self, buf: &mut [u8], pos: u64) -> io::Result<()> {
        debug_assert!(pos.is_multiple_of(self.sector) && (buf.len() as u64).is_multiple_of(self.sector));
        self.io.read_at(buf, self.offset + pos)?;
        self.cipher.decrypt(buf, self.sector as usize, self.iv_at(pos)).map_err(io::Error::other)
    }

    /// Encrypts whole sectors of `buf` in place and writes them at `pos`.
    pub fn write_sectors(&self, buf: &mut [u8], pos: u64) -> io::Result<()> {
        debug_assert!(pos.is_multiple_of(self.sector) && (buf.len() as u64).is_multiple_of(self.sector));
        self.cipher.encrypt(buf, self.sector as usize, self.iv_at(pos)).map_err(io::Error::other)?;
        self.io.write_at(buf, self.offset + pos)
    }
}

impl<IO: BlockIo> BlockIo for Decrypted<IO> {
    fn size(&self) -> io::Result<u64> {
        Ok(self.size)
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.check_range(offset, buf.len())?;
        if buf.is_empty() {
            return Ok(());
        }
        let start = offset - offset % self.sector;
        let end = (offset + buf.len() as u64).div_ceil(self.sector) * self.sector;
        if start == offset && end == offset + buf.len() as u64 {
            return self.read_sectors(buf, start);
        }
        let mut tmp = Secret::zeroed((end - start) as usize);
        self.read_sectors(tmp.as_mut(), start)?;
        let skip = (offset - start) as usize;
        buf.copy_from_slice(&tmp.expose()[skip..skip + buf.len()]);
        Ok(())
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.check_range(offset, buf.len())?;
        if buf.is_empty() {
            return Ok(());
        }
        let start = offset - offset % self.sector;
        let end = (offset + buf.len() as u64).div_ceil(self.sector) * self.sector;
        let mut tmp = Secret::zeroed((end - start) as usize);
        let skip = (offset - start) as usize;
        if skip != 0 || end != offset + buf.len() as u64 {
            // Read-modify-write only the partial first and last sectors.
            let s = self.sector as usize;
            self.read_sectors(&mut tmp.as_mut()[..s], start)?;
            if end - start > self.sector {
                let last = tmp.len() - s;
                self.read_sectors(&mut tmp.as_mut()[last..], end - self.sector)?;
            }
        }
        tmp.as_mut()[skip..skip + buf.len()].copy_from_slice(buf);
        self.write_sectors(tmp.as_mut(), start)
    }

    fn flush(&self) -> io::Result<()> {
        self.io.flush()
    }

    fn discard(&self, _offset: u64, _len: u64) -> io::Result<bool> {
        // A discarded range would read back as garbage plaintext, not zeros.
        Ok(false)
    }

    fn read_at_nowait(&self, buf: &mut [u8], offset: u64) -> Option<io::Result<()>> {
        if !self.whole_sectors(offset, buf.len()) {
            return None;
        }
        Some(self.io.read_at_nowait(buf, self.offset + offset)?.and_then(|()| {
            self.cipher.decrypt(buf, self.sector as usize, self.iv_at(offset)).map_err(io::Error::other)
        }))
    }

    fn write_at_nowait(&self, buf: &[u8], offset: u64) -> Option<io::Result<()>> {
        // Partial sectors read first, which may wait; they take the blocking path.
        if !self.whole_sectors(offset, buf.len()) {
            return None;
        }
        let mut tmp = Secret::from(buf.to_vec());
        if let Err(e) = self.cipher.encrypt(tmp.as_mut(), self.sector as usize, self.iv_at(offset)) {
            return Some(Err(io::Error::other(e)));
        }
        self.io.write_at_nowait(tmp.expose(), self.offset + offset)
    }
}

impl<IO: BlockIo> Volume<IO> {
    /// Unlocks with `passphrase` and returns the plaintext view.
    pub fn decrypted(self, passphrase: &[u8]) -> Result<Decrypted<IO>> {
        let (_, vk) = self.unlock(passphrase, None)?;
        self.decrypted_with_key(&vk)
    }

    /// The plaintext view for a volume key (checked against the header).
    pub fn decrypted_with_key(self, vk: &Secret) -> Result<Decrypted<IO>> {
        if !self.verify_volume_key(vk)? {
            return Err(Error::InvalidArgument("volume key does not match this volume".into()));
        }
        let seg = self.data_segment()?;
        Decrypted::new(self.into_io(), &seg, vk)
    }
}
