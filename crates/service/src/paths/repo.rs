//! A backup repository on a directory, like Cinder's POSIX backup driver.
//!
//! ```text
//! <root>/<backup-id>/manifest.json        what the backup is made of
//! <root>/<backup-id>/chunk-<index>.lz4    the chunks this backup stored
//! <root>/<backup-id>.partial/             a backup being written
//! ```
//!
//! A volume's raw bytes (ciphertext for an encrypted volume: a backup never
//! sees plaintext) are cut into [`CHUNK_SIZE`] chunks. All-zero chunks are
//! not stored. Each stored chunk is LZ4-compressed (a 4-byte little-endian
//! length, then the block) and its SHA-256 (of the raw bytes) is in the
//! manifest. An incremental backup reads its parent's manifest and stores
//! only the chunks whose SHA-256 changed; for the others its manifest points
//! at the backup that stored them. A restore checks every chunk's SHA-256
//! before writing anything, and again as it writes.
//!
//! A backup is written under `<id>.partial` and renamed into place after the
//! manifest is synced, so it exists complete or not at all.

use std::fs::{self, File};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use rekey_luks::BlockIo;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{Result, ServiceError};
use crate::service::Service;

/// The repository of this service: `<data_dir>/backups`.
pub(crate) fn repo(svc: &Service) -> Result<Repo> {
    Repo::open(svc.config().data_dir.join("backups"))
}

/// Bytes per chunk.
pub const CHUNK_SIZE: u64 = 1 << 20;
const MANIFEST: &str = "manifest.json";
const FORMAT_VERSION: u32 = 1;

/// What a backup is made of.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Format version (1).
    pub version: u32,
    /// The backup.
    pub backup_id: String,
    /// The volume backed up.
    pub volume_id: String,
    /// The parent of an incremental backup.
    pub parent_id: Option<String>,
    /// Volume size in bytes.
    pub size_bytes: u64,
    /// Chunk size in bytes.
    pub chunk_size: u64,
    /// The non-zero chunks, by index; missing indexes are all zero.
    pub chunks: Vec<ChunkRef>,
}

/// One non-zero chunk.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ChunkRef {
    /// Index (offset / chunk size).
    pub index: u64,
    /// SHA-256 of the raw bytes, hex.
    pub sha256: String,
    /// The backup whose directory holds the chunk.
    pub stored_in: String,
    /// Compressed size on disk.
    pub stored_len: u64,
}

/// What writing a backup stored.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stored {
    /// Chunks this backup stored itself.
    pub chunks: u64,
    /// Bytes on disk of this backup (chunks + manifest).
    pub bytes: u64,
    /// Non-zero chunks in the volume (stored here or in an ancestor).
    pub data_chunks: u64,
}

/// A repository directory.
#[derive(Debug, Clone)]
pub struct Repo {
    root: PathBuf,
}

fn io_err(what: impl std::fmt::Display) -> impl FnOnce(std::io::Error) -> ServiceError {
    move |e| ServiceError::Internal(format!("backup repository: {what}: {e}"))
}

fn corrupt(id: &str, msg: impl std::fmt::Display) -> ServiceError {
    ServiceError::Invalid(format!("Backup {id} is corrupt: {msg}"))
}

fn chunk_name(index: u64) -> String {
    format!("chunk-{index:08}.lz4")
}

fn sha_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

fn write_synced(path: &Path, data: &[u8]) -> Result<()> {
    let mut f = File::create(path).map_err(io_err(path.display()))?;
    f.write_all(data).map_err(io_err(path.display()))?;
    f.sync_all().map_err(io_err(path.display()))
}

fn sync_dir(path: &Path) -> Result<()> {
    File::open(path).and_then(|d| d.sync_all()).map_err(io_err(path.display()))
}

impl Repo {
    /// Opens (creating) the repository at `root`.
    pub fn open(root: impl Into<PathBuf>) -> Result<Repo> {
        let root = root.into();
        fs::create_dir_all(&root).map_err(io_err(root.display()))?;
        Ok(Repo { root })
    }

    fn dir(&self, id: &str) -> Result<PathBuf> {
        rekey_storage::validate_id(id).map_err(|e| ServiceError::invalid(format!("backup id: {e}")))?;
        Ok(self.root.join(id))
    }

