//! cryptsetup 2.6's re-encryption metadata (`online-reencrypt-v2`): a typed
//! view of the `reencrypt` keyslot, the backup segments and the progress the
//! live segments record, plus the digest that binds keys and metadata.
//! Sans-IO: [`crate::reencrypt`] does the work.
//!
//! Facts from cryptsetup's lib/luks2/luks2_reencrypt.c, luks2_keyslot_reenc.c
//! and luks2_reencrypt_digest.c (read, not copied):
//! - the `reencrypt` keyslot (key_size 1, priority 0) carries `mode`
//!   (reencrypt | encrypt | decrypt), `direction` (forward | backward) and an
//!   area whose `type` is the resilience: `checksum` (with `hash` and
//!   `sector_size`, the checksum block), `journal`, `none`, or `datashift*`
//!   (with `shift_size`);
//! - the segment flagged `backup-previous` describes the data as it was, the
//!   one flagged `backup-final` as it will be; their digests are the old and
//!   the new volume key;
//! - the live segments say how far it got: forward, `[new 0..p] [old p..]`
//!   between hotzones, `[new 0..p] [in-reencryption p..p+l] [old p+l..]`
//!   while hotzone `p..p+l` is being written (only checksum and journal
//!   resilience commit that state);
//! - the reencryption digest is a PBKDF2 digest (bound to the `reencrypt`
//!   keyslot) over `"v" + ('0' + version) ‖ old key ‖ new key ‖ keyslot
//!   fields ‖ backup segments`, each field in a fixed binary form (strings
//!   raw, 64-bit numbers big-endian, `sector_size` as big-endian u32,
//!   `"dynamic"` sizes as the word itself).

use serde_json::Value;

use super::json::{Metadata, Segment, SegmentSize};
use crate::error::{Error, Result};
use crate::Secret;

/// The requirement cryptsetup 2.6 writes for a re-encryption.
pub const REQUIREMENT: &str = "online-reencrypt-v2";
/// The requirement cryptsetup writes for decryption with a moved segment
/// (same metadata, version byte 3 in the digest).
pub const REQUIREMENT_V3: &str = "online-reencrypt-v3";
/// Keyslot type of the re-encryption state.
pub const KEYSLOT_KIND: &str = "reencrypt";
/// Flag of the segment being rewritten.
pub const FLAG_HOT: &str = "in-reencryption";
/// Flag of the segment describing the old data.
pub const FLAG_PREVIOUS: &str = "backup-previous";
/// Flag of the segment describing the new data.
pub const FLAG_FINAL: &str = "backup-final";
/// Flag of the segment holding the moved first part (encrypt/decrypt with data shift).
pub const FLAG_MOVED: &str = "backup-moved-segment";

/// The digest version a requirement string stands for, if it is cryptsetup's.
pub fn requirement_version(r: &str) -> Option<u8> {
    match r {
        REQUIREMENT => Some(2),
        REQUIREMENT_V3 => Some(3),
        _ => None,
    }
}

/// What the re-encryption does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Old key to new key.
    Reencrypt,
    /// Plaintext to ciphertext.
    Encrypt,
    /// Ciphertext to plaintext.
    Decrypt,
}

impl Mode {
    /// The JSON word.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Reencrypt => "reencrypt",
            Mode::Encrypt => "encrypt",
            Mode::Decrypt => "decrypt",
        }
    }
}

/// Which end of the device goes first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// From the start.
    Forward,
    /// From the end.
    Backward,
}

/// How a hotzone interrupted mid-write is repaired.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Resilience {
    /// The area holds a hash of each `block`-byte block of the hotzone's old
    /// ciphertext: a block whose hash still matches was not rewritten yet.
    Checksum {
        /// Hash name (`sha256`, ...).
        hash: String,
        /// Checksum block size (the area's `sector_size`).
        block: u32,
    },
    /// The area holds a copy of the hotzone's old ciphertext.
    Journal,
    /// Nothing: a crash mid-hotzone cannot be repaired (and is never
    /// committed to the header).
    None,
    /// Data moves by `shift` bytes; the old copy is the protection.
    Datashift {
        /// Area type (`datashift`, `datashift-checksum`, `datashift-journal`).
        kind: String,
        /// Bytes moved.
        shift: u64,
    },
}

