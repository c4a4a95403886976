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
//!
//! [nbd]                                # the NBD exports of attachments
//! listen = "127.0.0.1:10809"           # TCP; opened at the first export
//! host = "192.0.2.10"                  # address put in connection_info (default: listen's)
//! socket = "/run/rekey/nbd.sock"       # also serve a Unix socket; offered when a connector asks
//! tls_dir = "/etc/rekey/nbd-tls"       # server-cert.pem + server-key.pem: TLS required
//! rbd_transport = "rbd"                # RBD backend, front-end volumes: "rbd" (librbd) or "nbd"
//!
//! [auth]                               # default: noauth (loopback only)
//! strategy = "keystone"
//! auth_url = "http://127.0.0.1:5000/v3"
//! username = "rekey"                   # service user (admin or service role)
//! password = "..."
//! project_name = "service"
//! user_domain_name = "Default"
//! project_domain_name = "Default"
//! # optional: cafile, token_cache_seconds (default 300), timeout_seconds (default 5)
//! ```
//!
//! Every section is optional; `rekey serve` with no arguments runs with all
//! defaults under `./rekey-data`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use rekey_keys::{BarbicanAuth, KeyManagerConfig, KeystoneCredentials};
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
    /// Who callers are: noauth (the default) or Keystone tokens.
    #[serde(default)]
    pub auth: AuthConfig,
    /// This process's name among the nodes sharing the database: what its
    /// job leases and step-log rows carry. Default `local`.
    #[serde(default)]
    pub node_name: Option<String>,
    /// How long a node's lease on a job lasts without a heartbeat; when it
    /// runs out another node takes the job over.
    #[serde(default = "default_lease_seconds")]
    pub lease_seconds: u64,
    /// Where attachments' NBD exports are served.
    #[serde(default)]
    pub nbd: NbdConfig,
}

/// Default NBD listen address: NBD's registered port, loopback only.
pub const DEFAULT_NBD_LISTEN: &str = "127.0.0.1:10809";

/// Which connection an attachment of a front-end volume on the RBD backend gets.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RbdTransport {
    /// `driver_volume_type: rbd`: the consumer opens the image with librbd,
    /// as with Cinder's RBD driver.
    #[default]
    Rbd,
    /// `driver_volume_type: nbd`: rekey serves the image.
    Nbd,
}

/// The `[nbd]` section: how consumers reach attachments' exports.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct NbdConfig {
    /// TCP address the NBD server listens on. It is opened when the first
    /// export is made (at an attach, or at start-up for attachments that
    /// were served before a restart), so a node that serves none holds no port.
    #[serde(default = "default_nbd_listen")]
    pub listen: SocketAddr,
    /// The host consumers are told to connect to; default the listen address.
    #[serde(default)]
    pub host: Option<String>,
    /// A Unix socket served beside TCP; a connector with `"nbd_socket": true`
    /// gets an `nbd+unix://` URI.
    #[serde(default)]
    pub socket: Option<PathBuf>,
    /// Directory with `server-cert.pem` and `server-key.pem` (qemu's
    /// `tls-creds-x509` layout): every connection must then start TLS.
    #[serde(default)]
    pub tls_dir: Option<PathBuf>,
    /// On the RBD backend, what front-end volumes are attached with
    /// (back-end ones are always NBD: only rekey holds their key).
    #[serde(default)]
    pub rbd_transport: RbdTransport,
}

impl Default for NbdConfig {
    fn default() -> Self {
        NbdConfig { listen: default_nbd_listen(), host: None, socket: None, tls_dir: None, rbd_transport: RbdTransport::Rbd }
    }
}

fn default_nbd_listen() -> SocketAddr {
    DEFAULT_NBD_LISTEN.parse().expect("built-in address")
}

/// How callers are identified.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthStrategy {
    /// Cinder's noauth: the caller names itself in `X-Auth-Token`. Only for
    /// a single machine: refused on a non-loopback address unless insecure.
    #[default]
    Noauth,
    /// Keystone tokens, validated as keystonemiddleware does.
    Keystone,
}

impl std::str::FromStr for AuthStrategy {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "noauth" => Ok(AuthStrategy::Noauth),
            "keystone" => Ok(AuthStrategy::Keystone),
            _ => Err(format!("auth strategy must be noauth or keystone, not {s:?}")),
        }
    }
}

/// The `[auth]` section: the strategy and, for Keystone, the service user
/// that validates callers' tokens.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct AuthConfig {
    /// `noauth` or `keystone`.
    #[serde(default)]
    pub strategy: AuthStrategy,
    /// Keystone's v3 endpoint, e.g. `http://127.0.0.1:5000/v3`.
    #[serde(default)]
    pub auth_url: Option<String>,
    /// The service user (needs the `admin` or `service` role).
    #[serde(default)]
    pub username: Option<String>,
    /// Its password.
    #[serde(default)]
    pub password: Option<zeroize::Zeroizing<String>>,
    /// The project its token is scoped to.
    #[serde(default)]
    pub project_name: Option<String>,
    /// Domain of the service user.
    #[serde(default = "default_domain")]
    pub user_domain_name: String,
    /// Domain of `project_name`.
    #[serde(default = "default_domain")]
    pub project_domain_name: String,
    /// PEM bundle to trust for an https `auth_url`.
    #[serde(default)]
    pub cafile: Option<PathBuf>,
    /// Longest a validated token is trusted without asking Keystone again
    /// (never past its expiry); revocation takes up to this long.
    #[serde(default = "default_token_cache_seconds")]
    pub token_cache_seconds: u64,
    /// Bound on each Keystone request; past it the caller gets a 503.
    #[serde(default = "default_timeout_seconds")]
    pub timeout_seconds: u64,
    /// Set by `--insecure-noauth`, never by the file: allows noauth on a
    /// non-loopback address.
    #[serde(skip)]
    pub insecure_noauth: bool,
}

