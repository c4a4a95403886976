//! Re-encryption under a fresh volume key, in place, resumable after a crash
//! at any point.
//!
//! New re-encryptions are written in cryptsetup 2.6's own format
//! ([`crate::luks2::reenc`], engine in `reencrypt/cryptsetup.rs`), so either
//! tool finishes what the other started or was killed in. The rest of this
//! page describes the format of earlier builds (`rekey-reencrypt-v1/v2`),
//! which still resumes.
//!
//! # On-disk state (LUKS2 only)
//! While a re-encryption runs, the header carries the mandatory requirement
//! [`REQUIREMENT`], so cryptsetup and older rekey builds refuse the volume
//! instead of mis-opening half-converted data, and one keyslot of type
//! `rekey-reencrypt` (ignored by unlock) whose JSON says which digest holds
//! the old key, which the new one, the new cipher, the phase, and whose area
//! holds two alternating *hotzone records*.
//!
//! Data is converted front to back in hotzones. Before a hotzone's new
//! ciphertext is written, a record `{seq, offset, length, 16-byte
//! fingerprint of every 512-byte unit of the new ciphertext}` covering it (and,
//! in format v2, the hotzone before it) is written and flushed. Then:
//! everything before the record's range is new, everything after it is old,
//! and in the range each 512-byte unit is new exactly when its fingerprint
//! matches (the smallest unit a device writes atomically). Resume repairs the
//! range of the newest valid record and carries on after it. Records are
//! checksummed; a torn record is ignored and its predecessor is used.
//! docs/reencrypt.md has the write order and why it is safe.
//!
//! Finishing goes in two commits: first the header switches segment 0 to the
//! new key and forgets the old digest and keyslots (listing their areas to
//! wipe, phase `finishing`); then the areas are wiped and discarded; then the
//! reencrypt keyslot and the requirement go. Resume in `finishing` only wipes.

use std::sync::mpsc;

mod cryptsetup;
mod datashift;
pub mod encdec;
pub use datashift::encrypt_shift;
pub use cryptsetup::ResilienceMode;
pub mod live;

use serde_json::{json, Map, Value};

use crate::blockio::BlockIo;
use crate::codec::round_up;
use crate::crypto::{ct_eq, CipherSpec, HashAlg, KdfParams};
use crate::error::{Error, Result};
use crate::luks2::{self, json as lj};
use crate::pbkdf::PbkdfOptions;
use crate::volume::{self, Header, Volume};
use crate::Secret;

/// Mandatory requirement of a volume in the middle of our re-encryption.
pub const REQUIREMENT: &str = "rekey-reencrypt-v2";
/// The same for a re-encryption started by an earlier build (records hold
/// truncated SHA-256 unit hashes, one hotzone each); still resumable.
pub const REQUIREMENT_V1: &str = "rekey-reencrypt-v1";

/// Which of our requirements `r` is, if any.
pub fn requirement_format(r: &str) -> Option<Format> {
    match r {
        REQUIREMENT => Some(Format::V2),
        REQUIREMENT_V1 => Some(Format::V1),
        _ => None,
    }
}

/// On-disk format of an in-progress re-encryption.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// cryptsetup 2.6's `online-reencrypt-v2` (the default): either tool can
    /// finish what the other started.
    Cryptsetup,
    /// Unit fingerprints are the first 16 bytes of SHA-256 of the unit; a
    /// record covers one hotzone.
    V1,
    /// Unit fingerprints are the unit's first 16 bytes of new ciphertext; a
    /// record covers the current hotzone and the one before when its slot is
    /// large enough (see docs/reencrypt.md).
    V2,
}
/// Keyslot type holding the re-encryption state.
pub const KEYSLOT_KIND: &str = "rekey-reencrypt";
/// Default hotzone: 256 MiB of data per crash-safe step. cryptsetup's format
/// streams a hotzone through the crypt pipeline, so its size costs no memory
/// and each step's flushes and two header commits are spread over more data
/// (with `journal`, the area caps the hotzone lower).
pub const DEFAULT_HOTZONE: u64 = 256 << 20;
/// Unit of hotzone hashes: the smallest atomic device write.
const UNIT: u64 = 512;
const HASH_LEN: usize = 16;
const RECORD_MAGIC: &[u8; 8] = b"RKYHZ\x00\x00\x01";

