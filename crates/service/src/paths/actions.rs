//! What Cinder's volume, snapshot and backup actions change that is not a
//! job: metadata, flags, statuses an admin resets, an extend, a retype that
//! needs no data moved, the volume summary, backup records exported and
//! imported. Each is one short transaction on the records (an extend also
//! grows the backend's image first, which is safe to repeat).
//!
//! Admin actions reach every project's records, as Cinder's admin context
//! does; everything else only the caller's project.

use std::collections::BTreeMap;

use base64::Engine as _;
use serde::{Deserialize, Serialize};

use super::db::{self as pdb, Backup, Snapshot};
use crate::db::{self, Conn};
use crate::engine::{blocking, job_copy_key, GIB};
use crate::error::{db as dberr, Result, ServiceError};
use crate::model::{now_iso, status, Caller, Volume};
use crate::service::Service;

/// Volume statuses an admin may reset a volume to (Cinder's
/// `VolumeAdminController.valid_status`).
pub const VOLUME_RESET_STATUSES: &[&str] = &[
    "creating",
    "available",
    "deleting",
    "error",
    "error_deleting",
    "error_managing",
    "managing",
    "attaching",
    "in-use",
    "detaching",
    "maintenance",
    "reserved",
    "error_extending",
];

/// Snapshot statuses an admin may reset a snapshot to.
pub const SNAPSHOT_RESET_STATUSES: &[&str] =
    &["creating", "available", "deleting", "error", "error_deleting", "backing-up", "restoring", "unmanaging"];

/// Backup statuses an admin may reset a backup to (Cinder allows two).
pub const BACKUP_RESET_STATUSES: &[&str] = &["available", "error"];

/// The longest metadata key or value Cinder stores.
const META_MAX: usize = 255;

/// One change of a metadata set.
#[derive(Debug, Clone)]
pub enum MetaChange {
    /// `POST .../metadata`: add or overwrite these keys.
    Merge(BTreeMap<String, String>),
    /// `PUT .../metadata`: exactly these keys.
    Replace(BTreeMap<String, String>),
    /// `PUT .../metadata/{key}`.
    Set(String, String),
    /// `DELETE .../metadata/{key}`: 404 if absent.
    Delete(String),
}

impl MetaChange {
    fn apply(self, m: &mut BTreeMap<String, String>, what: &'static str, id: &str) -> Result<()> {
        match self {
            MetaChange::Merge(add) => {
                check_metadata(&add)?;
                m.extend(add);
            }
            MetaChange::Replace(all) => {
                check_metadata(&all)?;
                *m = all;
            }
            MetaChange::Set(k, v) => {
                check_metadata(&BTreeMap::from([(k.clone(), v.clone())]))?;
                m.insert(k, v);
            }
            MetaChange::Delete(k) => {
                if m.remove(&k).is_none() {
                    return Err(ServiceError::not_found(what, format!("{id} metadata key {k}")));
                }
            }
        }
        Ok(())
    }
}

/// Cinder's limits on metadata: keys of 1 to 255 characters, values of at
/// most 255.
pub fn check_metadata(m: &BTreeMap<String, String>) -> Result<()> {
    for (k, v) in m {
        if k.is_empty() {
            return Err(ServiceError::invalid("Invalid input received: Metadata property key blank."));
        }
        if k.chars().count() > META_MAX {
            return Err(ServiceError::invalid(format!(
                "Invalid input received: Metadata property key greater than {META_MAX} characters."
            )));
        }
        if v.chars().count() > META_MAX {
            return Err(ServiceError::invalid(format!(
                "Invalid input received: Metadata property value greater than {META_MAX} characters."
            )));
        }
    }
    Ok(())
}

/// `GET /volumes/summary`: how many volumes, their total size, and every
/// metadata key with the values it has.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Summary {
    /// Volumes counted.
    pub total_count: u64,
    /// Their sizes in GiB, summed.
    pub total_size: u64,
    /// Metadata key → the distinct values it has.
    pub metadata: BTreeMap<String, Vec<String>>,
}

