//! The file backend: one sparse raw file per volume.
//!
//! Layout under the data directory (Cinder's names, so an operator finds a
//! volume by its id):
//!
//! ```text
//! volumes/volume-<id>             the volume's bytes, sparse
//! snapshots/snapshot-<id>         a snapshot's bytes, sparse
//! snapshots/snapshot-<id>.volume  the id of the volume it was taken from
//! ```
//!
//! New files are written under a temporary name (`.tmp-<pid>-<n>-<name>`),
//! fsynced, then renamed into place without replacing anything, and the
//! directory is fsynced: after a crash a volume is either absent or complete.
//! Temporaries of dead processes are removed when the backend is opened.
//!
//! One process owns a data directory; name changes (publish, delete, snapshot
//! bookkeeping) are serialised by a mutex, copies run in parallel.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

use rekey_luks::blockio::{BlockIo, FileIo};
use rustix::fs::{RenameFlags, SeekFrom, CWD};
use rustix::io::Errno;

use crate::error::{Error, ErrorKind, Result};
use crate::id::validate_id;
use crate::{check_size, Backend, CloneKind, ReadOnly};

const NAME: &str = "file";
const VOLUME_PREFIX: &str = "volume-";
const SNAPSHOT_PREFIX: &str = "snapshot-";
const PARENT_SUFFIX: &str = ".volume";
const TMP_PREFIX: &str = ".tmp-";

/// Volumes as sparse files under one data directory.
#[derive(Debug)]
pub struct FileBackend {
    root: PathBuf,
    volumes: PathBuf,
    snapshots: PathBuf,
    /// Volumes being copied from, with the number of copies in flight;
    /// deleting one of them is refused (`Busy`). Holding this lock is also
    /// what serialises publishing and deleting names.
    names: Mutex<HashMap<String, usize>>,
    tmp_seq: AtomicU64,
}

impl FileBackend {
    /// Opens (creating if needed) a data directory.
    pub fn open(data_dir: impl AsRef<Path>) -> Result<Self> {
        let root = data_dir.as_ref().to_path_buf();
        let wrap = |e: Error| e.context(NAME, "open_backend", "");
        let volumes = root.join("volumes");
        let snapshots = root.join("snapshots");
        for dir in [&volumes, &snapshots] {
            fs::create_dir_all(dir)
                .map_err(|e| wrap(Error::io(format!("cannot create {}", dir.display()), e)))?;
        }
        let backend = FileBackend {
            root,
            volumes,
            snapshots,
            names: Mutex::new(HashMap::new()),
            tmp_seq: AtomicU64::new(0),
        };
        backend.remove_stale_temporaries().map_err(wrap)?;
        Ok(backend)
    }

    /// The data directory.
    pub fn data_dir(&self) -> &Path {
        &self.root
    }

    /// The file holding volume `id` (which may not exist).
    pub fn volume_path(&self, id: &str) -> Result<PathBuf> {
        validate_id(id).map_err(|e| e.context(NAME, "volume_path", id))?;
        Ok(self.volumes.join(format!("{VOLUME_PREFIX}{id}")))
    }