    /// Whether backup `id` is complete in the repository.
    pub fn exists(&self, id: &str) -> Result<bool> {
        Ok(self.dir(id)?.join(MANIFEST).exists())
    }

    /// Reads a backup's manifest.
    pub fn manifest(&self, id: &str) -> Result<Manifest> {
        let path = self.dir(id)?.join(MANIFEST);
        let text = fs::read(&path).map_err(io_err(path.display()))?;
        let m: Manifest = serde_json::from_slice(&text).map_err(|e| corrupt(id, format!("manifest: {e}")))?;
        if m.version != FORMAT_VERSION || m.chunk_size == 0 || m.backup_id != id {
            return Err(corrupt(id, "manifest does not describe this backup"));
        }
        Ok(m)
    }

    /// Backs up `io` (volume `volume_id`) as backup `id`, incrementally
    /// against `parent` when given. Safe to call again after a crash.
    pub fn write(&self, id: &str, volume_id: &str, io: &dyn BlockIo, parent: Option<&str>) -> Result<Stored> {
        let final_dir = self.dir(id)?;
        let partial = self.root.join(format!("{id}.partial"));
        for d in [&final_dir, &partial] {
            if d.exists() {
                fs::remove_dir_all(d).map_err(io_err(d.display()))?;
            }
        }
        fs::create_dir(&partial).map_err(io_err(partial.display()))?;
        let parent_chunks = match parent {
            Some(p) => {
                let pm = self.manifest(p)?;
                if pm.chunk_size != CHUNK_SIZE {
                    return Err(ServiceError::invalid("the parent backup uses another chunk size; take a full backup"));
                }
                pm.chunks.into_iter().map(|c| (c.index, c)).collect()
            }
            None => std::collections::HashMap::new(),
        };
        let size = io.size().map_err(io_err("volume size"))?;
        let mut buf = vec![0u8; CHUNK_SIZE as usize];
        let mut m = Manifest {
            version: FORMAT_VERSION,
            backup_id: id.to_owned(),
            volume_id: volume_id.to_owned(),
            parent_id: parent.map(str::to_owned),
            size_bytes: size,
            chunk_size: CHUNK_SIZE,
            chunks: Vec::new(),
        };
        let mut stored = Stored::default();
        let mut index = 0u64;
        while index * CHUNK_SIZE < size {
            let off = index * CHUNK_SIZE;
            let len = (size - off).min(CHUNK_SIZE) as usize;
            let chunk = &mut buf[..len];
            io.read_at(chunk, off).map_err(io_err(format_args!("read volume at {off}")))?;
            if chunk.iter().all(|&b| b == 0) {
                index += 1;
                continue;
            }
            stored.data_chunks += 1;
            let sha = sha_hex(chunk);
            match parent_chunks.get(&index) {
                Some(p) if p.sha256 == sha => m.chunks.push(p.clone()),
                _ => {
                    let packed = lz4_flex::block::compress_prepend_size(chunk);
                    write_synced(&partial.join(chunk_name(index)), &packed)?;
                    stored.chunks += 1;
                    stored.bytes += packed.len() as u64;
                    m.chunks.push(ChunkRef { index, sha256: sha, stored_in: id.to_owned(), stored_len: packed.len() as u64 });
                }
            }
            index += 1;
        }
        let text = serde_json::to_vec_pretty(&m).map_err(|e| ServiceError::Internal(format!("manifest: {e}")))?;
        stored.bytes += text.len() as u64;
        write_synced(&partial.join(MANIFEST), &text)?;
        sync_dir(&partial)?;
        fs::rename(&partial, &final_dir).map_err(io_err(final_dir.display()))?;
        sync_dir(&self.root)?;
        Ok(stored)
    }

