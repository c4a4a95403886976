//! Re-encryption while a consumer keeps reading and writing the volume.
//!
//! [`Online`] is the plaintext of a volume under re-encryption, as a
//! [`BlockIo`]: each request is routed by the current boundary (bytes before
//! it are under the new key, bytes after it under the old one) and split
//! where it straddles it. [`Online::run`] converts the volume hotzone by
//! hotzone in cryptsetup's `online-reencrypt-v2` format (the same steps as
//! the offline engine in `cryptsetup.rs`), holding an exclusive lock on the
//! current hotzone's range only: requests elsewhere proceed, requests inside
//! wait for that one hotzone.
//!
//! Why an acknowledged write survives a crash at any point:
//! - The driver takes the hotzone only after every request inside it has
//!   finished, and reads it after that, so the resilience data (checksums of
//!   the old ciphertext, or the journal copy) already includes every write
//!   made there; none can land in it until the hotzone is committed.
//! - The boundary moves in memory only after the header recording it was
//!   written and flushed, so a write routed to the new key lands where the
//!   header on disk already says "new".
//! - A write routed to the old key lands past the boundary; if the crash
//!   comes later while its hotzone is being rewritten, resume repairs that
//!   hotzone from resilience data that was computed after the write.
//!
//! Resilience `none` is refused: it would lose a hotzone written at the
//! moment of a crash.

use std::io;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use super::cryptsetup as cs;
use super::{OldKey, Progress as ProgressFn, ReencryptOptions, ReencryptReport, ResilienceMode};
use crate::blockio::BlockIo;
use crate::crypto::HashAlg;
use crate::data::Decrypted;
use crate::error::{Error, Result};
use crate::luks2::reenc::{self, Mode, Progress, ReencState, Resilience};
use crate::luks2::Header as L2Header;
use crate::volume::{self, DataSegment, Header, Volume};
use crate::Secret;

/// The plaintext of a volume under re-encryption; see the module docs.
pub struct Online<IO: BlockIo> {
    io: Arc<IO>,
    old: Decrypted<Arc<IO>>,
    new: Decrypted<Arc<IO>>,
    keys: Keys,
    driver: Mutex<Driver>,
    zones: Mutex<Zones>,
    changed: Condvar,
    total: u64,
}

/// What the driver needs to build its own views of the data.
struct Keys {
    old_seg: DataSegment,
    new_seg: DataSegment,
    old: Secret,
    new: Secret,
}

struct Driver {
    /// The header as last written; `None` once the re-encryption finished.
    header: Option<L2Header>,
    st: ReencState,
    new_slot: u32,
    destroyed: Vec<u32>,
    failed: bool,
}

/// Which bytes are where, and who is using which range.
struct Zones {
    boundary: u64,
    /// The hotzone being converted; requests overlapping it wait.
    hot: Option<(u64, u64)>,
    inflight: Vec<(u64, u64)>,
    /// The driver failed inside `hot`: what is on disk there is known only
    /// to the resilience data, so requests there fail until a resume.
    failed: bool,
}

fn overlaps(a: (u64, u64), b: (u64, u64)) -> bool {
    a.0 < b.1 && b.0 < a.1
}

impl<IO: BlockIo> std::fmt::Debug for Online<IO> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (done, total) = self.progress();
        f.debug_struct("Online").field("done", &done).field("total", &total).finish_non_exhaustive()
    }
}

/// A request in flight, counted until it drops.
struct Ticket<'a, IO: BlockIo> {
    online: &'a Online<IO>,
    range: (u64, u64),
    boundary: u64,
}

impl<IO: BlockIo> Drop for Ticket<'_, IO> {
    fn drop(&mut self) {
        let mut z = self.online.lock_zones();
        if let Some(i) = z.inflight.iter().position(|r| *r == self.range) {
            z.inflight.swap_remove(i);
        }
        if z.hot.is_some() {
            self.online.changed.notify_all();
        }
    }
}

