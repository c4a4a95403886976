//! The domain layer: what the API asks for, in terms of volumes, types and
//! keys. Validates meaning (not syntax: the API did that), writes the records
//! and the job that will do the slow work in one transaction, and hands the
//! job to the engine.

use std::collections::BTreeMap;
use std::sync::Arc;

use rekey_keys::KeyManager;
use rekey_storage::Backend;

use crate::config::Config;
use crate::db;
use crate::error::{Result, ServiceError};
use crate::engine::{Context, Engine};
use crate::model::{now_iso, Caller, Encryption, Provider, RekeyMode, Volume, VolumeType, DEFAULT_TYPE_NAME, REKEY_MODE_SPEC};

/// Cinder's bound on integer fields (sizes): `DB_MAX_INT`.
pub const DB_MAX_INT: u64 = 0x7FFF_FFFF;

/// The running service: database, key manager, backend, configuration.
#[derive(Debug)]
pub struct Service {
    pub(crate) db: crate::db::Db,
    pub(crate) keys: Arc<dyn KeyManager>,
    pub(crate) backend: Arc<dyn Backend>,
    pub(crate) config: Config,
    /// Runs the jobs and the key-deletion queue.
    pub(crate) engine: Arc<Engine>,
    /// This node's NBD server: one export per attachment it serves.
    pub(crate) exports: Arc<crate::exports::ExportManager>,
}

impl Context for Arc<Service> {
    fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }
}

/// A volume-create request, already parsed.
#[derive(Debug, Clone, Default)]
pub struct CreateVolume {
    /// Size in GiB; from the source when cloning and absent.
    pub size_gb: Option<u64>,
    /// Name.
    pub name: Option<String>,
    /// Description.
    pub description: Option<String>,
    /// Type id or name.
    pub volume_type: Option<String>,
    /// Clone source.
    pub source_volid: Option<String>,
    /// Metadata.
    pub metadata: BTreeMap<String, String>,
    /// The group to make it in (`group_id`, 3.13+).
    pub group_id: Option<String>,
}

/// A volume-update request.
#[derive(Debug, Clone, Default)]
pub struct UpdateVolume {
    /// New name.
    pub name: Option<Option<String>>,
    /// New description.
    pub description: Option<Option<String>>,
    /// New metadata (replaces).
    pub metadata: Option<BTreeMap<String, String>>,
}

/// Volume list filters.
#[derive(Debug, Clone, Default)]
pub struct VolumeFilter {
    /// Exact name.
    pub name: Option<String>,
    /// Exact status.
    pub status: Option<String>,
    /// Every project's volumes (admin).
    pub all_tenants: bool,
}

/// An encryption-type request (create or update).
#[derive(Debug, Clone, Default)]
pub struct EncryptionSpec {
    /// Provider name.
    pub provider: Option<String>,
    /// Cipher.
    pub cipher: Option<String>,
    /// Key size in bits.
    pub key_size: Option<u32>,
    /// `front-end` or `back-end`.
    pub control_location: Option<String>,
}

impl Service {
    /// Assembles a service from its parts (see [`crate::open`]).
    pub(crate) fn new(db: crate::db::Db, keys: Arc<dyn KeyManager>, backend: Arc<dyn Backend>, config: Config) -> Self {
        let lease = std::time::Duration::from_secs(config.lease_seconds.max(1));
        let calls = Arc::new(crate::metrics::Calls::default());
        let keys: Arc<dyn KeyManager> = Arc::new(crate::metered::MeteredKeys { inner: keys, calls: calls.clone() });
        let backend: Arc<dyn Backend> = Arc::new(crate::metered::MeteredBackend { inner: backend, calls: calls.clone() });
        let engine = Arc::new(Engine::new(db.clone(), keys.clone(), backend.clone(), config.node_name(), lease, calls));
        let exports = Arc::new(crate::exports::ExportManager::new(config.nbd.clone()));
        Service { db, keys, backend, config, engine, exports }
    }

