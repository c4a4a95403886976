//! The service's nouns: callers, volumes, volume types, encryption types.
//! (Jobs are the engine's, their states the flows' in `paths`.) Plain data; the
//! database layer stores them, the API renders them.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::ServiceError;

/// Who is calling: from a noauth token, or from a validated Keystone token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// User id.
    pub user: String,
    /// Project id: every volume is scoped to one.
    pub project: String,
    /// May do admin-only operations (types, `all_tenants`).
    pub admin: bool,
    /// Keystone role names of the token (empty under noauth, where every
    /// caller may do everything in its project).
    pub roles: Vec<String>,
    /// The project's domain id, when Keystone said.
    pub domain: Option<String>,
}

impl Caller {
    /// A noauth caller: `admin` decides the admin-only operations, and every
    /// project operation is allowed.
    pub fn noauth(user: impl Into<String>, project: impl Into<String>, admin: bool) -> Caller {
        Caller { user: user.into(), project: project.into(), admin, roles: Vec::new(), domain: None }
    }

    /// Whether the token carries role `name` (Keystone role names are case-insensitive).
    pub fn has_role(&self, name: &str) -> bool {
        self.roles.iter().any(|r| r.eq_ignore_ascii_case(name))
    }
}

/// How a volume made from another gets its own key (extra spec `rekey:mode`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RekeyMode {
    /// New key-manager secret, new keyslot, same volume key (the default).
    #[default]
    Keyslot,
    /// Re-encrypt all data under a new volume key.
    VolumeKey,
    /// Cinder's old behaviour: a copy of the source's key (for comparison).
    None,
}

/// The extra spec that selects the rekey mode.
pub const REKEY_MODE_SPEC: &str = "rekey:mode";

impl RekeyMode {
    /// The spelling of the extra spec.
    pub fn as_str(self) -> &'static str {
        match self {
            RekeyMode::Keyslot => "keyslot",
            RekeyMode::VolumeKey => "volume-key",
            RekeyMode::None => "none",
        }
    }
}

impl FromStr for RekeyMode {
    type Err = ServiceError;
    fn from_str(s: &str) -> Result<Self, ServiceError> {
        match s {
            "keyslot" => Ok(RekeyMode::Keyslot),
            "volume-key" => Ok(RekeyMode::VolumeKey),
            "none" => Ok(RekeyMode::None),
            _ => Err(ServiceError::invalid(format!(
                "Invalid input received: {REKEY_MODE_SPEC} must be keyslot, volume-key or none, not {s:?}"
            ))),
        }
    }
}

impl fmt::Display for RekeyMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Volume statuses this service uses (Cinder's names).
pub mod status {
    /// Being created (data copy, format, rekey).
    pub const CREATING: &str = "creating";
    /// Ready.
    pub const AVAILABLE: &str = "available";
    /// Creation failed; the volume can only be deleted.
    pub const ERROR: &str = "error";
    /// Being deleted.
    pub const DELETING: &str = "deleting";
    /// Deletion failed.
    pub const ERROR_DELETING: &str = "error_deleting";
    /// Being rekeyed in place (`os-rekey`), or moved by a transfer accept.
    pub const MAINTENANCE: &str = "maintenance";
    /// Held for an attachment that has no connector yet.
    pub const RESERVED: &str = "reserved";
    /// An attachment has a connector (and connection info) but is not complete.
    pub const ATTACHING: &str = "attaching";
    /// Attached to a consumer.
    pub const IN_USE: &str = "in-use";
    /// A legacy detach has begun (`os-begin_detaching`).
    pub const DETACHING: &str = "detaching";
}

/// An attachment's own status (Cinder's `attach_status`).
pub mod attach_status {
    /// Made without a connector.
    pub const RESERVED: &str = "reserved";
    /// Has a connector and connection info; not yet complete.
    pub const ATTACHING: &str = "attaching";
    /// Complete (`os-complete`, `os-attach`).
    pub const ATTACHED: &str = "attached";
}

/// Who reads an attachment's export, and what they get.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AttachMode {
    /// Read and write.
    Rw,
    /// Read only: the export refuses writes.
    Ro,
}