impl<IO: BlockIo> Online<IO> {
    /// Starts a re-encryption under a new random volume key whose keyslot
    /// opens with `new_passphrase` (which also opens the old key until the
    /// end, so one passphrase resumes it), and returns the view at progress
    /// 0. Nothing is converted until [`Online::run`].
    pub fn start(vol: Volume<IO>, old: OldKey<'_>, new_passphrase: &[u8], opts: &ReencryptOptions) -> Result<Self> {
        let Header::Luks2(h) = vol.header() else {
            return Err(Error::Unsupported("re-encryption needs LUKS2".into()));
        };
        if super::in_progress(&vol) {
            return Err(Error::InvalidArgument("a re-encryption is already in progress; resume it".into()));
        }
        h.check_requirements()?;
        if opts.resilience == ResilienceMode::None {
            return Err(Error::InvalidArgument("online re-encryption needs checksum or journal resilience".into()));
        }
        if opts.hotzone == 0 || !opts.hotzone.is_multiple_of(4096) || opts.hotzone > 256 << 20 {
            return Err(Error::InvalidArgument("hotzone must be a multiple of 4096 up to 256 MiB".into()));
        }
        let passphrase = match old {
            OldKey::Passphrase(p) => p,
            OldKey::VolumeKey(_) => new_passphrase,
        };
        let vol = cs::begin(vol, old, Some(new_passphrase), opts)?;
        Self::resume(vol, passphrase, Some(new_passphrase))
    }

    /// Opens a re-encryption in progress (in cryptsetup's format, started
    /// here or by cryptsetup), first repairing a hotzone a crash interrupted,
    /// and returns the view at the progress the header records.
    pub fn resume(vol: Volume<IO>, passphrase: &[u8], new_passphrase: Option<&[u8]>) -> Result<Self> {
        let Header::Luks2(h) = vol.header().clone() else {
            return Err(Error::InvalidArgument("no re-encryption in progress (LUKS1)".into()));
        };
        let st = reenc::parse(&h.meta)?.ok_or_else(|| Error::InvalidArgument("no re-encryption in progress".into()))?;
        if st.mode != Mode::Reencrypt {
            return Err(Error::Unsupported(format!("online re-encryption in mode {}", st.mode.name())));
        }
        if !matches!(st.resilience, Resilience::Checksum { .. } | Resilience::Journal) {
            return Err(Error::Unsupported(format!(
                "online re-encryption with resilience {} (checksum or journal needed)",
                st.resilience.kind()
            )));
        }
        let old_seg = cs::segment_view(&st.previous.1)?;
        let new_seg = cs::segment_view(&st.final_.1)?;
        if old_seg.offset != new_seg.offset || old_seg.size != new_seg.size {
            return Err(Error::Unsupported("re-encryption that moves the data".into()));
        }
        let (d_old, d_new) = (st.digest_old.expect("checked by parse"), st.digest_new.expect("checked by parse"));
        let pass_new = new_passphrase.unwrap_or(passphrase);
        let (new_slot, new_vk) = cs::open_either(&vol, &h, d_new, [pass_new, passphrase])?;
        let total = Decrypted::new(vol.io(), &new_seg, &new_vk)?.len();
        let progress = st.progress(&h.meta, total)?;
        let old_vk = match cs::open_either(&vol, &h, d_old, [passphrase, pass_new]) {
            Ok((_, k)) => Some(k),
            // cryptsetup destroys the old keyslots just before its final
            // commit; then all data is new and only bookkeeping is left.
            Err(Error::WrongPassphrase) | Err(Error::NotFound(_)) if progress == (Progress::Between { done: total }) => {
                None
            }
            Err(e) => return Err(e),
        };
        if let Some(old_vk) = &old_vk {
            let data = reenc::verification_data(&h.meta, &st, Some(old_vk), Some(&new_vk))?;
            if !volume::verify_digest(&h.meta.digests[&st.digest_reenc], &data)? {
                return Err(Error::header("re-encryption metadata does not match its digest (changed since it was written)"));
            }
        }
        let mut cur = h;
        let done = match progress {
            Progress::Between { done } => done,
            Progress::Hot { offset, len } => {
                let old_vk = old_vk.as_ref().expect("old key opens while a hotzone is recorded");
                let old = Decrypted::new(vol.io(), &old_seg, old_vk)?;
                let new = Decrypted::new(vol.io(), &new_seg, &new_vk)?;
                cs::recover(&old, &new, &st, offset, len)?;
                volume::flush(vol.io())?;
                if offset + len < total {
                    cs::set_segments(&mut cur, &st, offset + len, None, total)?;
                    volume::write_luks2(vol.io(), &mut cur)?;
                }
                offset + len
            }
        };
        let io = Arc::new(vol.into_io());
        let align = old_seg.sector_size.max(new_seg.sector_size) as u64;
        if !done.is_multiple_of(align) {
            return Err(Error::header("re-encryption progress is not sector-aligned"));
        }
        let mut driver = Driver { header: Some(cur), st, new_slot, destroyed: vec![], failed: false };
        if done == total {
            driver.finish(&io, total)?;
        }
        let (old_seg, old_vk) = match old_vk {
            Some(k) => (old_seg, k),
            None => (new_seg.clone(), Secret::from_slice(new_vk.expose())),
        };
        Ok(Online {
            old: Decrypted::new(io.clone(), &old_seg, &old_vk)?,
            new: Decrypted::new(io.clone(), &new_seg, &new_vk)?,
            io,
            keys: Keys { old_seg, new_seg, old: old_vk, new: new_vk },
            driver: Mutex::new(driver),
            zones: Mutex::new(Zones { boundary: done, hot: None, inflight: vec![], failed: false }),
            changed: Condvar::new(),
            total,
        })
    }

