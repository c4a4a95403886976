//! Volumes as named extents.
//!
//! A [`Backend`] creates, clones, snapshots, resizes and deletes volumes and
//! hands each one out as a [`BlockIo`], the only thing the LUKS engine needs.
//! It never sees a key. Two backends:
//!
//! - [`FileBackend`]: one sparse raw file per volume; clones by reflink or a
//!   hole-aware copy.
//! - `RbdBackend` (cargo feature `rbd`): Ceph RBD images through librbd, no
//!   krbd or rbd-nbd; clones copy-on-write from a protected snapshot.
//!
//! The rest of the program picks one with [`open_backend`] and sees only
//! `Arc<dyn Backend>`. Calls are blocking; async callers use `spawn_blocking`.
#![deny(missing_docs)]
#![cfg_attr(not(feature = "rbd"), forbid(unsafe_code))]
#![cfg_attr(feature = "rbd", deny(unsafe_code))]

mod config;
mod error;
mod file;
mod id;
#[cfg(feature = "rbd")]
pub mod rbd;

use std::fmt;
use std::io;
use std::sync::Arc;

pub use config::{BackendConfig, RbdConfig};
pub use error::{Context, Error, ErrorKind, Result};
pub use file::FileBackend;
pub use id::validate_id;
#[cfg(feature = "rbd")]
pub use rbd::{open_rbd_spec, RbdBackend, RbdIo, RbdSpec};
pub use rekey_luks::blockio::BlockIo;

/// How a clone was made; reported so callers can log it and benchmarks can
/// tell a cheap clone from an expensive one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CloneKind {
    /// The filesystem shares the source's blocks (FICLONE); no data copied.
    Reflink,
    /// Only the source's data extents were copied; its holes stay holes.
    SparseCopy,
    /// The clone reads through to a protected parent snapshot until written
    /// (RBD layering); no data copied.
    CowClone,
    /// Every byte was copied.
    FullCopy,
}

impl CloneKind {
    /// A short lower-case name for logs and benchmark output.
    pub fn as_str(self) -> &'static str {
        match self {
            CloneKind::Reflink => "reflink",
            CloneKind::SparseCopy => "sparse-copy",
            CloneKind::CowClone => "cow-clone",
            CloneKind::FullCopy => "full-copy",
        }
    }
}

impl fmt::Display for CloneKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A store of volumes and their snapshots.
///
/// Ids are caller-chosen strings (UUIDs in practice) checked by
/// [`validate_id`]; volumes and snapshots have separate namespaces. Sizes are
/// bytes and must be positive multiples of 512. Every method is blocking.
///
/// Deleting a volume that still has snapshots fails with
/// [`ErrorKind::Busy`]; the caller deletes the snapshots first. Snapshots are
/// independent of clones made from them: deleting one never changes a clone.
pub trait Backend: Send + Sync + fmt::Debug {
    /// One line for logs, e.g. `file backend at /var/lib/rekey`.
    fn describe(&self) -> String;

    /// Creates a zero-filled volume of `size_bytes`.
    fn create(&self, id: &str, size_bytes: u64) -> Result<()>;
    /// Deletes a volume; `Busy` while it has snapshots or is being cloned,
    /// and on RBD while another client has it open (image watchers).
    fn delete(&self, id: &str) -> Result<()>;
    /// Grows a volume to `new_size` bytes (never shrinks; equal is a no-op).
    fn extend(&self, id: &str, new_size: u64) -> Result<()>;
    /// The volume's size in bytes.
    fn size(&self, id: &str) -> Result<u64>;
    /// Whether the volume exists.
    fn exists(&self, id: &str) -> Result<bool>;
    /// Ids of all volumes, sorted.
    fn list(&self) -> Result<Vec<String>>;
    /// Where the volume lives, for operators: a path or `rbd:POOL/IMAGE`.
    fn location(&self, id: &str) -> Result<String>;
    /// Makes `new_id` a copy of `src_id`'s current contents. The new volume
    /// appears complete or not at all, even across a crash.
    fn clone_volume(&self, src_id: &str, new_id: &str) -> Result<CloneKind>;
    /// Opens a volume for reading and writing.
    fn open(&self, id: &str) -> Result<Box<dyn BlockIo>>;

