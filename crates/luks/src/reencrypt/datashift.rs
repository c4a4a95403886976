//! Encrypting plaintext in place with the header at the start of the same
//! device (`--encrypt --reduce-device-size R`), as cryptsetup 2.6 does it:
//! the data moves towards the end by S = R/2, and the header takes the
//! first S bytes. Either tool finishes what the other started or was killed in.
//!
//! What cryptsetup 2.6.1 writes (lib/luks2/luks2_reencrypt.c and
//! src/utils_reencrypt.c, read, not copied; checked on images):
//! - N = device − R bytes of plaintext; first the plaintext's first S bytes
//!   are copied to the device's tail (`N+S..N+2S`, the `backup-moved-segment`)
//!   and only then is the header written over the start;
//! - keyslot `reencrypt`: `mode encrypt`, `backward`, area `datashift`
//!   (4096 bytes) with `shift_size` S; `backup-previous` linear at 0 size N,
//!   `backup-final` crypt at S, dynamic;
//! - hotzones are S long from the end (the first one shorter when N is not a
//!   multiple), logical `o..o+L` read at `o` (at the moved copy for o = 0)
//!   and written encrypted at `S+o`: target and source never overlap, so an
//!   interrupted hotzone is repaired by doing it again;
//! - the live segments at boundary p (`p..N` encrypted): `[linear moved, S]
//!   [linear S.., p−S] [crypt S+p.., N−p]`; a hotzone being written is a
//!   crypt segment flagged `in-reencryption` in front of the crypt one, the
//!   linear one before it shrunk by L (or gone);
//! - at the end one crypt segment at S, dynamic, and the moved copy (the
//!   first S bytes of plaintext) is wiped.

use serde_json::{json, Map};

use super::encdec::{add_reencrypt_slot_with, Side};
use super::{Progress as ProgressFn, ReencryptOptions, ReencryptReport};
use crate::blockio::{BlockIo, MemIo};
use crate::error::{Error, Result};
use crate::luks2::json::{Metadata, Segment, SegmentSize};
use crate::luks2::reenc::{self, Direction, Mode, ReencState, Resilience};
use crate::luks2::Header as L2Header;
use crate::pipeline;
use crate::volume::{self, FormatOptions, Header, Volume, LUKS2_DATA_OFFSET, LUKS2_HDR_SIZE};
use crate::Secret;

const CHUNK: usize = 1 << 20;