/// What `export_record` hands out and `import_record` takes back: the
/// backup's record, base64 of this JSON. It names the key id the backup's
/// own key copy has; the key itself never leaves the key manager.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct BackupRecord {
    id: String,
    /// Where the data is in the repository (the exported backup's id; an
    /// import may give the record a new `id`).
    repo_id: String,
    volume_id: String,
    volume_type_id: String,
    name: Option<String>,
    description: Option<String>,
    size_gb: u64,
    parent_id: Option<String>,
    encryption_key_id: Option<String>,
    object_count: u64,
    stored_bytes: u64,
    #[serde(default)]
    snapshot_id: Option<String>,
    #[serde(default)]
    volume_metadata: BTreeMap<String, String>,
    created_at: String,
}

/// The backup driver named in export records.
pub const BACKUP_SERVICE: &str = "cinder.backup.drivers.rekey";

/// Whether `caller` may act on a record of `project`: its own, or any for a
/// Keystone admin (the `admin` role: Cinder's admin context). A noauth
/// caller, admin for the admin-only operations, stays in its project.
pub(crate) fn reaches(caller: &Caller, project: &str) -> bool {
    caller.project == project || caller.has_role("admin")
}

/// Whether project `project` accepted a transfer of volume `id`.
pub(crate) async fn accepted_into(c: &mut Conn, id: &str, project: &str) -> Result<bool> {
    let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM transfers WHERE volume_id = $1 AND accepted = 1 AND destination_project_id = $2")
        .bind(id)
        .bind(project)
        .fetch_one(&mut *c)
        .await
        .map_err(dberr("read transfers"))?;
    Ok(n > 0)
}

async fn volume_for(c: &mut Conn, caller: &Caller, id: &str) -> Result<Volume> {
    db::get_volume(c, id).await?.filter(|v| reaches(caller, &v.project_id)).ok_or_else(|| ServiceError::not_found("Volume", id))
}

async fn snapshot_for(c: &mut Conn, caller: &Caller, id: &str) -> Result<Snapshot> {
    pdb::get_snapshot(c, id).await?.filter(|s| reaches(caller, &s.project_id)).ok_or_else(|| ServiceError::not_found("Snapshot", id))
}

async fn backup_for(c: &mut Conn, caller: &Caller, id: &str) -> Result<Backup> {
    pdb::get_backup(c, id).await?.filter(|b| reaches(caller, &b.project_id)).ok_or_else(|| ServiceError::not_found("Backup", id))
}

/// Whether a job (create, clone, rekey, delete, snapshot, backup) is
/// working on or from `id`: then its status is the job's, not an admin's.
async fn job_running(c: &mut Conn, id: &str) -> Result<bool> {
    let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM jobs WHERE target_id = $1 OR source_id = $1")
        .bind(id)
        .fetch_one(&mut *c)
        .await
        .map_err(dberr("read jobs"))?;
    Ok(n > 0)
}

async fn set_volume_flag(c: &mut Conn, id: &str, column: &str, on: bool) -> Result<()> {
    // `column` is one of two names chosen below, never input.
    let sql = format!("UPDATE volumes SET {column} = $1, updated_at = $2 WHERE id = $3");
    sqlx::query(&sql).bind(i64::from(on)).bind(now_iso()).bind(id).execute(&mut *c).await.map_err(dberr("set volume flag"))?;
    Ok(())
}

impl Service {
    /// `caller` acting in the project of volume `id` (an admin acts for the
    /// owner, as Cinder's admin context does), or the volume's 404.
    pub async fn acting_on_volume(&self, caller: &Caller, id: &str) -> Result<Caller> {
        let mut c = self.conn().await?;
        let v = volume_for(&mut c, caller, id).await?;
        Ok(Caller { project: v.project_id, ..caller.clone() })
    }

