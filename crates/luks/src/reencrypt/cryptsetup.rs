//! Re-encryption in cryptsetup 2.6's own on-disk format
//! ([`crate::luks2::reenc`]), so that either tool can finish what the other
//! started or was killed in.
//!
//! Per hotzone, as cryptsetup does it offline (docs/reencrypt.md):
//! 1. read the hotzone's old ciphertext;
//! 2. checksum: write a hash of each checksum block of it into the
//!    reencrypt keyslot's area; journal: write the ciphertext itself there;
//!    flush; commit the header with the hotzone segment flagged
//!    `in-reencryption` (none: neither, nothing is committed);
//! 3. convert and write the hotzone; flush;
//! 4. commit the header with the hotzone joined to the new segment.
//!
//! A crash between 2 and 4 leaves the `in-reencryption` segment; resume
//! repairs it from the checksums (blocks whose hash still matches are old) or
//! the journal, then carries on.

use serde_json::{json, Map};

use super::{Progress as ProgressFn, ReencryptOptions, ReencryptReport};
use crate::blockio::BlockIo;
use crate::codec::round_up;
use crate::crypto::{kdf, CipherSpec, HashAlg, KdfParams};
use crate::data::Decrypted;
use crate::error::{Error, Result};
use crate::luks2::json::{self as lj, Segment, SegmentSize};
use crate::luks2::reenc::{self, Mode, Progress, ReencState, Resilience};
use crate::luks2::{self, Header as L2Header};
use crate::pipeline;
use crate::volume::{self, DataSegment, Header, Volume};
use crate::Secret;

/// Which resilience a new re-encryption uses (cryptsetup's offline choices).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ResilienceMode {
    /// Hash of every checksum block of the old ciphertext (cryptsetup's default).
    #[default]
    Checksum,
    /// A copy of the hotzone's old ciphertext.
    Journal,
    /// No protection: a crash mid-way loses data (as with cryptsetup).
    None,
}

impl ResilienceMode {
    /// Parses cryptsetup's `--resilience` words.
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "checksum" => Ok(ResilienceMode::Checksum),
            "journal" => Ok(ResilienceMode::Journal),
            "none" => Ok(ResilienceMode::None),
            _ => Err(Error::InvalidArgument(format!("unknown resilience {s:?} (checksum, journal, none)"))),
        }
    }
}

/// The checksum block cryptsetup uses on image files: the larger of the
/// device block (4096 on the filesystems here) and both sector sizes.
const MIN_CHECKSUM_BLOCK: u32 = 4096;
const CHECKSUM_HASH: HashAlg = HashAlg::Sha256;

pub(super) fn segment_view(s: &Segment) -> Result<DataSegment> {
    if s.kind != "crypt" {
        return Err(Error::Unsupported(format!("{} segment in a re-encryption (encrypt/decrypt)", s.kind)));
    }
    Ok(DataSegment {
        offset: s.offset,
        size: match s.size {
            SegmentSize::Dynamic => None,
            SegmentSize::Bytes(n) => Some(n),
        },
        cipher: s.encryption.clone().ok_or_else(|| Error::header("crypt segment without encryption"))?,
        sector_size: s.sector_size.unwrap_or(512),
        iv_tweak: s.iv_tweak.unwrap_or(0),
    })
}

/// Starts a re-encryption in cryptsetup's format and runs it to the end.
pub(super) fn start<IO: BlockIo>(
    vol: Volume<IO>,
    old: super::OldKey<'_>,
    new_passphrase: Option<&[u8]>,
    opts: &ReencryptOptions,
    progress: ProgressFn<'_>,
) -> Result<(Volume<IO>, ReencryptReport)> {
    let passphrase = match old {
        super::OldKey::Passphrase(p) => Some(p),
        super::OldKey::VolumeKey(_) => None,
    };
    let vol = begin(vol, old, new_passphrase, opts)?;
    let new_pass = new_passphrase.or(passphrase).expect("checked by begin");
    resume(vol, passphrase.unwrap_or(new_pass), Some(new_pass), opts, progress)
}