    fn read_chunk(&self, id: &str, c: &ChunkRef, chunk_size: u64) -> Result<Vec<u8>> {
        let path = self.dir(&c.stored_in)?.join(chunk_name(c.index));
        let mut packed = Vec::new();
        File::open(&path)
            .and_then(|mut f| f.read_to_end(&mut packed))
            .map_err(|e| corrupt(id, format!("chunk {} ({}): {e}", c.index, path.display())))?;
        // The length prefix is checked before anything is allocated for it.
        let want = packed.get(..4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as u64);
        match want {
            Some(n) if n > 0 && n <= chunk_size => {}
            _ => return Err(corrupt(id, format!("chunk {} has a bad length header", c.index))),
        }
        let raw = lz4_flex::block::decompress_size_prepended(&packed)
            .map_err(|e| corrupt(id, format!("chunk {} does not decompress: {e}", c.index)))?;
        let got = sha_hex(&raw);
        if got != c.sha256 {
            return Err(corrupt(id, format!("chunk {} checksum mismatch: SHA-256 {got}, manifest says {}", c.index, c.sha256)));
        }
        Ok(raw)
    }

    /// Checks every chunk of backup `id` (decompresses, compares SHA-256).
    pub fn verify(&self, id: &str) -> Result<Manifest> {
        let m = self.manifest(id)?;
        for c in &m.chunks {
            self.read_chunk(id, c, m.chunk_size)?;
        }
        Ok(m)
    }

    /// Writes backup `id` onto `io` (at least as large as the backup).
    /// `overwrite`: the target held other data, so all-zero chunks are
    /// written as zeros too (a new sparse volume already reads zero there).
    pub fn restore(&self, id: &str, io: &dyn BlockIo, overwrite: bool) -> Result<()> {
        let m = self.verify(id)?;
        let size = io.size().map_err(io_err("target size"))?;
        if size < m.size_bytes {
            return Err(ServiceError::invalid(format!(
                "the target ({size} bytes) is smaller than backup {id} ({} bytes)",
                m.size_bytes
            )));
        }
        let zeros = vec![0u8; m.chunk_size as usize];
        let mut next = 0u64;
        let chunk_count = m.size_bytes.div_ceil(m.chunk_size);
        let zero_fill = |from: u64, to: u64| -> Result<()> {
            for i in from..to {
                let off = i * m.chunk_size;
                let len = (m.size_bytes - off).min(m.chunk_size) as usize;
                io.write_at(&zeros[..len], off).map_err(io_err(format_args!("write target at {off}")))?;
            }
            Ok(())
        };
        for c in &m.chunks {
            if overwrite {
                zero_fill(next, c.index)?;
            }
            let raw = self.read_chunk(id, c, m.chunk_size)?;
            let off = c.index * m.chunk_size;
            if off + raw.len() as u64 > m.size_bytes {
                return Err(corrupt(id, format!("chunk {} lies beyond the volume's end", c.index)));
            }
            io.write_at(&raw, off).map_err(io_err(format_args!("write target at {off}")))?;
            next = c.index + 1;
        }
        if overwrite {
            zero_fill(next, chunk_count)?;
        }
        io.flush().map_err(io_err("flush target"))
    }

    /// Deletes backup `id` (its directory and any partial one).
    pub fn delete(&self, id: &str) -> Result<()> {
        let d = self.dir(id)?;
        for p in [d.clone(), self.root.join(format!("{id}.partial"))] {
            if p.exists() {
                fs::remove_dir_all(&p).map_err(io_err(p.display()))?;
            }
        }
        sync_dir(&self.root)
    }

    /// Makes backup `dst` a copy of backup `src` (an imported record under a
    /// new id): the chunks `src` stored, and its manifest naming `dst`, so
    /// either can be deleted without the other. Written under
    /// `<dst>.partial` and renamed, as [`Repo::write`] does.
    pub fn copy_as(&self, src: &str, dst: &str) -> Result<()> {
        let mut m = self.verify(src)?;
        let (from, to) = (self.dir(src)?, self.dir(dst)?);
        if to.join(MANIFEST).exists() {
            return Ok(());
        }
        let partial = self.root.join(format!("{dst}.partial"));
        if partial.exists() {
            fs::remove_dir_all(&partial).map_err(io_err(partial.display()))?;
        }
        fs::create_dir_all(&partial).map_err(io_err(partial.display()))?;
        for c in m.chunks.iter_mut().filter(|c| c.stored_in == src) {
            let name = chunk_name(c.index);
            let data = fs::read(from.join(&name)).map_err(io_err(name.clone()))?;
            write_synced(&partial.join(&name), &data)?;
            c.stored_in = dst.to_owned();
        }
        m.backup_id = dst.to_owned();
        let text = serde_json::to_vec_pretty(&m).map_err(|e| ServiceError::Internal(format!("manifest: {e}")))?;
        write_synced(&partial.join(MANIFEST), &text)?;
        sync_dir(&partial)?;
        fs::rename(&partial, &to).map_err(io_err(to.display()))?;
        sync_dir(&self.root)
    }

