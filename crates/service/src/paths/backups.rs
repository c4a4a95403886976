//! Backups (`/backups`) to the directory repository of [`super::repo`], and
//! restores that end in the clone's rekey steps.
//!
//! A backup holds the volume's ciphertext and its own copy of the volume's
//! key (as Cinder keeps one). A restore — to a new volume, onto an existing
//! one, or `POST /volumes` with `backup_id` — writes the backup's bytes,
//! makes the volume's interim key a copy of the backup's, then rekeys: the
//! restored volume opens with a new key and not with the backup's.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::db::{self as pdb, Backup};
use super::repo::Repo;
use super::snapshots::new_volume;
use crate::db;
use crate::engine::{self, blocking, commit, job_copy_key, new_job, project, DONE, GIB};
use crate::error::{ErrorKind, Result, ServiceError};
use crate::fault;
use crate::model::{now_iso, status, Caller, Job, JobKind, RekeyMode, Volume};
use crate::service::{check_rekey_mode, CreateVolume, Service};

/// Volume status while it is backed up.
const BACKING_UP: &str = "backing-up";
/// Volume status while a backup is restored onto it.
const RESTORING: &str = "restoring-backup";

/// A backup-create request.
#[derive(Debug, Clone, Default)]
pub struct CreateBackup {
    /// The volume.
    pub volume_id: String,
    /// Name.
    pub name: Option<String>,
    /// Description.
    pub description: Option<String>,
    /// Store only what changed since the volume's latest backup.
    pub incremental: bool,
    /// Cinder's `force`: also back up an in-use volume.
    pub force: bool,
    /// Metadata (accepted, not kept).
    pub metadata: BTreeMap<String, String>,
}

/// The repository of this service: `<data_dir>/backups`.
pub(crate) fn repo(svc: &Service) -> Result<Repo> {
    Repo::open(svc.config().data_dir.join("backups"))
}

impl Service {
    /// Admits a backup: records it `creating`, the volume `backing-up`, and the job.
    pub async fn create_backup(&self, caller: &Caller, req: CreateBackup) -> Result<(Backup, Job)> {
        let mut tx = self.tx().await?;
        let v = db::get_volume(&mut tx, &req.volume_id)
            .await?
            .filter(|v| v.project_id == caller.project)
            .ok_or_else(|| ServiceError::not_found("Volume", req.volume_id.clone()))?;
        let ok = v.status == status::AVAILABLE || (req.force && v.status == "in-use");
        if !ok {
            return Err(ServiceError::invalid(format!(
                "Invalid volume: Volume to be backed up must be available{}, but the current status is \"{}\".",
                if req.force { " or in-use" } else { "" },
                v.status
            )));
        }
        if db::is_being_cloned(&mut tx, &v.id).await? {
            return Err(ServiceError::invalid(format!("Invalid volume: a clone, snapshot or backup of {} is in progress.", v.id)));
        }
        let parent = if req.incremental {
            let all = pdb::list_backups(&mut tx, Some(&caller.project), Some(&v.id)).await?;
            let latest = all.into_iter().filter(|b| b.status == "available").next_back();
            Some(latest.ok_or_else(|| ServiceError::invalid("Invalid backup: No backups available to do an incremental backup."))?.id)
        } else {
            None
        };
        let now = now_iso();
        let b = Backup {
            id: uuid::Uuid::new_v4().to_string(),
            project_id: v.project_id.clone(),
            user_id: caller.user.clone(),
            volume_id: v.id.clone(),
            volume_type_id: v.volume_type_id.clone(),
            name: req.name,
            description: req.description,
            size_gb: v.size_gb,
            status: "creating".into(),
            parent_id: parent,
            encryption_key_id: None,
            object_count: 0,
            stored_bytes: 0,
            fail_reason: None,
            created_at: now.clone(),
            updated_at: now,
        };
        let job = new_job(JobKind::Backup, &b.id, &b.project_id, Some(&v.id));
        pdb::insert_backup(&mut tx, &b).await?;
        db::set_status(&mut tx, &v.id, BACKING_UP).await?;
        db::insert_job(&mut tx, &job).await?;
        tx.commit().await.map_err(crate::error::db("commit"))?;
        Ok((b, job))
    }

