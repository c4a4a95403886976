//! An ordered parallel crypt pipeline: N workers each take the next chunk
//! and run `work` on it (read and encrypt or decrypt, say), and one writer
//! hands the chunks to `write` strictly in order, on the calling thread.
//!
//! Memory is bounded: at most `2 × threads` chunk buffers exist, allocated
//! on first use and wiped when dropped ([`Secret`]); a worker takes a buffer
//! before it claims a chunk, so a slow writer stalls the workers rather than
//! letting finished chunks pile up. Because chunks are claimed in order and
//! every claimed chunk is finished, the writer never waits for a chunk that
//! no worker holds.
//!
//! In-order writes are what lets a caller keep a crash-safety contract that
//! depends on order (re-encryption's hotzone checkpoints, a stream sink);
//! callers whose sink is positional still gain the overlap of I/O and crypto.
//! The first error from either side stops the run: workers claim nothing
//! more, the writer writes nothing more, and that error is returned.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{channel, sync_channel, Receiver};
use std::sync::{Mutex, PoisonError};

use crate::error::{Error, Result};
use crate::Secret;

/// How a run is cut and spread.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Options {
    /// Crypt workers (at least 1).
    pub threads: usize,
    /// Bytes per chunk; every chunk but the last is this long. A multiple
    /// of the sector size for crypto work.
    pub chunk: usize,
}

impl Options {
    /// `threads` workers (0: one per CPU) and `chunk`-byte chunks.
    pub fn new(threads: usize, chunk: usize) -> Options {
        let threads = if threads == 0 { default_threads() } else { threads };
        Options { threads, chunk: chunk.max(1) }
    }
}

/// One worker per CPU the process may use.
pub fn default_threads() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
}

/// A finished chunk on its way to the writer, with what `work` said of it.
struct Done<T> {
    pos: u64,
    len: usize,
    buf: Secret,
    result: Result<T>,
}

/// Runs `work(pos, chunk)` on every chunk of `[0, total)` on `opts.threads`
/// workers and `write(pos, chunk, t)` on each, in order of `pos`, on this
/// thread; `t` is what `work` returned for the chunk (e.g. "all zero").
pub fn run<T, W, S>(total: u64, opts: Options, work: W, mut write: S) -> Result<()>
where
    T: Send,
    W: Fn(u64, &mut [u8]) -> Result<T> + Sync,
    S: FnMut(u64, &[u8], T) -> Result<()>,
{
    let threads = opts.threads.max(1);
    let chunk = opts.chunk.max(1);
    let depth = 2 * threads;
    // Buffer tokens: `None` until a worker first needs it.
    let (free_tx, free_rx) = sync_channel::<Option<Secret>>(depth);
    for _ in 0..depth {
        free_tx.send(None).expect("channel holds `depth` tokens");
    }
    let free_rx = Mutex::new(free_rx);
    let next = AtomicU64::new(0);
    let stop = AtomicBool::new(false);
    let (done_tx, done_rx) = channel::<Done<T>>();

    std::thread::scope(|s| {
        for _ in 0..threads {
            let done_tx = done_tx.clone();
            let (free_rx, next, stop, work) = (&free_rx, &next, &stop, &work);
            s.spawn(move || worker(total, chunk, free_rx, next, stop, work, |d| done_tx.send(d).is_ok()));
        }
        drop(done_tx);
        writer(total, &done_rx, free_tx, &stop, &mut write)
    })
}

fn worker<T, W>(
    total: u64,
    chunk: usize,
    free: &Mutex<Receiver<Option<Secret>>>,
    next: &AtomicU64,
    stop: &AtomicBool,
    work: &W,
    send: impl Fn(Done<T>) -> bool,
) where
    W: Fn(u64, &mut [u8]) -> Result<T>,
{
    loop {
        // Holding the lock while claiming keeps buffer order and chunk order
        // the same, which is all the writer relies on. A stopped run is
        // seen before a claim, never after: a claimed chunk is always
        // finished and sent, or the writer would wait for it (holding the
        // buffers that chunks past it came back in) while a worker waits
        // for a buffer.
        let (token, pos) = {
            let rx = free.lock().unwrap_or_else(PoisonError::into_inner);
            let Ok(token) = rx.recv() else { return };
            if stop.load(Ordering::SeqCst) {
                return;
            }
            (token, next.fetch_add(chunk as u64, Ordering::Relaxed))
        };
        if pos >= total {
            return;
        }
        let len = (chunk as u64).min(total - pos) as usize;
        let mut buf = token.unwrap_or_else(|| Secret::zeroed(chunk));
        let result = work(pos, &mut buf.as_mut()[..len]);
        if result.is_err() {
            stop.store(true, Ordering::SeqCst);
        }
        if !send(Done { pos, len, buf, result }) {
            return;
        }
    }
}

fn writer<T, S>(
    total: u64,
    done: &Receiver<Done<T>>,
    free: std::sync::mpsc::SyncSender<Option<Secret>>,
    stop: &AtomicBool,
    write: &mut S,
) -> Result<()>
where
    S: FnMut(u64, &[u8], T) -> Result<()>,
{
    let mut free = Some(free);
    let mut pending: BTreeMap<u64, Done<T>> = BTreeMap::new();
    let mut expected = 0u64;
    let mut first_error: Option<Error> = None;
    // Ends when every worker has returned (all senders dropped).
    for d in done.iter() {
        pending.insert(d.pos, d);
        while let Some(d) = pending.remove(&expected) {
            expected += d.len as u64;
            let r = d.result.and_then(|t| if first_error.is_none() { write(d.pos, &d.buf.expose()[..d.len], t) } else { Ok(()) });
            if let Err(e) = r {
                stop.store(true, Ordering::Relaxed);
                first_error.get_or_insert(e);
                // Workers blocked on a buffer return instead of waiting.
                free = None;
            }
            if let Some(f) = &free {
                // Full only if a worker has gone: the buffer is then dropped.
                let _ = f.try_send(Some(d.buf));
            }
        }
    }
    // An error in a chunk past a gap (its predecessors never finished
    // because the run stopped) is still the run's error.
    if first_error.is_none() {
        first_error = pending.into_values().find_map(|d| d.result.err());
    }
    match first_error {
        Some(e) => Err(e),
        None if expected < total => Err(Error::InvalidArgument(format!(
            "pipeline stopped at byte {expected} of {total}"
        ))),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests;