impl Resilience {
    /// The area `type` word.
    pub fn kind(&self) -> &str {
        match self {
            Resilience::Checksum { .. } => "checksum",
            Resilience::Journal => "journal",
            Resilience::None => "none",
            Resilience::Datashift { kind, .. } => kind,
        }
    }
}

/// Where a forward re-encryption stands, from the live segments.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Progress {
    /// Bytes `0..done` of the data are new, the rest old.
    Between {
        /// Bytes already converted.
        done: u64,
    },
    /// Hotzone `offset..offset+len` was being written when it stopped.
    Hot {
        /// Start of the hotzone (relative to the data start).
        offset: u64,
        /// Its length.
        len: u64,
    },
}

/// The parsed re-encryption state.
#[derive(Clone, Debug)]
pub struct ReencState {
    /// Number of the `reencrypt` keyslot.
    pub slot: u32,
    /// Digest version (2 for `online-reencrypt-v2`).
    pub version: u8,
    /// What it does.
    pub mode: Mode,
    /// Which way.
    pub direction: Direction,
    /// How hotzones are protected.
    pub resilience: Resilience,
    /// The keyslot area (offset, size) holding checksums or the journal.
    pub area: (u64, u64),
    /// Segment number and value of `backup-previous`.
    pub previous: (u32, Segment),
    /// Segment number and value of `backup-final`.
    pub final_: (u32, Segment),
    /// Digest of the old key (absent when encrypting).
    pub digest_old: Option<u32>,
    /// Digest of the new key (absent when decrypting).
    pub digest_new: Option<u32>,
    /// Digest binding keys and metadata.
    pub digest_reenc: u32,
}

fn bad(msg: impl std::fmt::Display) -> Error {
    Error::header(format!("re-encryption metadata: {msg}"))
}

fn has_flag(s: &Segment, flag: &str) -> bool {
    s.flags.as_ref().is_some_and(|f| f.iter().any(|x| x == flag))
}

/// Whether a segment is one of the backup copies (not live data).
pub fn is_backup(s: &Segment) -> bool {
    s.flags.as_ref().is_some_and(|f| f.iter().any(|x| x.starts_with("backup-")))
}

fn str_field<'a>(v: &'a serde_json::Map<String, Value>, k: &str) -> Result<&'a str> {
    v.get(k).and_then(Value::as_str).ok_or_else(|| bad(format!("reencrypt keyslot has no {k:?}")))
}