/// How to re-encrypt.
#[derive(Clone, Debug)]
pub struct ReencryptOptions {
    /// New cipher (default: keep the current one).
    pub cipher: Option<CipherSpec>,
    /// New key size in bits (default: keep).
    pub key_size_bits: Option<u32>,
    /// KDF for the new keyslot.
    pub pbkdf: PbkdfOptions,
    /// Bytes of data per crash-safe step.
    pub hotzone: u64,
    /// Crypto threads (default: all cores).
    pub threads: usize,
    /// On-disk format of a new re-encryption. Only tests set V1 or V2, to
    /// check that state left by an earlier build still resumes.
    #[doc(hidden)]
    pub format: Format,
    /// How hotzones are protected (cryptsetup's format only).
    pub resilience: ResilienceMode,
}

impl Default for ReencryptOptions {
    fn default() -> Self {
        ReencryptOptions {
            cipher: None,
            key_size_bits: None,
            pbkdf: PbkdfOptions::default(),
            hotzone: DEFAULT_HOTZONE,
            threads: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
            format: Format::Cryptsetup,
            resilience: ResilienceMode::default(),
        }
    }
}

/// What a finished re-encryption did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ReencryptReport {
    /// Keyslot now holding the new volume key.
    pub keyslot: u32,
    /// Old keyslots destroyed.
    pub destroyed_keyslots: Vec<u32>,
    /// Plaintext bytes converted.
    pub bytes: u64,
}

/// Progress callback: bytes done, bytes total.
pub type Progress<'a> = &'a (dyn Fn(u64, u64) + Sync);

/// State kept in the `rekey-reencrypt` keyslot.
#[derive(Debug, Clone)]
struct State {
    slot: u32,
    old_digest: u32,
    new_digest: u32,
    cipher: CipherSpec,
    hotzone: u64,
    finishing: bool,
    wipe: Vec<(u64, u64)>,
    area: (u64, u64),
    format: Format,
}

fn state_of(h: &luks2::Header) -> Result<Option<State>> {
    let Some((&slot, ks)) = h.meta.keyslots.iter().find(|(_, k)| k.kind == KEYSLOT_KIND) else {
        return Ok(None);
    };
    let bad = || Error::header("malformed re-encryption state");
    let num = |k: &str| ks.extra.get(k).and_then(Value::as_u64).ok_or_else(bad);
    let wipe = ks
        .extra
        .get("wipe")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .map(|p| Some((p.get(0)?.as_str()?.parse().ok()?, p.get(1)?.as_str()?.parse().ok()?)))
                .collect::<Option<Vec<(u64, u64)>>>()
        })
        .unwrap_or(Some(vec![]))
        .ok_or_else(bad)?;
    Ok(Some(State {
        slot,
        old_digest: num("old_digest")? as u32,
        new_digest: num("new_digest")? as u32,
        cipher: CipherSpec::parse(ks.extra.get("cipher").and_then(Value::as_str).ok_or_else(bad)?)?,
        hotzone: num("hotzone")?,
        finishing: ks.extra.get("phase").and_then(Value::as_str) == Some("finishing"),
        wipe,
        area: (ks.area.offset, ks.area.size),
        format: h
            .meta
            .mandatory_requirements()
            .iter()
            .find_map(|r| requirement_format(r))
            .ok_or_else(|| Error::header("re-encryption state without its requirement"))?,
    }))
}

fn set_state(h: &mut luks2::Header, st: &State) {
    let ks = h.meta.keyslots.get_mut(&st.slot).expect("reencrypt keyslot");
    let wipe: Vec<Value> = st.wipe.iter().map(|(o, l)| json!([o.to_string(), l.to_string()])).collect();
    ks.extra.insert("phase".into(), json!(if st.finishing { "finishing" } else { "reencrypt" }));
    ks.extra.insert("wipe".into(), Value::Array(wipe));
}

fn record_len(hotzone: u64) -> u64 {
    round_up(8 + 8 + 8 + 8 + (hotzone / UNIT) * HASH_LEN as u64 + 32, 4096)
}

/// Whether a volume is in the middle of a re-encryption (ours or cryptsetup's).
pub fn in_progress<IO: BlockIo>(v: &Volume<IO>) -> bool {
    matches!(v.header(), Header::Luks2(h)
        if cryptsetup::present(h) || h.meta.mandatory_requirements().iter().any(|r| requirement_format(r).is_some()))
}