    /// The file holding snapshot `id` (which may not exist).
    pub fn snapshot_path(&self, id: &str) -> Result<PathBuf> {
        validate_id(id).map_err(|e| e.context(NAME, "snapshot_path", id))?;
        Ok(self.snapshots.join(format!("{SNAPSHOT_PREFIX}{id}")))
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, usize>> {
        // The map only counts copies; a panic elsewhere cannot leave it torn.
        self.names.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn volume_file(&self, id: &str) -> PathBuf {
        self.volumes.join(format!("{VOLUME_PREFIX}{id}"))
    }

    fn snapshot_file(&self, id: &str) -> PathBuf {
        self.snapshots.join(format!("{SNAPSHOT_PREFIX}{id}"))
    }

    fn parent_file(&self, snap_id: &str) -> PathBuf {
        self.snapshots.join(format!("{SNAPSHOT_PREFIX}{snap_id}{PARENT_SUFFIX}"))
    }

    fn temp_path(&self, dir: &Path, final_name: &str) -> PathBuf {
        let n = self.tmp_seq.fetch_add(1, Ordering::Relaxed);
        dir.join(format!("{TMP_PREFIX}{}-{n}-{final_name}", std::process::id()))
    }

    fn remove_stale_temporaries(&self) -> Result<()> {
        for dir in [&self.volumes, &self.snapshots] {
            let entries = fs::read_dir(dir)
                .map_err(|e| Error::io(format!("cannot list {}", dir.display()), e))?;
            for entry in entries.flatten() {
                let name = entry.file_name();
                let Some(rest) = name.to_str().and_then(|n| n.strip_prefix(TMP_PREFIX)) else {
                    continue;
                };
                let pid = rest.split('-').next().and_then(|p| p.parse::<u32>().ok());
                let owner_alive = match pid {
                    Some(pid) => Path::new(&format!("/proc/{pid}")).exists(),
                    None => false,
                };
                if !owner_alive {
                    tracing::info!(path = %entry.path().display(), "removing stale temporary");
                    let _ = fs::remove_file(entry.path());
                }
            }
        }
        Ok(())
    }

    /// Ids of the snapshots whose parent file names `vol_id`.
    fn snapshots_of(&self, vol_id: &str) -> Result<Vec<String>> {
        let mut out = Vec::new();
        for snap in list_ids(&self.snapshots, SNAPSHOT_PREFIX)? {
            if self.snapshot_parent(&snap)?.as_deref() == Some(vol_id) {
                out.push(snap);
            }
        }
        Ok(out)
    }

    fn snapshot_parent(&self, snap_id: &str) -> Result<Option<String>> {
        let path = self.parent_file(snap_id);
        match fs::read_to_string(&path) {
            Ok(s) => Ok(Some(s.trim().to_owned())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io(format!("cannot read {}", path.display()), e)),
        }
    }

    /// Copies `src` into a temporary in `dst_dir`, fsyncs it and returns it
    /// open; the caller publishes it. `source_volume` is registered as busy
    /// for the duration so it cannot be deleted under the copy.
    fn copy_to_temp(
        &self,
        src: &Path,
        source_volume: Option<&str>,
        dst_dir: &Path,
        final_name: &str,
    ) -> Result<(PathBuf, CloneKind)> {
        let _busy = source_volume.map(|id| BusyGuard::new(self, id));
        let src_file = File::open(src).map_err(|e| open_error(src, e))?;
        let len = src_file.metadata().map_err(|e| Error::io("cannot stat source", e))?.len();
        let tmp = self.temp_path(dst_dir, final_name);
        let dst = create_new_file(&tmp)?;
        let result = copy_sparse(&src_file, &dst, len)
            .and_then(|kind| dst.sync_all().map(|()| kind))
            .map_err(|e| {
                Error::io(format!("cannot copy {} to {}", src.display(), tmp.display()), e)
            });
        match result {
            Ok(kind) => Ok((tmp, kind)),
            Err(e) => {
                let _ = fs::remove_file(&tmp);
                Err(e)
            }
        }
    }

    fn require_volume(&self, id: &str) -> Result<PathBuf> {
        let path = self.volume_file(id);
        if !exists(&path)? {
            return Err(Error::new(ErrorKind::NotFound, format!("volume {id} does not exist")));
        }
        Ok(path)
    }

    fn require_snapshot(&self, id: &str) -> Result<PathBuf> {
        let path = self.snapshot_file(id);
        if !exists(&path)? {
            return Err(Error::new(ErrorKind::NotFound, format!("snapshot {id} does not exist")));
        }
        Ok(path)
    }

    fn refuse_existing_volume(&self, id: &str) -> Result<()> {
        if exists(&self.volume_file(id))? {
            return Err(Error::new(
                ErrorKind::AlreadyExists,
                format!("volume {id} already exists"),
            ));
        }
        Ok(())
    }

    /// Copies `src` to volume `new_id`: complete under its final name or absent.
    fn copy_to_volume(
        &self,
        src: &Path,
        source_volume: Option<&str>,
        new_id: &str,
    ) -> Result<CloneKind> {
        self.refuse_existing_volume(new_id)?;
        let final_path = self.volume_file(new_id);
        let name = format!("{VOLUME_PREFIX}{new_id}");
        let (tmp, kind) = self.copy_to_temp(src, source_volume, &self.volumes, &name)?;
        let _names = self.lock();
        publish(&tmp, &final_path)?;
        sync_dir(&self.volumes)?;
        tracing::debug!(target_id = new_id, src = %src.display(), %kind, "volume copied");
        Ok(kind)
    }

    fn do_create(&self, id: &str, size: u64) -> Result<()> {
        validate_id(id)?;
        check_size(size)?;
        self.refuse_existing_volume(id)?;
        let tmp = self.temp_path(&self.volumes, &format!("{VOLUME_PREFIX}{id}"));
        let file = create_new_file(&tmp)?;
        if let Err(e) = file.set_len(size).and_then(|()| file.sync_all()) {
            let _ = fs::remove_file(&tmp);
            return Err(Error::io(format!("cannot size {}", tmp.display()), e));
        }
        let _names = self.lock();
        publish(&tmp, &self.volume_file(id))?;
        sync_dir(&self.volumes)
    }

    fn do_delete(&self, id: &str) -> Result<()> {
        validate_id(id)?;
        let names = self.lock();
        let path = self.require_volume(id)?;
        if names.get(id).is_some_and(|&n| n > 0) {
            return Err(Error::new(ErrorKind::Busy, format!("volume {id} is being copied")));
        }
        let snaps = self.snapshots_of(id)?;
        if !snaps.is_empty() {
            return Err(Error::new(
                ErrorKind::Busy,
                format!("volume {id} has snapshots ({}); delete them first", snaps.join(", ")),
            ));
        }
        fs::remove_file(&path)
            .map_err(|e| Error::io(format!("cannot remove {}", path.display()), e))?;
        sync_dir(&self.volumes)
    }

    fn do_extend(&self, id: &str, new_size: u64) -> Result<()> {
        validate_id(id)?;
        check_size(new_size)?;
        let path = self.require_volume(id)?;
        let file = OpenOptions::new().write(true).open(&path).map_err(|e| open_error(&path, e))?;
        let cur = file.metadata().map_err(|e| Error::io("cannot stat volume", e))?.len();
        if new_size < cur {
            return Err(Error::new(
                ErrorKind::InvalidArgument,
                format!("cannot shrink volume {id} from {cur} to {new_size} bytes"),
            ));
        }
        if new_size > cur {
            file.set_len(new_size)
                .and_then(|()| file.sync_all())
                .map_err(|e| Error::io(format!("cannot extend {}", path.display()), e))?;
        }
        Ok(())
    }

    fn do_create_snapshot(&self, vol_id: &str, snap_id: &str) -> Result<()> {
        validate_id(vol_id)?;
        validate_id(snap_id)?;
        if exists(&self.snapshot_file(snap_id))? {
            return Err(Error::new(
                ErrorKind::AlreadyExists,
                format!("snapshot {snap_id} already exists"),
            ));
        }
        let src = self.require_volume(vol_id)?;
        let name = format!("{SNAPSHOT_PREFIX}{snap_id}");
        let (tmp, kind) = self.copy_to_temp(&src, Some(vol_id), &self.snapshots, &name)?;
        let result = (|| {
            let _names = self.lock();
            // The volume may have been deleted while we copied; a snapshot of
            // a deleted volume would block nothing and confuse everyone.
            self.require_volume(vol_id)?;
            // The parent record goes first: a snapshot file never exists without it.
            write_file_atomically(&self.parent_file(snap_id), vol_id.as_bytes(), &self.snapshots)?;
            publish(&tmp, &self.snapshot_file(snap_id))?;
            sync_dir(&self.snapshots)
        })();
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        tracing::debug!(vol_id, snap_id, %kind, "snapshot created");
        result
    }

    fn do_delete_snapshot(&self, snap_id: &str) -> Result<()> {
        validate_id(snap_id)?;
        let _names = self.lock();
        let path = self.require_snapshot(snap_id)?;
        fs::remove_file(&path)
            .map_err(|e| Error::io(format!("cannot remove {}", path.display()), e))?;
        let parent = self.parent_file(snap_id);
        match fs::remove_file(&parent) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io(format!("cannot remove {}", parent.display()), e)),
        }
        sync_dir(&self.snapshots)
    }
}