    /// Changes a volume's metadata; returns the whole new set.
    pub async fn change_volume_metadata(&self, caller: &Caller, id: &str, change: MetaChange) -> Result<BTreeMap<String, String>> {
        let mut tx = self.tx().await?;
        let mut v = volume_for(&mut tx, caller, id).await?;
        change.apply(&mut v.metadata, "Volume", id)?;
        db::update_volume_info(&mut tx, &v).await?;
        tx.commit().await.map_err(dberr("commit"))?;
        Ok(v.metadata)
    }

    /// A volume's metadata.
    pub async fn volume_metadata(&self, caller: &Caller, id: &str) -> Result<BTreeMap<String, String>> {
        let mut c = self.conn().await?;
        Ok(volume_for(&mut c, caller, id).await?.metadata)
    }

    /// Changes a snapshot's metadata; returns the whole new set.
    pub async fn change_snapshot_metadata(&self, caller: &Caller, id: &str, change: MetaChange) -> Result<BTreeMap<String, String>> {
        let mut tx = self.tx().await?;
        let mut s = snapshot_for(&mut tx, caller, id).await?;
        change.apply(&mut s.metadata, "Snapshot", id)?;
        pdb::update_snapshot(&mut tx, &s).await?;
        tx.commit().await.map_err(dberr("commit"))?;
        Ok(s.metadata)
    }

    /// A snapshot's metadata.
    pub async fn snapshot_metadata(&self, caller: &Caller, id: &str) -> Result<BTreeMap<String, String>> {
        let mut c = self.conn().await?;
        Ok(snapshot_for(&mut c, caller, id).await?.metadata)
    }

    /// `os-extend`: grows an available volume to `new_size_gb`. The image
    /// grows first (repeatable), then the record; an encrypted volume's LUKS
    /// data segment must be the dynamic one (it then covers the new space
    /// with no header change); a volume in the middle of a re-encryption,
    /// or with a fixed-size segment, is refused before anything changes.
    pub async fn extend_volume(&self, caller: &Caller, id: &str, new_size_gb: u64) -> Result<Volume> {
        let v = {
            let mut c = self.conn().await?;
            volume_for(&mut c, caller, id).await?
        };
        if v.status != status::AVAILABLE {
            return Err(ServiceError::invalid(format!(
                "Invalid volume: Volume {id} status must be available to extend, but current status is: {}.",
                v.status
            )));
        }
        if new_size_gb <= v.size_gb {
            return Err(ServiceError::invalid(format!(
                "Invalid input received: New size for extend must be greater than current size. (current: {}, extended: {new_size_gb}).",
                v.size_gb
            )));
        }
        self.check_size(new_size_gb)?;
        let mut tx = self.tx().await?;
        // Claim it: no job may start on it while the image grows.
        let claimed = sqlx::query("UPDATE volumes SET status = 'extending', updated_at = $1 WHERE id = $2 AND status = 'available'")
            .bind(now_iso())
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(dberr("claim volume for extend"))?
            .rows_affected()
            == 1;
        if !claimed || job_running(&mut tx, id).await? {
            return Err(ServiceError::invalid(format!("Invalid volume: Volume {id} is busy; extend it when it is available.")));
        }
        // The added gigabytes count against the project's quota (413 over it).
        crate::quotas::reserve(&mut tx, &v.project_id, &crate::quotas::Delta::extend(&v.volume_type_id, v.size_gb, new_size_gb)).await?;
        tx.commit().await.map_err(dberr("commit"))?;
        let (backend, vid, encrypted) = (self.backend.clone(), v.id.clone(), v.encryption_key_id.is_some());
        let grown = blocking(move || {
            if encrypted {
                let seg = rekey_luks::Volume::open(backend.open(&vid)?)?.data_segment()?;
                if seg.size.is_some() {
                    return Err(ServiceError::invalid(
                        "Invalid volume: the volume's LUKS data segment has a fixed size; it cannot be extended.",
                    ));
                }
            }
            backend.extend(&vid, new_size_gb * GIB)?;
            Ok(())
        })
        .await;
        let mut tx = self.tx().await?;
        let out = match grown {
            Ok(()) => {
                sqlx::query("UPDATE volumes SET size_gb = $1, status = 'available', updated_at = $2 WHERE id = $3")
                    .bind(i64::try_from(new_size_gb).unwrap_or(i64::MAX))
                    .bind(now_iso())
                    .bind(id)
                    .execute(&mut *tx)
                    .await
                    .map_err(dberr("extend volume"))?;
                Ok(Volume { size_gb: new_size_gb, ..v })
            }
            Err(e) => {
                // Refused before the image changed: back as it was.
                let back = if e.kind() == crate::error::ErrorKind::Invalid { status::AVAILABLE } else { "error_extending" };
                db::set_status(&mut tx, id, back).await?;
                Err(e)
            }
        };
        tx.commit().await.map_err(dberr("commit"))?;
        out
    }