    /// The configuration in force.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// This node's NBD exports (what an online re-encryption swaps the
    /// data path of, see [`crate::exports::SwapIo`]).
    pub fn exports(&self) -> &Arc<crate::exports::ExportManager> {
        &self.exports
    }

    /// A write transaction (see [`crate::db::Db::tx`]).
    pub(crate) async fn tx(&self) -> Result<crate::db::Tx> {
        self.db.tx().await
    }

    pub(crate) async fn conn(&self) -> Result<sqlx::pool::PoolConnection<sqlx::Any>> {
        self.db.conn().await
    }

    // ---- volumes ---------------------------------------------------------

    pub(crate) fn check_size(&self, size_gb: u64) -> Result<()> {
        if size_gb == 0 || size_gb > DB_MAX_INT {
            return Err(ServiceError::invalid(format!(
                "Invalid input received: size must be an integer between 1 and {DB_MAX_INT}, not {size_gb}"
            )));
        }
        if size_gb > self.config.max_volume_size_gb {
            return Err(ServiceError::OverLimit(format!(
                "VolumeSizeExceedsLimit: Requested volume size {size_gb}G is larger than maximum allowed limit {}G.",
                self.config.max_volume_size_gb
            )));
        }
        Ok(())
    }

    /// The rekey mode of a type (extra spec, else the configured default).
    pub(crate) fn rekey_mode(&self, t: &VolumeType) -> Result<RekeyMode> {
        match t.extra_specs.get(REKEY_MODE_SPEC) {
            Some(m) => m.parse(),
            None => Ok(self.config.rekey.default_mode),
        }
    }

    /// [`Self::rekey_mode`] of the type with id `type_id` (the default mode
    /// when the type is gone).
    pub(crate) async fn type_rekey_mode(&self, c: &mut crate::db::Conn, type_id: &str) -> Result<RekeyMode> {
        match db::get_type(c, type_id).await? {
            Some(t) => self.rekey_mode(&t),
            None => Ok(self.config.rekey.default_mode),
        }
    }

    /// A volume of the caller's project (another project's is "not found"),
    /// or of any project for a Keystone admin. A volume whose transfer the
    /// caller's project accepted is the caller's from the accept on, as in
    /// Cinder, while the accept job still moves it.
    pub async fn get_volume(&self, caller: &Caller, id: &str) -> Result<Volume> {
        let mut c = self.conn().await?;
        let v = db::get_volume(&mut c, id).await?.ok_or_else(|| ServiceError::not_found("Volume", id))?;
        if crate::paths::actions::reaches(caller, &v.project_id) || crate::paths::actions::accepted_into(&mut c, id, &caller.project).await? {
            return Ok(v);
        }
        // The accept job may have committed between the two reads (the
        // volume moved and its transfer row went in one transaction): then
        // the volume is the caller's now.
        db::get_volume(&mut c, id)
            .await?
            .filter(|v| crate::paths::actions::reaches(caller, &v.project_id))
            .ok_or_else(|| ServiceError::not_found("Volume", id))
    }

    /// Volumes visible to the caller.
    pub async fn list_volumes(&self, caller: &Caller, f: &VolumeFilter) -> Result<Vec<Volume>> {
        if f.all_tenants && !caller.admin {
            return Err(ServiceError::Forbidden("Policy doesn't allow all_tenants.".into()));
        }
        let project = (!f.all_tenants).then_some(caller.project.as_str());
        let mut c = self.conn().await?;
        db::list_volumes(&mut c, project, f.name.as_deref(), f.status.as_deref()).await
    }