/// Re-encrypts `vol` under a new random volume key. The keyslot opened by
/// `passphrase` is re-created for `new_passphrase` (default: the same);
/// every other old keyslot is destroyed at the end.
pub fn reencrypt<IO: BlockIo>(
    vol: Volume<IO>,
    passphrase: &[u8],
    new_passphrase: Option<&[u8]>,
    opts: &ReencryptOptions,
    progress: Progress<'_>,
) -> Result<(Volume<IO>, ReencryptReport)> {
    let Header::Luks2(h) = vol.header().clone() else {
        return Err(Error::Unsupported(
            "re-encryption needs LUKS2; convert first with `cryptsetup convert --type luks2`, \
             or export the plaintext and import it into a new LUKS2 volume"
                .into(),
        ));
    };
    if in_progress(&vol) {
        return Err(Error::InvalidArgument("a re-encryption is already in progress; use --resume".into()));
    }
    h.check_requirements()?;
    if opts.hotzone == 0 || !opts.hotzone.is_multiple_of(4096) || opts.hotzone > 256 << 20 {
        return Err(Error::InvalidArgument("hotzone must be a multiple of 4096 up to 256 MiB".into()));
    }
    if opts.format == Format::Cryptsetup {
        return cryptsetup::start(vol, OldKey::Passphrase(passphrase), new_passphrase, opts, progress);
    }
    let seg = vol.data_segment()?;
    let old_cipher = CipherSpec::parse(&seg.cipher)?;
    let cipher = opts.cipher.unwrap_or(old_cipher);
    let (_, old_vk) = vol.unlock(passphrase, None)?;
    let key_len = opts.key_size_bits.map(|b| b as usize / 8).unwrap_or(old_vk.len());
    if !cipher.valid_key_len(key_len) || opts.key_size_bits.is_some_and(|b| b % 8 != 0) {
        return Err(Error::InvalidArgument(format!("key size {} bits does not fit {}", key_len * 8, cipher.name())));
    }
    drop(old_vk);
    let new_vk = Secret::random(key_len);
    let (old_digest, _) = h.meta.digest_for_segment(0).ok_or_else(|| Error::header("no digest for segment 0"))?;
    let mut next = h.clone();

    // The new key gets its own digest (bound to no segment until the end).
    let hash = opts.pbkdf.hash;
    let iterations = opts.pbkdf.digest_iterations(hash, key_len)?;
    let salt = volume::random_salt(32)?;
    let digest = crate::crypto::kdf::derive(
        &KdfParams::Pbkdf2 { hash, iterations },
        new_vk.expose(),
        &salt,
        hash.digest_len(),
    )?;
    let new_digest = next.meta.digests.keys().max().map_or(0, |m| m + 1);
    next.meta.digests.insert(
        new_digest,
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
    let new_pass = new_passphrase.unwrap_or(passphrase);
    volume::write_luks2_keyslot(vol.io(), &mut next, &new_vk, new_pass, None, &opts.pbkdf, new_digest, Some(cipher))?;

    // Two record slots, each big enough for two hotzones (one flush per
    // hotzone); one hotzone per slot if the keyslots area has no room for that.
    let double = match opts.format {
        Format::V2 | Format::Cryptsetup => Some(2 * record_len(2 * opts.hotzone)),
        Format::V1 => None,
    };
    let (area_off, area_size) = double
        .into_iter()
        .chain([2 * record_len(opts.hotzone)])
        .find_map(|size| Some((next.allocate_area(size)?, size)))
        .ok_or_else(|| Error::InvalidArgument("no room in the keyslots area for re-encryption state".into()))?;
    let state_slot = next.free_keyslot().ok_or_else(|| Error::InvalidArgument("no free keyslot".into()))?;
    let mut extra = Map::new();
    extra.insert("mode".into(), json!("reencrypt"));
    extra.insert("old_digest".into(), json!(old_digest));
    extra.insert("new_digest".into(), json!(new_digest));
    extra.insert("cipher".into(), json!(cipher.name()));
    extra.insert("hotzone".into(), json!(opts.hotzone));
    extra.insert("phase".into(), json!("reencrypt"));
    extra.insert("wipe".into(), json!([]));
    next.meta.keyslots.insert(
        state_slot,
        lj::Keyslot {
            kind: KEYSLOT_KIND.into(),
            key_size: 1,
            area: lj::Area {
                kind: "rekey-checksum".into(),
                offset: area_off,
                size: area_size,
                encryption: None,
                key_size: None,
                extra: Map::new(),
            },
            kdf: None,
            af: None,
            priority: Some(0),
            extra,
        },
    );
    let req = next.meta.config.requirements.get_or_insert_with(Default::default);
    req.mandatory.push(match opts.format {
        Format::V2 => REQUIREMENT,
        Format::V1 => REQUIREMENT_V1,
        Format::Cryptsetup => unreachable!("handled above"),
    }
    .into());
    // No stale record may survive from an earlier run.
    volume::write(vol.io(), area_off, &vec![0u8; area_size as usize])?;
    volume::flush(vol.io())?;
    let mut vol = vol;
    vol.commit_luks2(next)?;
    resume(vol, passphrase, new_passphrase, opts, progress)
}

/// What unlocks the current volume key at the start.
#[derive(Clone, Copy)]
pub enum OldKey<'a> {
    /// A passphrase of one of the keyslots.
    Passphrase(&'a [u8]),
    /// The volume key itself (when the key manager holding the passphrase
    /// is lost); it must match the header's digest.
    VolumeKey(&'a Secret),
}

/// Re-encrypts `vol`, unlocked by its current volume key `vk`, under a new
/// random volume key whose only keyslot opens with `new_passphrase`. Written
/// in cryptsetup's format; resumed with `new_passphrase` (it opens both keys
/// while the run lasts).
pub fn reencrypt_with_volume_key<IO: BlockIo>(
    vol: Volume<IO>,
    vk: &Secret,
    new_passphrase: &[u8],
    opts: &ReencryptOptions,
    progress: Progress<'_>,
) -> Result<(Volume<IO>, ReencryptReport)> {
    let Header::Luks2(h) = vol.header() else {
        return Err(Error::Unsupported("re-encryption needs LUKS2".into()));
    };
    if in_progress(&vol) {
        return Err(Error::InvalidArgument("a re-encryption is already in progress; use --resume".into()));
    }
    h.check_requirements()?;
    cryptsetup::start(vol, OldKey::VolumeKey(vk), Some(new_passphrase), opts, progress)
}

/// Continues (or finishes) an interrupted re-encryption.
pub fn resume<IO: BlockIo>(
    mut vol: Volume<IO>,
    passphrase: &[u8],
    new_passphrase: Option<&[u8]>,
    opts: &ReencryptOptions,
    progress: Progress<'_>,
) -> Result<(Volume<IO>, ReencryptReport)> {
    let Header::Luks2(h) = vol.header().clone() else {
        return Err(Error::InvalidArgument("no re-encryption in progress (LUKS1)".into()));
    };
    if cryptsetup::present(&h) {
        return cryptsetup::resume(vol, passphrase, new_passphrase, opts, progress);
    }
    let st = state_of(&h)?.ok_or_else(|| Error::InvalidArgument("no re-encryption in progress".into()))?;
    let new_pass = new_passphrase.unwrap_or(passphrase);
    let (new_slot, new_vk) = open_by_digest(&vol, &h, st.new_digest, new_pass)?;
    let seg = vol.data_segment_raw()?;
    let mut destroyed = vec![];
    let mut total = 0;
    if !st.finishing {
        let (_, old_vk) = open_by_digest(&vol, &h, st.old_digest, passphrase)?;
        let old = crate::data::Decrypted::new(vol.io(), &seg, &old_vk)?;
        let new_seg = volume::DataSegment { cipher: st.cipher.name(), ..seg.clone() };
        let new = crate::data::Decrypted::new(vol.io(), &new_seg, &new_vk)?;
        total = old.len();
        convert(&old, &new, &st, opts.threads.max(1), progress)?;
        drop((old, new));

        // Commit 1: the new key takes over segment 0; old state is forgotten.
        let mut next = h.clone();
        let old_slots: Vec<u32> = next.meta.digests[&st.old_digest].keyslots.iter().filter_map(|k| k.parse().ok()).collect();
        let mut st2 = st.clone();
        for s in &old_slots {
            if let Some(ks) = next.meta.keyslots.remove(s) {
                st2.wipe.push((ks.area.offset, ks.area.size));
            }
        }
        destroyed = old_slots;
        next.meta.digests.remove(&st.old_digest);
        next.meta.digests.get_mut(&st.new_digest).expect("new digest").segments = vec!["0".into()];
        let s0 = next.meta.segments.get_mut(&0).ok_or_else(|| Error::header("no segment 0"))?;
        s0.encryption = Some(st.cipher.name());
        st2.finishing = true;
        set_state(&mut next, &st2);
        vol.commit_luks2(next)?;
    }
    // Wipe old keyslots and the hotzone records, then drop the state.
    let Header::Luks2(h) = vol.header().clone() else { unreachable!() };
    let st = state_of(&h)?.expect("state present until the last commit");
    for &(off, len) in st.wipe.iter().chain([&st.area]) {
        volume::wipe_area(vol.io(), off, len)?;
    }
    let mut next = h;
    next.meta.keyslots.remove(&st.slot);
    if let Some(r) = next.meta.config.requirements.as_mut() {
        r.mandatory.retain(|m| requirement_format(m).is_none());
        if r.mandatory.is_empty() && r.extra.is_empty() {
            next.meta.config.requirements = None;
        }
    }
    vol.commit_luks2(next)?;
    Ok((vol, ReencryptReport { keyslot: new_slot, destroyed_keyslots: destroyed, bytes: total }))
}

fn open_by_digest<IO: BlockIo>(vol: &Volume<IO>, h: &luks2::Header, digest: u32, pass: &[u8]) -> Result<(u32, Secret)> {
    let d = h.meta.digests.get(&digest).ok_or_else(|| Error::header(format!("no digest {digest}")))?;
    for k in &d.keyslots {
        let slot: u32 = k.parse().map_err(|_| Error::header("bad keyslot reference"))?;
        if let Some(vk) = volume::open_luks2_keyslot(vol.io(), h, slot, pass, d)? {
            return Ok((slot, vk));
        }
    }
    Err(Error::WrongPassphrase)
}

/// A hotzone record: where the hotzone is and what its new units hash to.
struct Record {
    seq: u64,
    offset: u64,
    len: u64,
    hashes: Vec<u8>,
}

impl Record {
    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(40 + self.hashes.len() + 32);
        out.extend_from_slice(RECORD_MAGIC);
        out.extend_from_slice(&self.seq.to_be_bytes());
        out.extend_from_slice(&self.offset.to_be_bytes());
        out.extend_from_slice(&self.len.to_be_bytes());
        out.extend_from_slice(&(self.hashes.len() as u64).to_be_bytes());
        out.extend_from_slice(&self.hashes);
        let sum = HashAlg::Sha256.digest(&[&out]).expect("sha256");
        out.extend_from_slice(&sum);
        out
    }

    fn decode(buf: &[u8]) -> Option<Record> {
        let rd = |o: usize| buf.get(o..o + 8).map(|b| u64::from_be_bytes(b.try_into().unwrap()));
        if buf.get(..8)? != RECORD_MAGIC {
            return None;
        }
        let (seq, offset, len, n) = (rd(8)?, rd(16)?, rd(24)?, rd(32)? as usize);
        let end = 40usize.checked_add(n)?;
        let sum = buf.get(end..end + 32)?;
        let want = HashAlg::Sha256.digest(&[&buf[..end]]).ok()?;
        if !ct_eq(&want, sum) || n as u64 != len / UNIT * HASH_LEN as u64 {
            return None;
        }
        Some(Record { seq, offset, len, hashes: buf[40..end].to_vec() })
    }
}

/// What a record stores for one 512-byte unit of new ciphertext, to tell
/// after a crash whether the unit on disk is new or old.
///
/// V2: the unit's first 16 bytes. They are the first XTS/CBC block of the
/// unit under the new key, so old ciphertext of the same unit matches them
/// with probability 2^-128 — the same as the truncated SHA-256 of V1, which
/// cost a third of the CPU time of a re-encryption. Both rely on a unit being
/// written whole or not at all (see docs/reencrypt.md).
fn unit_fingerprint(format: Format, unit: &[u8]) -> [u8; HASH_LEN] {
    let mut out = [0u8; HASH_LEN];
    match format {
        Format::V1 => {
            use sha2::Digest;
            out.copy_from_slice(&sha2::Sha256::digest(unit)[..HASH_LEN]);
        }
        Format::V2 | Format::Cryptsetup => out.copy_from_slice(&unit[..HASH_LEN]),
    }
    out
}

fn unit_fingerprints(format: Format, buf: &[u8], out: &mut [u8]) {
    for (unit, h) in buf.chunks(UNIT as usize).zip(out.chunks_mut(HASH_LEN)) {
        h.copy_from_slice(&unit_fingerprint(format, unit));
    }
}

/// Converts every hotzone from the old key to the new, starting after the
/// newest valid record (whose hotzone is repaired first).
fn convert<IO: BlockIo>(
    old: &crate::data::Decrypted<&IO>,
    new: &crate::data::Decrypted<&IO>,
    st: &State,
    threads: usize,
    progress: Progress<'_>,
) -> Result<()> {
    let io = old.io();
    // Two record slots share the area (an earlier build sized them for one
    // hotzone; this one for two when there is room).
    let rec_len = st.area.1 / 2;
    let window = if st.format == Format::V2 && rec_len >= record_len(2 * st.hotzone) { 2 } else { 1 };
    let sector = old.sector_size();
    if !st.hotzone.is_multiple_of(sector) || rec_len < record_len(st.hotzone) {
        return Err(Error::header("re-encryption state does not fit its hotzone size"));
    }
    let records: Vec<Record> = (0..2)
        .filter_map(|i| volume::read(io, st.area.0 + i * rec_len, rec_len as usize).ok())
        .filter_map(|b| Record::decode(&b))
        .collect();
    let last = records.into_iter().max_by_key(|r| r.seq);
    let size = old.len();
    let mut seq = 0;
    let mut pos = 0;
    if let Some(r) = last {
        if r.offset.checked_add(r.len).is_none_or(|end| end > size) || r.offset % sector != 0 || r.len % sector != 0 {
            return Err(Error::header("hotzone record outside the data"));
        }
        repair(old, new, &r, st.format)?;
        seq = r.seq;
        pos = r.offset + r.len;
    }
    progress(pos, size);

    // Three stages overlap: a reader prefetches hotzone N+1 while hotzone N
    // is converted here and a writer commits hotzone N-1. Buffers go back
    // from the writer to the reader instead of being freed and wiped.
    //
    // Write order, window 1 (V1, or no room for double records): record N,
    // flush, data N, flush. Window 2: record N covering hotzones N-1 and N,
    // flush (which also makes data N-1 durable), data N; one flush at the
    // end. Either way, when a record can be on disk, every hotzone before the
    // ones it covers is durable, and the record's slot held a record that is
    // no longer needed (docs/reencrypt.md has the argument).
    std::thread::scope(|s| -> Result<()> {
        let (tx, rx) = mpsc::sync_channel::<(u64, std::io::Result<Secret>)>(1);
        let (wtx, wrx) = mpsc::sync_channel::<(u64, Vec<u8>, Secret)>(1);
        let (spare_tx, spare_rx) = mpsc::channel::<Secret>();
        let start = pos;
        s.spawn(move || {
            let mut p = start;
            while p < size {
                let len = st.hotzone.min(size - p);
                let mut buf = match spare_rx.try_recv() {
                    Ok(b) if b.len() as u64 == len => b,
                    _ => Secret::zeroed(len as usize),
                };
                let r = io.read_at(buf.as_mut(), old.data_offset() + p).map(|_| buf);
                let failed = r.is_err();
                if tx.send((p, r)).is_err() || failed {
                    return;
                }
                p += len;
            }
        });
        let data_offset = old.data_offset();
        let writer = s.spawn(move || -> Result<()> {
            let mut seq = seq;
            let mut prev: Option<(u64, u64, Vec<u8>)> = None;
            for (p, hashes, buf) in wrx {
                let len = buf.len() as u64;
                seq += 1;
                let rec = match (&prev, window) {
                    (Some((pp, pl, ph)), 2) => Record { seq, offset: *pp, len: pl + len, hashes: [&ph[..], &hashes].concat() },
                    _ => Record { seq, offset: p, len, hashes: hashes.clone() },
                };
                volume::write(io, st.area.0 + (seq % 2) * rec_len, &rec.encode())?;
                volume::flush(io)?;
                volume::write(io, data_offset + p, buf.expose())?;
                if window == 1 {
                    volume::flush(io)?;
                }
                prev = Some((p, len, hashes));
                progress(p + len, size);
                let _ = spare_tx.send(buf);
            }
            if window == 2 && prev.is_some() {
                volume::flush(io)?;
            }
            Ok(())
        });
        let converted = (|| -> Result<()> {
            for (p, buf) in rx {
                let mut buf = buf.map_err(Error::io("read", p))?;
                let len = buf.len() as u64;
                let mut hashes = vec![0u8; (len / UNIT) as usize * HASH_LEN];
                let per = round_up(len.div_ceil(threads as u64), sector) as usize;
                std::thread::scope(|cs| -> Result<()> {
                    let jobs: Vec<_> = buf
                        .as_mut()
                        .chunks_mut(per)
                        .zip(hashes.chunks_mut(per / UNIT as usize * HASH_LEN))
                        .enumerate()
                        .map(|(i, (chunk, hs))| {
                            let at = p + (i * per) as u64;
                            cs.spawn(move || -> Result<()> {
                                old.cipher().decrypt(chunk, sector as usize, old.iv_at(at))?;
                                new.cipher().encrypt(chunk, sector as usize, new.iv_at(at))?;
                                unit_fingerprints(st.format, chunk, hs);
                                Ok(())
                            })
                        })
                        .collect();
                    for j in jobs {
                        j.join().expect("crypto worker panicked")?;
                    }
                    Ok(())
                })?;
                if wtx.send((p, hashes, buf)).is_err() {
                    break; // the writer failed; its error is reported below
                }
            }
            Ok(())
        })();
        drop(wtx);
        let written = writer.join().expect("writer panicked");
        converted.and(written)
    })
}

/// The data path of a hotzone: `buf` holds old ciphertext of plaintext
/// bytes `pos..`, and leaves holding their new ciphertext, split over
/// `threads` crypto threads. The one place a faster pipeline plugs in.
fn convert_chunk<IO: BlockIo>(
    old: &crate::data::Decrypted<&IO>,
    new: &crate::data::Decrypted<&IO>,
    buf: &mut [u8],
    pos: u64,
    threads: usize,
) -> Result<()> {
    let sector = old.sector_size().max(new.sector_size());
    let per = round_up((buf.len() as u64).div_ceil(threads.max(1) as u64), sector) as usize;
    if threads <= 1 || per >= buf.len() {
        old.cipher().decrypt(buf, old.sector_size() as usize, old.iv_at(pos))?;
        return Ok(new.cipher().encrypt(buf, new.sector_size() as usize, new.iv_at(pos))?);
    }
    std::thread::scope(|s| -> Result<()> {
        let jobs: Vec<_> = buf
            .chunks_mut(per)
            .enumerate()
            .map(|(i, chunk)| s.spawn(move || convert_chunk(old, new, chunk, pos + (i * per) as u64, 1)))
            .collect();
        for j in jobs {
            j.join().expect("crypto worker panicked")?;
        }
        Ok(())
    })
}

/// Brings every unit of a record's hotzone to the new key.
fn repair<IO: BlockIo>(
    old: &crate::data::Decrypted<&IO>,
    new: &crate::data::Decrypted<&IO>,
    r: &Record,
    format: Format,
) -> Result<()> {
    let sector = old.sector_size();
    let mut buf = Secret::zeroed(r.len as usize);
    old.io().read_at(buf.as_mut(), old.data_offset() + r.offset).map_err(Error::io("read", r.offset))?;
    let mut changed = false;
    for (i, chunk) in buf.as_mut().chunks_mut(sector as usize).enumerate() {
        // How many of the sector's 512-byte units already hold new ciphertext.
        let units = (sector / UNIT) as usize;
        let new_units = chunk
            .chunks(UNIT as usize)
            .enumerate()
            .filter(|(u, unit)| {
                let idx = (i * units + u) * HASH_LEN;
                unit_fingerprint(format, unit)[..] == r.hashes[idx..idx + HASH_LEN]
            })
            .count();
        if new_units < units {
            // A sector is written whole or not at all at the device's unit;
            // a larger sector with some units new and some old cannot be
            // repaired.
            let at = r.offset + (i as u64) * sector;
            if new_units > 0 {
                return Err(Error::header(format!(
                    "sector at {at} is half re-encrypted inside a {sector}-byte sector; cannot repair"
                )));
            }
            old.cipher().decrypt(chunk, sector as usize, old.iv_at(at))?;
            new.cipher().encrypt(chunk, sector as usize, new.iv_at(at))?;
            changed = true;
        }
    }
    if changed {
        volume::write(old.io(), old.data_offset() + r.offset, buf.expose())?;
    }
    // Flushed even when nothing changed: after a process kill the new units
    // read back may still be only in the page cache, and the next record
    // (whose slot may replace this one) declares this range finished.
    volume::flush(old.io())?;
    Ok(())
}
