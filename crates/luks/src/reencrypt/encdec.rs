//! Encrypting plaintext in place (`--encrypt`) and removing encryption
//! (`--decrypt`) with the LUKS2 header on a device of its own (`--header`),
//! in cryptsetup 2.6's `online-reencrypt-v2` format, so either tool finishes
//! what the other started or was killed in.
//!
//! What cryptsetup 2.6.1 writes (lib/luks2/luks2_reencrypt.c, read, not
//! copied, and checked against `cryptsetup reencrypt --init-only`):
//! - encrypt: `mode` `encrypt`, `forward`; `backup-previous` is a `linear`
//!   segment, `backup-final` the `crypt` one, and the live segments are
//!   `[crypt 0..p] [linear p..]`;
//! - decrypt (only with a detached header in 2.6): `mode` `decrypt`,
//!   `backward`; the live segments are `[crypt 0..p] [linear p..]` too, but
//!   `p` falls from the end to 0, and the hotzone is the part just below `p`;
//! - a hotzone being written is one more segment flagged `in-reencryption`
//!   of the new kind; every live `crypt` segment is bound to the one key,
//!   and only the checksum and journal resiliences commit hotzones at all;
//! - at the end the header keeps one segment: encrypt, the `crypt` one with
//!   its keyslot; decrypt, the `linear` one with no keyslot and no digest.
//!
//! The hotzone steps are those of [`super::cryptsetup`]: protect, flush,
//! commit "hot", convert, flush, commit "after". The header and its
//! resilience area live on the header device, the data on the data device;
//! they are flushed in that order.

use serde_json::{json, Map};

use super::cryptsetup::{add_digest, block_digest, checksums, hotzone_len, largest_gap, segment_view};
use super::{Progress as ProgressFn, ReencryptOptions, ReencryptReport};
use crate::blockio::{BlockIo, MemIo};
use crate::codec::round_up;
use crate::crypto::{CipherSpec, HashAlg, SectorCipher};
use crate::error::{Error, Result};
use crate::luks2::json::{self as lj, Segment, SegmentSize};
use crate::luks2::reenc::{self, Direction, Mode, ReencState, Resilience};
use crate::luks2::Header as L2Header;
use crate::pipeline;
use crate::volume::{self, FormatOptions, Header, Volume, LUKS2_DATA_OFFSET};
use crate::Secret;

use super::cryptsetup::ResilienceMode;

/// Bytes per pipeline chunk (as in [`super::cryptsetup`]).
const CHUNK: u64 = 1 << 20;
const CHECKSUM_BLOCK: u32 = 4096;

/// What a header's unfinished conversion is, if it is one this module runs.
pub fn pending_mode(h: &Header) -> Result<Option<Mode>> {
    let Header::Luks2(h) = h else { return Ok(None) };
    Ok(reenc::parse(&h.meta)?.map(|st| st.mode).filter(|m| *m != Mode::Reencrypt))
}

/// The plaintext of a volume whose header is on `vol`'s device and whose data
/// is on `data` (cryptsetup's `--header`).
pub fn decrypted_detached<H: BlockIo, D: BlockIo>(vol: &Volume<H>, data: D, vk: &Secret) -> Result<crate::Decrypted<D>> {
    crate::Decrypted::new(data, &vol.data_segment()?, vk)
}

