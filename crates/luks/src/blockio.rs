//! The one storage seam of the engine.
//!
//! Everything in this crate that touches bytes on a volume goes through
//! [`BlockIo`]; header codecs and crypto stay sans-IO. Reads and writes take
//! `&self` (positional I/O) so the data path can run several at once.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// Positional access to a volume's raw (ciphertext) bytes.
pub trait BlockIo: Send + Sync {
    /// Size of the device or image in bytes.
    fn size(&self) -> io::Result<u64>;
    /// Fills `buf` from `offset`; a short read is an error (`UnexpectedEof`).
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;
    /// Writes all of `buf` at `offset`.
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()>;
    /// Makes every completed write durable.
    fn flush(&self) -> io::Result<()>;
    /// Tells the backend the range holds nothing worth keeping, so thin, CoW
    /// or flash storage can drop the old blocks. Returns `Ok(false)` where the
    /// backend cannot; callers must already have overwritten the range.
    fn discard(&self, _offset: u64, _len: u64) -> io::Result<bool> {
        Ok(false)
    }
    /// Reads now if that needs no waiting: the data is in the page cache.
    /// `None` means the read would wait on a device, a network or a lock;
    /// call [`read_at`](Self::read_at) from a thread that may block. An
    /// event-loop server tries this first and so skips a hop to a thread
    /// for data it has at hand.
    fn read_at_nowait(&self, _buf: &mut [u8], _offset: u64) -> Option<io::Result<()>> {
        None
    }
    /// Writes now if that needs no waiting beyond the page cache's own
    /// write-back throttling, as a buffered write to a regular file does.
    /// `None` as for [`read_at_nowait`](Self::read_at_nowait).
    fn write_at_nowait(&self, _buf: &[u8], _offset: u64) -> Option<io::Result<()>> {
        None
    }
}

impl<T: BlockIo + ?Sized> BlockIo for &T {
    fn size(&self) -> io::Result<u64> {
        (**self).size()
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        (**self).read_at(buf, offset)
    }
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        (**self).write_at(buf, offset)
    }
    fn flush(&self) -> io::Result<()> {
        (**self).flush()
    }
    fn discard(&self, offset: u64, len: u64) -> io::Result<bool> {
        (**self).discard(offset, len)
    }
    fn read_at_nowait(&self, buf: &mut [u8], offset: u64) -> Option<io::Result<()>> {
        (**self).read_at_nowait(buf, offset)
    }
    fn write_at_nowait(&self, buf: &[u8], offset: u64) -> Option<io::Result<()>> {
        (**self).write_at_nowait(buf, offset)
    }
}

impl<T: BlockIo + ?Sized> BlockIo for Box<T> {
    fn size(&self) -> io::Result<u64> {
        (**self).size()
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        (**self).read_at(buf, offset)
    }
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        (**self).write_at(buf, offset)
    }
    fn flush(&self) -> io::Result<()> {
        (**self).flush()
    }
    fn discard(&self, offset: u64, len: u64) -> io::Result<bool> {
        (**self).discard(offset, len)
    }
    fn read_at_nowait(&self, buf: &mut [u8], offset: u64) -> Option<io::Result<()>> {
        (**self).read_at_nowait(buf, offset)
    }
    fn write_at_nowait(&self, buf: &[u8], offset: u64) -> Option<io::Result<()>> {
        (**self).write_at_nowait(buf, offset)
    }
}

impl<T: BlockIo + ?Sized> BlockIo for std::sync::Arc<T> {
    fn size(&self) -> io::Result<u64> {
        (**self).size()
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        (**self).read_at(buf, offset)
    }
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        (**self).write_at(buf, offset)
    }
    fn flush(&self) -> io::Result<()> {
        (**self).flush()
    }
    fn discard(&self, offset: u64, len: u64) -> io::Result<bool> {
        (**self).discard(offset, len)
    }
    fn read_at_nowait(&self, buf: &mut [u8], offset: u64) -> Option<io::Result<()>> {
        (**self).read_at_nowait(buf, offset)
    }
    fn write_at_nowait(&self, buf: &[u8], offset: u64) -> Option<io::Result<()>> {
        (**self).write_at_nowait(buf, offset)
    }
}

/// The largest single write [`FileIo`] makes to a regular file.
const FILE_WRITE_PIECE: usize = 256 << 10;

/// A regular file or a block device.
#[derive(Debug)]
pub struct FileIo {
    file: File,
    path: PathBuf,
    is_block_device: bool,
}

impl FileIo {
    /// Opens `path` for reading and writing.
    pub fn open(path: impl AsRef<Path>) -> io::Result<Self> {
        Self::open_with(path, true)
    }

    /// Opens `path` read-only; writes fail with `PermissionDenied`.
    pub fn open_read_only(path: impl AsRef<Path>) -> io::Result<Self> {
        Self::open_with(path, false)
    }

    fn open_with(path: impl AsRef<Path>, write: bool) -> io::Result<Self> {
        use std::os::unix::fs::FileTypeExt;
        let path = path.as_ref().to_path_buf();
        let file = OpenOptions::new().read(true).write(write).open(&path)?;
        let is_block_device = file.metadata()?.file_type().is_block_device();
        Ok(FileIo { file, path, is_block_device })
    }

    /// Wraps an already open file.
    pub fn from_file(file: File, path: impl Into<PathBuf>) -> io::Result<Self> {
        use std::os::unix::fs::FileTypeExt;
        let is_block_device = file.metadata()?.file_type().is_block_device();
        Ok(FileIo { file, path: path.into(), is_block_device })
    }