/// Commits the start of a re-encryption (new key, backup segments, the
/// reencrypt keyslot) without converting anything; afterwards the new
/// passphrase opens both keys.
pub(super) fn begin<IO: BlockIo>(
    vol: Volume<IO>,
    old: super::OldKey<'_>,
    new_passphrase: Option<&[u8]>,
    opts: &ReencryptOptions,
) -> Result<Volume<IO>> {
    let Header::Luks2(h) = vol.header().clone() else { unreachable!("checked by the caller") };
    let seg = vol.data_segment()?;
    let old_cipher = CipherSpec::parse(&seg.cipher)?;
    let cipher = opts.cipher.unwrap_or(old_cipher);
    let (passphrase, old_vk) = match old {
        super::OldKey::Passphrase(p) => (Some(p), vol.unlock(p, None)?.1),
        super::OldKey::VolumeKey(k) => {
            if !vol.verify_volume_key(k)? {
                return Err(Error::WrongPassphrase);
            }
            (None, Secret::from_slice(k.expose()))
        }
    };
    let new_pass = new_passphrase
        .or(passphrase)
        .ok_or_else(|| Error::InvalidArgument("a new passphrase is needed with a volume key".into()))?;
    let key_len = opts.key_size_bits.map(|b| b as usize / 8).unwrap_or(old_vk.len());
    if !cipher.valid_key_len(key_len) || opts.key_size_bits.is_some_and(|b| b % 8 != 0) {
        return Err(Error::InvalidArgument(format!("key size {} bits does not fit {}", key_len * 8, cipher.name())));
    }
    let (seg0, old_digest) = {
        let (d, _) = h.meta.digest_for_segment(0).ok_or_else(|| Error::header("no digest for segment 0"))?;
        (h.meta.segments.get(&0).cloned().ok_or_else(|| Error::header("no segment 0"))?, d)
    };
    if h.meta.segments.len() != 1 {
        return Err(Error::Unsupported("re-encryption of a header with more than one segment".into()));
    }
    let new_vk = Secret::random(key_len);
    let mut next = h.clone();
    let hash = opts.pbkdf.hash;
    let new_digest = add_digest(&mut next, &new_vk, opts, hash)?;

    // Keyslots first (material flushed before any header names it): the new
    // key for the new passphrase; and, when the passphrase changes, the old
    // key under the new passphrase too, so `cryptsetup reencrypt
    // --resume-only` can unlock both keys with the one passphrase it takes.
    // That extra keyslot belongs to the old key and goes with it at the end.
    volume::write_luks2_keyslot(vol.io(), &mut next, &new_vk, new_pass, None, &opts.pbkdf, new_digest, Some(cipher))?;
    if Some(new_pass) != passphrase {
        volume::write_luks2_keyslot(vol.io(), &mut next, &old_vk, new_pass, None, &opts.pbkdf, old_digest, None)?;
    }

    // The reencrypt keyslot takes the largest free gap of the keyslots area.
    let slot = next.free_keyslot().ok_or_else(|| Error::InvalidArgument("no free keyslot for the re-encryption state".into()))?;
    let (area_off, area_size) =
        largest_gap(&next).ok_or_else(|| Error::InvalidArgument("no room left in the keyslots area".into()))?;
    let block = MIN_CHECKSUM_BLOCK.max(seg.sector_size);
    let mut area_extra = Map::new();
    if opts.resilience == ResilienceMode::Checksum {
        area_extra.insert("hash".into(), json!(CHECKSUM_HASH.name()));
        area_extra.insert("sector_size".into(), json!(block));
    }
    let mut ks_extra = Map::new();
    ks_extra.insert("mode".into(), json!("reencrypt"));
    ks_extra.insert("direction".into(), json!("forward"));
    next.meta.keyslots.insert(
        slot,
        lj::Keyslot {
            kind: reenc::KEYSLOT_KIND.into(),
            key_size: 1,
            area: lj::Area {
                kind: match opts.resilience {
                    ResilienceMode::Checksum => "checksum",
                    ResilienceMode::Journal => "journal",
                    ResilienceMode::None => "none",
                }
                .into(),
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
    let mut previous = seg0.clone();
    previous.flags = Some(vec![reenc::FLAG_PREVIOUS.into()]);
    let mut final_ = seg0.clone();
    final_.encryption = Some(cipher.name());
    final_.flags = Some(vec![reenc::FLAG_FINAL.into()]);
    next.meta.segments.insert(1, previous);
    next.meta.segments.insert(2, final_);
    next.meta.digests.get_mut(&old_digest).expect("old digest").segments = vec!["0".into(), "1".into()];
    next.meta.digests.get_mut(&new_digest).expect("new digest").segments = vec!["2".into()];
    next.meta.config.requirements.get_or_insert_with(Default::default).mandatory.push(reenc::REQUIREMENT.into());

    // The digest binding both keys and this metadata, as cryptsetup makes it.
    // The data it covers does not include the digest itself, so a
    // placeholder lets the state parse before the digest is computed.
    let mut with_placeholder = next.clone();
    let placeholder = Secret::new(vec![0; 1]);
    let d = add_digest(&mut with_placeholder, &placeholder, &ReencryptOptions { pbkdf: crate::PbkdfOptions::minimal(), ..opts.clone() }, hash)?;
    with_placeholder.meta.digests.get_mut(&d).expect("placeholder").keyslots = vec![slot.to_string()];
    let st = reenc::parse(&with_placeholder.meta)?.ok_or_else(|| Error::header("re-encryption state not recognised"))?;
    let data = reenc::verification_data(&next.meta, &st, Some(&old_vk), Some(&new_vk))?;
    let reenc_digest = add_digest(&mut next, &data, opts, hash)?;
    next.meta.digests.get_mut(&reenc_digest).expect("reenc digest").keyslots = vec![slot.to_string()];
    drop((old_vk, new_vk, data));
    let mut vol = vol;
    vol.commit_luks2(next)?;
    Ok(vol)
}

/// Adds a PBKDF2 digest of `key`, bound to nothing yet; returns its number.
pub(super) fn add_digest(h: &mut L2Header, key: &Secret, opts: &ReencryptOptions, hash: HashAlg) -> Result<u32> {
    let iterations = opts.pbkdf.digest_iterations(hash, key.len().min(64))?;
    let salt = volume::random_salt(32)?;
    let digest = kdf::derive(&KdfParams::Pbkdf2 { hash, iterations }, key.expose(), &salt, hash.digest_len())?;
    let n = h.meta.digests.keys().max().map_or(0, |m| m + 1);
    h.meta.digests.insert(
        n,
        lj::Digest {
            kind: "pbkdf2".into(),
            keyslots: vec![],
            segments: vec![],
            hash: Some(hash.name().into()),
            iterations: Some(iterations),
            salt,
            digest: digest.expose().to_vec(),
            extra: Map::new(),
        },
    );
    Ok(n)
}

pub(super) fn largest_gap(h: &L2Header) -> Option<(u64, u64)> {
    let (start, end) = h.keyslots_region();
    let mut used: Vec<(u64, u64)> = h.meta.keyslots.values().map(|k| (k.area.offset, k.area.offset + k.area.size)).collect();
    used.sort();
    let mut best: Option<(u64, u64)> = None;
    let mut pos = start;
    for (s, e) in used.into_iter().chain([(end, end)]) {
        if s > pos && best.is_none_or(|(_, l)| s - pos > l) {
            best = Some((pos, s - pos));
        }
        pos = pos.max(crate::codec::round_up(e, 4096));
    }
    best.filter(|&(_, l)| l >= 4096)
}

/// Continues (or finishes) a re-encryption recorded in cryptsetup's format.
pub(super) fn resume<IO: BlockIo>(
    vol: Volume<IO>,
    passphrase: &[u8],
    new_passphrase: Option<&[u8]>,
    opts: &ReencryptOptions,
    progress: ProgressFn<'_>,
) -> Result<(Volume<IO>, ReencryptReport)> {
    let Header::Luks2(h) = vol.header().clone() else { unreachable!("checked by the caller") };
    let st = reenc::parse(&h.meta)?.ok_or_else(|| Error::InvalidArgument("no re-encryption in progress".into()))?;
    if st.mode != Mode::Reencrypt {
        return Err(Error::Unsupported(format!("cryptsetup re-encryption in mode {}", st.mode.name())));
    }
    if matches!(st.resilience, Resilience::Datashift { .. }) {
        return Err(Error::Unsupported("re-encryption with a data shift".into()));
    }
    let old_seg = segment_view(&st.previous.1)?;
    let new_seg = segment_view(&st.final_.1)?;
    if old_seg.offset != new_seg.offset || old_seg.size != new_seg.size {
        return Err(Error::Unsupported("re-encryption that moves the data".into()));
    }
    let (digest_old, digest_new) = (st.digest_old.expect("checked by parse"), st.digest_new.expect("checked by parse"));
    // Either passphrase may hold either key (see `start`).
    let pass_new = new_passphrase.unwrap_or(passphrase);
    let (new_slot, new_vk) = open_either(&vol, &h, digest_new, [pass_new, passphrase])?;
    let old_vk = match open_either(&vol, &h, digest_old, [passphrase, pass_new]) {
        Ok((_, k)) => k,
        // cryptsetup destroys the old keyslots before its final commit; killed
        // there, all data is new (one live segment, on the new key only) and
        // only the bookkeeping is left. The reencryption digest cannot be
        // checked without the old key, and is not needed: no data moves.
        Err(Error::WrongPassphrase) | Err(Error::NotFound(_)) => {
            let total = Decrypted::new(vol.io(), &new_seg, &new_vk)?.len();
            if st.progress(&h.meta, total)? != (Progress::Between { done: total }) {
                return Err(Error::WrongPassphrase);
            }
            let cur = h.clone();
            drop(new_vk);
            return finish(vol, cur, &st, new_slot, total);
        }
        Err(e) => return Err(e),
    };
    let data = reenc::verification_data(&h.meta, &st, Some(&old_vk), Some(&new_vk))?;
    if !volume::verify_digest(&h.meta.digests[&st.digest_reenc], &data)? {
        return Err(Error::header("re-encryption metadata does not match its digest (changed since it was written)"));
    }
    drop(data);

    let io = vol.io();
    let old = Decrypted::new(io, &old_seg, &old_vk)?;
    let new = Decrypted::new(io, &new_seg, &new_vk)?;
    let total = old.len();
    let align = old.sector_size().max(new.sector_size());
    let block = match &st.resilience {
        Resilience::Checksum { block, .. } => *block as u64,
        _ => align,
    };
    if block % align != 0 {
        return Err(Error::Unsupported("checksum block smaller than the encryption sector".into()));
    }
    let progressed = st.progress(&h.meta, total)?;
    let from = match progressed {
        Progress::Between { done } => done,
        Progress::Hot { offset, .. } => offset,
    };
    check_headers_ahead(&h, &st, from, total)?;
    let mut cur = h.clone();
    let done = match progressed {
        Progress::Between { done } => done,
        Progress::Hot { offset, len } => {
            recover(&old, &new, &st, offset, len)?;
            volume::flush(io)?;
            // After the last hotzone the final commit follows directly (see `step`).
            if offset + len < total {
                set_segments(&mut cur, &st, offset + len, None, total)?;
                volume::write_luks2(io, &mut cur)?;
            }
            offset + len
        }
    };
    if done % align != 0 {
        return Err(Error::header("re-encryption progress is not sector-aligned"));
    }
    let hotzone = hotzone_len(&st, opts.hotzone, block)?;
    progress(done, total);
    let cur = run_hotzones(&old, &new, &st, cur, done, hotzone, total, opts.threads.max(1), progress)?;
    drop((old, new));
    finish(vol, cur, &st, new_slot, total)
}

/// Bytes per pipeline chunk: large enough for sequential I/O, small enough
/// that `2 × threads` of them stay a few MiB whatever the hotzone size.
const CHUNK: u64 = 1 << 20;

/// Converts hotzones `done..total`, one after another, in the order of the
/// module docs: protect, flush, commit "hot", convert, flush, commit "done".
/// Each pass over a hotzone streams it through [`pipeline::run`] (reads and
/// crypto on `threads` workers, writes in order here), so memory stays at a
/// few chunks and a hotzone can be as large as the area allows: the flushes
/// and header commits, not the crypto, are what costs per hotzone. Without
/// resilience nothing is committed until the end, so the rest is one run.
/// Returns the header as last written.
#[allow(clippy::too_many_arguments)]
fn run_hotzones<IO: BlockIo>(
    old: &Decrypted<&IO>,
    new: &Decrypted<&IO>,
    st: &ReencState,
    mut cur: L2Header,
    done: u64,
    hotzone: u64,
    total: u64,
    threads: usize,
    progress: ProgressFn<'_>,
) -> Result<L2Header> {
    let io = *old.io();
    let data_offset = old.data_offset();
    let protected = matches!(st.resilience, Resilience::Checksum { .. } | Resilience::Journal);
    let hotzone = if protected { hotzone } else { total - done };
    let block = match &st.resilience {
        Resilience::Checksum { block, .. } => *block as u64,
        _ => 1,
    };
    let pipe = pipeline::Options::new(threads, round_up(CHUNK, block) as usize);
    let read = |at: u64, buf: &mut [u8]| io.read_at(buf, at).map_err(Error::io("read", at));
    std::thread::scope(|s| -> Result<L2Header> {
        // Checksums of hotzone N+1 are of old data nothing touches before
        // N+1's own turn, so they are computed while hotzone N is converted
        // and flushed: the hashing overlaps the disk's writeback.
        let (sums_tx, sums_rx) = std::sync::mpsc::sync_channel::<Result<Vec<u8>>>(1);
        if let Resilience::Checksum { hash, block } = &st.resilience {
            let (hash, block) = (HashAlg::from_name(hash)?, *block as usize);
            s.spawn(move || {
                let mut p = done;
                while p < total {
                    let len = hotzone.min(total - p);
                    let r = checksums(io, data_offset + p, len, hash, block, pipe);
                    let failed = r.is_err();
                    if sums_tx.send(r).is_err() || failed {
                        return;
                    }
                    p += len;
                }
            });
        }
        let mut p = done;
        while p < total {
            let len = hotzone.min(total - p);
            match &st.resilience {
                Resilience::Checksum { .. } => {
                    let sums = sums_rx.recv().map_err(|_| Error::header("checksum worker stopped"))??;
                    volume::write(io, st.area.0, &sums)?;
                }
                Resilience::Journal => pipeline::run(
                    len,
                    pipe,
                    |pos, buf| read(data_offset + p + pos, buf),
                    |pos, buf, ()| volume::write(io, st.area.0 + pos, buf),
                )?,
                _ => {}
            }
            if protected {
                volume::flush(io)?;
                set_segments(&mut cur, st, p, Some(len), total)?;
                volume::write_luks2(io, &mut cur)?;
            }
            pipeline::run(
                len,
                pipe,
                |pos, buf| {
                    read(data_offset + p + pos, buf)?;
                    super::convert_chunk(old, new, buf, p + pos, 1)
                },
                |pos, buf, ()| {
                    volume::write(io, data_offset + p + pos, buf)?;
                    progress(p + pos + buf.len() as u64, total);
                    Ok(())
                },
            )?;
            // Not after the last hotzone: a header whose only live segment is
            // the new one looks to cryptsetup like a re-encryption at offset 0,
            // which would convert new data as if it were old. The final commit
            // comes straight after.
            if protected {
                volume::flush(io)?;
                if p + len < total {
                    set_segments(&mut cur, st, p + len, None, total)?;
                    volume::write_luks2(io, &mut cur)?;
                }
            }
            p += len;
        }
        Ok(cur)
    })
}

/// The checksum of every `block` of old ciphertext in `at..at+len`, in
/// order, hashed on the pipeline's workers.
pub(super) fn checksums(io: &impl BlockIo, at: u64, len: u64, hash: HashAlg, block: usize, pipe: pipeline::Options) -> Result<Vec<u8>> {
    let mut sums = Vec::with_capacity(len.div_ceil(block as u64) as usize * hash.digest_len());
    pipeline::run(
        len,
        pipe,
        |pos, buf| {
            io.read_at(buf, at + pos).map_err(Error::io("read", at + pos))?;
            let mut s = Vec::with_capacity(buf.len().div_ceil(block) * hash.digest_len());
            for b in buf.chunks(block) {
                block_digest(hash, b, &mut s)?;
            }
            Ok(s)
        },
        |_, _, s| {
            sums.extend_from_slice(&s);
            Ok(())
        },
    )?;
    Ok(sums)
}

/// Appends the hash of one checksum block to `out`. SHA-256, cryptsetup's
/// default, goes to the `sha2` crate (SHA-NI where the CPU has it) because
/// a fresh OpenSSL context per 4 KiB block cost more than the hashing.
pub(super) fn block_digest(hash: HashAlg, b: &[u8], out: &mut Vec<u8>) -> Result<()> {
    match hash {
        HashAlg::Sha256 => {
            use sha2::Digest;
            out.extend_from_slice(&sha2::Sha256::digest(b));
        }
        _ => out.extend_from_slice(&hash.digest(&[b])?),
    }
    Ok(())
}

pub(super) fn open_either<IO: BlockIo>(vol: &Volume<IO>, h: &L2Header, digest: u32, passes: [&[u8]; 2]) -> Result<(u32, Secret)> {
    match super::open_by_digest(vol, h, digest, passes[0]) {
        Err(Error::WrongPassphrase) if passes[0] != passes[1] => super::open_by_digest(vol, h, digest, passes[1]),
        r => r,
    }
}

pub(super) fn hotzone_len(st: &ReencState, wanted: u64, block: u64) -> Result<u64> {
    let area = st.area.1;
    let limit = match &st.resilience {
        Resilience::Checksum { hash, .. } => area / HashAlg::from_name(hash)?.digest_len() as u64 * block,
        Resilience::Journal => area,
        _ => wanted,
    };
    let len = wanted.min(limit) / block * block;
    if len == 0 {
        return Err(Error::InvalidArgument("the re-encryption area is too small for one hotzone".into()));
    }
    Ok(len)
}

/// Brings the interrupted hotzone `offset..offset+len` to the new key.
pub(super) fn recover<IO: BlockIo>(old: &Decrypted<&IO>, new: &Decrypted<&IO>, st: &ReencState, offset: u64, len: u64) -> Result<()> {
    let io = *old.io();
    let at = old.data_offset() + offset;
    match &st.resilience {
        Resilience::Checksum { hash, block } => {
            let hash = HashAlg::from_name(hash)?;
            let (block, hl) = (*block as usize, hash.digest_len());
            let count = len as usize / block;
            if !(len as usize).is_multiple_of(block) || (count * hl) as u64 > st.area.1 {
                return Err(Error::header("hotzone does not fit its checksums"));
            }
            let sums = volume::read(io, st.area.0, count * hl)?;
            let mut digest = Vec::with_capacity(hl);
            // Chunk by chunk, so a large hotzone costs no more memory here
            // than in the run that was interrupted.
            let step = round_up(CHUNK, block as u64) as usize;
            let mut buf = Secret::zeroed(step.min(len as usize));
            for (c, sums) in sums.chunks(step / block * hl).enumerate() {
                let rel = (c * step) as u64;
                let buf = &mut buf.as_mut()[..sums.len() / hl * block];
                io.read_at(buf, at + rel).map_err(Error::io("read", at + rel))?;
                for (i, (b, sum)) in buf.chunks_mut(block).zip(sums.chunks(hl)).enumerate() {
                    // A block whose hash is still that of its old ciphertext
                    // was not rewritten yet; every other block already is new.
                    digest.clear();
                    block_digest(hash, b, &mut digest)?;
                    if crate::crypto::ct_eq(&digest, sum) {
                        let pos = offset + rel + (i * block) as u64;
                        super::convert_chunk(old, new, b, pos, 1)?;
                        volume::write(io, old.data_offset() + pos, b)?;
                    }
                }
            }
        }
        Resilience::Journal => {
            if len > st.area.1 {
                return Err(Error::header("hotzone larger than its journal"));
            }
            let mut buf = Secret::zeroed(len as usize);
            io.read_at(buf.as_mut(), st.area.0).map_err(Error::io("read", st.area.0))?;
            super::convert_chunk(old, new, buf.as_mut(), offset, 1)?;
            volume::write(io, at, buf.expose())?;
        }
        _ => return Err(Error::header("an interrupted hotzone without resilience data cannot be repaired")),
    }
    Ok(())
}

/// Sets the live segments for progress `done` (with hotzone `done..done+hot`
/// in re-encryption when `hot` is given), then the backup segments, and binds
/// every segment to its key, as cryptsetup lays them out.
pub(super) fn set_segments(h: &mut L2Header, st: &ReencState, done: u64, hot: Option<u64>, total: u64) -> Result<()> {
    let (prev, fin) = (&st.previous.1, &st.final_.1);
    let base = fin.offset;
    let fixed = matches!(prev.size, SegmentSize::Bytes(_));
    let make = |from: &Segment, off: u64, size: SegmentSize, hot: bool| Segment {
        offset: base + off,
        size,
        iv_tweak: Some(from.iv_tweak.unwrap_or(0) + off / 512),
        flags: hot.then(|| vec![reenc::FLAG_HOT.to_string()]),
        ..from.clone()
    };
    let tail = |off: u64| if fixed { SegmentSize::Bytes(total - off) } else { SegmentSize::Dynamic };
    // (segment, is new key, is old key)
    let mut live: Vec<(Segment, bool, bool)> = vec![];
    let end = done + hot.unwrap_or(0);
    if done > 0 {
        // The converted part; it runs to the end (dynamic) once nothing is left.
        let size = if end < total || hot.is_some() { SegmentSize::Bytes(done) } else { SegmentSize::Dynamic };
        live.push((make(fin, 0, size, false), true, false));
    }
    if let Some(l) = hot {
        live.push((make(fin, done, SegmentSize::Bytes(l), true), true, true));
    }
    if end < total {
        live.push((make(prev, end, tail(end), false), false, true));
    }
    if live.is_empty() {
        return Err(Error::header("no data to re-encrypt"));
    }
    let (d_old, d_new) = (st.digest_old.expect("reencrypt mode"), st.digest_new.expect("reencrypt mode"));
    for d in h.meta.digests.values_mut() {
        d.segments.clear();
    }
    h.meta.segments.clear();
    let n = live.len() as u32;
    let bind = |h: &mut L2Header, seg: u32, d: u32| {
        h.meta.digests.get_mut(&d).expect("digest exists").segments.push(seg.to_string());
    };
    for (i, (s, is_new, is_old)) in live.into_iter().enumerate() {
        h.meta.segments.insert(i as u32, s);
        if is_new {
            bind(h, i as u32, d_new);
        }
        if is_old {
            bind(h, i as u32, d_old);
        }
    }
    h.meta.segments.insert(n, prev.clone());
    bind(h, n, d_old);
    h.meta.segments.insert(n + 1, fin.clone());
    bind(h, n + 1, d_new);
    Ok(())
}

/// All data is new: one commit makes the new key the only one, then the old
/// keyslots and the resilience area are wiped. A crash between the two leaves
/// the old material unreferenced (docs/reencrypt.md).
pub(super) fn finish<IO: BlockIo>(
    vol: Volume<IO>,
    cur: L2Header,
    st: &ReencState,
    new_slot: u32,
    total: u64,
) -> Result<(Volume<IO>, ReencryptReport)> {
    let (mut cur, wipe, old_slots) = finished_header(cur, st);
    volume::write_luks2(vol.io(), &mut cur)?;
    for (off, len) in wipe {
        volume::wipe_area(vol.io(), off, len)?;
    }
    let vol = Volume::open(vol.into_io())?;
    Ok((vol, ReencryptReport { keyslot: new_slot, destroyed_keyslots: old_slots, bytes: total }))
}

/// The header once the re-encryption is done, the areas to wipe and the old
/// keyslots it drops.
fn finished_header(mut cur: L2Header, st: &ReencState) -> (L2Header, Vec<(u64, u64)>, Vec<u32>) {
    let (d_old, d_new) = (st.digest_old.expect("reencrypt mode"), st.digest_new.expect("reencrypt mode"));
    let old_slots: Vec<u32> = cur.meta.digests[&d_old].keyslots.iter().filter_map(|k| k.parse().ok()).collect();
    let mut wipe = vec![st.area];
    for s in &old_slots {
        if let Some(ks) = cur.meta.keyslots.remove(s) {
            wipe.push((ks.area.offset, ks.area.size));
        }
    }
    cur.meta.keyslots.remove(&st.slot);
    cur.meta.digests.remove(&d_old);
    cur.meta.digests.remove(&st.digest_reenc);
    let mut seg = st.final_.1.clone();
    seg.flags = None;
    cur.meta.segments.clear();
    cur.meta.segments.insert(0, seg);
    cur.meta.digests.get_mut(&d_new).expect("new digest").segments = vec!["0".into()];
    if let Some(r) = cur.meta.config.requirements.as_mut() {
        r.mandatory.retain(|m| reenc::requirement_version(m).is_none());
        if r.mandatory.is_empty() && r.extra.is_empty() {
            cur.meta.config.requirements = None;
        }
    }
    (cur, wipe, old_slots)
}

/// Refuses, before a byte is written, metadata whose later headers would not
/// encode: a state that would be found out only at a later commit, with data
/// already moved, is refused here instead.
fn check_headers_ahead(h: &L2Header, st: &ReencState, done: u64, total: u64) -> Result<()> {
    let mut probe = h.clone();
    if done < total {
        set_segments(&mut probe, st, done, Some(total - done), total)?;
        volume::encode_checked(&mut probe)?;
    }
    volume::encode_checked(&mut finished_header(h.clone(), st).0)?;
    Ok(())
}

/// Whether `h` holds cryptsetup's re-encryption state.
pub(super) fn present(h: &luks2::Header) -> bool {
    h.meta.mandatory_requirements().iter().any(|r| reenc::requirement_version(r).is_some())
}