    /// `os-reset_status` (admin): sets the record's status, whatever it was,
    /// unless a job is working on the volume.
    pub async fn reset_volume_status(&self, caller: &Caller, id: &str, new_status: &str) -> Result<()> {
        if !VOLUME_RESET_STATUSES.contains(&new_status) {
            return Err(ServiceError::invalid(format!("Invalid input received: Must specify a valid status, not {new_status:?}.")));
        }
        let mut tx = self.tx().await?;
        volume_for(&mut tx, caller, id).await?;
        if job_running(&mut tx, id).await? {
            return Err(ServiceError::invalid(format!("Invalid volume: Volume {id} has a job running; its status is the job's.")));
        }
        db::set_status(&mut tx, id, new_status).await?;
        tx.commit().await.map_err(dberr("commit"))?;
        Ok(())
    }

    /// `os-set_bootable`.
    pub async fn set_bootable(&self, caller: &Caller, id: &str, bootable: bool) -> Result<()> {
        let mut tx = self.tx().await?;
        volume_for(&mut tx, caller, id).await?;
        set_volume_flag(&mut tx, id, "bootable", bootable).await?;
        tx.commit().await.map_err(dberr("commit"))?;
        Ok(())
    }

    /// `os-update_readonly_flag`: later attachments are read-only. Cinder
    /// takes it for available volumes only.
    pub async fn set_readonly(&self, caller: &Caller, id: &str, readonly: bool) -> Result<()> {
        let mut tx = self.tx().await?;
        let v = volume_for(&mut tx, caller, id).await?;
        if v.status != status::AVAILABLE {
            return Err(ServiceError::invalid(format!(
                "Invalid volume: Volume {id} status must be available to update readonly flag, but current status is: {}.",
                v.status
            )));
        }
        set_volume_flag(&mut tx, id, "readonly", readonly).await?;
        tx.commit().await.map_err(dberr("commit"))?;
        Ok(())
    }