    /// A backup of the caller's project.
    pub async fn get_backup(&self, caller: &Caller, id: &str) -> Result<Backup> {
        let mut c = self.conn().await?;
        pdb::get_backup(&mut c, id)
            .await?
            .filter(|b| b.project_id == caller.project)
            .ok_or_else(|| ServiceError::not_found("Backup", id))
    }

    /// Backups visible to the caller.
    pub async fn list_backups(&self, caller: &Caller, all_tenants: bool, volume: Option<&str>) -> Result<Vec<Backup>> {
        if all_tenants && !caller.admin {
            return Err(ServiceError::Forbidden("Policy doesn't allow all_tenants.".into()));
        }
        let mut c = self.conn().await?;
        pdb::list_backups(&mut c, (!all_tenants).then_some(caller.project.as_str()), volume).await
    }

    /// Whether an incremental backup depends on `id`.
    pub async fn backup_has_dependents(&self, id: &str) -> Result<bool> {
        let mut c = self.conn().await?;
        pdb::has_dependents(&mut c, id).await
    }

    /// Deletes a backup nothing depends on: its files, then its record and key.
    pub async fn delete_backup(&self, caller: &Caller, id: &str) -> Result<()> {
        let b = {
            let mut tx = self.tx().await?;
            let b = pdb::get_backup(&mut tx, id)
                .await?
                .filter(|b| b.project_id == caller.project)
                .ok_or_else(|| ServiceError::not_found("Backup", id))?;
            if !matches!(b.status.as_str(), "available" | "error" | "deleting") {
                return Err(ServiceError::invalid(format!(
                    "Invalid backup: Backup status must be available or error, but is {}.",
                    b.status
                )));
            }
            if pdb::has_dependents(&mut tx, id).await? {
                return Err(ServiceError::invalid(format!(
                    "Invalid backup: Incremental backups exist for backup {id}; delete them first."
                )));
            }
            if db::is_being_cloned(&mut tx, id).await? {
                return Err(ServiceError::invalid(format!("Invalid backup: backup {id} is being restored.")));
            }
            pdb::set_backup_status(&mut tx, id, "deleting", None).await?;
            tx.commit().await.map_err(crate::error::db("commit"))?;
            b
        };
        let r = repo(self)?;
        let bid = b.id.clone();
        blocking(move || r.delete(&bid)).await?;
        let mut tx = self.tx().await?;
        if let Some(k) = &b.encryption_key_id {
            db::queue_key_deletion(&mut tx, k, &b.project_id, "key of a deleted backup").await?;
        }
        pdb::delete_backup(&mut tx, &b.id).await?;
        tx.commit().await.map_err(crate::error::db("commit"))?;
        self.key_gc.notify_one();
        Ok(())
    }