/// Writes a new LUKS2 header for plaintext `data` to `header` (a separate
/// device or file, at least 16 MiB), with the data starting at offset 0 of
/// `data`, then encrypts the data in place.
pub fn encrypt<H: BlockIo, D: BlockIo>(
    header: H,
    data: &D,
    format: &FormatOptions,
    passphrase: &[u8],
    opts: &ReencryptOptions,
    progress: ProgressFn<'_>,
) -> Result<ReencryptReport> {
    if header.size().map_err(Error::io("size", 0))? < LUKS2_DATA_OFFSET {
        return Err(Error::InvalidArgument("the header device is smaller than 16 MiB".into()));
    }
    // Built in memory and written in one go: until the header device holds
    // it, nothing on the data device has changed.
    let mem = MemIo::new((LUKS2_DATA_OFFSET + 4096) as usize);
    let vk = Secret::random((format.key_size_bits / 8) as usize);
    let mut v = Volume::format(&mem, format, passphrase, Some(Secret::from_slice(vk.expose())))?;
    let Header::Luks2(h) = v.header().clone() else {
        return Err(Error::InvalidArgument("--encrypt makes LUKS2 volumes only".into()));
    };
    let mut next = h.clone();
    let (new_digest, _) = h.meta.digest_for_segment(0).ok_or_else(|| Error::header("no digest for segment 0"))?;
    let mut final_ = h.meta.segments[&0].clone();
    final_.offset = 0;
    final_.flags = Some(vec![reenc::FLAG_FINAL.into()]);
    let linear = Segment {
        kind: "linear".into(),
        offset: 0,
        size: SegmentSize::Dynamic,
        iv_tweak: None,
        encryption: None,
        sector_size: None,
        flags: None,
        extra: Map::new(),
    };
    let previous = Segment { flags: Some(vec![reenc::FLAG_PREVIOUS.into()]), ..linear.clone() };
    next.meta.segments = [(0, linear), (1, previous), (2, final_)].into();
    next.meta.digests.get_mut(&new_digest).expect("new digest").segments = vec!["2".into()];
    add_reencrypt_slot(&mut next, Mode::Encrypt, Direction::Forward, opts, None, Some(&vk))?;
    v.commit_luks2(next)?;
    drop(v);
    let bytes = mem.to_vec();
    volume::write(&header, 0, &bytes[..LUKS2_DATA_OFFSET as usize])?;
    volume::flush(&header)?;
    let vol = Volume::open(header)?;
    resume(vol, data, passphrase, opts, progress)
}

/// Starts removing the encryption of the volume whose header is `vol` and
/// whose data is on `data`, then runs it to the end: the data device then
/// holds the plaintext, the header no keyslot.
pub fn decrypt<H: BlockIo, D: BlockIo>(
    mut vol: Volume<H>,
    data: &D,
    passphrase: &[u8],
    opts: &ReencryptOptions,
    progress: ProgressFn<'_>,
) -> Result<ReencryptReport> {
    let Header::Luks2(h) = vol.header().clone() else {
        return Err(Error::Unsupported("--decrypt of LUKS1 (cryptsetup decrypts LUKS1 only with its legacy tool)".into()));
    };
    h.check_requirements()?;
    if h.meta.segments.len() != 1 {
        return Err(Error::Unsupported("decryption of a header with more than one segment".into()));
    }
    let (_, vk) = vol.unlock(passphrase, None)?;
    let (old_digest, _) = h.meta.digest_for_segment(0).ok_or_else(|| Error::header("no digest for segment 0"))?;
    let seg0 = h.meta.segments[&0].clone();
    if seg0.kind != "crypt" || seg0.size != SegmentSize::Dynamic {
        return Err(Error::Unsupported("decryption of a segment that is not one dynamic crypt segment".into()));
    }
    let mut next = h.clone();
    let previous = Segment { flags: Some(vec![reenc::FLAG_PREVIOUS.into()]), ..seg0.clone() };
    let final_ = Segment {
        kind: "linear".into(),
        offset: seg0.offset,
        size: SegmentSize::Dynamic,
        iv_tweak: None,
        encryption: None,
        sector_size: None,
        flags: Some(vec![reenc::FLAG_FINAL.into()]),
        extra: Map::new(),
    };
    next.meta.segments.insert(1, previous);
    next.meta.segments.insert(2, final_);
    next.meta.digests.get_mut(&old_digest).expect("old digest").segments = vec!["0".into(), "1".into()];
    add_reencrypt_slot(&mut next, Mode::Decrypt, Direction::Backward, opts, Some(&vk), None)?;
    drop(vk);
    vol.commit_luks2(next)?;
    resume(vol, data, passphrase, opts, progress)
}