    /// The path this was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The underlying file.
    pub fn file(&self) -> &File {
        &self.file
    }
}

impl BlockIo for FileIo {
    fn size(&self) -> io::Result<u64> {
        if self.is_block_device {
            use std::io::Seek;
            let mut f = &self.file;
            f.seek(io::SeekFrom::End(0))
        } else {
            Ok(self.file.metadata()?.len())
        }
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.file.read_exact_at(buf, offset)
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        if self.is_block_device {
            return self.file.write_all_at(buf, offset);
        }
        // A buffered write makes page-cache folios as large as the write
        // (ext4 on Linux 6.x), and every later small write into such a
        // folio walks all its blocks: 4 KiB writes into data written 1 MiB
        // at a time run at a fifth of their speed into data written in
        // pieces of this size (measured in docs/benchmarks.md, NBD export).
        for (i, piece) in buf.chunks(FILE_WRITE_PIECE).enumerate() {
            self.file.write_all_at(piece, offset + (i * FILE_WRITE_PIECE) as u64)?;
        }
        Ok(())
    }

    fn flush(&self) -> io::Result<()> {
        self.file.sync_data()
    }

    fn discard(&self, offset: u64, len: u64) -> io::Result<bool> {
        if self.is_block_device {
            // BLKDISCARD needs an ioctl; leave it to a later backend.
            return Ok(false);
        }
        use rustix::fs::{fallocate, FallocateFlags};
        match fallocate(
            &self.file,
            FallocateFlags::PUNCH_HOLE | FallocateFlags::KEEP_SIZE,
            offset,
            len,
        ) {
            Ok(()) => Ok(true),
            Err(e) if e == rustix::io::Errno::OPNOTSUPP => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    fn read_at_nowait(&self, buf: &mut [u8], offset: u64) -> Option<io::Result<()>> {
        use rustix::io::{preadv2, ReadWriteFlags};
        if buf.is_empty() {
            return Some(Ok(()));
        }
        // RWF_NOWAIT: EAGAIN instead of waiting for pages not in the cache.
        // A short read (part cached, or the end of the file) is left to the
        // blocking path, which finishes it or reports the end.
        match preadv2(&self.file, &mut [io::IoSliceMut::new(buf)], offset, ReadWriteFlags::NOWAIT) {
            Ok(n) if n == buf.len() => Some(Ok(())),
            Ok(_) => None,
            Err(e) if e == rustix::io::Errno::AGAIN || e == rustix::io::Errno::OPNOTSUPP => None,
            Err(e) => Some(Err(e.into())),
        }
    }

    fn write_at_nowait(&self, buf: &[u8], offset: u64) -> Option<io::Result<()>> {
        // ext4 refuses RWF_NOWAIT for buffered writes (EOPNOTSUPP), but a
        // buffered write to a regular file only copies into the page cache;
        // a block device's writes go to the same cache yet can wait on the
        // device's queue, so they stay on the blocking path.
        if self.is_block_device {
            return None;
        }
        Some(self.write_at(buf, offset))
    }
}

/// An in-memory volume, for tests and fuzzing.
#[derive(Debug, Default)]
pub struct MemIo {
    data: std::sync::RwLock<Vec<u8>>,
}

impl MemIo {
    /// A zero-filled volume of `size` bytes.
    pub fn new(size: usize) -> Self {
        MemIo { data: std::sync::RwLock::new(vec![0; size]) }
    }

    /// A volume holding `bytes`.
    pub fn from_bytes(bytes: Vec<u8>) -> Self {
        MemIo { data: std::sync::RwLock::new(bytes) }
    }

    /// A copy of the current contents.
    pub fn to_vec(&self) -> Vec<u8> {
        self.data.read().unwrap().clone()
    }
}

impl BlockIo for MemIo {
    fn size(&self) -> io::Result<u64> {
        Ok(self.data.read().unwrap().len() as u64)
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let data = self.data.read().unwrap();
        let end = offset.checked_add(buf.len() as u64).filter(|&e| e <= data.len() as u64);
        let Some(end) = end else {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "read past end of volume"));
        };
        buf.copy_from_slice(&data[offset as usize..end as usize]);
        Ok(())
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        let mut data = self.data.write().unwrap();
        let end = offset.checked_add(buf.len() as u64).filter(|&e| e <= data.len() as u64);
        let Some(end) = end else {
            return Err(io::Error::new(io::ErrorKind::WriteZero, "write past end of volume"));
        };
        data[offset as usize..end as usize].copy_from_slice(buf);
        Ok(())
    }

    fn flush(&self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_writes_larger_than_a_piece_land_whole_at_any_offset() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, vec![0u8; 4 * FILE_WRITE_PIECE]).unwrap();
        let io = FileIo::open(&path).unwrap();
        let data: Vec<u8> = (0..2 * FILE_WRITE_PIECE + 777).map(|i| (i % 251) as u8).collect();
        io.write_at(&data, 4096 + 3).unwrap();
        let mut back = vec![0u8; data.len()];
        io.read_at(&mut back, 4096 + 3).unwrap();
        assert_eq!(back, data);
        let all = std::fs::read(&path).unwrap();
        assert!(all[..4099].iter().all(|&b| b == 0), "bytes before the write changed");
        assert!(all[4099 + data.len()..].iter().all(|&b| b == 0), "bytes after the write changed");
    }
}
