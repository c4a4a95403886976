//! A report of a header, for `rekey luks dump` (text like `cryptsetup
//! luksDump`, or JSON). Never includes key material.

use std::fmt::Write as _;

use serde::Serialize;

use crate::volume::Header;

/// One keyslot, as reported.
#[derive(Debug, Serialize)]
pub struct KeyslotInfo {
    /// Keyslot number.
    pub slot: u32,
    /// `luks1`, `luks2`, `reencrypt`, ...
    pub kind: String,
    /// Key size in bits.
    pub key_bits: u32,
    /// `pbkdf2`, `argon2i`, `argon2id`.
    pub pbkdf: Option<String>,
    /// PBKDF2 hash.
    pub hash: Option<String>,
    /// PBKDF2 iterations.
    pub iterations: Option<u32>,
    /// Argon2 time cost.
    pub time: Option<u32>,
    /// Argon2 memory (KiB).
    pub memory_kib: Option<u32>,
    /// Argon2 lanes.
    pub threads: Option<u32>,
    /// Area offset in bytes.
    pub area_offset: u64,
    /// Area length in bytes.
    pub area_size: u64,
    /// AF stripes.
    pub stripes: Option<u32>,
    /// Priority (LUKS2).
    pub priority: Option<i32>,
}

/// The header, as reported.
#[derive(Debug, Serialize)]
pub struct DumpInfo {
    /// 1 or 2.
    pub version: u32,
    /// UUID.
    pub uuid: String,
    /// Label (LUKS2).
    pub label: Option<String>,
    /// Subsystem (LUKS2).
    pub subsystem: Option<String>,
    /// Header sequence id (LUKS2).
    pub seqid: Option<u64>,
    /// Header size (LUKS2).
    pub metadata_size: Option<u64>,
    /// Keyslots area size (LUKS2).
    pub keyslots_size: Option<u64>,
    /// Cipher spec.
    pub cipher: String,
    /// Volume key bits.
    pub key_bits: u32,
    /// Data offset in bytes.
    pub data_offset: u64,
    /// Encryption sector size.
    pub sector_size: u32,
    /// Mandatory requirements (LUKS2).
    pub requirements: Vec<String>,
    /// Active keyslots.
    pub keyslots: Vec<KeyslotInfo>,
    /// Number of tokens (LUKS2).
    pub tokens: usize,
    /// Whether one LUKS2 copy was damaged or stale.
    pub needs_repair: bool,
}

impl DumpInfo {
    /// Gathers the report from a header.
    pub fn from_header(h: &Header) -> DumpInfo {
        match h {
            Header::Luks1(h) => DumpInfo {
                version: 1,
                uuid: h.uuid.clone(),
                label: None,
                subsystem: None,
                seqid: None,
                metadata_size: None,
                keyslots_size: None,
                cipher: format!("{}-{}", h.cipher_name, h.cipher_mode),
                key_bits: h.key_bytes * 8,
                data_offset: h.payload_offset as u64 * 512,
                sector_size: 512,
                requirements: vec![],
                keyslots: h
                    .keyslots
                    .iter()
                    .enumerate()
                    .filter(|(_, k)| k.active)
                    .map(|(i, k)| KeyslotInfo {
                        slot: i as u32,
                        kind: "luks1".into(),
                        key_bits: h.key_bytes * 8,
                        pbkdf: Some("pbkdf2".into()),
                        hash: Some(h.hash_spec.clone()),
                        iterations: Some(k.iterations),
                        time: None,
                        memory_kib: None,
                        threads: None,
                        area_offset: k.key_material_offset as u64 * 512,
                        area_size: h.material_len(k.stripes),
                        stripes: Some(k.stripes),
                        priority: None,
                    })
                    .collect(),
                tokens: 0,
                needs_repair: false,
            },
            Header::Luks2(h) => {
                let seg = h.meta.segments.get(&0);
                DumpInfo {
                    version: 2,
                    uuid: h.uuid.clone(),
                    label: Some(h.label.clone()),
                    subsystem: Some(h.subsystem.clone()),
                    seqid: Some(h.seqid),
                    metadata_size: Some(h.hdr_size),
                    keyslots_size: Some(h.meta.config.keyslots_size),
                    cipher: seg.and_then(|s| s.encryption.clone()).unwrap_or_default(),
                    key_bits: h
                        .meta
                        .keyslots
                        .values()
                        .find(|k| k.kind == "luks2")
                        .map(|k| k.key_size * 8)
                        .unwrap_or(0),
                    data_offset: seg.map(|s| s.offset).unwrap_or(0),
                    sector_size: seg.and_then(|s| s.sector_size).unwrap_or(512),
                    requirements: h.meta.mandatory_requirements().to_vec(),
                    keyslots: h
                        .meta
                        .keyslots
                        .iter()
                        .map(|(n, k)| KeyslotInfo {
                            slot: *n,
                            kind: k.kind.clone(),
                            key_bits: k.key_size * 8,
                            pbkdf: k.kdf.as_ref().map(|d| d.kind.clone()),
                            hash: k.kdf.as_ref().and_then(|d| d.hash.clone()),
                            iterations: k.kdf.as_ref().and_then(|d| d.iterations),
                            time: k.kdf.as_ref().and_then(|d| d.time),
                            memory_kib: k.kdf.as_ref().and_then(|d| d.memory),
                            threads: k.kdf.as_ref().and_then(|d| d.cpus),
                            area_offset: k.area.offset,
                            area_size: k.area.size,
                            stripes: k.af.as_ref().map(|a| a.stripes),
                            priority: k.priority,
                        })
                        .collect(),
                    tokens: h.meta.tokens.len(),
                    needs_repair: h.needs_repair,
                }
            }
        }
    }