/// Adds the `reencrypt` keyslot, the requirement and the digest binding the
/// keys to the metadata, as cryptsetup's init writes them.
fn add_reencrypt_slot(
    next: &mut L2Header,
    mode: Mode,
    direction: Direction,
    opts: &ReencryptOptions,
    old: Option<&Secret>,
    new: Option<&Secret>,
) -> Result<()> {
    let sector = next.meta.segments.values().filter_map(|s| s.sector_size).max().unwrap_or(512);
    let mut area_extra = Map::new();
    if opts.resilience == ResilienceMode::Checksum {
        area_extra.insert("hash".into(), json!(HashAlg::Sha256.name()));
        area_extra.insert("sector_size".into(), json!(CHECKSUM_BLOCK.max(sector)));
    }
    let kind = match opts.resilience {
        ResilienceMode::Checksum => "checksum",
        ResilienceMode::Journal => "journal",
        ResilienceMode::None => "none",
    };
    add_reencrypt_slot_with(next, mode, direction, opts, (kind, None, area_extra), old, new)
}

/// [`add_reencrypt_slot`] with the area given: its type, its size (`None`:
/// the largest free gap, else from that gap's start) and its parameters.
pub(super) fn add_reencrypt_slot_with(
    next: &mut L2Header,
    mode: Mode,
    direction: Direction,
    opts: &ReencryptOptions,
    area: (&str, Option<u64>, Map<String, serde_json::Value>),
    old: Option<&Secret>,
    new: Option<&Secret>,
) -> Result<()> {
    let (kind, size, area_extra) = area;
    let slot = next.free_keyslot().ok_or_else(|| Error::InvalidArgument("no free keyslot for the re-encryption state".into()))?;
    let (area_off, gap) = largest_gap(next).ok_or_else(|| Error::InvalidArgument("no room left in the keyslots area".into()))?;
    let area_size = size.unwrap_or(gap).min(gap);
    let mut ks_extra = Map::new();
    ks_extra.insert("mode".into(), json!(mode.name()));
    ks_extra.insert("direction".into(), json!(if direction == Direction::Forward { "forward" } else { "backward" }));
    next.meta.keyslots.insert(
        slot,
        lj::Keyslot {
            kind: reenc::KEYSLOT_KIND.into(),
            key_size: 1,
            area: lj::Area {
                kind: kind.into(),
                offset: area_off,
                size: area_size,
                encryption: None,
                key_size: None,
                extra: area_extra,
            },
            kdf: None,
            af: None,
            priority: Some(0),
            extra: ks_extra,
        },
    );
    next.meta.config.requirements.get_or_insert_with(Default::default).mandatory.push(reenc::REQUIREMENT.into());
    // The digest does not cover itself: a placeholder lets the state parse
    // before it is computed (as in `cryptsetup::begin`).
    let hash = opts.pbkdf.hash;
    let mut probe = next.clone();
    let minimal = ReencryptOptions { pbkdf: crate::PbkdfOptions::minimal(), ..opts.clone() };
    let d = add_digest(&mut probe, &Secret::new(vec![0; 1]), &minimal, hash)?;
    probe.meta.digests.get_mut(&d).expect("placeholder").keyslots = vec![slot.to_string()];
    let st = reenc::parse(&probe.meta)?.ok_or_else(|| Error::header("re-encryption state not recognised"))?;
    let data = reenc::verification_data(&next.meta, &st, old, new)?;
    let reenc_digest = add_digest(next, &data, opts, hash)?;
    next.meta.digests.get_mut(&reenc_digest).expect("reenc digest").keyslots = vec![slot.to_string()];
    Ok(())
}

/// One side of the conversion: the data as it was or as it will be.
pub(super) struct Side {
    pub(super) seg: Segment,
    /// Keyed cipher and sector size for `crypt`; `None` for `linear`.
    pub(super) cipher: Option<(SectorCipher, u64)>,
}