    /// `os-retype` to `new_type` (id or name). Cinder changes the type in
    /// place when no data must move; here data must move exactly when the
    /// encryption differs (a new key and a re-encryption), which rekey does
    /// not do in a retype: with `migration_policy` `never` (the default)
    /// that is Cinder's 400; `on-demand` is refused too, saying why.
    pub async fn retype_volume(&self, caller: &Caller, id: &str, new_type: &str, on_demand: bool) -> Result<()> {
        let mut tx = self.tx().await?;
        let v = volume_for(&mut tx, caller, id).await?;
        if !matches!(v.status.as_str(), "available" | "in-use") {
            return Err(ServiceError::invalid(format!(
                "Invalid volume: Volume {id} status must be available or in-use, but current status is: {}.",
                v.status
            )));
        }
        // A group's volumes keep the types the group takes (Cinder refuses it too).
        if let Some(g) = &v.group_id {
            return Err(ServiceError::invalid(format!("Invalid volume: Volume {id} is in group {g}: remove it from the group to retype it.")));
        }
        let t = db::find_type(&mut tx, new_type).await?.ok_or_else(|| ServiceError::not_found("Volume type", new_type))?;
        if t.id == v.volume_type_id {
            return Err(ServiceError::invalid(format!("Invalid input received: Retype requires a different type; volume {id} is already {}.", t.name)));
        }
        let old_enc = db::get_encryption(&mut tx, &v.volume_type_id).await?;
        let new_enc = db::get_encryption(&mut tx, &t.id).await?;
        if let Some(e) = &new_enc {
            e.provider.version()?;
        }
        let same = match (&old_enc, &new_enc) {
            (None, None) => true,
            (Some(a), Some(b)) => a.provider == b.provider && a.cipher() == b.cipher() && a.key_size() == b.key_size(),
            _ => false,
        };
        if !same {
            return Err(ServiceError::invalid(if on_demand {
                "Invalid volume: changing encryption needs the data re-encrypted under a new key; rekey does not migrate \
                 volumes on retype. Make a new volume of the type from a backup instead."
                    .to_owned()
            } else {
                format!("Invalid volume: Retype of volume {id} needs a migration (the encryption changes) but migration_policy is never.")
            }));
        }
        sqlx::query("UPDATE volumes SET volume_type_id = $1, updated_at = $2 WHERE id = $3")
            .bind(&t.id)
            .bind(now_iso())
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(dberr("retype volume"))?;
        tx.commit().await.map_err(dberr("commit"))?;
        Ok(())
    }

    /// `GET /volumes/summary`.
    pub async fn volume_summary(&self, caller: &Caller, all_tenants: bool) -> Result<Summary> {
        let f = crate::service::VolumeFilter { all_tenants, ..Default::default() };
        let vols = self.list_volumes(caller, &f).await?;
        let mut s = Summary::default();
        for v in &vols {
            s.total_count += 1;
            s.total_size += v.size_gb;
            for (k, val) in &v.metadata {
                let vals = s.metadata.entry(k.clone()).or_default();
                if !vals.contains(val) {
                    vals.push(val.clone());
                }
            }
        }
        Ok(s)
    }

    /// `os-reset_status` of a snapshot (admin).
    pub async fn reset_snapshot_status(&self, caller: &Caller, id: &str, new_status: &str) -> Result<()> {
        if !SNAPSHOT_RESET_STATUSES.contains(&new_status) {
            return Err(ServiceError::invalid(format!("Invalid input received: Must specify a valid status, not {new_status:?}.")));
        }
        let mut tx = self.tx().await?;
        snapshot_for(&mut tx, caller, id).await?;
        if job_running(&mut tx, id).await? {
            return Err(ServiceError::invalid(format!("Invalid snapshot: Snapshot {id} has a job running; its status is the job's.")));
        }
        pdb::set_snapshot_status(&mut tx, id, new_status).await?;
        tx.commit().await.map_err(dberr("commit"))?;
        Ok(())
    }

    /// `os-update_snapshot_status`: what Nova reports of a snapshot it
    /// takes itself; only `creating` → `available`/`error`, as Cinder
    /// allows, with the progress it reports (shown as
    /// `os-extended-snapshot-attributes:progress`).
    pub async fn update_snapshot_status(&self, caller: &Caller, id: &str, new_status: &str, progress: Option<&str>) -> Result<()> {
        let mut tx = self.tx().await?;
        let s = snapshot_for(&mut tx, caller, id).await?;
        let allowed: &[&str] = match s.status.as_str() {
            "creating" => &["creating", "available", "error"],
            "deleting" => &["deleting", "error_deleting"],
            _ => &[],
        };
        if !allowed.contains(&new_status) {
            return Err(ServiceError::invalid(format!(
                "Invalid input received: Provided snapshot status {new_status} not allowed for snapshot with status {}.",
                s.status
            )));
        }
        if job_running(&mut tx, id).await? {
            return Err(ServiceError::invalid(format!("Invalid snapshot: Snapshot {id} has a job running; its status is the job's.")));
        }
        pdb::set_snapshot_status(&mut tx, id, new_status).await?;
        if let Some(p) = progress {
            sqlx::query("UPDATE snapshots SET progress = $1 WHERE id = $2")
                .bind(p)
                .bind(id)
                .execute(&mut *tx)
                .await
                .map_err(dberr("set snapshot progress"))?;
        }
        tx.commit().await.map_err(dberr("commit"))?;
        Ok(())
    }