    /// Renames, re-describes or replaces metadata.
    pub async fn update_volume(&self, caller: &Caller, id: &str, u: UpdateVolume) -> Result<Volume> {
        let mut tx = self.tx().await?;
        let mut v = db::get_volume(&mut tx, id)
            .await?
            .filter(|v| v.project_id == caller.project)
            .ok_or_else(|| ServiceError::not_found("Volume", id))?;
        if let Some(n) = u.name {
            v.name = n;
        }
        if let Some(d) = u.description {
            v.description = d;
        }
        if let Some(m) = u.metadata {
            v.metadata = m;
        }
        db::update_volume_info(&mut tx, &v).await?;
        tx.commit().await.map_err(crate::error::db("commit"))?;
        Ok(v)
    }

    /// Encryption metadata of a volume, as os-brick asks for it.
    pub async fn volume_encryption(&self, caller: &Caller, id: &str) -> Result<(Volume, Option<Encryption>)> {
        let v = self.get_volume(caller, id).await?;
        let mut c = self.conn().await?;
        let enc = db::get_encryption(&mut c, &v.volume_type_id).await?;
        Ok((v, enc))
    }

    /// The type record of a volume and whether the type is encrypted, for views.
    pub async fn type_of(&self, v: &Volume) -> Result<(Option<VolumeType>, bool)> {
        let mut c = self.conn().await?;
        let t = db::get_type(&mut c, &v.volume_type_id).await?;
        let enc = db::get_encryption(&mut c, &v.volume_type_id).await?.is_some();
        Ok((t, enc))
    }

    // ---- volume types ----------------------------------------------------

    /// Creates a type.
    pub async fn create_type(
        &self,
        name: String,
        description: Option<String>,
        is_public: bool,
        extra_specs: BTreeMap<String, String>,
    ) -> Result<VolumeType> {
        check_name("name", &name)?;
        check_specs(&extra_specs)?;
        let t = VolumeType { id: uuid::Uuid::new_v4().to_string(), name, description, is_public, extra_specs, qos_specs_id: None };
        let mut tx = self.tx().await?;
        db::insert_type(&mut tx, &t).await?;
        tx.commit().await.map_err(crate::error::db("commit"))?;
        Ok(t)
    }

    /// A type by id (or name, as Cinder's lookups allow).
    pub async fn get_type(&self, id: &str) -> Result<VolumeType> {
        let mut c = self.conn().await?;
        db::get_type(&mut c, id).await?.ok_or_else(|| ServiceError::not_found("Volume type", id))
    }

    /// Every type.
    pub async fn list_types(&self) -> Result<Vec<VolumeType>> {
        let mut c = self.conn().await?;
        db::list_types(&mut c).await
    }

    /// Updates name, description, visibility.
    pub async fn update_type(
        &self,
        id: &str,
        name: Option<String>,
        description: Option<String>,
        is_public: Option<bool>,
    ) -> Result<VolumeType> {
        let mut tx = self.tx().await?;
        let mut t = db::get_type(&mut tx, id).await?.ok_or_else(|| ServiceError::not_found("Volume type", id))?;
        if let Some(n) = name {
            check_name("name", &n)?;
            t.name = n;
        }
        if description.is_some() {
            t.description = description;
        }
        if let Some(p) = is_public {
            t.is_public = p;
        }
        db::update_type(&mut tx, &t).await?;
        tx.commit().await.map_err(crate::error::db("commit"))?;
        Ok(t)
    }

    /// Deletes a type no volume uses.
    pub async fn delete_type(&self, id: &str) -> Result<()> {
        let mut tx = self.tx().await?;
        let t = db::get_type(&mut tx, id).await?.ok_or_else(|| ServiceError::not_found("Volume type", id))?;
        if t.name == DEFAULT_TYPE_NAME {
            return Err(ServiceError::invalid("Invalid volume type: the default volume type cannot be deleted."));
        }
        if db::type_in_use(&mut tx, id).await? {
            return Err(ServiceError::invalid(format!("Volume Type {id} deletion is not allowed with volumes present with the type.")));
        }
        if db::type_is_a_default(&mut tx, id).await? {
            return Err(ServiceError::invalid(format!(
                "The volume type {id} is the default volume type of a project and cannot be deleted."
            )));
        }
        db::delete_type(&mut tx, id).await?;
        tx.commit().await.map_err(crate::error::db("commit"))
    }

