//! Small helpers for fixed-layout, big-endian, NUL-padded header fields.

use crate::error::{Error, Result};

/// A cursor over a borrowed header that refuses to read past its end.
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.buf.len());
        let end = end.ok_or_else(|| Error::header("header is truncated"))?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    pub(crate) fn array<const N: usize>(&mut self) -> Result<[u8; N]> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }

    pub(crate) fn u16(&mut self) -> Result<u16> {
        Ok(u16::from_be_bytes(self.array()?))
    }

    pub(crate) fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    pub(crate) fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_be_bytes(self.array()?))
    }

    /// A NUL-padded text field; must be valid UTF-8 up to the first NUL.
    /// As cryptsetup does, the last byte is taken as the terminator whatever
    /// it holds, so a field is at most `n - 1` characters.
    pub(crate) fn cstr(&mut self, n: usize, what: &str) -> Result<String> {
        let raw = &self.take(n)?[..n - 1];
        let end = raw.iter().position(|&b| b == 0).unwrap_or(n - 1);
        std::str::from_utf8(&raw[..end])
            .map(str::to_string)
            .map_err(|_| Error::header(format!("{what} is not valid text")))
    }

    pub(crate) fn pos(&self) -> usize {
        self.pos
    }
}

/// Appends `s` NUL-padded to `n` bytes; refuses text that does not fit with a NUL.
pub(crate) fn put_cstr(out: &mut Vec<u8>, s: &str, n: usize, what: &str) -> Result<()> {
    if s.len() >= n || s.as_bytes().contains(&0) {
        return Err(Error::InvalidArgument(format!("{what} {s:?} is longer than {} bytes", n - 1)));
    }
    out.extend_from_slice(s.as_bytes());
    out.resize(out.len() + n - s.len(), 0);
    Ok(())
}

/// Rounds `v` up to a multiple of `align` (a power of two or any positive value).
pub(crate) fn round_up(v: u64, align: u64) -> u64 {
    v.div_ceil(align) * align
}
