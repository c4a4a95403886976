//! Choosing and opening a key manager.
//!
//! TOML, as the service's configuration file spells it:
//!
//! ```toml
//! [key_manager]
//! backend = "embedded"
//! db_path = "/var/lib/rekey/keys.sqlite"
//! # kek_path = "/var/lib/rekey/keys.kek"   (default: next to db_path)
//! ```
//!
//! ```toml
//! [key_manager]
//! backend = "barbican"
//! url = "http://127.0.0.1:9311"
//! timeout_ms = 10000
//! retries = 2
//! [key_manager.auth]
//! type = "noauth"            # or: type = "token", token = "..."
//!                            # or: type = "keystone", auth_url, username, password
//!                            #     (the service user, scoped to each key's project)
//! ```
//!
//! ```toml
//! [key_manager]
//! backend = "vault"
//! url = "http://127.0.0.1:8200"
//! token = "..."              # or: approle_role_id = "...", approle_secret_id = "..."
//! kv_mountpoint = "secret"   # the default
//! # kv_path = "cinder"       namespace = "ns1"      ca_file = "/etc/ssl/vault-ca.pem"
//! ```

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use zeroize::Zeroizing;

use crate::barbican::BarbicanKeyManager;
use crate::embedded::EmbeddedKeyManager;
use crate::error::KeyError;
use crate::vault::VaultKeyManager;
use crate::KeyManager;

/// The environment variable that may hold the embedded store's KEK as 64 hex
/// digits. A KEK in the configuration wins over it; it wins over the file.
pub const KEK_ENV: &str = "REKEY_KEK";

/// Which key manager to use, and how to reach it.
#[derive(Clone, Debug, Deserialize)]
#[serde(tag = "backend", rename_all = "snake_case")]
#[non_exhaustive]
pub enum KeyManagerConfig {
    /// The embedded SQLite store (the default).
    Embedded(EmbeddedConfig),
    /// An OpenStack Barbican service.
    Barbican(BarbicanConfig),
    /// HashiCorp Vault or OpenBao, KV v2, in castellan's layout.
    Vault(VaultConfig),
}

impl KeyManagerConfig {
    /// The default: the embedded store in `data_dir` (`keys.sqlite`, with its
    /// KEK in `keys.kek`).
    pub fn embedded_in(data_dir: impl AsRef<Path>) -> Self {
        KeyManagerConfig::Embedded(EmbeddedConfig::new(data_dir.as_ref().join("keys.sqlite")))
    }
}

/// Settings of the embedded store.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct EmbeddedConfig {
    /// The SQLite database file; created (0600) if missing.
    pub db_path: PathBuf,
    /// The KEK file (64 hex digits); default: `db_path` with extension `kek`.
    /// Created 0600 with a random KEK if missing and the store is new.
    #[serde(default)]
    pub kek_path: Option<PathBuf>,
    /// The KEK itself as 64 hex digits, instead of `REKEY_KEK` or the file.
    #[serde(default)]
    pub kek_hex: Option<Zeroizing<String>>,
}

impl EmbeddedConfig {
    /// A store at `db_path`, KEK file next to it.
    pub fn new(db_path: impl Into<PathBuf>) -> Self {
        EmbeddedConfig {
            db_path: db_path.into(),
            kek_path: None,
            kek_hex: None,
        }
    }

    /// Keeps the KEK in `path` instead of next to the database.
    pub fn with_kek_path(mut self, path: impl Into<PathBuf>) -> Self {
        self.kek_path = Some(path.into());
        self
    }

    /// Uses this KEK (64 hex digits) instead of `REKEY_KEK` or a file.
    pub fn with_kek_hex(mut self, hex: Zeroizing<String>) -> Self {
        self.kek_hex = Some(hex);
        self
    }

    /// The KEK file this configuration uses when no KEK is given directly.
    pub fn resolved_kek_path(&self) -> PathBuf {
        self.kek_path
            .clone()
            .unwrap_or_else(|| self.db_path.with_extension("kek"))
    }
}