/// Encrypts the plaintext on `io` in place; the last `reduce` bytes of `io`
/// must be free (the filesystem shrunk by that much first, as for cryptsetup).
pub fn encrypt_shift<IO: BlockIo>(
    io: IO,
    reduce: u64,
    format: &FormatOptions,
    passphrase: &[u8],
    opts: &ReencryptOptions,
    progress: ProgressFn<'_>,
) -> Result<(Volume<IO>, ReencryptReport)> {
    let dev = io.size().map_err(Error::io("size", 0))?;
    let shift = reduce / 2;
    if !reduce.is_multiple_of(8192) || shift < (1 << 20) {
        return Err(Error::InvalidArgument("--reduce-device-size must be a multiple of 8 KiB and at least 2 MiB".into()));
    }
    let plain = dev
        .checked_sub(reduce)
        .filter(|n| *n >= shift)
        .ok_or_else(|| Error::InvalidArgument("the device is too small for that --reduce-device-size".into()))?;
    if !plain.is_multiple_of(format.sector_size as u64) {
        return Err(Error::InvalidArgument("the data left is not a whole number of sectors".into()));
    }
    // The header is built in memory; a device of at least 16 MiB + a sector
    // is what `format` lays one out in.
    let mem = MemIo::new((shift.max(LUKS2_DATA_OFFSET) + 4096) as usize);
    let vk = Secret::random((format.key_size_bits / 8) as usize);
    let mut v = Volume::format(&mem, format, passphrase, Some(Secret::from_slice(vk.expose())))?;
    let Header::Luks2(h) = v.header().clone() else {
        return Err(Error::InvalidArgument("--encrypt makes LUKS2 volumes only".into()));
    };
    let mut next = h.clone();
    next.meta.config.keyslots_size = shift - 2 * LUKS2_HDR_SIZE;
    let (new_digest, _) = h.meta.digest_for_segment(0).ok_or_else(|| Error::header("no digest for segment 0"))?;
    let linear = |offset: u64, size: Option<u64>, flag: Option<&str>| Segment {
        kind: "linear".into(),
        offset,
        size: size.map_or(SegmentSize::Dynamic, SegmentSize::Bytes),
        iv_tweak: None,
        encryption: None,
        sector_size: None,
        flags: flag.map(|f| vec![f.to_string()]),
        extra: Map::new(),
    };
    let mut final_ = h.meta.segments[&0].clone();
    final_.offset = shift;
    final_.flags = Some(vec![reenc::FLAG_FINAL.into()]);
    let mut segs = vec![linear(plain + shift, Some(shift), None)];
    if plain > shift {
        segs.push(linear(shift, Some(plain - shift), None));
    }
    segs.push(linear(plain + shift, Some(shift), Some(reenc::FLAG_MOVED)));
    segs.push(linear(0, Some(plain), Some(reenc::FLAG_PREVIOUS)));
    segs.push(final_);
    let n = segs.len() as u32;
    next.meta.segments = segs.into_iter().enumerate().map(|(i, s)| (i as u32, s)).collect();
    next.meta.digests.get_mut(&new_digest).expect("new digest").segments = vec![(n - 1).to_string()];
    let mut area = Map::new();
    area.insert("shift_size".into(), json!(shift.to_string()));
    add_reencrypt_slot_with(&mut next, Mode::Encrypt, Direction::Backward, opts, ("datashift", Some(4096), area), None, Some(&vk))?;
    v.commit_luks2(next)?;
    drop((v, vk));
    let bytes = mem.to_vec();

    // The first S bytes go to the free tail before anything overwrites them.
    let mut buf = vec![0u8; CHUNK];
    let mut pos = 0;
    while pos < shift {
        let n = (shift - pos).min(CHUNK as u64) as usize;
        io.read_at(&mut buf[..n], pos).map_err(Error::io("read", pos))?;
        volume::write(&io, plain + shift + pos, &buf[..n])?;
        pos += n as u64;
    }
    volume::flush(&io)?;
    // Keyslots before the header that names them.
    let meta_end = 2 * LUKS2_HDR_SIZE;
    volume::write(&io, meta_end, &bytes[meta_end as usize..shift as usize])?;
    volume::flush(&io)?;
    volume::write(&io, 0, &bytes[..meta_end as usize])?;
    volume::flush(&io)?;
    let vol = Volume::open(io)?;
    let data = vol.io();
    let report = {
        let Header::Luks2(h) = vol.header().clone() else { unreachable!("written above") };
        let st = reenc::parse(&h.meta)?.ok_or_else(|| Error::header("re-encryption state not recognised"))?;
        run_all(&vol, h, st, data, passphrase, opts, progress)?
    };
    let vol = Volume::open(vol.into_io())?;
    Ok((vol, report))
}

/// Continues an encryption with a data shift (header and data on one device).
pub(super) fn resume<H: BlockIo, D: BlockIo>(
    vol: Volume<H>,
    h: L2Header,
    st: ReencState,
    data: &D,
    passphrase: &[u8],
    opts: &ReencryptOptions,
    progress: ProgressFn<'_>,
) -> Result<ReencryptReport> {
    run_all(&vol, h, st, data, passphrase, opts, progress)
}

/// The conversion: moved copy, old (linear) and new (crypt) layouts.
struct Shift {
    st: ReencState,
    new: Side,
    plain: u64,
    shift: u64,
    moved: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stand {
    /// `p..plain` is encrypted.
    At(u64),
    /// Hotzone `o..o+l` was being written.
    Hot(u64, u64),
}

impl Shift {
    fn linear(offset: u64, size: u64) -> Segment {
        Segment {
            kind: "linear".into(),
            offset,
            size: SegmentSize::Bytes(size),
            iv_tweak: None,
            encryption: None,
            sector_size: None,
            flags: None,
            extra: Map::new(),
        }
    }

    /// The hotzone cryptsetup takes next from boundary `p`.
    fn next(&self, p: u64) -> (u64, u64) {
        let s = self.shift;
        let rest = p - s;
        if rest > 0 && rest < s {
            (s, rest)
        } else {
            (rest, s)
        }
    }

