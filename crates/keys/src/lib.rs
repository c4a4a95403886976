//! Key managers for rekey: where volume keys live.
//!
//! The service asks a [`KeyManager`] for a fresh key on every volume create and
//! transfer, reads it back to unlock a volume, and deletes it with the volume.
//! Three backends implement the trait:
//!
//! - [`EmbeddedKeyManager`] (the default): a SQLite file in the service's data
//!   directory; every key is wrapped with AES-256-GCM under a key-encryption
//!   key (KEK) that lives in its own 0600 file, in `REKEY_KEK` or in the
//!   configuration.
//! - [`BarbicanKeyManager`]: OpenStack Barbican over REST, so key ids are
//!   Barbican secret UUIDs exactly as Cinder stores them.
//! - [`VaultKeyManager`]: HashiCorp Vault or OpenBao (KV v2) in the layout
//!   castellan's Vault backend uses, so keys move between the two unchanged.
//!
//! The rest of the program sees only `Arc<dyn KeyManager>` from
//! [`open_key_manager`]. Every operation is scoped to a [`Project`]; a project
//! never reads, deletes or lists another project's keys.
//!
//! Key bytes only ever live in [`KeyBytes`] (zeroized on drop, redacted in
//! `Debug`) and in the zeroizing passphrases of [`passphrase_hex`] and
//! [`passphrase_legacy`]; no error, log line or panic message carries them.
#![deny(missing_docs)]
#![forbid(unsafe_code)]

mod barbican;
mod config;
mod embedded;
mod error;
mod http;
mod passphrase;
mod types;
mod vault;
mod wal_sync;

use async_trait::async_trait;

pub use barbican::{BarbicanKeyManager, KeystoneCredentials};
pub use config::{
    open_key_manager, BarbicanAuth, BarbicanConfig, EmbeddedConfig, KeyManagerConfig, VaultConfig,
    KEK_ENV,
};
pub use embedded::{rotate_kek, EmbeddedKeyManager, KekRotation};
pub use error::{ErrorKind, KeyError};
pub use http::keystone_time_left;
pub use passphrase::{passphrase_hex, passphrase_legacy};
pub use wal_sync::WalSync;
pub use types::{KeyBytes, KeyId, Project, MAX_BIT_LENGTH};
pub use vault::VaultKeyManager;

/// A store of symmetric keys, each owned by one project.
///
/// Access to another project's key is refused: the embedded store answers
/// [`ErrorKind::NotFound`] (it does not reveal that the id exists), and so
/// does Vault for a key stamped with another project; Barbican answers
/// [`ErrorKind::Forbidden`]. Callers treat both as "not yours".
#[async_trait]
pub trait KeyManager: Send + Sync + std::fmt::Debug {
    /// A short name for logs: `"embedded"`, `"barbican"` or `"vault"`.
    fn backend(&self) -> &'static str;

    /// Generates a new random key of `bit_length` bits (a multiple of 8) for
    /// `algorithm` (e.g. `"aes"`) inside the key manager and returns its id.
    async fn create_key(
        &self,
        project: &Project,
        algorithm: &str,
        bit_length: u32,
    ) -> Result<KeyId, KeyError> {
        self.create_named_key(project, None, algorithm, bit_length).await
    }

    /// [`KeyManager::create_key`], with a name the key can be found by
    /// ([`KeyManager::find_named`]) should the caller crash before it records
    /// the id: the service names every key after the job step that makes it,
    /// so a re-run step reuses the key instead of leaving an orphan. Names
    /// are 1 to 200 ASCII letters, digits, `.`, `_`, `:` or `-`.
    async fn create_named_key(
        &self,
        project: &Project,
        name: Option<&str>,
        algorithm: &str,
        bit_length: u32,
    ) -> Result<KeyId, KeyError>;

    /// The bytes of key `id`, exactly as created or stored.
    async fn get_key(&self, project: &Project, id: &KeyId) -> Result<KeyBytes, KeyError>;

    /// Stores the given bytes as a new key and returns its id. `bit_length`
    /// must equal `key.len() * 8`.
    async fn store_key(
        &self,
        project: &Project,
        key: &KeyBytes,
        algorithm: &str,
        bit_length: u32,
    ) -> Result<KeyId, KeyError> {
        self.store_named_key(project, None, key, algorithm, bit_length).await
    }

    /// [`KeyManager::store_key`] with a name, as [`KeyManager::create_named_key`].
    async fn store_named_key(
        &self,
        project: &Project,
        name: Option<&str>,
        key: &KeyBytes,
        algorithm: &str,
        bit_length: u32,
    ) -> Result<KeyId, KeyError>;

    /// The key `project` owns under `name` (the oldest, should there be
    /// several), or `None`.
    async fn find_named(&self, project: &Project, name: &str) -> Result<Option<KeyId>, KeyError>;

    /// Every named key `project` owns whose name starts with `prefix`, as
    /// (id, name), oldest first.
    async fn list_named(&self, project: &Project, prefix: &str) -> Result<Vec<(KeyId, String)>, KeyError>;

    /// Deletes key `id`; afterwards it can never be read again.
    async fn delete_key(&self, project: &Project, id: &KeyId) -> Result<(), KeyError>;

    /// Whether `project` owns a key `id` (false for another project's key).
    async fn exists(&self, project: &Project, id: &KeyId) -> Result<bool, KeyError>;

    /// The ids of every key `project` owns, oldest first.
    async fn list(&self, project: &Project) -> Result<Vec<KeyId>, KeyError>;
}