    /// Admits a restore of backup `id` onto volume `volume_id`, or onto a new
    /// volume named `name` when `volume_id` is `None`.
    pub async fn restore_backup(&self, caller: &Caller, id: &str, volume_id: Option<&str>, name: Option<String>) -> Result<(Volume, Job)> {
        match volume_id {
            None => {
                let req = CreateVolume { name, ..CreateVolume::default() };
                self.create_volume_from_backup(caller, req, id).await
            }
            Some(vid) => {
                let mut tx = self.tx().await?;
                let b = restorable(&mut tx, caller, id).await?;
                let v = db::get_volume(&mut tx, vid)
                    .await?
                    .filter(|v| v.project_id == caller.project)
                    .ok_or_else(|| ServiceError::not_found("Volume", vid))?;
                if v.status != status::AVAILABLE {
                    return Err(ServiceError::invalid(format!(
                        "Invalid volume: Volume to be restored to must be available, but the current status is \"{}\".",
                        v.status
                    )));
                }
                if v.size_gb < b.size_gb {
                    return Err(ServiceError::invalid(format!(
                        "Invalid volume: volume size {}GB is too small to restore backup of size {}GB.",
                        v.size_gb, b.size_gb
                    )));
                }
                if db::is_being_cloned(&mut tx, vid).await? {
                    return Err(ServiceError::invalid(format!("Invalid volume: a clone, snapshot or backup of {vid} is in progress.")));
                }
                let (te, be) = (db::get_encryption(&mut tx, &v.volume_type_id).await?, db::get_encryption(&mut tx, &b.volume_type_id).await?);
                if te.as_ref().map(|e| (e.provider, e.cipher().to_owned(), e.key_size()))
                    != be.as_ref().map(|e| (e.provider, e.cipher().to_owned(), e.key_size()))
                {
                    return Err(ServiceError::invalid(
                        "Invalid volume: the target volume's type must have the same encryption as the backed-up volume's",
                    ));
                }
                check_rekey_mode(self.type_rekey_mode(&mut tx, &v.volume_type_id).await?, te.as_ref())?;
                let job = new_job(JobKind::Restore, &v.id, &v.project_id, Some(&b.id));
                db::set_status(&mut tx, &v.id, RESTORING).await?;
                pdb::set_backup_status(&mut tx, &b.id, "restoring", None).await?;
                db::insert_job(&mut tx, &job).await?;
                tx.commit().await.map_err(crate::error::db("commit"))?;
                Ok((v, job))
            }
        }
    }

    /// Admits a new volume restored from backup `backup_id`.
    pub async fn create_volume_from_backup(&self, caller: &Caller, req: CreateVolume, backup_id: &str) -> Result<(Volume, Job)> {
        let mut tx = self.tx().await?;
        let b = restorable(&mut tx, caller, backup_id).await?;
        let (vol, job) = new_volume(self, &mut tx, caller, req, &b.volume_type_id, b.size_gb, JobKind::Restore, &b.id).await?;
        pdb::set_backup_status(&mut tx, &b.id, "restoring", None).await?;
        tx.commit().await.map_err(crate::error::db("commit"))?;
        Ok((vol, job))
    }
}

async fn restorable(c: &mut crate::db::Conn, caller: &Caller, id: &str) -> Result<Backup> {
    let b = pdb::get_backup(c, id)
        .await?
        .filter(|b| b.project_id == caller.project)
        .ok_or_else(|| ServiceError::not_found("Backup", id))?;
    if b.status != "available" {
        return Err(ServiceError::invalid(format!("Invalid backup: Backup status must be available, but is {}.", b.status)));
    }
    Ok(b)
}

async fn backup_and_volume(svc: &Service, job: &Job) -> Result<(Backup, Volume)> {
    let mut c = svc.conn().await?;
    let b = pdb::get_backup(&mut c, &job.volume_id).await?.ok_or_else(|| ServiceError::not_found("Backup", job.volume_id.clone()))?;
    let v = db::get_volume(&mut c, &b.volume_id).await?.ok_or_else(|| ServiceError::not_found("Volume", b.volume_id.clone()))?;
    Ok((b, v))
}

/// The backup's own copy of the volume's key.
pub(crate) async fn backup_key(svc: &Arc<Service>, job: &mut Job) -> Result<()> {
    let (b, v) = backup_and_volume(svc, job).await?;
    let mut tx;
    job.step = "backup_data".into();
    match (&v.encryption_key_id, &b.encryption_key_id) {
        (Some(k), None) => {
            let copy = job_copy_key(svc, job, "backup", &project(job)?, k).await?;
            tx = svc.tx().await?;
            pdb::set_backup_key(&mut tx, &b.id, Some(&copy)).await?;
        }
        _ => tx = svc.tx().await?,
    }
    commit(tx, job, "backup_key").await
}

