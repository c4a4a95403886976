//! Bulk plaintext copies (export, import) over a [`Decrypted`] view, through
//! the ordered crypt [`pipeline`]: N workers read and decrypt (or read and
//! encrypt) chunks while this thread writes the finished ones in order.
//! Memory is bounded by `2 × threads × CHUNK`.

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;

use crate::blockio::BlockIo;
use crate::data::Decrypted;
use crate::error::{Error, Result};
use crate::pipeline::{self, Options};

/// Bytes per chunk a worker handles at a time: small enough that a chunk
/// handed from a worker's core to the writer's is still in the shared cache.
pub const CHUNK: u64 = 1 << 20;

/// Progress callback: bytes done, bytes total.
pub type Progress<'a> = &'a (dyn Fn(u64, u64) + Sync);

/// Writes the plaintext of `src` to `out` with `threads` crypt workers (0:
/// one per CPU). A regular file is truncated to the plaintext size and
/// all-zero chunks are left as holes; anything else (a block device, a
/// pipe, /dev/null) gets every byte written in order.
pub fn export<IO: BlockIo>(src: &Decrypted<IO>, out: &File, threads: usize, progress: Progress<'_>) -> Result<()> {
    let total = src.len();
    let regular = out.metadata().map_err(Error::io("stat output", 0))?.is_file();
    if regular {
        out.set_len(0).map_err(Error::io("truncate output", 0))?;
        out.set_len(total).map_err(Error::io("size output", total))?;
    }
    let sector = src.sector_size() as usize;
    let work = |pos: u64, buf: &mut [u8]| -> Result<bool> {
        src.io().read_at(buf, src.data_offset() + pos).map_err(Error::io("read", pos))?;
        src.cipher().decrypt(buf, sector, src.iv_at(pos))?;
        Ok(regular && buf.iter().all(|&b| b == 0))
    };
    // Chunks arrive in order, so an output that cannot seek (a pipe) is
    // written sequentially from where it stands.
    let write = |pos: u64, buf: &[u8], hole: bool| -> Result<()> {
        if regular && !hole {
            out.write_all_at(buf, pos).map_err(Error::io("write output", pos))?;
        } else if !regular {
            (&mut &*out).write_all(buf).map_err(Error::io("write output", pos))?;
        }
        progress(pos + buf.len() as u64, total);
        Ok(())
    };
    pipeline::run(total, Options::new(threads, CHUNK as usize), work, write)?;
    match out.sync_all() {
        // Pipes and character devices have nothing to flush.
        Err(e) if !regular && e.kind() == std::io::ErrorKind::InvalidInput => Ok(()),
        r => r.map_err(Error::io("flush output", 0)),
    }
}

/// Writes the contents of `input` as plaintext at offset 0 of `dst` with
/// `threads` crypt workers (0: one per CPU). The input must not be larger
/// than the volume's data.
pub fn import<IO: BlockIo>(input: &File, dst: &Decrypted<IO>, threads: usize, progress: Progress<'_>) -> Result<()> {
    let total = input.metadata().map_err(Error::io("stat input", 0))?.len();
    if total > dst.len() {
        return Err(Error::InvalidArgument(format!(
            "input of {total} bytes is larger than the volume's {} bytes of data",
            dst.len()
        )));
    }
    let sector = dst.sector_size();
    let aligned = total - total % sector;
    let work = |pos: u64, buf: &mut [u8]| -> Result<()> {
        input.read_exact_at(buf, pos).map_err(Error::io("read input", pos))?;
        dst.cipher().encrypt(buf, sector as usize, dst.iv_at(pos))?;
        Ok(())
    };
    let write = |pos: u64, buf: &[u8], (): ()| -> Result<()> {
        dst.io().write_at(buf, dst.data_offset() + pos).map_err(Error::io("write", pos))?;
        progress(pos + buf.len() as u64, aligned);
        Ok(())
    };
    pipeline::run(aligned, Options::new(threads, CHUNK as usize), work, write)?;
    if aligned < total {
        let mut tail = vec![0u8; (total - aligned) as usize];
        input.read_exact_at(&mut tail, aligned).map_err(Error::io("read input", aligned))?;
        dst.write_at(&tail, aligned).map_err(Error::io("write", aligned))?;
    }
    dst.flush().map_err(Error::io("flush", 0))
}
