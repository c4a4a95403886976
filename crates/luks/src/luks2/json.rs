//! The LUKS2 JSON metadata: a typed view that keeps every field it does not
//! know (tokens, unknown keyslot or segment types, future keys), so a header
//! written back carries everything cryptsetup or another tool put there.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::{Error, Result};

/// 64-bit numbers travel as decimal strings in LUKS2 JSON.
pub(crate) mod u64_str {
    use serde::{de::Error as _, Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &u64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&v.to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        let s = String::deserialize(d)?;
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(D::Error::custom(format!("{s:?} is not a decimal number")));
        }
        s.parse().map_err(D::Error::custom)
    }
}

/// A segment size: a number of bytes, or `dynamic` (to the end of the device).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SegmentSize {
    /// Up to the end of the device.
    Dynamic,
    /// Exactly this many bytes.
    Bytes(u64),
}

impl Serialize for SegmentSize {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            SegmentSize::Dynamic => s.serialize_str("dynamic"),
            SegmentSize::Bytes(n) => s.serialize_str(&n.to_string()),
        }
    }
}

impl<'de> Deserialize<'de> for SegmentSize {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error as _;
        let s = String::deserialize(d)?;
        if s == "dynamic" {
            return Ok(SegmentSize::Dynamic);
        }
        s.parse().map(SegmentSize::Bytes).map_err(|_| D::Error::custom(format!("bad segment size {s:?}")))
    }
}

/// Base64 binary fields.
pub(crate) mod b64 {
    use base64::engine::general_purpose::STANDARD;
    use base64::Engine;
    use serde::{de::Error as _, Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(v))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = String::deserialize(d)?;
        STANDARD.decode(s.trim()).map_err(D::Error::custom)
    }
}

/// Top level of the JSON area.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Metadata {
    /// Keyslots by number.
    pub keyslots: BTreeMap<u32, Keyslot>,
    /// Tokens by number, kept verbatim.
    pub tokens: BTreeMap<u32, Value>,
    /// Segments by number.
    pub segments: BTreeMap<u32, Segment>,
    /// Digests by number.
    pub digests: BTreeMap<u32, Digest>,
    /// Sizes, flags, requirements.
    pub config: Config,
    /// Unknown top-level members.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// A keyslot. `luks2` keyslots carry `kdf` and `af`; other types (cryptsetup's
/// `reencrypt`) are kept as they are.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Keyslot {
    /// `luks2`, `reencrypt`, ...
    #[serde(rename = "type")]
    pub kind: String,
    /// Length of the key this slot holds.
    pub key_size: u32,
    /// Where its material lives.
    pub area: Area,
    /// Passphrase KDF.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kdf: Option<Kdf>,
    /// Anti-forensic splitter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub af: Option<Af>,
    /// 0 ignore, 1 normal, 2 high.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<i32>,
    /// Unknown members.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// A keyslot's area in the keyslots region.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Area {
    /// `raw` for luks2 keyslots.
    #[serde(rename = "type")]
    pub kind: String,
    /// Offset from the device start.
    #[serde(with = "u64_str")]
    pub offset: u64,
    /// Length in bytes.
    #[serde(with = "u64_str")]
    pub size: u64,
    /// Cipher of the material (raw areas).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption: Option<String>,
    /// Key size of that cipher (raw areas).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_size: Option<u32>,
    /// Unknown members (e.g. a reencrypt area's hash, sector_size).
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// A keyslot KDF.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Kdf {
    /// `pbkdf2`, `argon2i`, `argon2id`.
    #[serde(rename = "type")]
    pub kind: String,
    /// PBKDF2 hash.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hash: Option<String>,
    /// PBKDF2 iterations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iterations: Option<u32>,
    /// Argon2 time cost.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<u32>,
    /// Argon2 memory in KiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<u32>,
    /// Argon2 lanes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpus: Option<u32>,
    /// Salt.
    #[serde(with = "b64")]
    pub salt: Vec<u8>,
    /// Unknown members.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// Anti-forensic splitter parameters.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Af {
    /// `luks1`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Stripes (4000).
    pub stripes: u32,
    /// Diffuser hash.
    pub hash: String,
    /// Unknown members.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// A data segment.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Segment {
    /// `crypt` or `linear`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Data start.
    #[serde(with = "u64_str")]
    pub offset: u64,
    /// Data length.
    pub size: SegmentSize,
    /// IV of the first sector.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "opt_u64_str")]
    pub iv_tweak: Option<u64>,
    /// Cipher spec.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption: Option<String>,
    /// Encryption sector size.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sector_size: Option<u32>,
    /// e.g. `backup-previous`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flags: Option<Vec<String>>,
    /// Unknown members (integrity, ...).
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