    /// Records `vol_id`'s current contents as snapshot `snap_id`.
    fn create_snapshot(&self, vol_id: &str, snap_id: &str) -> Result<()>;
    /// Deletes a snapshot. Clones made from it are not affected.
    fn delete_snapshot(&self, snap_id: &str) -> Result<()>;
    /// Ids of `vol_id`'s snapshots, sorted.
    fn snapshots(&self, vol_id: &str) -> Result<Vec<String>>;
    /// Makes volume `new_id` from snapshot `snap_id`.
    fn clone_from_snapshot(&self, snap_id: &str, new_id: &str) -> Result<CloneKind>;
    /// Opens a snapshot read-only; writes and discards fail with
    /// `PermissionDenied`.
    fn open_snapshot(&self, snap_id: &str) -> Result<Box<dyn BlockIo>>;

    /// This process's session with shared storage, as another process would
    /// name it to [`Backend::fence`]; `None` where a dead process leaves
    /// nothing behind that holds other processes up (the file backend: its
    /// locks are the kernel's and die with the process).
    fn session(&self) -> Option<String> {
        None
    }

    /// Cuts off `session` of a process known dead (or to be treated as
    /// dead): it can no longer write, and the locks and watches it held go
    /// now instead of when the storage notices it is gone. On RBD a dead
    /// client's exclusive lock on an image otherwise blocks the next writer
    /// until the OSDs time its watch out (`osd_client_watch_timeout`, 30 s).
    fn fence(&self, _session: &str) -> Result<()> {
        Ok(())
    }
}

/// Opens the backend a configuration names.
pub fn open_backend(config: &BackendConfig) -> Result<Arc<dyn Backend>> {
    match config {
        BackendConfig::File { data_dir } => Ok(Arc::new(FileBackend::open(data_dir)?)),
        #[cfg(feature = "rbd")]
        BackendConfig::Rbd(rbd) => Ok(Arc::new(RbdBackend::connect(rbd)?)),
        #[cfg(not(feature = "rbd"))]
        BackendConfig::Rbd(_) => Err(Error::new(
            ErrorKind::Unsupported,
            "this build has no RBD support (rebuild with cargo feature `rbd`)",
        )
        .context("rbd", "open_backend", "")),
    }
}

/// Checks that a volume size is usable: positive and whole 512-byte sectors.
pub(crate) fn check_size(size: u64) -> Result<()> {
    if size == 0 || !size.is_multiple_of(512) {
        return Err(Error::new(
            ErrorKind::InvalidArgument,
            format!("size {size} is not a positive multiple of 512 bytes"),
        ));
    }
    Ok(())
}

/// Read-only view of a [`BlockIo`], so snapshots refuse writes the same way on
/// every backend instead of failing with whatever the OS says.
pub(crate) struct ReadOnly<T>(pub(crate) T);

impl<T: BlockIo> BlockIo for ReadOnly<T> {
    fn size(&self) -> io::Result<u64> {
        self.0.size()
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.0.read_at(buf, offset)
    }
    fn read_at_nowait(&self, buf: &mut [u8], offset: u64) -> Option<io::Result<()>> {
        self.0.read_at_nowait(buf, offset)
    }
    fn write_at(&self, _buf: &[u8], _offset: u64) -> io::Result<()> {
        Err(io::Error::new(io::ErrorKind::PermissionDenied, "snapshot is read-only"))
    }
    fn flush(&self) -> io::Result<()> {
        Ok(())
    }
    fn discard(&self, _offset: u64, _len: u64) -> io::Result<bool> {
        Err(io::Error::new(io::ErrorKind::PermissionDenied, "snapshot is read-only"))
    }
}