    /// `os-reset_status` of a backup (admin).
    pub async fn reset_backup_status(&self, caller: &Caller, id: &str, new_status: &str) -> Result<()> {
        if !BACKUP_RESET_STATUSES.contains(&new_status) {
            return Err(ServiceError::invalid(format!("Invalid input received: Must specify a valid status, not {new_status:?}.")));
        }
        let mut tx = self.tx().await?;
        backup_for(&mut tx, caller, id).await?;
        if job_running(&mut tx, id).await? {
            return Err(ServiceError::invalid(format!("Invalid backup: Backup {id} has a job running; its status is the job's.")));
        }
        pdb::set_backup_status(&mut tx, id, new_status, None).await?;
        tx.commit().await.map_err(dberr("commit"))?;
        Ok(())
    }

    /// `GET /backups/{id}/export_record` (admin): the record of an
    /// available backup, for `import_record` on a database that lost it.
    pub async fn export_backup(&self, caller: &Caller, id: &str) -> Result<(String, String)> {
        let mut c = self.conn().await?;
        let b = backup_for(&mut c, caller, id).await?;
        if b.status != "available" {
            return Err(ServiceError::invalid(format!(
                "Invalid backup: Backup status must be available and not {}.",
                b.status
            )));
        }
        let rec = BackupRecord {
            repo_id: b.id.clone(),
            id: b.id,
            volume_id: b.volume_id,
            volume_type_id: b.volume_type_id,
            name: b.name,
            description: b.description,
            size_gb: b.size_gb,
            parent_id: b.parent_id,
            encryption_key_id: b.encryption_key_id,
            object_count: b.object_count,
            stored_bytes: b.stored_bytes,
            snapshot_id: b.snapshot_id,
            volume_metadata: b.volume_metadata,
            created_at: b.created_at,
        };
        let json = serde_json::to_vec(&rec).map_err(|e| ServiceError::Internal(format!("backup record: {e}")))?;
        Ok((BACKUP_SERVICE.to_owned(), base64::engine::general_purpose::STANDARD.encode(json)))
    }

