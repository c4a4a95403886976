//! The service's configuration, as its TOML file spells it.
//!
//! ```toml
//! listen = "127.0.0.1:8776"
//! data_dir = "/var/lib/rekey"          # volumes, databases, KEK
//! database_url = "sqlite:///var/lib/rekey/rekey.sqlite"   # default: data_dir/rekey.sqlite
//! max_volume_size_gb = 1000
//!
//! [key_manager]                        # default: embedded store in data_dir
//! backend = "embedded"                 # or "barbican" with url = "http://..."
//! db_path = "/var/lib/rekey/keys.sqlite"
//!
//! [backend]                            # default: file backend in data_dir
//! type = "file"                        # "rbd" (pool, ceph_conf, ...) with the rbd feature
//! data_dir = "/var/lib/rekey"
//!
//! [rekey]
//! default_mode = "keyslot"             # for types without a rekey:mode extra spec
//! ```
//!
//! Every section is optional; `rekey serve` with no arguments runs with all
//! defaults under `./rekey-data`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use rekey_keys::KeyManagerConfig;
use rekey_storage::BackendConfig;
use serde::Deserialize;

use crate::error::{Result, ServiceError};
use crate::model::RekeyMode;

/// Default listen address (Cinder's port, loopback only).
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8776";
/// Default data directory, relative to the working directory.
pub const DEFAULT_DATA_DIR: &str = "rekey-data";
/// Default largest volume, GiB.
pub const DEFAULT_MAX_VOLUME_SIZE_GB: u64 = 1000;
/// Default job lease without a heartbeat, seconds.
pub const DEFAULT_LEASE_SECONDS: u64 = 15;

/// Everything `rekey serve` needs to start.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct Config {
    /// Address to listen on.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Where volumes, the service database and the embedded key store live.
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    /// sqlx URL of the service database; default `sqlite://DATA_DIR/rekey.sqlite`.
    #[serde(default)]
    pub database_url: Option<String>,
    /// Largest volume a caller may create, in GiB (Cinder's per-volume quota).
    #[serde(default = "default_max_size")]
    pub max_volume_size_gb: u64,
    /// Key manager; default: the embedded store in `data_dir`.
    #[serde(default)]
    pub key_manager: Option<KeyManagerConfig>,
    /// Volume backend; default: the file backend in `data_dir`.
    #[serde(default)]
    pub backend: Option<BackendConfig>,
    /// Rekey policy.
    #[serde(default)]
    pub rekey: RekeyConfig,
    /// This process's name among the nodes sharing the database: what its
    /// job leases and step-log rows carry. Default `local`.
    #[serde(default)]
    pub node_name: Option<String>,
    /// How long a node's lease on a job lasts without a heartbeat; when it
    /// runs out another node takes the job over.
    #[serde(default = "default_lease_seconds")]
    pub lease_seconds: u64,
}

/// How volumes made from other volumes get their own key.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct RekeyConfig {
    /// Mode for volume types without a `rekey:mode` extra spec.
    #[serde(default)]
    pub default_mode: RekeyMode,
}

fn default_listen() -> SocketAddr {
    DEFAULT_LISTEN.parse().expect("built-in address")
}
fn default_data_dir() -> PathBuf {
    PathBuf::from(DEFAULT_DATA_DIR)
}
fn default_lease_seconds() -> u64 {
    DEFAULT_LEASE_SECONDS
}
fn default_max_size() -> u64 {
    DEFAULT_MAX_VOLUME_SIZE_GB
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: default_listen(),
            data_dir: default_data_dir(),
            database_url: None,
            max_volume_size_gb: default_max_size(),
            key_manager: None,
            backend: None,
            rekey: RekeyConfig::default(),
            node_name: None,
            lease_seconds: default_lease_seconds(),
        }
    }
}

impl Config {
    /// Reads a TOML file.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ServiceError::Config(format!("cannot read {}: {e}", path.display())))?;
        Self::parse(&text).map_err(|e| ServiceError::Config(format!("{}: {e}", path.display())))
    }

    /// Parses TOML text.
    pub fn parse(text: &str) -> Result<Self> {
        toml::from_str(text).map_err(|e| ServiceError::Config(e.to_string()))
    }

    /// The node name in force.
    pub fn node_name(&self) -> String {
        self.node_name.clone().unwrap_or_else(|| "local".into())
    }

    /// The database URL in force.
    pub fn database_url(&self) -> String {
        self.database_url
            .clone()
            .unwrap_or_else(|| format!("sqlite://{}", self.data_dir.join("rekey.sqlite").display()))
    }

    /// The key manager in force.
    pub fn key_manager(&self) -> KeyManagerConfig {
        self.key_manager.clone().unwrap_or_else(|| KeyManagerConfig::embedded_in(&self.data_dir))
    }

    /// The backend in force.
    pub fn backend(&self) -> BackendConfig {
        self.backend.clone().unwrap_or_else(|| BackendConfig::File { data_dir: self.data_dir.clone() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_is_all_defaults() {
        let c = Config::parse("").unwrap();
        assert_eq!(c.listen.to_string(), DEFAULT_LISTEN);
        assert_eq!(c.data_dir, PathBuf::from(DEFAULT_DATA_DIR));
        assert!(c.database_url().ends_with("rekey-data/rekey.sqlite"));
        assert!(matches!(c.backend(), BackendConfig::File { .. }));
        assert_eq!(c.rekey.default_mode, RekeyMode::Keyslot);
    }

    #[test]
    fn sections_parse_and_unknown_keys_are_refused() {
        let c = Config::parse(
            "data_dir = \"/x\"\n[key_manager]\nbackend = \"barbican\"\nurl = \"http://127.0.0.1:9311\"\n\
             [backend]\ntype = \"file\"\ndata_dir = \"/y\"\n[rekey]\ndefault_mode = \"none\"\n",
        )
        .unwrap();
        assert!(matches!(c.key_manager(), KeyManagerConfig::Barbican(_)));
        assert_eq!(c.backend(), BackendConfig::File { data_dir: "/y".into() });
        assert_eq!(c.rekey.default_mode, RekeyMode::None);
        assert!(Config::parse("listen_port = 1").is_err());
        assert!(Config::parse("[rekey]\ndefault_mode = \"sometimes\"").is_err());
    }
}
