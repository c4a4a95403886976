//! Test helpers shared by the engine's integration tests.
#![allow(dead_code)]

use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};

use rekey_luks::{BlockIo, MemIo};

/// Fails the `fail_at`-th write or flush (0-based), tearing a write in half,
/// and every operation after it, like a machine that lost power.
pub struct FaultIo<'a> {
    pub inner: &'a MemIo,
    pub steps: AtomicUsize,
    pub fail_at: usize,
}

impl<'a> FaultIo<'a> {
    pub fn new(inner: &'a MemIo, fail_at: usize) -> Self {
        FaultIo { inner, steps: AtomicUsize::new(0), fail_at }
    }
}

impl FaultIo<'_> {
    fn step(&self) -> io::Result<bool> {
        let n = self.steps.fetch_add(1, Ordering::SeqCst);
        if n > self.fail_at {
            return Err(io::Error::other("crashed"));
        }
        Ok(n == self.fail_at)
    }
}

impl BlockIo for FaultIo<'_> {
    fn size(&self) -> io::Result<u64> {
        self.inner.size()
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
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