impl Side {
    pub(super) fn new(seg: &Segment, vk: Option<&Secret>) -> Result<Side> {
        let cipher = match seg.kind.as_str() {
            "linear" => None,
            "crypt" => {
                let view = segment_view(seg)?;
                let vk = vk.ok_or_else(|| Error::header("crypt segment without its key"))?;
                let spec = CipherSpec::parse(&view.cipher)?;
                Some((SectorCipher::new(&spec, vk.expose())?, view.sector_size as u64))
            }
            k => return Err(Error::Unsupported(format!("{k} segment in an encryption or decryption"))),
        };
        Ok(Side { seg: seg.clone(), cipher })
    }

    /// The segment of this side covering `off..off+size` (`None` = to the end).
    pub(super) fn segment(&self, off: u64, size: Option<u64>, hot: bool) -> Segment {
        let mut s = self.seg.clone();
        s.offset += off;
        s.size = size.map_or(SegmentSize::Dynamic, SegmentSize::Bytes);
        if s.kind == "crypt" {
            s.iv_tweak = Some(self.seg.iv_tweak.unwrap_or(0) + off / 512);
        }
        s.flags = hot.then(|| vec![reenc::FLAG_HOT.to_string()]);
        s
    }

    pub(super) fn iv(&self, pos: u64) -> u64 {
        self.seg.iv_tweak.unwrap_or(0) + pos / 512
    }
}

/// The conversion of one volume: old and new sides, direction, length.
struct Plan {
    st: ReencState,
    old: Side,
    new: Side,
    total: u64,
    forward: bool,
}

/// Where it stands: `done` is the boundary (forward: `0..done` is new;
/// backward: `done..total` is new), or hotzone `offset..offset+len` was
/// being written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stand {
    At(u64),
    Hot(u64, u64),
}

impl Plan {
    /// The live segments cryptsetup writes for `stand`, in data order.
    fn live(&self, stand: Stand) -> Vec<Segment> {
        let n = self.total;
        let (first, last) = if self.forward { (&self.new, &self.old) } else { (&self.old, &self.new) };
        let mut v = vec![];
        match stand {
            Stand::At(0) => v.push(last.segment(0, None, false)),
            Stand::At(p) if p >= n => v.push(first.segment(0, None, false)),
            Stand::At(p) => {
                v.push(first.segment(0, Some(p), false));
                v.push(last.segment(p, None, false));
            }
            Stand::Hot(o, l) => {
                if o > 0 {
                    v.push(first.segment(0, Some(o), false));
                }
                v.push(self.new.segment(o, Some(l), true));
                if o + l < n {
                    v.push(last.segment(o + l, None, false));
                }
            }
        }
        v
    }

    /// Reads where the live segments say it stands, and checks they are
    /// exactly what cryptsetup would have written there.
    fn stand(&self, meta: &lj::Metadata) -> Result<Stand> {
        let live: Vec<Segment> = meta.segments.values().filter(|s| !reenc::is_backup(s)).cloned().collect();
        for (i, n) in meta.segments.iter().filter(|(_, s)| !reenc::is_backup(s)).map(|(n, _)| *n).enumerate() {
            if n != i as u32 {
                return Err(Error::header("re-encryption metadata: live segments are not numbered 0, 1, ..."));
            }
        }
        let base = self.new.seg.offset;
        let size = |s: &Segment| match s.size {
            SegmentSize::Bytes(b) => Some(b),
            SegmentSize::Dynamic => None,
        };
        let stand = if let Some(hot) = live.iter().find(|s| s.flags.as_ref().is_some_and(|f| f.iter().any(|x| x == reenc::FLAG_HOT))) {
            let o = hot.offset.checked_sub(base).ok_or_else(|| Error::header("hotzone before the data start"))?;
            let l = size(hot).filter(|l| *l > 0).ok_or_else(|| Error::header("hotzone without a length"))?;
            Stand::Hot(o, l)
        } else {
            match &live[..] {
                // One segment: not started, or (cryptsetup commits this after
                // its last hotzone) all done; its kind tells which.
                [s] => {
                    let is_new = s.kind == self.new.seg.kind;
                    Stand::At(if is_new == self.forward { self.total } else { 0 })
                }
                [s, _] => Stand::At(size(s).ok_or_else(|| Error::header("a dynamic segment before the last one"))?),
                _ => return Err(Error::header(format!("re-encryption metadata: {} live segments", live.len()))),
            }
        };
        let in_range = match stand {
            Stand::At(p) => p <= self.total,
            Stand::Hot(o, l) => o.checked_add(l).is_some_and(|e| e <= self.total),
        };
        if !in_range || self.live(stand) != live {
            return Err(Error::header("re-encryption metadata: the live segments are not a layout cryptsetup writes"));
        }
        Ok(stand)
    }