    /// Human-readable text, laid out like `cryptsetup luksDump`.
    pub fn to_text(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "LUKS header information");
        let _ = writeln!(s, "Version:        \t{}", self.version);
        if let Some(q) = self.seqid {
            let _ = writeln!(s, "Epoch:          \t{q}");
        }
        if let Some(m) = self.metadata_size {
            let _ = writeln!(s, "Metadata area:  \t{m} [bytes]");
        }
        if let Some(k) = self.keyslots_size {
            let _ = writeln!(s, "Keyslots area:  \t{k} [bytes]");
        }
        let _ = writeln!(s, "UUID:           \t{}", self.uuid);
        if let Some(l) = &self.label {
            let _ = writeln!(s, "Label:          \t{}", if l.is_empty() { "(no label)" } else { l });
        }
        if let Some(l) = &self.subsystem {
            let _ = writeln!(s, "Subsystem:      \t{}", if l.is_empty() { "(no subsystem)" } else { l });
        }
        let _ = writeln!(
            s,
            "Requirements:   \t{}",
            if self.requirements.is_empty() { "(no requirements)".to_string() } else { self.requirements.join(" ") }
        );
        if self.needs_repair {
            let _ = writeln!(s, "Warning:        \tone header copy is damaged or stale; the next write repairs it");
        }
        let _ = writeln!(s, "\nData segment:");
        let _ = writeln!(s, "\toffset: {} [bytes]", self.data_offset);
        let _ = writeln!(s, "\tcipher: {}", self.cipher);
        let _ = writeln!(s, "\tsector: {} [bytes]", self.sector_size);
        let _ = writeln!(s, "\nKeyslots:");
        for k in &self.keyslots {
            let _ = writeln!(s, "  {}: {}", k.slot, k.kind);
            let _ = writeln!(s, "\tKey:        {} bits", k.key_bits);
            if let Some(p) = k.priority {
                let _ = writeln!(s, "\tPriority:   {p}");
            }
            if let Some(p) = &k.pbkdf {
                let _ = writeln!(s, "\tPBKDF:      {p}");
            }
            if let Some(h) = &k.hash {
                let _ = writeln!(s, "\tHash:       {h}");
            }
            if let Some(i) = k.iterations {
                let _ = writeln!(s, "\tIterations: {i}");
            }
            if let Some(t) = k.time {
                let _ = writeln!(s, "\tTime cost:  {t}");
            }
            if let Some(m) = k.memory_kib {
                let _ = writeln!(s, "\tMemory:     {m}");
            }
            if let Some(t) = k.threads {
                let _ = writeln!(s, "\tThreads:    {t}");
            }
            if let Some(st) = k.stripes {
                let _ = writeln!(s, "\tAF stripes: {st}");
            }
            let _ = writeln!(s, "\tArea offset:{} [bytes]", k.area_offset);
            let _ = writeln!(s, "\tArea length:{} [bytes]", k.area_size);
        }
        if self.version == 2 {
            let _ = writeln!(s, "Tokens:         \t{}", self.tokens);
        }
        s
    }
}