impl Backend for FileBackend {
    fn describe(&self) -> String {
        format!("file backend at {}", self.root.display())
    }

    fn create(&self, id: &str, size_bytes: u64) -> Result<()> {
        self.do_create(id, size_bytes).map_err(|e| e.context(NAME, "create", id))
    }

    fn delete(&self, id: &str) -> Result<()> {
        self.do_delete(id).map_err(|e| e.context(NAME, "delete", id))
    }

    fn extend(&self, id: &str, new_size: u64) -> Result<()> {
        self.do_extend(id, new_size).map_err(|e| e.context(NAME, "extend", id))
    }

    fn size(&self, id: &str) -> Result<u64> {
        (|| {
            validate_id(id)?;
            let path = self.require_volume(id)?;
            let meta = fs::metadata(&path).map_err(|e| open_error(&path, e))?;
            Ok(meta.len())
        })()
        .map_err(|e: Error| e.context(NAME, "size", id))
    }

    fn exists(&self, id: &str) -> Result<bool> {
        validate_id(id)
            .and_then(|()| exists(&self.volume_file(id)))
            .map_err(|e| e.context(NAME, "exists", id))
    }

    fn list(&self) -> Result<Vec<String>> {
        list_ids(&self.volumes, VOLUME_PREFIX).map_err(|e| e.context(NAME, "list", ""))
    }