    fn live(&self, stand: Stand) -> Vec<Segment> {
        let (s, n) = (self.shift, self.plain);
        let mut v = vec![];
        let (p, hot) = match stand {
            Stand::At(0) => return vec![self.new.segment(0, None, false)],
            Stand::At(p) => (p, None),
            Stand::Hot(o, l) => (o, Some(l)),
        };
        if p >= s {
            v.push(Self::linear(self.moved, s));
            if p > s {
                v.push(Self::linear(s, p - s));
            }
        }
        let end = match hot {
            Some(l) => {
                v.push(self.new.segment(p, Some(l), true));
                p + l
            }
            None => p,
        };
        if end < n {
            v.push(self.new.segment(end, Some(n - end), false));
        }
        v
    }

    fn stand(&self, meta: &Metadata) -> Result<Stand> {
        let live: Vec<Segment> = meta.segments.values().filter(|s| !reenc::is_backup(s)).cloned().collect();
        let base = self.new.seg.offset;
        let bytes = |s: &Segment| match s.size {
            SegmentSize::Bytes(b) => Some(b),
            SegmentSize::Dynamic => None,
        };
        let stand = if let Some(hot) = live.iter().find(|s| s.flags.as_ref().is_some_and(|f| f.iter().any(|x| x == reenc::FLAG_HOT))) {
            let o = hot.offset.checked_sub(base).ok_or_else(|| Error::header("hotzone before the data start"))?;
            Stand::Hot(o, bytes(hot).ok_or_else(|| Error::header("hotzone without a length"))?)
        } else {
            match live.last() {
                Some(s) if s.kind == "crypt" && live.len() == 1 => Stand::At(0),
                Some(s) if s.kind == "crypt" => Stand::At(s.offset.checked_sub(base).ok_or_else(|| Error::header("crypt segment before the data"))?),
                Some(_) => Stand::At(self.plain),
                None => return Err(Error::header("no live segment")),
            }
        };
        let ok = match stand {
            Stand::At(p) => p == 0 || (p >= self.shift && p <= self.plain),
            Stand::Hot(o, l) => (o == 0 || o >= self.shift) && l <= self.shift && o.checked_add(l).is_some_and(|e| e <= self.plain),
        };
        if !ok || self.live(stand) != live {
            return Err(Error::header("re-encryption metadata: the live segments are not a layout cryptsetup writes"));
        }
        Ok(stand)
    }

    fn set(&self, h: &mut L2Header, stand: Stand) {
        let live = self.live(stand);
        for d in h.meta.digests.values_mut() {
            d.segments.clear();
        }
        h.meta.segments.clear();
        let d_new = self.st.digest_new.expect("encrypt has a new key");
        let mut n = 0;
        let mut push = |h: &mut L2Header, s: Segment| {
            if s.kind == "crypt" {
                h.meta.digests.get_mut(&d_new).expect("digest").segments.push(n.to_string());
            }
            h.meta.segments.insert(n, s);
            n += 1;
        };
        for s in live {
            push(h, s);
        }
        // Backups after the live ones: previous, final, moved (cryptsetup's order).
        let moved = h_moved(&self.st, self.moved, self.shift);
        push(h, self.st.previous.1.clone());
        push(h, self.st.final_.1.clone());
        push(h, moved);
    }