/// The chunks and manifest (redone from scratch after a crash).
pub(crate) async fn backup_data(svc: &Arc<Service>, job: &mut Job) -> Result<()> {
    let (b, v) = backup_and_volume(svc, job).await?;
    fault::point("backup_data.start").await;
    let (backend, r) = (svc.backend.clone(), repo(svc)?);
    let stored = blocking(move || {
        let io = backend.open(&v.id)?;
        r.write(&b.id, &v.id, io.as_ref(), b.parent_id.as_deref())
    })
    .await?;
    tracing::info!(backup = %job.volume_id, chunks = stored.chunks, bytes = stored.bytes, data_chunks = stored.data_chunks, "backup written");
    job.step = DONE.into();
    let mut tx = svc.tx().await?;
    pdb::set_backup_stored(&mut tx, &job.volume_id, stored.chunks, stored.bytes).await?;
    commit(tx, job, "backup_data").await
}

async fn job_backup(svc: &Service, job: &Job) -> Result<Backup> {
    let mut c = svc.conn().await?;
    let id = job.source_id.as_deref().unwrap_or_default();
    pdb::get_backup(&mut c, id).await?.ok_or_else(|| ServiceError::not_found("Backup", id))
}

/// The restored volume's interim key: a copy of the backup's.
pub(crate) async fn restore_key(svc: &Arc<Service>, job: &mut Job) -> Result<()> {
    let b = job_backup(svc, job).await?;
    if let (Some(k), None) = (&b.encryption_key_id, &job.old_key_id) {
        job.old_key_id = Some(job_copy_key(svc, job, "interim", &project(job)?, k).await?);
    }
    job.step = "restore_data".into();
    commit(svc.tx().await?, job, "restore_key").await
}

/// Writes the backup onto the volume (checked chunk by chunk); the volume's
/// record then names the interim key, and the rekey steps follow.
pub(crate) async fn restore_data(svc: &Arc<Service>, job: &mut Job) -> Result<()> {
    let b = job_backup(svc, job).await?;
    let t = engine::target(svc, job).await?;
    let is_new = t.vol.status == status::CREATING;
    let (backend, r, id, size, bid) = (svc.backend.clone(), repo(svc)?, job.volume_id.clone(), t.vol.size_gb * GIB, b.id.clone());
    fault::point("restore_data.start").await;
    let written = blocking(move || {
        if is_new {
            if backend.exists(&id)? {
                backend.delete(&id)?;
            }
            backend.create(&id, size)?;
        }
        let io = backend.open(&id)?;
        r.restore(&bid, io.as_ref(), !is_new)
    })
    .await;
    if let Err(e) = written {
        if e.kind() == ErrorKind::Invalid {
            // A corrupt backup: say so on the backup, for good.
            let mut tx = svc.tx().await?;
            pdb::set_backup_status(&mut tx, &b.id, "error", Some(&e.to_string())).await?;
            tx.commit().await.map_err(crate::error::db("commit"))?;
        }
        return Err(e);
    }
    job.step = match (&job.old_key_id, t.mode) {
        (Some(_), RekeyMode::None) | (None, _) => DONE,
        (Some(_), _) => "new_key",
    }
    .into();
    let mut tx = svc.tx().await?;
    if let Some(prev) = t.vol.encryption_key_id.as_deref().filter(|k| Some(*k) != job.old_key_id.as_deref()) {
        db::queue_key_deletion(&mut tx, prev, &job.project_id, "key of a volume a backup was restored onto").await?;
    }
    db::set_key(&mut tx, &job.volume_id, job.old_key_id.as_deref()).await?;
    commit(tx, job, "restore_data").await?;
    svc.key_gc.notify_one();
    Ok(())
}