    /// Sets the live segments for `stand`, the backups after them, and binds
    /// each `crypt` segment to its key, as cryptsetup does.
    fn set(&self, h: &mut L2Header, stand: Stand) {
        let live = self.live(stand);
        for d in h.meta.digests.values_mut() {
            d.segments.clear();
        }
        h.meta.segments.clear();
        let key = if self.st.mode == Mode::Encrypt { self.st.digest_new } else { self.st.digest_old };
        let bind = |h: &mut L2Header, d: Option<u32>, n: u32| {
            if let Some(d) = d {
                h.meta.digests.get_mut(&d).expect("digest exists").segments.push(n.to_string());
            }
        };
        let n = live.len() as u32;
        for (i, s) in live.into_iter().enumerate() {
            let crypt = s.kind == "crypt";
            h.meta.segments.insert(i as u32, s);
            if crypt {
                bind(h, key, i as u32);
            }
        }
        h.meta.segments.insert(n, self.st.previous.1.clone());
        bind(h, self.st.digest_old, n);
        h.meta.segments.insert(n + 1, self.st.final_.1.clone());
        bind(h, self.st.digest_new, n + 1);
    }

    /// Turns old bytes `pos..` (as stored) in `buf` into new ones.
    fn convert(&self, buf: &mut [u8], pos: u64) -> Result<()> {
        if let Some((c, ss)) = &self.old.cipher {
            c.decrypt(buf, *ss as usize, self.old.iv(pos))?;
        }
        if let Some((c, ss)) = &self.new.cipher {
            c.encrypt(buf, *ss as usize, self.new.iv(pos))?;
        }
        Ok(())
    }

    fn sector(&self) -> u64 {
        [&self.old, &self.new].iter().filter_map(|s| s.cipher.as_ref().map(|c| c.1)).max().unwrap_or(512)
    }
}