impl fmt::Debug for EmbeddedConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EmbeddedConfig")
            .field("db_path", &self.db_path)
            .field("kek_path", &self.kek_path)
            .field("kek_hex", &self.kek_hex.as_ref().map(|_| "[REDACTED]"))
            .finish()
    }
}

/// Settings of the Barbican client.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct BarbicanConfig {
    /// Barbican's endpoint, e.g. `http://127.0.0.1:9311` (a trailing `/v1` is
    /// accepted).
    pub url: String,
    /// Per-request timeout (connect, send, whole answer), milliseconds.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Extra attempts after a connection error, a timeout or a 5xx answer.
    #[serde(default = "default_retries")]
    pub retries: u32,
    /// First backoff between attempts, milliseconds; doubles each time.
    #[serde(default = "default_backoff_ms")]
    pub backoff_ms: u64,
    /// How long to wait for a key order to become ACTIVE, milliseconds.
    #[serde(default = "default_order_timeout_ms")]
    pub order_timeout_ms: u64,
    /// How to authenticate.
    #[serde(default)]
    pub auth: BarbicanAuth,
}

fn default_timeout_ms() -> u64 {
    10_000
}
fn default_retries() -> u32 {
    2
}
fn default_backoff_ms() -> u64 {
    200
}
fn default_order_timeout_ms() -> u64 {
    30_000
}

impl BarbicanConfig {
    /// Barbican at `url` with the defaults: 10 s timeout, 2 retries from
    /// 200 ms backoff, 30 s for orders, noauth.
    pub fn new(url: impl Into<String>) -> Self {
        BarbicanConfig {
            url: url.into(),
            timeout_ms: default_timeout_ms(),
            retries: default_retries(),
            backoff_ms: default_backoff_ms(),
            order_timeout_ms: default_order_timeout_ms(),
            auth: BarbicanAuth::default(),
        }
    }

    /// Sets the per-request timeout.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout_ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
        self
    }

    /// Sets the number of retries and the first backoff.
    pub fn with_retries(mut self, retries: u32, backoff: Duration) -> Self {
        self.retries = retries;
        self.backoff_ms = u64::try_from(backoff.as_millis()).unwrap_or(u64::MAX);
        self
    }

    /// Sets the authentication.
    pub fn with_auth(mut self, auth: BarbicanAuth) -> Self {
        self.auth = auth;
        self
    }
}

/// How the client identifies itself to Barbican.
#[derive(Clone, Default, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
#[non_exhaustive]
pub enum BarbicanAuth {
    /// Barbican's unauthenticated pipeline: the project travels in an
    /// `X-Project-Id` header.
    #[default]
    Noauth,
    /// A Keystone token sent as `X-Auth-Token`; Barbican takes the project
    /// from the token, which must be scoped to the project asked for.
    Token {
        /// The token.
        token: Zeroizing<String>,
    },
    /// Barbican behind Keystone: rekey's own service user, with a token
    /// scoped to each key's project (`type = "keystone"`, `auth_url`,
    /// `username`, `password`, `user_domain_name`).
    Keystone(crate::barbican::KeystoneCredentials),
}

impl fmt::Debug for BarbicanAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BarbicanAuth::Noauth => f.write_str("Noauth"),
            BarbicanAuth::Token { .. } => f.write_str("Token([REDACTED])"),
            BarbicanAuth::Keystone(k) => write!(f, "Keystone({k:?})"),
        }
    }
}