    /// Converts the rest of the volume, `hotzone` bytes at a time (at most;
    /// the resilience area may force less), with `threads` crypto threads,
    /// then makes the new key the only one. Requests keep being served
    /// meanwhile. A failure leaves the header resumable by
    /// [`Online::resume`]; requests into the interrupted hotzone fail until
    /// then.
    pub fn run(&self, hotzone: u64, threads: usize, progress: ProgressFn<'_>) -> Result<ReencryptReport> {
        let mut drv = self.driver.lock().unwrap_or_else(|p| p.into_inner());
        if drv.failed {
            return Err(Error::InvalidArgument("this re-encryption failed earlier; reopen the volume to resume it".into()));
        }
        let total = self.total;
        if drv.header.is_none() {
            return Ok(drv.report(total));
        }
        let io = &*self.io;
        let old = Decrypted::new(io, &self.keys.old_seg, &self.keys.old)?;
        let new = Decrypted::new(io, &self.keys.new_seg, &self.keys.new)?;
        let align = old.sector_size().max(new.sector_size());
        let block = match &drv.st.resilience {
            Resilience::Checksum { block, .. } => *block as u64,
            _ => align,
        };
        if !block.is_multiple_of(align) {
            return Err(Error::Unsupported("checksum block smaller than the encryption sector".into()));
        }
        let hotzone = cs::hotzone_len(&drv.st, hotzone, block)?;
        let mut done = self.progress().0;
        progress(done, total);
        while done < total {
            let len = hotzone.min(total - done);
            self.exclude((done, done + len));
            let step = drv.convert(io, &old, &new, done, len, total, threads.max(1));
            let step = step.and_then(|()| if done + len == total { drv.finish(&self.io, total) } else { Ok(()) });
            if let Err(e) = step {
                drv.failed = true;
                self.fail();
                return Err(e);
            }
            self.advance(done + len);
            done += len;
            progress(done, total);
        }
        Ok(drv.report(total))
    }

    /// Plaintext bytes under the new key, and the total.
    pub fn progress(&self) -> (u64, u64) {
        (self.lock_zones().boundary, self.total)
    }

    /// Whether the re-encryption is complete (header final, old key gone).
    pub fn finished(&self) -> bool {
        self.driver.lock().unwrap_or_else(|p| p.into_inner()).header.is_none()
    }

    /// The larger of the two encryption sector sizes: the smallest unit
    /// served without a read-modify-write on either side of the boundary.
    pub fn sector_size(&self) -> u64 {
        self.old.sector_size().max(self.new.sector_size())
    }