/// Continues (or finishes) an encryption or decryption recorded in
/// cryptsetup's format; `vol` is the header, `data` the data device (the
/// same device when the header is not detached).
pub fn resume<H: BlockIo, D: BlockIo>(
    vol: Volume<H>,
    data: &D,
    passphrase: &[u8],
    opts: &ReencryptOptions,
    progress: ProgressFn<'_>,
) -> Result<ReencryptReport> {
    let Header::Luks2(h) = vol.header().clone() else {
        return Err(Error::InvalidArgument("no re-encryption in progress".into()));
    };
    let st = reenc::parse(&h.meta)?.ok_or_else(|| Error::InvalidArgument("no re-encryption in progress".into()))?;
    if matches!(st.resilience, Resilience::Datashift { .. }) {
        if st.mode != Mode::Encrypt || st.direction != Direction::Backward {
            return Err(Error::Unsupported("decryption with a data shift".into()));
        }
        return super::datashift::resume(vol, h, st, data, passphrase, opts, progress);
    }
    let forward = match (st.mode, st.direction) {
        (Mode::Encrypt, Direction::Forward) => true,
        (Mode::Decrypt, Direction::Backward) => false,
        (Mode::Reencrypt, _) => return Err(Error::InvalidArgument("a re-encryption, not an encryption or decryption".into())),
        (m, _) => return Err(Error::Unsupported(format!("{} in this direction", m.name()))),
    };
    let (prev, fin) = (st.previous.1.clone(), st.final_.1.clone());
    if prev.offset != fin.offset || prev.size != SegmentSize::Dynamic || fin.size != SegmentSize::Dynamic {
        return Err(Error::Unsupported("an encryption or decryption that moves the data or has a fixed size".into()));
    }
    let digest = if st.mode == Mode::Encrypt { st.digest_new } else { st.digest_old }.expect("checked by parse");
    if decrypted_but_not_finished(&h.meta, &st, &fin, digest) {
        // cryptsetup killed in the last step of a decryption: it had
        // destroyed the old keyslots, so no passphrase opens the header any
        // more (cryptsetup itself cannot go on), but every byte is plaintext
        // and what is left is to drop the re-encryption's metadata.
        let dev = data.size().map_err(Error::io("size", 0))?;
        let total = dev.saturating_sub(fin.offset);
        return finish(vol, h.clone(), &st, total, None);
    }
    let (slot, vk) = super::open_by_digest(&vol, &h, digest, passphrase)?;
    let (old_vk, new_vk) = if st.mode == Mode::Encrypt { (None, Some(&vk)) } else { (Some(&vk), None) };
    let check = reenc::verification_data(&h.meta, &st, old_vk, new_vk)?;
    if !volume::verify_digest(&h.meta.digests[&st.digest_reenc], &check)? {
        return Err(Error::header("re-encryption metadata does not match its digest (changed since it was written)"));
    }
    drop(check);
    let old = Side::new(&prev, old_vk)?;
    let new = Side::new(&fin, new_vk)?;
    drop(vk);
    let dev = data.size().map_err(Error::io("size", 0))?;
    let mut plan = Plan { st, old, new, total: 0, forward };
    let sector = plan.sector();
    let total = dev.checked_sub(fin.offset).ok_or_else(|| Error::header("data segment starts past the device end"))?;
    plan.total = total - total % sector;
    if plan.total == 0 {
        return Err(Error::InvalidArgument("no data to convert".into()));
    }
    let stand = plan.stand(&h.meta)?;
    let block = match &plan.st.resilience {
        Resilience::Checksum { block, .. } => *block as u64,
        _ => sector,
    };
    if block % sector != 0 {
        return Err(Error::Unsupported("checksum block smaller than the encryption sector".into()));
    }
    let mut cur = h.clone();
    let hdr = vol.io();
    let at = match stand {
        Stand::At(p) => p,
        Stand::Hot(o, l) => {
            recover(&plan, hdr, data, o, l)?;
            volume::flush(data)?;
            let p = if forward { o + l } else { o };
            if !finished(&plan, p) {
                plan.set(&mut cur, Stand::At(p));
                volume::write_luks2(hdr, &mut cur)?;
            }
            p
        }
    };
    if at % sector != 0 {
        return Err(Error::header("re-encryption progress is not sector-aligned"));
    }
    let hotzone = hotzone_len(&plan.st, opts.hotzone, block)?;
    let done_bytes = |p: u64| if forward { p } else { plan.total - p };
    progress(done_bytes(at), plan.total);
    let cur = run(&plan, hdr, data, cur, at, hotzone, opts.threads.max(1), &|p| progress(done_bytes(p), plan.total))?;
    finish(vol, cur, &plan.st, plan.total, Some(slot))
}

/// A decryption whose data is all plaintext (one live segment, the final
/// linear one) and whose old keyslots are gone: cryptsetup's state between
/// destroying them and writing its final header.
fn decrypted_but_not_finished(meta: &lj::Metadata, st: &ReencState, fin: &Segment, old_digest: u32) -> bool {
    let live: Vec<&Segment> = meta.segments.values().filter(|s| !reenc::is_backup(s)).collect();
    let all_plain = matches!(&live[..], [s] if s.kind == fin.kind && s.offset == fin.offset && s.size == SegmentSize::Dynamic);
    let no_old_keyslot = meta.digests.get(&old_digest).is_none_or(|d| d.keyslots.iter().all(|k| k.parse().is_ok_and(|n: u32| !meta.keyslots.contains_key(&n))));
    st.mode == Mode::Decrypt && all_plain && no_old_keyslot
}

