//! Bulk plaintext copies (export, import) over a [`Decrypted`] view, with
//! read, crypto and write overlapped across worker threads.
//!
//! Each worker claims the next chunk and does read → crypt → write on its
//! own, so while one waits on I/O another computes. Memory is bounded by
//! `threads × CHUNK`.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::blockio::BlockIo;
use crate::data::Decrypted;
use crate::error::{Error, Result};
use crate::Secret;

/// Bytes per chunk a worker handles at a time.
pub const CHUNK: u64 = 4 << 20;

/// Progress callback: bytes done, bytes total.
pub type Progress<'a> = &'a (dyn Fn(u64, u64) + Sync);

fn threads() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1).max(2)
}

fn run_chunks<F>(total: u64, progress: Progress<'_>, work: F) -> Result<()>
where
    F: Fn(u64, &mut Secret) -> Result<()> + Sync,
{
    let next = AtomicU64::new(0);
    let done = AtomicU64::new(0);
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads())
            .map(|_| {
                s.spawn(|| -> Result<()> {
                    let mut buf = Secret::zeroed(CHUNK as usize);
                    loop {
                        let pos = next.fetch_add(CHUNK, Ordering::Relaxed);
                        if pos >= total {
                            return Ok(());
                        }
                        let len = CHUNK.min(total - pos) as usize;
                        let mut chunk = if len == CHUNK as usize { std::mem::take(&mut buf) } else { Secret::zeroed(len) };
                        let r = work(pos, &mut chunk);
                        if len == CHUNK as usize {
                            buf = chunk;
                        }
                        if let Err(e) = r {
                            next.store(total, Ordering::Relaxed); // stop the others
                            return Err(e);
                        }
                        let d = done.fetch_add(len as u64, Ordering::Relaxed) + len as u64;
                        progress(d, total);
                    }
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("worker panicked")).collect::<Result<Vec<()>>>()
    })?;
    Ok(())
}

/// Writes the plaintext of `src` to `out` (truncated to the plaintext size);
/// all-zero chunks are left as holes.
pub fn export<IO: BlockIo>(src: &Decrypted<IO>, out: &File, progress: Progress<'_>) -> Result<()> {
    let total = src.len();
    out.set_len(0).map_err(Error::io("truncate output", 0))?;
    out.set_len(total).map_err(Error::io("size output", total))?;
    run_chunks(total, progress, |pos, buf| {
        src.read_sectors(buf.as_mut(), pos).map_err(Error::io("read", pos))?;
        if buf.expose().iter().all(|&b| b == 0) {
            return Ok(());
        }
        out.write_all_at(buf.expose(), pos).map_err(Error::io("write output", pos))
    })?;
    out.sync_all().map_err(Error::io("flush output", 0))
}

/// Writes the contents of `input` as plaintext at offset 0 of `dst`. The
/// input must not be larger than the volume's data.
pub fn import<IO: BlockIo>(input: &File, dst: &Decrypted<IO>, progress: Progress<'_>) -> Result<()> {
    let total = input.metadata().map_err(Error::io("stat input", 0))?.len();
    if total > dst.len() {
        return Err(Error::InvalidArgument(format!(
            "input of {total} bytes is larger than the volume's {} bytes of data",
            dst.len()
        )));
    }
    let sector = dst.sector_size();
    let aligned = total - total % sector;
    run_chunks(aligned, progress, |pos, buf| {
        input.read_exact_at(buf.as_mut(), pos).map_err(Error::io("read input", pos))?;
        dst.write_sectors(buf.as_mut(), pos).map_err(Error::io("write", pos))
    })?;
    if aligned < total {
        let mut tail = vec![0u8; (total - aligned) as usize];
        input.read_exact_at(&mut tail, aligned).map_err(Error::io("read input", aligned))?;
        dst.write_at(&tail, aligned).map_err(Error::io("write", aligned))?;
    }
    dst.flush().map_err(Error::io("flush", 0))
}