    fn location(&self, id: &str) -> Result<String> {
        Ok(self.volume_path(id)?.display().to_string())
    }

    fn clone_volume(&self, src_id: &str, new_id: &str) -> Result<CloneKind> {
        (|| {
            validate_id(src_id)?;
            validate_id(new_id)?;
            let src = self.require_volume(src_id)?;
            self.copy_to_volume(&src, Some(src_id), new_id)
        })()
        .map_err(|e: Error| e.context(NAME, "clone_volume", new_id))
    }

    fn open(&self, id: &str) -> Result<Box<dyn BlockIo>> {
        (|| {
            validate_id(id)?;
            let path = self.volume_file(id);
            let io = FileIo::open(&path).map_err(|e| open_error(&path, e))?;
            Ok(Box::new(io) as Box<dyn BlockIo>)
        })()
        .map_err(|e: Error| e.context(NAME, "open", id))
    }

    fn create_snapshot(&self, vol_id: &str, snap_id: &str) -> Result<()> {
        self.do_create_snapshot(vol_id, snap_id)
            .map_err(|e| e.context(NAME, "create_snapshot", snap_id))
    }

    fn delete_snapshot(&self, snap_id: &str) -> Result<()> {
        self.do_delete_snapshot(snap_id).map_err(|e| e.context(NAME, "delete_snapshot", snap_id))
    }

    fn snapshots(&self, vol_id: &str) -> Result<Vec<String>> {
        (|| {
            validate_id(vol_id)?;
            self.require_volume(vol_id)?;
            self.snapshots_of(vol_id)
        })()
        .map_err(|e: Error| e.context(NAME, "snapshots", vol_id))
    }

    fn clone_from_snapshot(&self, snap_id: &str, new_id: &str) -> Result<CloneKind> {
        (|| {
            validate_id(snap_id)?;
            validate_id(new_id)?;
            let src = self.require_snapshot(snap_id)?;
            self.copy_to_volume(&src, None, new_id)
        })()
        .map_err(|e: Error| e.context(NAME, "clone_from_snapshot", new_id))
    }

    fn open_snapshot(&self, snap_id: &str) -> Result<Box<dyn BlockIo>> {
        (|| {
            validate_id(snap_id)?;
            let path = self.snapshot_file(snap_id);
            let io = FileIo::open_read_only(&path).map_err(|e| open_error(&path, e))?;
            Ok(Box::new(ReadOnly(io)) as Box<dyn BlockIo>)
        })()
        .map_err(|e: Error| e.context(NAME, "open_snapshot", snap_id))
    }
}

/// Marks a volume as a copy source until dropped.
struct BusyGuard<'a> {
    backend: &'a FileBackend,
    id: String,
}

impl<'a> BusyGuard<'a> {
    fn new(backend: &'a FileBackend, id: &str) -> Self {
        *backend.lock().entry(id.to_owned()).or_insert(0) += 1;
        BusyGuard { backend, id: id.to_owned() }
    }
}

impl Drop for BusyGuard<'_> {
    fn drop(&mut self) {
        let mut names = self.backend.lock();
        if let Some(n) = names.get_mut(&self.id) {
            *n -= 1;
            if *n == 0 {
                names.remove(&self.id);
            }
        }
    }
}