fn finished(plan: &Plan, p: u64) -> bool {
    if plan.forward {
        p >= plan.total
    } else {
        p == 0
    }
}

/// The hotzone loop, from boundary `p` to the end in the plan's direction.
#[allow(clippy::too_many_arguments)]
fn run<H: BlockIo, D: BlockIo>(
    plan: &Plan,
    hdr: &H,
    data: &D,
    mut cur: L2Header,
    mut p: u64,
    hotzone: u64,
    threads: usize,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<L2Header> {
    let st = &plan.st;
    let base = plan.new.seg.offset;
    let protected = matches!(st.resilience, Resilience::Checksum { .. } | Resilience::Journal);
    let hotzone = if protected { hotzone } else { plan.total };
    let block = match &st.resilience {
        Resilience::Checksum { block, .. } => *block as u64,
        _ => 1,
    };
    let pipe = pipeline::Options::new(threads, round_up(CHUNK, block) as usize);
    let read = |at: u64, buf: &mut [u8]| data.read_at(buf, at).map_err(Error::io("read", at));
    // Backward, the hotzone at offset 0 is made at least as long as the one
    // cryptsetup 2.6 computes for itself: its `repair` of a last hotzone
    // counts progress with its own length, and a shorter hotzone would leave
    // a header that `--resume-only` then converts again (seen with 2.6.1).
    let last = if protected { cryptsetup_hotzone(st)?.min(plan.total) } else { plan.total };
    while !finished(plan, p) {
        let (o, l) = if plan.forward {
            (p, hotzone.min(plan.total - p))
        } else {
            let l = if p <= last { p } else { hotzone.min(p - last) };
            (p - l, l)
        };
        match &st.resilience {
            Resilience::Checksum { hash, block } => {
                let sums = checksums(&data, base + o, l, HashAlg::from_name(hash)?, *block as usize, pipe)?;
                volume::write(hdr, st.area.0, &sums)?;
            }
            Resilience::Journal => pipeline::run(
                l,
                pipe,
                |pos, buf| read(base + o + pos, buf),
                |pos, buf, ()| volume::write(hdr, st.area.0 + pos, buf),
            )?,
            _ => {}
        }
        if protected {
            volume::flush(hdr)?;
            plan.set(&mut cur, Stand::Hot(o, l));
            volume::write_luks2(hdr, &mut cur)?;
        }
        let mut written = 0;
        pipeline::run(
            l,
            pipe,
            |pos, buf| {
                read(base + o + pos, buf)?;
                plan.convert(buf, o + pos)
            },
            |pos, buf, ()| {
                volume::write(data, base + o + pos, buf)?;
                written += buf.len() as u64;
                progress(if plan.forward { o + written } else { p - written });
                Ok(())
            },
        )?;
        p = if plan.forward { o + l } else { o };
        // Not after the last hotzone: one live segment of the new kind is
        // what cryptsetup reads as "all done", and the final commit follows.
        if protected {
            volume::flush(data)?;
            if !finished(plan, p) {
                plan.set(&mut cur, Stand::At(p));
                volume::write_luks2(hdr, &mut cur)?;
            }
        }
    }
    Ok(cur)
}

/// The hotzone length cryptsetup 2.6 derives from the resilience area when
/// no `--hotzone-size` is given (lib/luks2/luks2_reencrypt.c,
/// reencrypt_length), before its memory cap: never less than cryptsetup's.
fn cryptsetup_hotzone(st: &ReencState) -> Result<u64> {
    const MAX_HOTZONE: u64 = 1 << 30;
    let len = match &st.resilience {
        Resilience::Checksum { hash, block } => st.area.1 / HashAlg::from_name(hash)?.digest_len() as u64 * *block as u64,
        _ => st.area.1,
    };
    Ok(len.min(MAX_HOTZONE))
}

/// Brings the interrupted hotzone `o..o+l` to the new side.
fn recover<H: BlockIo, D: BlockIo>(plan: &Plan, hdr: &H, data: &D, o: u64, l: u64) -> Result<()> {
    let st = &plan.st;
    let at = plan.new.seg.offset + o;
    match &st.resilience {
        Resilience::Checksum { hash, block } => {
            let hash = HashAlg::from_name(hash)?;
            let (block, hl) = (*block as usize, hash.digest_len());
            let count = (l as usize).div_ceil(block);
            if (count * hl) as u64 > st.area.1 {
                return Err(Error::header("hotzone does not fit its checksums"));
            }
            let sums = volume::read(hdr, st.area.0, count * hl)?;
            let mut buf = Secret::zeroed(block);
            let mut digest = Vec::with_capacity(hl);
            for (i, sum) in sums.chunks(hl).enumerate() {
                let pos = (i * block) as u64;
                let b = &mut buf.as_mut()[..block.min((l - pos) as usize)];
                data.read_at(b, at + pos).map_err(Error::io("read", at + pos))?;
                // A block whose hash is still that of its old bytes was not
                // rewritten yet; every other block already is new.
                digest.clear();
                block_digest(hash, b, &mut digest)?;
                if crate::crypto::ct_eq(&digest, sum) {
                    plan.convert(b, o + pos)?;
                    volume::write(data, at + pos, b)?;
                }
            }
        }
        Resilience::Journal => {
            if l > st.area.1 {
                return Err(Error::header("hotzone larger than its journal"));
            }
            let mut buf = Secret::zeroed(l as usize);
            hdr.read_at(buf.as_mut(), st.area.0).map_err(Error::io("read", st.area.0))?;
            plan.convert(buf.as_mut(), o)?;
            volume::write(data, at, buf.expose())?;
        }
        _ => return Err(Error::header("an interrupted hotzone without resilience data cannot be repaired")),
    }
    Ok(())
}

/// All data is converted: one commit leaves the final segment alone and
/// drops the re-encryption state (decrypt: the keyslots and digest too),
/// then the areas no longer referenced are wiped.
/// Writes the header of the finished conversion and wipes what it no longer
/// needs; `slot`: the keyslot that was opened (none if none was needed).
fn finish<H: BlockIo>(vol: Volume<H>, mut cur: L2Header, st: &ReencState, total: u64, slot: Option<u32>) -> Result<ReencryptReport> {
    let mut wipe = vec![st.area];
    let mut destroyed = vec![];
    if let Some(d_old) = st.digest_old {
        destroyed = cur.meta.digests[&d_old].keyslots.iter().filter_map(|k| k.parse().ok()).collect();
        for s in &destroyed {
            if let Some(ks) = cur.meta.keyslots.remove(s) {
                wipe.push((ks.area.offset, ks.area.size));
            }
        }
        cur.meta.digests.remove(&d_old);
    }
    cur.meta.keyslots.remove(&st.slot);
    cur.meta.digests.remove(&st.digest_reenc);
    let mut seg = st.final_.1.clone();
    seg.flags = None;
    cur.meta.segments = [(0, seg)].into();
    if let Some(d_new) = st.digest_new {
        cur.meta.digests.get_mut(&d_new).expect("new digest").segments = vec!["0".into()];
    }
    if let Some(r) = cur.meta.config.requirements.as_mut() {
        r.mandatory.retain(|m| reenc::requirement_version(m).is_none());
        if r.mandatory.is_empty() && r.extra.is_empty() {
            cur.meta.config.requirements = None;
        }
    }
    volume::write_luks2(vol.io(), &mut cur)?;
    for (off, len) in wipe {
        volume::wipe_area(vol.io(), off, len)?;
    }
    Ok(ReencryptReport {
        keyslot: slot.unwrap_or(st.slot),
        destroyed_keyslots: destroyed,
        bytes: total,
    })
}