    /// `POST /backups/import_record` (admin): a backup whose record was
    /// exported comes back, in the caller's project, if its data is still in
    /// the repository and no record of it exists. It is `available` at once:
    /// the repository verified the manifest.
    pub async fn import_backup(&self, caller: &Caller, backup_service: &str, backup_url: &str) -> Result<Backup> {
        if backup_service != BACKUP_SERVICE {
            return Err(ServiceError::invalid(format!(
                "Invalid input received: Unsupported backup service {backup_service:?}; this service exports {BACKUP_SERVICE:?}."
            )));
        }
        let bad = || ServiceError::invalid("Invalid input received: backup_url is not a record this service exported.");
        let raw = base64::engine::general_purpose::STANDARD.decode(backup_url.trim()).map_err(|_| bad())?;
        let rec: BackupRecord = serde_json::from_slice(&raw).map_err(|_| bad())?;
        uuid::Uuid::parse_str(&rec.id).map_err(|_| bad())?;
        uuid::Uuid::parse_str(&rec.repo_id).map_err(|_| bad())?;
        {
            let mut c = self.conn().await?;
            if let Some(existing) = pdb::get_backup(&mut c, &rec.id).await? {
                return Err(ServiceError::invalid(format!(
                    "Invalid backup: Backup {} already exists (status {}).",
                    existing.id, existing.status
                )));
            }
        }
        let repo = super::repo::repo(self)?;
        let (from, to) = (rec.repo_id.clone(), rec.id.clone());
        blocking(move || {
            if !repo.exists(&from)? {
                return Err(ServiceError::invalid(format!("Invalid backup: the data of backup {from} is not in the repository.")));
            }
            if from != to {
                repo.copy_as(&from, &to)?;
            }
            Ok(())
        })
        .await?;
        // The imported record gets its own copy of the key, as every record does.
        let key = match &rec.encryption_key_id {
            Some(k) => Some(
                job_copy_key(self.keys.as_ref(), &rec.id, &caller.project, "import", &caller.project, k)
                    .await
                    .map_err(|e| ServiceError::invalid(format!("Invalid backup: the key of the exported backup cannot be read: {e}")))?,
            ),
            None => None,
        };
        let mut tx = self.tx().await?;
        let now = now_iso();
        let b = Backup {
            id: rec.id,
            project_id: caller.project.clone(),
            user_id: caller.user.clone(),
            volume_id: rec.volume_id,
            volume_type_id: rec.volume_type_id,
            name: rec.name,
            description: rec.description,
            size_gb: rec.size_gb,
            status: "available".into(),
            parent_id: rec.parent_id,
            encryption_key_id: key,
            object_count: rec.object_count,
            stored_bytes: rec.stored_bytes,
            fail_reason: None,
            snapshot_id: rec.snapshot_id,
            volume_metadata: rec.volume_metadata,
            created_at: rec.created_at,
            updated_at: now,
        };
        pdb::insert_backup(&mut tx, &b).await?;
        tx.commit().await.map_err(dberr("commit"))?;
        Ok(b)
    }

    /// `os-force_delete` of a snapshot (admin): deletes it whatever its
    /// status, unless a job is working on it.
    pub async fn force_delete_snapshot(&self, caller: &Caller, id: &str) -> Result<()> {
        let mut tx = self.tx().await?;
        let s = snapshot_for(&mut tx, caller, id).await?;
        if job_running(&mut tx, id).await? {
            return Err(ServiceError::invalid(format!("Invalid snapshot: Snapshot {id} has a job running; delete it when it is done.")));
        }
        pdb::set_snapshot_status(&mut tx, id, "error_deleting").await?;
        tx.commit().await.map_err(dberr("commit"))?;
        self.delete_snapshot(&Caller { project: s.project_id, ..caller.clone() }, id).await
    }

    /// `os-force_delete` of a backup (admin): deletes it whatever its
    /// status, unless a job is working on it.
    pub async fn force_delete_backup(&self, caller: &Caller, id: &str) -> Result<()> {
        let mut tx = self.tx().await?;
        let b = backup_for(&mut tx, caller, id).await?;
        if job_running(&mut tx, id).await? {
            return Err(ServiceError::invalid(format!("Invalid backup: Backup {id} has a job running; delete it when it is done.")));
        }
        pdb::set_backup_status(&mut tx, id, "error", None).await?;
        tx.commit().await.map_err(dberr("commit"))?;
        self.delete_backup(&Caller { project: b.project_id, ..caller.clone() }, id).await
    }

    /// `PUT /backups/{id}`: a new name or description.
    pub async fn update_backup(&self, caller: &Caller, id: &str, name: Option<String>, description: Option<String>) -> Result<Backup> {
        let mut tx = self.tx().await?;
        let mut b = backup_for(&mut tx, caller, id).await?;
        if let Some(n) = name {
            b.name = Some(n);
        }
        if let Some(d) = description {
            b.description = Some(d);
        }
        sqlx::query("UPDATE backups SET name = $1, description = $2, updated_at = $3 WHERE id = $4")
            .bind(&b.name)
            .bind(&b.description)
            .bind(now_iso())
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(dberr("update backup"))?;
        tx.commit().await.map_err(dberr("commit"))?;
        Ok(b)
    }
}