    fn lock_zones(&self) -> MutexGuard<'_, Zones> {
        self.zones.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn wait<'a>(&self, z: MutexGuard<'a, Zones>) -> MutexGuard<'a, Zones> {
        self.changed.wait(z).unwrap_or_else(|p| p.into_inner())
    }

    fn enter(&self, offset: u64, len: usize) -> io::Result<Ticket<'_, IO>> {
        let range = match offset.checked_add(len as u64) {
            Some(end) if end <= self.total => (offset, end),
            _ => return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "beyond the end of the encrypted data")),
        };
        let mut z = self.lock_zones();
        while z.hot.is_some_and(|h| overlaps(h, range)) {
            if z.failed {
                return Err(io::Error::other("re-encryption stopped in this range; it is repaired when the volume is reopened"));
            }
            z = self.wait(z);
        }
        z.inflight.push(range);
        Ok(Ticket { online: self, range, boundary: z.boundary })
    }

    /// Takes `range` for the driver: new requests into it wait, and this
    /// returns once those already running there have finished.
    fn exclude(&self, range: (u64, u64)) {
        let mut z = self.lock_zones();
        z.hot = Some(range);
        while z.inflight.iter().any(|r| overlaps(*r, range)) {
            z = self.wait(z);
        }
    }

    fn advance(&self, boundary: u64) {
        let mut z = self.lock_zones();
        z.boundary = boundary;
        z.hot = None;
        self.changed.notify_all();
    }

    fn fail(&self) {
        self.lock_zones().failed = true;
        self.changed.notify_all();
    }
}

impl Driver {
    /// One hotzone, in the order of `cryptsetup.rs`: resilience data, flush,
    /// header with the hotzone in re-encryption, new data, flush, header
    /// with the hotzone joined to the new segment (not after the last one:
    /// the final commit follows).
    #[allow(clippy::too_many_arguments)]
    fn convert<IO: BlockIo>(
        &mut self,
        io: &IO,
        old: &Decrypted<&IO>,
        new: &Decrypted<&IO>,
        p: u64,
        len: u64,
        total: u64,
        threads: usize,
    ) -> Result<()> {
        let st = &self.st;
        let cur = self.header.as_mut().expect("not finished");
        let at = old.data_offset() + p;
        let mut buf = Secret::zeroed(len as usize);
        io.read_at(buf.as_mut(), at).map_err(Error::io("read", at))?;
        match &st.resilience {
            Resilience::Checksum { hash, block } => {
                let hash = HashAlg::from_name(hash)?;
                let mut sums = Vec::with_capacity(buf.len() / *block as usize * hash.digest_len());
                for b in buf.expose().chunks(*block as usize) {
                    sums.extend_from_slice(&hash.digest(&[b])?);
                }
                volume::write(io, st.area.0, &sums)?;
            }
            Resilience::Journal => volume::write(io, st.area.0, buf.expose())?,
            _ => unreachable!("refused by resume"),
        }
        volume::flush(io)?;
        cs::set_segments(cur, st, p, Some(len), total)?;
        volume::write_luks2(io, cur)?;
        super::convert_chunk(old, new, buf.as_mut(), p, threads)?;
        volume::write(io, at, buf.expose())?;
        volume::flush(io)?;
        if p + len < total {
            cs::set_segments(cur, st, p + len, None, total)?;
            volume::write_luks2(io, cur)?;
        }
        Ok(())
    }

    fn finish<IO: BlockIo>(&mut self, io: &Arc<IO>, total: u64) -> Result<()> {
        let cur = self.header.take().expect("not finished");
        let (_, report) = cs::finish(Volume::open(io.clone())?, cur, &self.st, self.new_slot, total)?;
        self.destroyed = report.destroyed_keyslots;
        Ok(())
    }

    fn report(&self, total: u64) -> ReencryptReport {
        ReencryptReport { keyslot: self.new_slot, destroyed_keyslots: self.destroyed.clone(), bytes: total }
    }
}

impl<IO: BlockIo> BlockIo for Online<IO> {
    fn size(&self) -> io::Result<u64> {
        Ok(self.total)
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let t = self.enter(offset, buf.len())?;
        let split = t.boundary.clamp(offset, offset + buf.len() as u64);
        let (lo, hi) = buf.split_at_mut((split - offset) as usize);
        if !lo.is_empty() {
            self.new.read_at(lo, offset)?;
        }
        if !hi.is_empty() {
            self.old.read_at(hi, split)?;
        }
        Ok(())
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        let t = self.enter(offset, buf.len())?;
        let split = t.boundary.clamp(offset, offset + buf.len() as u64);
        let (lo, hi) = buf.split_at((split - offset) as usize);
        if !lo.is_empty() {
            self.new.write_at(lo, offset)?;
        }
        if !hi.is_empty() {
            self.old.write_at(hi, split)?;
        }
        Ok(())
    }

    fn flush(&self) -> io::Result<()> {
        self.io.flush()
    }
}

#[cfg(test)]
mod tests;