/// Reads cryptsetup's re-encryption state, `None` when the header has none.
/// Every field this engine relies on is checked, so malformed metadata is an
/// error here and never reaches the data path.
pub fn parse(meta: &Metadata) -> Result<Option<ReencState>> {
    let version = meta.mandatory_requirements().iter().find_map(|r| requirement_version(r));
    let slots: Vec<_> = meta.keyslots.iter().filter(|(_, k)| k.kind == KEYSLOT_KIND).collect();
    let Some(version) = version else {
        if !slots.is_empty() {
            return Err(bad("a reencrypt keyslot without the online-reencrypt requirement"));
        }
        return Ok(None);
    };
    let [(&slot, ks)] = slots[..] else {
        return Err(bad(format!("{} reencrypt keyslots (exactly one expected)", slots.len())));
    };
    if ks.key_size != 1 {
        return Err(bad("reencrypt keyslot key_size is not 1"));
    }
    let mode = match str_field(&ks.extra, "mode")? {
        "reencrypt" => Mode::Reencrypt,
        "encrypt" => Mode::Encrypt,
        "decrypt" => Mode::Decrypt,
        m => return Err(bad(format!("unknown mode {m:?}"))),
    };
    let direction = match str_field(&ks.extra, "direction")? {
        "forward" => Direction::Forward,
        "backward" => Direction::Backward,
        d => return Err(bad(format!("unknown direction {d:?}"))),
    };
    let area = &ks.area;
    let resilience = match area.kind.as_str() {
        "checksum" => {
            let hash = str_field(&area.extra, "hash")?.to_string();
            let block = area
                .extra
                .get("sector_size")
                .and_then(Value::as_u64)
                .and_then(|b| u32::try_from(b).ok())
                .filter(|b| *b >= 512 && b.is_power_of_two())
                .ok_or_else(|| bad("checksum area without a power-of-two sector_size"))?;
            Resilience::Checksum { hash, block }
        }
        "journal" => Resilience::Journal,
        "none" => Resilience::None,
        k @ ("datashift" | "datashift-checksum" | "datashift-journal") => {
            let shift = area
                .extra
                .get("shift_size")
                .and_then(Value::as_str)
                .and_then(|s| s.parse::<u64>().ok())
                .filter(|s| *s > 0 && s % 512 == 0)
                .ok_or_else(|| bad("datashift area without a 512-aligned shift_size"))?;
            Resilience::Datashift { kind: k.to_string(), shift }
        }
        k => return Err(bad(format!("unknown resilience {k:?}"))),
    };
    let find = |flag: &str| -> Result<(u32, Segment)> {
        let mut it = meta.segments.iter().filter(|(_, s)| has_flag(s, flag));
        match (it.next(), it.next()) {
            (Some((n, s)), None) => Ok((*n, s.clone())),
            (None, _) => Err(bad(format!("no {flag} segment"))),
            _ => Err(bad(format!("more than one {flag} segment"))),
        }
    };
    let previous = find(FLAG_PREVIOUS)?;
    let final_ = find(FLAG_FINAL)?;
    let digest_of_seg = |n: u32| meta.digest_for_segment(n).map(|(d, _)| d);
    let digest_old = digest_of_seg(previous.0);
    let digest_new = digest_of_seg(final_.0);
    match mode {
        Mode::Reencrypt if digest_old.is_none() || digest_new.is_none() => {
            return Err(bad("backup segments are not bound to the old and new keys"))
        }
        Mode::Encrypt if digest_new.is_none() => return Err(bad("backup-final segment has no key")),
        Mode::Decrypt if digest_old.is_none() => return Err(bad("backup-previous segment has no key")),
        _ => {}
    }
    let digest_reenc = meta
        .digest_for_keyslot(slot)
        .map(|(d, _)| d)
        .ok_or_else(|| bad("reencrypt keyslot has no digest"))?;
    let slot_name = slot.to_string();
    if meta.digests.values().filter(|d| d.keyslots.contains(&slot_name)).count() != 1 {
        return Err(bad("more than one digest names the reencrypt keyslot"));
    }
    if Some(digest_reenc) == digest_old || Some(digest_reenc) == digest_new {
        return Err(bad("reencryption digest is also a volume-key digest"));
    }
    Ok(Some(ReencState {
        slot,
        version,
        mode,
        direction,
        resilience,
        area: (area.offset, area.size),
        previous,
        final_,
        digest_old,
        digest_new,
        digest_reenc,
    }))
}

impl ReencState {
    /// Where a forward re-encryption stands, from the live (non-backup)
    /// segments, numbered 0, 1, ... in data order. `data_len` is the length
    /// of the data the backup segments describe.
    pub fn progress(&self, meta: &Metadata, data_len: u64) -> Result<Progress> {
        if self.direction != Direction::Forward {
            return Err(Error::Unsupported("backward re-encryption (cryptsetup's encrypt/decrypt with a data shift)".into()));
        }
        let base = self.final_.1.offset;
        let live: Vec<&Segment> = meta.segments.values().filter(|s| !is_backup(s)).collect();
        for (i, n) in meta.segments.iter().filter(|(_, s)| !is_backup(s)).map(|(n, _)| *n).enumerate() {
            if n != i as u32 {
                return Err(bad("live segments are not numbered 0, 1, ..."));
            }
        }
        let size_of = |s: &Segment| match s.size {
            SegmentSize::Bytes(b) => Ok(b),
            SegmentSize::Dynamic => Err(bad("a dynamic segment before the last one")),
        };
        let rel = |s: &Segment| s.offset.checked_sub(base).ok_or_else(|| bad("segment before the data start"));
        let in_range = |p: u64| if p <= data_len { Ok(p) } else { Err(bad("progress past the end of the data")) };
        if live.first().map(|s| rel(s)).transpose()? != Some(0) {
            return Err(bad("the live segments do not start at the data start"));
        }
        if let Some(i) = live.iter().position(|s| has_flag(s, FLAG_HOT)) {
            let hot = live[i];
            let offset = in_range(rel(hot)?)?;
            let len = size_of(hot)?;
            if len == 0 || offset.checked_add(len).is_none_or(|e| e > data_len) {
                return Err(bad("hotzone outside the data"));
            }
            if i > 1 || (i == 1) != (offset > 0) || live.len() > i + 2 {
                return Err(bad("unexpected segments around the hotzone"));
            }
            return Ok(Progress::Hot { offset, len });
        }
        match live[..] {
            // One live segment: not started, or (written by cryptsetup
            // between its last hotzone and its final commit) finished; its
            // key tells which.
            [_] => {
                let new_only = self.digest_new.is_some_and(|d| meta.digests[&d].segments.iter().any(|s| s == "0"))
                    && !self.digest_old.is_some_and(|d| meta.digests[&d].segments.iter().any(|s| s == "0"));
                Ok(Progress::Between { done: if new_only { data_len } else { 0 } })
            }
            [first, second] => {
                let done = in_range(size_of(first)?)?;
                if rel(second)? != done || done == 0 {
                    return Err(bad("segments do not meet"));
                }
                Ok(Progress::Between { done })
            }
            _ => Err(bad(format!("{} live segments", live.len()))),
        }
    }
}