pub(crate) mod opt_u64_str {
    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &Option<u64>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(v) => super::u64_str::serialize(v, s),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
        super::u64_str::deserialize(d).map(Some)
    }
}

/// A volume-key digest.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Digest {
    /// `pbkdf2`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Keyslots whose key this digest verifies (numbers as strings).
    pub keyslots: Vec<String>,
    /// Segments that key encrypts.
    pub segments: Vec<String>,
    /// PBKDF2 hash.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hash: Option<String>,
    /// PBKDF2 iterations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iterations: Option<u32>,
    /// Salt.
    #[serde(with = "b64")]
    pub salt: Vec<u8>,
    /// The digest.
    #[serde(with = "b64")]
    pub digest: Vec<u8>,
    /// Unknown members.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `config` object.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Config {
    /// JSON area size.
    #[serde(with = "u64_str")]
    pub json_size: u64,
    /// Size of the keyslots region.
    #[serde(with = "u64_str")]
    pub keyslots_size: u64,
    /// Persistent activation flags.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flags: Option<Vec<String>>,
    /// Requirements.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requirements: Option<Requirements>,
    /// Unknown members.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `config.requirements`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Requirements {
    /// Features a reader must understand to touch the volume.
    #[serde(default)]
    pub mandatory: Vec<String>,
    /// Unknown members.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl Metadata {
    /// Parses the JSON area (NUL-terminated, NUL-padded).
    pub fn parse(area: &[u8]) -> Result<Metadata> {
        let end = area.iter().position(|&b| b == 0).unwrap_or(area.len());
        let meta: Metadata = serde_json::from_slice(&area[..end])
            .map_err(|e| Error::header(format!("bad JSON metadata: {e}")))?;
        Ok(meta)
    }

    /// Encodes to a NUL-padded area of exactly `area_len` bytes.
    pub fn encode(&self, area_len: usize) -> Result<Vec<u8>> {
        let mut out = serde_json::to_vec(self).map_err(|e| Error::InvalidArgument(format!("JSON encode: {e}")))?;
        if out.len() >= area_len {
            return Err(Error::InvalidArgument(format!(
                "JSON metadata ({} bytes) does not fit the {area_len}-byte area",
                out.len()
            )));
        }
        out.resize(area_len, 0);
        Ok(out)
    }

    /// Mandatory requirements, if any.
    pub fn mandatory_requirements(&self) -> &[String] {
        self.config.requirements.as_ref().map(|r| r.mandatory.as_slice()).unwrap_or(&[])
    }

    /// The digest that covers keyslot `slot`.
    pub fn digest_for_keyslot(&self, slot: u32) -> Option<(u32, &Digest)> {
        let s = slot.to_string();
        self.digests.iter().find(|(_, d)| d.keyslots.contains(&s)).map(|(i, d)| (*i, d))
    }

    /// The digest that covers segment `seg`.
    pub fn digest_for_segment(&self, seg: u32) -> Option<(u32, &Digest)> {
        let s = seg.to_string();
        self.digests.iter().find(|(_, d)| d.segments.contains(&s)).map(|(i, d)| (*i, d))
    }
}