fn open_error(path: &Path, e: io::Error) -> Error {
    if e.kind() == io::ErrorKind::NotFound {
        let what = path.file_name().and_then(|n| n.to_str()).unwrap_or("volume");
        Error::io(format!("{what} does not exist"), e)
    } else {
        Error::io(format!("cannot open {}", path.display()), e)
    }
}

fn exists(path: &Path) -> Result<bool> {
    match fs::symlink_metadata(path) {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(Error::io(format!("cannot stat {}", path.display()), e)),
    }
}

/// Ids of the files in `dir` named `<prefix><valid id>`, sorted.
fn list_ids(dir: &Path, prefix: &str) -> Result<Vec<String>> {
    let entries =
        fs::read_dir(dir).map_err(|e| Error::io(format!("cannot list {}", dir.display()), e))?;
    let mut ids = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| Error::io(format!("cannot list {}", dir.display()), e))?;
        let name = entry.file_name();
        let Some(id) = name.to_str().and_then(|n| n.strip_prefix(prefix)) else { continue };
        if validate_id(id).is_ok() {
            ids.push(id.to_owned());
        }
    }
    ids.sort();
    Ok(ids)
}

fn create_new_file(path: &Path) -> Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| Error::io(format!("cannot create {}", path.display()), e))
}

/// Renames `tmp` to `target` unless `target` exists (then `AlreadyExists`,
/// and `tmp` is removed).
fn publish(tmp: &Path, target: &Path) -> Result<()> {
    let result = match rustix::fs::renameat_with(CWD, tmp, CWD, target, RenameFlags::NOREPLACE) {
        Ok(()) => Ok(()),
        // Filesystems without RENAME_NOREPLACE: link(2) also refuses to replace.
        Err(Errno::INVAL) | Err(Errno::NOSYS) => {
            fs::hard_link(tmp, target).and_then(|()| fs::remove_file(tmp))
        }
        Err(e) => Err(e.into()),
    };
    result.map_err(|e| {
        let _ = fs::remove_file(tmp);
        if e.kind() == io::ErrorKind::AlreadyExists {
            let name = target.file_name().and_then(|n| n.to_str()).unwrap_or("target");
            Error::new(ErrorKind::AlreadyExists, format!("{name} already exists"))
        } else {
            Error::io(format!("cannot rename {} to {}", tmp.display(), target.display()), e)
        }
    })
}

/// Replaces `path` with `contents` atomically (temp, fsync, rename).
fn write_file_atomically(path: &Path, contents: &[u8], dir: &Path) -> Result<()> {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let tmp = dir.join(format!("{TMP_PREFIX}{}-meta-{name}", std::process::id()));
    let result = (|| {
        let file =
            OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp)?;
        file.write_all_at(contents, 0)?;
        file.sync_all()?;
        fs::rename(&tmp, path)
    })();
    result.map_err(|e| {
        let _ = fs::remove_file(&tmp);
        Error::io(format!("cannot write {}", path.display()), e)
    })
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io(format!("cannot fsync directory {}", dir.display()), e))
}

/// Makes `dst` (empty, freshly created) hold `src`'s first `len` bytes with
/// the same holes. Shares blocks when the filesystem can (FICLONE); otherwise
/// copies only the data extents that SEEK_DATA/SEEK_HOLE report.
fn copy_sparse(src: &File, dst: &File, len: u64) -> io::Result<CloneKind> {
    match rustix::fs::ioctl_ficlone(dst, src) {
        Ok(()) => return Ok(CloneKind::Reflink),
        // Not an error worth reporting: most filesystems (ext4, tmpfs) cannot
        // share blocks, and FICLONE leaves `dst` untouched when it fails.
        Err(e) => tracing::trace!(error = %e, "FICLONE unavailable; copying data extents"),
    }
    dst.set_len(len)?;
    let mut offset = 0;
    while offset < len {
        let data = match rustix::fs::seek(src, SeekFrom::Data(offset as i64)) {
            Ok(d) => d,
            // No data after `offset`: the rest is one hole.
            Err(Errno::NXIO) => break,
            Err(e) => return Err(e.into()),
        };
        if data >= len {
            break;
        }
        let hole = rustix::fs::seek(src, SeekFrom::Hole(data as i64))?.min(len);
        copy_range(src, dst, data, hole - data)?;
        offset = hole;
    }
    Ok(CloneKind::SparseCopy)
}