    /// Adds or replaces extra specs; returns all of them.
    pub async fn set_extra_specs(&self, id: &str, specs: BTreeMap<String, String>) -> Result<BTreeMap<String, String>> {
        check_specs(&specs)?;
        let mut tx = self.tx().await?;
        db::get_type(&mut tx, id).await?.ok_or_else(|| ServiceError::not_found("Volume type", id))?;
        if specs.contains_key(REKEY_MODE_SPEC) && db::type_in_use(&mut tx, id).await? {
            return Err(ServiceError::invalid(format!(
                "Invalid volume type: {REKEY_MODE_SPEC} cannot change while volumes of type {id} exist."
            )));
        }
        db::set_specs(&mut tx, id, &specs).await?;
        let t = db::get_type(&mut tx, id).await?.ok_or_else(|| ServiceError::not_found("Volume type", id))?;
        tx.commit().await.map_err(crate::error::db("commit"))?;
        Ok(t.extra_specs)
    }

    /// Deletes one extra spec.
    pub async fn delete_extra_spec(&self, id: &str, key: &str) -> Result<()> {
        let mut tx = self.tx().await?;
        db::get_type(&mut tx, id).await?.ok_or_else(|| ServiceError::not_found("Volume type", id))?;
        if key == REKEY_MODE_SPEC && db::type_in_use(&mut tx, id).await? {
            return Err(ServiceError::invalid(format!(
                "Invalid volume type: {REKEY_MODE_SPEC} cannot change while volumes of type {id} exist."
            )));
        }
        if !db::delete_spec(&mut tx, id, key).await? {
            return Err(ServiceError::not_found("Volume type extra spec", key));
        }
        tx.commit().await.map_err(crate::error::db("commit"))
    }

    // ---- encryption types ------------------------------------------------

    /// The encryption of a type (`None` if unencrypted).
    pub async fn get_encryption(&self, type_id: &str) -> Result<Option<Encryption>> {
        let mut c = self.conn().await?;
        db::get_type(&mut c, type_id).await?.ok_or_else(|| ServiceError::not_found("Volume type", type_id))?;
        db::get_encryption(&mut c, type_id).await
    }

    /// Creates (`create = true`) or updates the encryption of a type; both
    /// refused while volumes of the type exist.
    pub async fn put_encryption(&self, type_id: &str, spec: EncryptionSpec, create: bool) -> Result<Encryption> {
        let mut tx = self.tx().await?;
        db::get_type(&mut tx, type_id).await?.ok_or_else(|| ServiceError::not_found("Volume type", type_id))?;
        if db::type_in_use(&mut tx, type_id).await? {
            return Err(ServiceError::invalid(format!(
                "Invalid volume type: Cannot {} encryption specs. Volume type in use.",
                if create { "create" } else { "update" }
            )));
        }
        let existing = db::get_encryption(&mut tx, type_id).await?;
        let now = now_iso();
        let enc = match (existing, create) {
            (Some(_), true) => {
                return Err(ServiceError::invalid(format!(
                    "Invalid volume type: Volume type encryption for type {type_id} already exists."
                )))
            }
            (None, false) => return Err(ServiceError::not_found("Volume type encryption for type", type_id)),
            (None, true) => {
                let provider = spec
                    .provider
                    .as_deref()
                    .ok_or_else(|| ServiceError::invalid("Invalid input received: provider is required"))?;
                let control_location = spec.control_location.unwrap_or_else(|| "front-end".into());
                Encryption {
                    volume_type_id: type_id.to_owned(),
                    encryption_id: uuid::Uuid::new_v4().to_string(),
                    provider: Provider::of(provider),
                    provider_name: provider.to_owned(),
                    cipher: spec.cipher,
                    key_size: spec.key_size,
                    control_location,
                    created_at: now,
                    updated_at: None,
                }
            }
            (Some(mut e), false) => {
                if let Some(p) = spec.provider.as_deref() {
                    e.provider = Provider::of(p);
                    p.clone_into(&mut e.provider_name);
                }
                if spec.cipher.is_some() {
                    e.cipher = spec.cipher;
                }
                if spec.key_size.is_some() {
                    e.key_size = spec.key_size;
                }
                if let Some(c) = spec.control_location {
                    e.control_location = c;
                }
                e.updated_at = Some(now);
                e
            }
        };
        check_encryption(&enc)?;
        db::put_encryption(&mut tx, &enc).await?;
        tx.commit().await.map_err(crate::error::db("commit"))?;
        Ok(enc)
    }