    /// Where backup `id`'s files are.
    pub fn path(&self, id: &str) -> Result<PathBuf> {
        self.dir(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Mem(std::sync::Mutex<Vec<u8>>);
    impl BlockIo for Mem {
        fn size(&self) -> std::io::Result<u64> {
            Ok(self.0.lock().unwrap().len() as u64)
        }
        fn read_at(&self, buf: &mut [u8], off: u64) -> std::io::Result<()> {
            let v = self.0.lock().unwrap();
            buf.copy_from_slice(&v[off as usize..off as usize + buf.len()]);
            Ok(())
        }
        fn write_at(&self, buf: &[u8], off: u64) -> std::io::Result<()> {
            let mut v = self.0.lock().unwrap();
            v[off as usize..off as usize + buf.len()].copy_from_slice(buf);
            Ok(())
        }
        fn flush(&self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn noise(n: usize, seed: u32) -> Vec<u8> {
        (0..n as u32).map(|i| (i.wrapping_mul(2_654_435_761).wrapping_add(seed) >> 13) as u8).collect()
    }

    #[test]
    fn full_incremental_restore_and_corruption() {
        let dir = tempfile::tempdir().unwrap();
        let repo = Repo::open(dir.path()).unwrap();
        let mut data = vec![0u8; 16 << 20];
        data[..3 << 20].copy_from_slice(&noise(3 << 20, 1));
        let vol = Mem(std::sync::Mutex::new(data.clone()));
        let full = repo.write("b1", "v", &vol, None).unwrap();
        assert_eq!((full.chunks, full.data_chunks), (3, 3), "zero chunks are skipped");

        // Change 1 MiB in place: the incremental stores one chunk.
        vol.write_at(&noise(1 << 20, 9), 1 << 20).unwrap();
        let inc = repo.write("b2", "v", &vol, Some("b1")).unwrap();
        assert_eq!(inc.chunks, 1);
        let m2 = repo.manifest("b2").unwrap();
        assert_eq!(m2.chunks.iter().filter(|c| c.stored_in == "b1").count(), 2);

        // Restore onto a target full of other bytes: exact copy.
        let target = Mem(std::sync::Mutex::new(vec![0xAA; 16 << 20]));
        repo.restore("b2", &target, true).unwrap();
        assert!(*target.0.lock().unwrap() == *vol.0.lock().unwrap());

        // A copy under a new id restores the same bytes after the original goes.
        repo.copy_as("b2", "b3").unwrap();
        assert_eq!(repo.manifest("b3").unwrap().chunks.iter().filter(|c| c.stored_in == "b3").count(), 1);
        let copy_target = Mem(std::sync::Mutex::new(vec![0xAA; 16 << 20]));
        repo.restore("b3", &copy_target, true).unwrap();
        assert!(*copy_target.0.lock().unwrap() == *vol.0.lock().unwrap());
        let target1 = Mem(std::sync::Mutex::new(vec![0; 16 << 20]));
        repo.restore("b1", &target1, false).unwrap();
        assert!(*target1.0.lock().unwrap() == data);

        // Flip one byte of a stored chunk: restore refuses before writing.
        let p = dir.path().join("b1").join(chunk_name(2));
        let mut bytes = fs::read(&p).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0x01;
        fs::write(&p, &bytes).unwrap();
        let target2 = Mem(std::sync::Mutex::new(vec![0x55; 16 << 20]));
        let e = repo.restore("b2", &target2, true).unwrap_err();
        assert!(e.to_string().contains("corrupt"), "{e}");
        assert!(target2.0.lock().unwrap().iter().all(|&b| b == 0x55), "nothing written");
    }
}