    /// Where logical `o..` of the plaintext is read.
    fn source(&self, o: u64) -> u64 {
        if o < self.shift {
            self.moved + o
        } else {
            o
        }
    }
}

fn h_moved(_st: &ReencState, offset: u64, size: u64) -> Segment {
    Segment { flags: Some(vec![reenc::FLAG_MOVED.into()]), ..Shift::linear(offset, size) }
}

fn run_all<H: BlockIo, D: BlockIo>(
    vol: &Volume<H>,
    h: L2Header,
    st: ReencState,
    data: &D,
    passphrase: &[u8],
    opts: &ReencryptOptions,
    progress: ProgressFn<'_>,
) -> Result<ReencryptReport> {
    let Resilience::Datashift { shift, .. } = st.resilience else { unreachable!("checked by the caller") };
    let moved_seg = h
        .meta
        .segments
        .values()
        .find(|s| s.flags.as_ref().is_some_and(|f| f.iter().any(|x| x == reenc::FLAG_MOVED)))
        .cloned()
        .ok_or_else(|| Error::Unsupported("a data shift without a moved first segment".into()))?;
    let (prev, fin) = (st.previous.1.clone(), st.final_.1.clone());
    let plain = match prev.size {
        SegmentSize::Bytes(n) => n,
        SegmentSize::Dynamic => return Err(Error::Unsupported("a data shift over a dynamic plaintext".into())),
    };
    if prev.kind != "linear"
        || prev.offset != 0
        || fin.offset != shift
        || moved_seg.kind != "linear"
        || moved_seg.size != SegmentSize::Bytes(shift)
        || moved_seg.offset != plain + shift
        || plain < shift
    {
        return Err(Error::Unsupported("a data shift laid out otherwise than cryptsetup 2.6 does".into()));
    }
    let dev = data.size().map_err(Error::io("size", 0))?;
    if dev < plain + 2 * shift {
        return Err(Error::header("the device is smaller than the data shift needs"));
    }
    let digest = st.digest_new.expect("checked by parse");
    let (slot, vk) = super::open_by_digest(vol, &h, digest, passphrase)?;
    let check = reenc::verification_data(&h.meta, &st, None, Some(&vk))?;
    if !volume::verify_digest(&h.meta.digests[&st.digest_reenc], &check)? {
        return Err(Error::header("re-encryption metadata does not match its digest (changed since it was written)"));
    }
    let new = Side::new(&fin, Some(&vk))?;
    drop(vk);
    let sector = new.cipher.as_ref().map_or(512, |c| c.1);
    if !shift.is_multiple_of(sector) || !plain.is_multiple_of(sector) {
        return Err(Error::Unsupported("a data shift that is not a whole number of sectors".into()));
    }
    let plan = Shift { st, new, plain, shift, moved: plain + shift };
    let mut cur = h;
    let hdr = vol.io();
    let mut p = match plan.stand(&cur.meta)? {
        Stand::At(p) => p,
        // The source of a hotzone is never overwritten: do it again.
        Stand::Hot(o, l) => o + l,
    };
    let pipe = pipeline::Options::new(opts.threads.max(1), CHUNK);
    progress(plan.plain - p, plan.plain);
    while p > 0 {
        let (o, l) = plan.next(p);
        plan.set(&mut cur, Stand::Hot(o, l));
        volume::write_luks2(hdr, &mut cur)?;
        let from = plan.source(o);
        let to = fin.offset + o;
        let mut written = 0;
        pipeline::run(
            l,
            pipe,
            |pos, buf| {
                data.read_at(buf, from + pos).map_err(Error::io("read", from + pos))?;
                let (c, ss) = plan.new.cipher.as_ref().expect("crypt");
                c.encrypt(buf, *ss as usize, plan.new.iv(o + pos))?;
                Ok(())
            },
            |pos, buf, ()| {
                volume::write(data, to + pos, buf)?;
                written += buf.len() as u64;
                progress(plan.plain - (o + l) + written, plan.plain);
                Ok(())
            },
        )?;
        volume::flush(data)?;
        p = o;
        // Not after the last hotzone: the final commit follows directly.
        if p > 0 {
            plan.set(&mut cur, Stand::At(p));
            volume::write_luks2(hdr, &mut cur)?;
        }
    }
    // Final commit, then the plaintext copy at the tail and the area wiped.
    let st = &plan.st;
    cur.meta.keyslots.remove(&st.slot);
    cur.meta.digests.remove(&st.digest_reenc);
    let mut seg = fin.clone();
    seg.flags = None;
    cur.meta.segments = [(0, seg)].into();
    cur.meta.digests.get_mut(&digest).expect("new digest").segments = vec!["0".into()];
    if let Some(r) = cur.meta.config.requirements.as_mut() {
        r.mandatory.retain(|m| reenc::requirement_version(m).is_none());
        if r.mandatory.is_empty() && r.extra.is_empty() {
            cur.meta.config.requirements = None;
        }
    }
    volume::write_luks2(hdr, &mut cur)?;
    volume::wipe_area(hdr, st.area.0, st.area.1)?;
    volume::wipe_area(data, plan.moved, plan.shift)?;
    Ok(ReencryptReport { keyslot: slot, destroyed_keyslots: vec![], bytes: plan.plain })
}