    /// Removes the encryption of a type no volume uses.
    pub async fn delete_encryption(&self, type_id: &str) -> Result<()> {
        let mut tx = self.tx().await?;
        db::get_type(&mut tx, type_id).await?.ok_or_else(|| ServiceError::not_found("Volume type", type_id))?;
        if db::get_encryption(&mut tx, type_id).await?.is_none() {
            return Err(ServiceError::not_found("Volume type encryption for type", type_id));
        }
        if db::type_in_use(&mut tx, type_id).await? {
            return Err(ServiceError::invalid("Invalid volume type: Cannot delete encryption specs. Volume type in use."));
        }
        db::delete_encryption(&mut tx, type_id).await?;
        tx.commit().await.map_err(crate::error::db("commit"))
    }
}

/// Refuses, before anything is written, a rekey that cannot run:
/// volume-key mode re-encrypts, which the engine does for LUKS2 volumes
/// only. Every admission that ends in a rekey step asks this, so a LUKS1
/// volume in volume-key mode gets a 400 instead of a job that fails.
pub(crate) fn check_rekey_mode(mode: RekeyMode, enc: Option<&Encryption>) -> Result<()> {
    if mode == RekeyMode::VolumeKey && enc.is_some_and(|e| e.provider == Provider::Luks1) {
        return Err(ServiceError::invalid(format!(
            "Invalid volume type: volume-key mode re-encrypts LUKS2 volumes only, and this volume is LUKS1; \
             use {REKEY_MODE_SPEC}=keyslot or encryption provider luks2"
        )));
    }
    Ok(())
}

fn check_name(what: &str, s: &str) -> Result<()> {
    if s.trim().is_empty() || s.len() > 255 {
        return Err(ServiceError::invalid(format!("Invalid input received: {what} must be 1 to 255 characters")));
    }
    Ok(())
}

fn check_specs(specs: &BTreeMap<String, String>) -> Result<()> {
    for (k, v) in specs {
        if k.is_empty() || k.len() > 255 || v.len() > 255 {
            return Err(ServiceError::invalid("Invalid input received: extra spec keys and values must be 1 to 255 characters"));
        }
    }
    if let Some(m) = specs.get(REKEY_MODE_SPEC) {
        m.parse::<RekeyMode>()?;
    }
    Ok(())
}

fn check_encryption(e: &Encryption) -> Result<()> {
    if !matches!(e.control_location.as_str(), "front-end" | "back-end") {
        return Err(ServiceError::invalid(format!(
            "Invalid input received: control_location must be front-end or back-end, not {:?}",
            e.control_location
        )));
    }
    if e.provider == Provider::Other {
        // Not rekey's to format: its cipher and key size are the provider's business.
        return Ok(());
    }
    let cipher = rekey_luks::crypto::CipherSpec::parse(e.cipher())
        .map_err(|err| ServiceError::invalid(format!("Invalid input received: cipher {:?}: {err}", e.cipher())))?;
    let bits = e.key_size();
    if !bits.is_multiple_of(8) || !cipher.valid_key_len(bits as usize / 8) {
        return Err(ServiceError::invalid(format!(
            "Invalid input received: key_size {bits} does not fit cipher {}",
            e.cipher()
        )));
    }
    Ok(())
}