/// Copies `[offset, offset+len)` in the kernel (copy_file_range); where that
/// is refused, through a buffer, leaving all-zero blocks unwritten (holes).
fn copy_range(src: &File, dst: &File, offset: u64, len: u64) -> io::Result<()> {
    let end = offset + len;
    let (mut in_off, mut out_off) = (offset, offset);
    while in_off < end {
        let chunk = (end - in_off).min(1 << 30) as usize;
        match rustix::fs::copy_file_range(src, Some(&mut in_off), dst, Some(&mut out_off), chunk) {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "source shrank during copy",
                ))
            }
            Ok(_) => {}
            Err(Errno::XDEV) | Err(Errno::OPNOTSUPP) | Err(Errno::NOSYS) | Err(Errno::INVAL) => {
                return copy_range_buffered(src, dst, in_off, end - in_off);
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

fn copy_range_buffered(src: &File, dst: &File, offset: u64, len: u64) -> io::Result<()> {
    const BUF: u64 = 1 << 20;
    let mut buf = vec![0u8; BUF as usize];
    let mut pos = offset;
    let end = offset + len;
    while pos < end {
        let n = (end - pos).min(BUF) as usize;
        src.read_exact_at(&mut buf[..n], pos)?;
        if buf[..n].iter().any(|&b| b != 0) {
            dst.write_all_at(&buf[..n], pos)?;
        }
        pos += n as u64;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_sparse_keeps_holes_and_data() {
        let dir = tempfile::tempdir().unwrap();
        let src = create_new_file(&dir.path().join("s")).unwrap();
        let len = 64 << 20;
        src.set_len(len).unwrap();
        src.write_all_at(&[7u8; 4096], 1 << 20).unwrap();
        src.write_all_at(&[9u8; 4096], len - 4096).unwrap();
        let dst = create_new_file(&dir.path().join("d")).unwrap();
        copy_sparse(&src, &dst, len).unwrap();
        assert_eq!(dst.metadata().unwrap().len(), len);
        let mut got = vec![0u8; 4096];
        dst.read_exact_at(&mut got, 1 << 20).unwrap();
        assert_eq!(got, vec![7u8; 4096]);
        dst.read_exact_at(&mut got, len - 4096).unwrap();
        assert_eq!(got, vec![9u8; 4096]);
        dst.read_exact_at(&mut got, 8 << 20).unwrap();
        assert_eq!(got, vec![0u8; 4096]);
    }

    #[test]
    fn buffered_fallback_skips_zero_blocks() {
        let dir = tempfile::tempdir().unwrap();
        let src = create_new_file(&dir.path().join("s")).unwrap();
        // Fully allocated zeros: a byte copy would allocate all of it.
        src.write_all_at(&vec![0u8; 8 << 20], 0).unwrap();
        src.write_all_at(&[1u8; 512], 3 << 20).unwrap();
        let dst = create_new_file(&dir.path().join("d")).unwrap();
        dst.set_len(8 << 20).unwrap();
        copy_range_buffered(&src, &dst, 0, 8 << 20).unwrap();
        use std::os::unix::fs::MetadataExt;
        let allocated = dst.metadata().unwrap().blocks() * 512;
        assert!(allocated <= 2 << 20, "allocated {allocated}");
        let mut got = [0u8; 512];
        dst.read_exact_at(&mut got, 3 << 20).unwrap();
        assert_eq!(got, [1u8; 512]);
    }

    #[test]
    fn deleting_a_copy_source_is_busy() {
        let dir = tempfile::tempdir().unwrap();
        let b = FileBackend::open(dir.path()).unwrap();
        b.create("src", 4096).unwrap();
        let guard = BusyGuard::new(&b, "src");
        let err = b.delete("src").unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Busy, "{err}");
        drop(guard);
        b.delete("src").unwrap();
    }

    #[test]
    fn stale_temporaries_of_dead_processes_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let b = FileBackend::open(dir.path()).unwrap();
        // pid 0 never names a live process in /proc.
        let stale = b.volumes.join(format!("{TMP_PREFIX}0-1-volume-x"));
        let mine = b.temp_path(&b.volumes, "volume-y");
        fs::write(&stale, b"partial").unwrap();
        fs::write(&mine, b"partial").unwrap();
        drop(b);
        let _b = FileBackend::open(dir.path()).unwrap();
        assert!(!stale.exists());
        assert!(mine.exists(), "a live process's temporary must be left alone");
    }
}