impl AttachMode {
    /// Cinder's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            AttachMode::Rw => "rw",
            AttachMode::Ro => "ro",
        }
    }

    /// `rw` or `ro`, as Cinder accepts them.
    pub fn parse(s: &str) -> Result<Self, ServiceError> {
        match s {
            "rw" => Ok(AttachMode::Rw),
            "ro" => Ok(AttachMode::Ro),
            _ => Err(ServiceError::invalid(format!("Invalid input received: mode must be rw or ro, not {s:?}"))),
        }
    }
}

/// One attachment of a volume to a consumer (Cinder's `volume_attachment`).
#[derive(Debug, Clone, PartialEq)]
pub struct Attachment {
    /// UUID.
    pub id: String,
    /// The attached volume.
    pub volume_id: String,
    /// The volume's project.
    pub project_id: String,
    /// The consumer (Nova's server id); `None` for a legacy attach not yet made.
    pub instance_uuid: Option<String>,
    /// One of [`attach_status`].
    pub attach_status: String,
    /// `rw` or `ro`.
    pub attach_mode: AttachMode,
    /// The consumer's device path, as it reported it.
    pub mountpoint: Option<String>,
    /// The connector's `host`.
    pub attached_host: Option<String>,
    /// The connector as the consumer sent it (JSON), once it has.
    pub connector: Option<serde_json::Value>,
    /// The NBD export serving it; `None` before a connector, and for an
    /// `rbd` connection (the consumer opens the image itself).
    pub export_name: Option<String>,
    /// The node serving the export (it comes back there after a restart).
    pub node: String,
    /// When it was completed.
    pub attach_time: Option<String>,
    /// ISO 8601 creation time.
    pub created_at: String,
    /// ISO 8601 last update time.
    pub updated_at: String,
}

/// A volume record.
#[derive(Debug, Clone, PartialEq)]
pub struct Volume {
    /// UUID.
    pub id: String,
    /// Owning project.
    pub project_id: String,
    /// Creating user.
    pub user_id: String,
    /// Display name.
    pub name: Option<String>,
    /// Display description.
    pub description: Option<String>,
    /// Size in GiB.
    pub size_gb: u64,
    /// One of [`status`].
    pub status: String,
    /// Volume type id.
    pub volume_type_id: String,
    /// The volume this was cloned from.
    pub source_volid: Option<String>,
    /// The snapshot it was made from.
    pub snapshot_id: Option<String>,
    /// The key-manager secret that opens this volume (encrypted only).
    pub encryption_key_id: Option<String>,
    /// User metadata.
    pub metadata: BTreeMap<String, String>,
    /// Marked bootable (`os-set_bootable`).
    pub bootable: bool,
    /// The group it belongs to (3.13+), if any.
    pub group_id: Option<String>,
    /// Attached read-only from now on (`os-update_readonly_flag`; Cinder's
    /// admin metadata `readonly`); `None` until first set.
    pub readonly: Option<bool>,
    /// ISO 8601 creation time.
    pub created_at: String,
    /// ISO 8601 last update time.
    pub updated_at: String,
}

/// A volume type.
#[derive(Debug, Clone, PartialEq)]
pub struct VolumeType {
    /// UUID.
    pub id: String,
    /// Unique name.
    pub name: String,
    /// Description.
    pub description: Option<String>,
    /// Visible to every project.
    pub is_public: bool,
    /// Extra specs.
    pub extra_specs: BTreeMap<String, String>,
    /// The qos specs associated with the type, if any.
    pub qos_specs_id: Option<String>,
}

/// The name of the type volumes get when none is asked for.
pub const DEFAULT_TYPE_NAME: &str = "__DEFAULT__";

/// LUKS flavour of an encryption type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Provider {
    /// LUKS1 (Cinder's `luks`).
    Luks1,
    /// LUKS2.
    Luks2,
    /// Any other provider an admin names (`plain`, a vendor's class…):
    /// stored and shown as Cinder does, but rekey formats no volume of it.
    Other,
}