fn put_str(out: &mut Vec<u8>, s: Option<&str>, what: &str) -> Result<()> {
    match s {
        Some(s) if !s.is_empty() && s.len() <= 64 => {
            out.extend_from_slice(s.as_bytes());
            Ok(())
        }
        _ => Err(bad(format!("{what} missing or longer than 64 bytes"))),
    }
}

fn put_segment(out: &mut Vec<u8>, s: &Segment) -> Result<()> {
    put_str(out, Some(&s.kind), "segment type")?;
    out.extend_from_slice(&s.offset.to_be_bytes());
    match s.size {
        SegmentSize::Dynamic => out.extend_from_slice(b"dynamic"),
        SegmentSize::Bytes(b) => out.extend_from_slice(&b.to_be_bytes()),
    }
    match s.kind.as_str() {
        "linear" => Ok(()),
        "crypt" => {
            let iv = s.iv_tweak.ok_or_else(|| bad("crypt segment without iv_tweak"))?;
            out.extend_from_slice(&iv.to_be_bytes());
            put_str(out, s.encryption.as_deref(), "segment encryption")?;
            let ss = s.sector_size.ok_or_else(|| bad("crypt segment without sector_size"))?;
            out.extend_from_slice(&ss.to_be_bytes());
            Ok(())
        }
        k => Err(bad(format!("segment type {k:?} in a re-encryption"))),
    }
}

/// The bytes cryptsetup's reencryption digest is computed over. Secret: it
/// holds the volume keys.
pub fn verification_data(meta: &Metadata, st: &ReencState, old: Option<&Secret>, new: Option<&Secret>) -> Result<Secret> {
    let mut out = Vec::with_capacity(512);
    out.push(b'v');
    out.push(b'0' + st.version);
    if st.digest_old.is_some() {
        out.extend_from_slice(old.ok_or_else(|| Error::InvalidArgument("old volume key needed".into()))?.expose());
    }
    if st.digest_new.is_some() && st.digest_new != st.digest_old {
        out.extend_from_slice(new.ok_or_else(|| Error::InvalidArgument("new volume key needed".into()))?.expose());
    }
    let ks = &meta.keyslots[&st.slot];
    put_str(&mut out, ks.extra.get("mode").and_then(Value::as_str), "mode")?;
    put_str(&mut out, ks.extra.get("direction").and_then(Value::as_str), "direction")?;
    put_str(&mut out, Some(&ks.area.kind), "area type")?;
    out.extend_from_slice(&ks.area.offset.to_be_bytes());
    out.extend_from_slice(&ks.area.size.to_be_bytes());
    match &st.resilience {
        Resilience::Checksum { hash, block } => {
            put_str(&mut out, Some(hash), "hash")?;
            out.extend_from_slice(&block.to_be_bytes());
        }
        Resilience::Datashift { kind, shift } => {
            if kind == "datashift-checksum" {
                put_str(&mut out, ks.area.extra.get("hash").and_then(Value::as_str), "hash")?;
                let block = ks.area.extra.get("sector_size").and_then(Value::as_u64).ok_or_else(|| bad("sector_size"))?;
                out.extend_from_slice(&(block as u32).to_be_bytes());
            }
            out.extend_from_slice(&shift.to_be_bytes());
        }
        Resilience::Journal | Resilience::None => {}
    }
    put_segment(&mut out, &st.previous.1)?;
    put_segment(&mut out, &st.final_.1)?;
    if let Some((_, moved)) = meta.segments.iter().find(|(_, s)| has_flag(s, FLAG_MOVED)) {
        put_segment(&mut out, moved)?;
    }
    Ok(Secret::new(out))
}