/// Settings of the Vault (or OpenBao) client. The first eight keys are
/// castellan's `[vault]` options under rekey's names.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct VaultConfig {
    /// Vault's address, e.g. `http://127.0.0.1:8200` (a trailing `/v1` is
    /// accepted).
    pub url: String,
    /// A Vault token. Exactly one of `token` or the AppRole pair is given.
    #[serde(default)]
    pub token: Option<Zeroizing<String>>,
    /// AppRole `role_id`; the client logs in and renews its token itself.
    #[serde(default)]
    pub approle_role_id: Option<Zeroizing<String>>,
    /// AppRole `secret_id`.
    #[serde(default)]
    pub approle_secret_id: Option<Zeroizing<String>>,
    /// Where the KV v2 engine is mounted.
    #[serde(default = "default_kv_mountpoint")]
    pub kv_mountpoint: String,
    /// A folder inside the mount for the keys (castellan's `kv_path`).
    #[serde(default)]
    pub kv_path: Option<String>,
    /// A Vault Enterprise namespace, sent as `X-Vault-Namespace`.
    #[serde(default)]
    pub namespace: Option<String>,
    /// PEM file of the CA that signed Vault's certificate (https only).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Per-request timeout (connect, send, whole answer), milliseconds.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Extra attempts after a connection error, a timeout, 429, a 5xx or a
    /// sealed Vault.
    #[serde(default = "default_retries")]
    pub retries: u32,
    /// First backoff between attempts, milliseconds; doubles each time.
    #[serde(default = "default_backoff_ms")]
    pub backoff_ms: u64,
}

fn default_kv_mountpoint() -> String {
    "secret".into()
}

impl VaultConfig {
    /// Vault at `url`, mount `secret`, no auth yet (set `token` or the
    /// AppRole pair), 10 s timeout, 2 retries from 200 ms.
    pub fn new(url: impl Into<String>) -> Self {
        VaultConfig {
            url: url.into(),
            token: None,
            approle_role_id: None,
            approle_secret_id: None,
            kv_mountpoint: default_kv_mountpoint(),
            kv_path: None,
            namespace: None,
            ca_file: None,
            timeout_ms: default_timeout_ms(),
            retries: default_retries(),
            backoff_ms: default_backoff_ms(),
        }
    }

    /// Authenticates with `token`.
    pub fn with_token(mut self, token: Zeroizing<String>) -> Self {
        self.token = Some(token);
        self.approle_role_id = None;
        self.approle_secret_id = None;
        self
    }

    /// Authenticates with AppRole.
    pub fn with_approle(mut self, role_id: Zeroizing<String>, secret_id: Zeroizing<String>) -> Self {
        self.token = None;
        self.approle_role_id = Some(role_id);
        self.approle_secret_id = Some(secret_id);
        self
    }

    /// Keeps the keys under `kv_path` inside the mount.
    pub fn with_kv_path(mut self, kv_path: impl Into<String>) -> Self {
        self.kv_path = Some(kv_path.into());
        self
    }

    /// Sets the per-request timeout.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout_ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
        self
    }

    /// Sets the number of retries and the first backoff.
    pub fn with_retries(mut self, retries: u32, backoff: Duration) -> Self {
        self.retries = retries;
        self.backoff_ms = u64::try_from(backoff.as_millis()).unwrap_or(u64::MAX);
        self
    }
}

impl fmt::Debug for VaultConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let redacted = |v: &Option<Zeroizing<String>>| v.as_ref().map(|_| "[REDACTED]");
        f.debug_struct("VaultConfig")
            .field("url", &self.url)
            .field("token", &redacted(&self.token))
            .field("approle_role_id", &redacted(&self.approle_role_id))
            .field("approle_secret_id", &redacted(&self.approle_secret_id))
            .field("kv_mountpoint", &self.kv_mountpoint)
            .field("kv_path", &self.kv_path)
            .field("namespace", &self.namespace)
            .field("ca_file", &self.ca_file)
            .field("timeout_ms", &self.timeout_ms)
            .field("retries", &self.retries)
            .finish()
    }
}

/// Opens the key manager `config` describes. The embedded store creates its
/// database and KEK when missing; Barbican is not contacted until first use.
pub async fn open_key_manager(config: &KeyManagerConfig) -> Result<Arc<dyn KeyManager>, KeyError> {
    Ok(match config {
        KeyManagerConfig::Embedded(c) => Arc::new(EmbeddedKeyManager::open(c).await?),
        KeyManagerConfig::Barbican(c) => Arc::new(BarbicanKeyManager::new(c)?),
        KeyManagerConfig::Vault(c) => Arc::new(VaultKeyManager::new(c)?),
    })
}