impl Provider {
    /// Parses Cinder's provider names, including the legacy class paths.
    pub fn parse(s: &str) -> Result<Self, ServiceError> {
        match s {
            "luks" | "LuksEncryptor" | "nova.volume.encryptors.luks.LuksEncryptor"
            | "os_brick.encryptors.luks.LuksEncryptor" => Ok(Provider::Luks1),
            "luks2" | "Luks2Encryptor" | "os_brick.encryptors.luks.Luks2Encryptor" => Ok(Provider::Luks2),
            _ => Err(ServiceError::invalid(format!(
                "Invalid input received: provider must be luks or luks2, not {s:?} (plain dm-crypt is not supported)"
            ))),
        }
    }

    /// The provider `s` names: LUKS1 or LUKS2 by any of Cinder's spellings,
    /// else [`Provider::Other`]. Cinder takes any provider string for an
    /// encryption type; what rekey cannot format is refused when a volume
    /// of the type is made ([`Provider::version`]).
    pub fn of(s: &str) -> Self {
        Provider::parse(s).unwrap_or(Provider::Other)
    }

    /// Canonical spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Provider::Luks1 => "luks",
            Provider::Luks2 => "luks2",
            Provider::Other => "other",
        }
    }

    /// The engine's version; bad input for a provider rekey cannot format.
    pub fn version(self) -> Result<rekey_luks::Version, ServiceError> {
        match self {
            Provider::Luks1 => Ok(rekey_luks::Version::Luks1),
            Provider::Luks2 => Ok(rekey_luks::Version::Luks2),
            Provider::Other => Err(ServiceError::invalid(
                "Invalid volume type: its encryption provider is not one rekey formats (luks or luks2; plain dm-crypt is not supported)",
            )),
        }
    }
}

/// Default cipher of an encryption type without one.
pub const DEFAULT_CIPHER: &str = "aes-xts-plain64";
/// Default key size (bits) of an encryption type without one.
pub const DEFAULT_KEY_SIZE: u32 = 256;

/// The encryption of a volume type.
#[derive(Debug, Clone, PartialEq)]
pub struct Encryption {
    /// The type it belongs to.
    pub volume_type_id: String,
    /// Its own id.
    pub encryption_id: String,
    /// LUKS1 or LUKS2.
    pub provider: Provider,
    /// The provider as the admin spelled it (`luks`, `LuksEncryptor`, a
    /// class path…): Cinder stores and shows it as given.
    pub provider_name: String,
    /// Cipher spec as given (None → default).
    pub cipher: Option<String>,
    /// Key size in bits as given (None → default).
    pub key_size: Option<u32>,
    /// `front-end` or `back-end`.
    pub control_location: String,
    /// Creation time.
    pub created_at: String,
    /// Update time.
    pub updated_at: Option<String>,
}

impl Encryption {
    /// Cipher in force.
    pub fn cipher(&self) -> &str {
        self.cipher.as_deref().unwrap_or(DEFAULT_CIPHER)
    }
    /// Key size in force, bits.
    pub fn key_size(&self) -> u32 {
        self.key_size.unwrap_or(DEFAULT_KEY_SIZE)
    }
}

/// Now as Cinder prints times: `2024-05-01T12:34:56.000000`.
pub fn now_iso() -> String {
    iso_at(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default())
}

/// `now` (since the Unix epoch) as Cinder prints times.
pub fn iso_at(now: std::time::Duration) -> String {
    let secs = now.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:06}",
        rem / 3600,
        rem / 60 % 60,
        rem % 60,
        now.subsec_micros()
    )
}

/// Days since 1970-01-01 → (year, month, day), proleptic Gregorian
/// (H. Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(19_723), (2024, 1, 1));
        assert_eq!(civil_from_days(19_782), (2024, 2, 29));
    }

    #[test]
    fn rekey_modes_and_providers_parse() {
        assert_eq!("volume-key".parse::<RekeyMode>().unwrap(), RekeyMode::VolumeKey);
        assert!("Keyslot".parse::<RekeyMode>().is_err());
        assert_eq!(Provider::parse("luks").unwrap(), Provider::Luks1);
        assert_eq!(Provider::parse("luks2").unwrap(), Provider::Luks2);
        assert!(Provider::parse("plain").is_err());
    }
}
