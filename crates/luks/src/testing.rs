//! Fault injection for tests of crash safety, here and in the crates above
//! (feature `test-support`).

use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::{BlockIo, MemIo};

/// Storage that fails for good at its `fail_at`-th write or flush
/// (0-based), tearing that write in half, like a machine that lost power:
/// writes that returned stay, and every operation after it fails, reads
/// included.
pub struct FaultIo<'a> {
    /// What survives the crash.
    pub inner: &'a MemIo,
    /// Writes and flushes seen so far; with `fail_at` = `usize::MAX`, the
    /// count a whole run takes.
    pub steps: AtomicUsize,
    /// The write or flush that crashes.
    pub fail_at: usize,
}

impl<'a> FaultIo<'a> {
    /// Crashes at the `fail_at`-th write or flush.
    pub fn new(inner: &'a MemIo, fail_at: usize) -> Self {
        FaultIo { inner, steps: AtomicUsize::new(0), fail_at }
    }

    /// Never crashes; counts the steps of a run.
    pub fn counting(inner: &'a MemIo) -> Self {
        Self::new(inner, usize::MAX)
    }

    fn step(&self) -> io::Result<bool> {
        let n = self.steps.fetch_add(1, Ordering::SeqCst);
        if n > self.fail_at {
            return Err(io::Error::other("crashed"));
        }
        Ok(n == self.fail_at)
    }

    fn crashed(&self) -> bool {
        self.steps.load(Ordering::SeqCst) > self.fail_at
    }
}

impl BlockIo for FaultIo<'_> {
    fn size(&self) -> io::Result<u64> {
        self.inner.size()
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        if self.crashed() {
            return Err(io::Error::other("crashed"));
        }
        self.inner.read_at(buf, offset)
    }
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        if self.step()? {
            self.inner.write_at(&buf[..buf.len() / 2], offset)?;
            return Err(io::Error::other("crashed mid-write"));
        }
        self.inner.write_at(buf, offset)
    }
    fn flush(&self) -> io::Result<()> {
        if self.step()? {
            return Err(io::Error::other("crashed in flush"));
        }
        Ok(())
    }
}