/// Default `token_cache_seconds` (keystonemiddleware's `token_cache_time`).
pub const DEFAULT_TOKEN_CACHE_SECONDS: u64 = 300;
/// Default `timeout_seconds`.
pub const DEFAULT_AUTH_TIMEOUT_SECONDS: u64 = 5;

fn default_domain() -> String {
    "Default".into()
}
fn default_token_cache_seconds() -> u64 {
    DEFAULT_TOKEN_CACHE_SECONDS
}
fn default_timeout_seconds() -> u64 {
    DEFAULT_AUTH_TIMEOUT_SECONDS
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            strategy: AuthStrategy::Noauth,
            auth_url: None,
            username: None,
            password: None,
            project_name: None,
            user_domain_name: default_domain(),
            project_domain_name: default_domain(),
            cafile: None,
            token_cache_seconds: default_token_cache_seconds(),
            timeout_seconds: default_timeout_seconds(),
            insecure_noauth: false,
        }
    }
}

impl std::fmt::Debug for AuthConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthConfig")
            .field("strategy", &self.strategy)
            .field("auth_url", &self.auth_url)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "[REDACTED]"))
            .field("project_name", &self.project_name)
            .field("user_domain_name", &self.user_domain_name)
            .field("project_domain_name", &self.project_domain_name)
            .field("cafile", &self.cafile)
            .field("token_cache_seconds", &self.token_cache_seconds)
            .field("timeout_seconds", &self.timeout_seconds)
            .finish()
    }
}

impl AuthConfig {
    /// Refuses what cannot work: noauth open to the network without
    /// `--insecure-noauth`, Keystone without its service credentials.
    pub fn check(&self, listen: SocketAddr) -> Result<()> {
        match self.strategy {
            AuthStrategy::Noauth if !listen.ip().is_loopback() && !self.insecure_noauth => Err(ServiceError::Config(format!(
                "noauth trusts every caller; refusing to listen on {listen} (not loopback) without --insecure-noauth \
                 (or use --auth keystone)"
            ))),
            AuthStrategy::Noauth => Ok(()),
            AuthStrategy::Keystone => {
                let missing: Vec<&str> = [
                    ("auth_url", self.auth_url.is_none()),
                    ("username", self.username.is_none()),
                    ("password", self.password.is_none()),
                    ("project_name", self.project_name.is_none()),
                ]
                .iter()
                .filter(|(_, m)| *m)
                .map(|(k, _)| *k)
                .collect();
                if !missing.is_empty() {
                    return Err(ServiceError::Config(format!("[auth] strategy = \"keystone\" needs {}", missing.join(", "))));
                }
                if self.timeout_seconds == 0 || self.token_cache_seconds > 86_400 {
                    return Err(ServiceError::Config(
                        "[auth] timeout_seconds must be at least 1 and token_cache_seconds at most 86400".into(),
                    ));
                }
                Ok(())
            }
        }
    }
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
            auth: AuthConfig::default(),
            node_name: None,
            lease_seconds: default_lease_seconds(),
            nbd: NbdConfig::default(),
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

    /// The key manager in force. With Keystone and a Barbican whose
    /// `[key_manager.auth]` is left at noauth, rekey signs in to Barbican as
    /// the `[auth]` service user, scoped to each key's project.
    pub fn key_manager(&self) -> KeyManagerConfig {
        let km = self.key_manager.clone().unwrap_or_else(|| KeyManagerConfig::embedded_in(&self.data_dir));
        match (km, &self.auth) {
            (
                KeyManagerConfig::Barbican(b),
                AuthConfig { strategy: AuthStrategy::Keystone, auth_url: Some(url), username: Some(user), password: Some(pw), .. },
            ) if matches!(b.auth, BarbicanAuth::Noauth) => {
                let creds = KeystoneCredentials::new(url.clone(), user.clone(), pw.clone())
                    .with_user_domain(self.auth.user_domain_name.clone());
                KeyManagerConfig::Barbican(b.with_auth(BarbicanAuth::Keystone(creds)))
            }
            (km, _) => km,
        }
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

    #[test]
    fn auth_section_and_its_checks() {
        let c = Config::parse(
            "[auth]\nstrategy = \"keystone\"\nauth_url = \"http://127.0.0.1:5000/v3\"\nusername = \"rekey\"\n\
             password = \"pw\"\nproject_name = \"service\"\nuser_domain_name = \"Default\"\n\
             project_domain_name = \"Default\"\ntoken_cache_seconds = 10\ntimeout_seconds = 2\n",
        )
        .unwrap();
        assert_eq!(c.auth.strategy, AuthStrategy::Keystone);
        assert_eq!((c.auth.token_cache_seconds, c.auth.timeout_seconds), (10, 2));
        assert!(!format!("{:?}", c.auth).contains("pw\""));
        let any: SocketAddr = "0.0.0.0:8776".parse().unwrap();
        assert!(c.auth.check(any).is_ok());
        let mut noauth = AuthConfig::default();
        assert!(noauth.check(default_listen()).is_ok());
        assert!(noauth.check(any).is_err());
        noauth.insecure_noauth = true;
        assert!(noauth.check(any).is_ok());
        let partial = Config::parse("[auth]\nstrategy = \"keystone\"\nusername = \"rekey\"\n").unwrap();
        let e = partial.auth.check(default_listen()).unwrap_err().to_string();
        assert!(e.contains("auth_url") && e.contains("password") && !e.contains("username"), "{e}");
        assert!(Config::parse("[auth]\nstrategy = \"ldap\"").is_err());
        assert!(Config::parse("[auth]\ninsecure_noauth = true").is_err());
    }
}
