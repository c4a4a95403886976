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

use serde::{Deserialize, Serialize};

use super::db::{self as pdb, restorable, Backup};
use super::repo::repo;
use super::volumes::{Make, Onto, Origin};
use super::{forget_keys, Cipher, Flow, Job, Target};
use crate::db;
use crate::engine::{self, blocking, job_copy_key, Transition, Tx};
use crate::error::{Result, ServiceError};
use crate::fault::{self, Point, Step};
use crate::model::{now_iso, status, Caller, Volume};
use crate::quotas::{self, Delta};
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
    /// Back up this snapshot of the volume (its data and key then), not
    /// the volume as it is now.
    pub snapshot_id: Option<String>,
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
        let snap = match &req.snapshot_id {
            None => None,
            Some(sid) => {
                let s = pdb::get_snapshot(&mut tx, sid)
                    .await?
                    .filter(|s| s.project_id == caller.project)
                    .ok_or_else(|| ServiceError::not_found("Snapshot", sid.clone()))?;
                if s.volume_id != v.id {
                    return Err(ServiceError::invalid(format!("Invalid snapshot: Snapshot {sid} is not of volume {}.", v.id)));
                }
                if s.status != "available" {
                    return Err(ServiceError::invalid(format!(
                        "Invalid snapshot: Snapshot to be backed up must be available, but the current status is \"{}\".",
                        s.status
                    )));
                }
                Some(s)
            }
        };
        let parent = if req.incremental {
            let all = pdb::list_backups(&mut tx, Some(&caller.project), Some(&v.id)).await?;
            let latest = all.into_iter().rfind(|b| b.status == "available");
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
            snapshot_id: snap.as_ref().map(|s| s.id.clone()),
            volume_metadata: v.metadata.clone(),
            created_at: now.clone(),
            updated_at: now,
        };
        let flow = Flow::Backup(TakeBackup {
            backup: b.id.clone(),
            volume: v.id.clone(),
            project: v.project_id.clone(),
            volume_key: match &snap {
                Some(s) => s.encryption_key_id.clone(),
                None => v.encryption_key_id.clone(),
            },
            parent: b.parent_id.clone(),
            snapshot: snap.as_ref().map(|s| s.id.clone()),
            state: BackupState::BackupKey,
        });
        let job = Job::new(&b.id, &b.project_id, Some(&v.id), flow);
        quotas::reserve(&mut tx, &b.project_id, &Delta::backup(b.size_gb)).await?;
        pdb::insert_backup(&mut tx, &b).await?;
        db::set_status(&mut tx, &v.id, BACKING_UP).await?;
        engine::admit(&self.engine, &mut tx, &job).await?;
        tx.commit().await.map_err(crate::error::db("commit"))?;
        Ok((b, job))
    }

    /// A backup of the caller's project.
    pub async fn get_backup(&self, caller: &Caller, id: &str) -> Result<Backup> {
        let mut c = self.conn().await?;
        pdb::get_backup(&mut c, id)
            .await?
            .filter(|b| super::actions::reaches(caller, &b.project_id))
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
        self.engine.wake_key_gc();
        Ok(())
    }

    /// Admits a restore of backup `id` onto volume `volume_id`, or onto a new
    /// volume named `name` when `volume_id` is `None`.
    pub async fn restore_backup(&self, caller: &Caller, id: &str, volume_id: Option<&str>, name: Option<String>) -> Result<(Volume, Job)> {
        match volume_id {
            None => {
                // Cinder's name for a volume a restore makes.
                let name = name.or_else(|| Some(format!("restore_backup_{id}")));
                let metadata = self.get_backup(caller, id).await?.volume_metadata;
                let req = CreateVolume { name, metadata, ..CreateVolume::default() };
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
                let mode = self.type_rekey_mode(&mut tx, &v.volume_type_id).await?;
                check_rekey_mode(mode, te.as_ref())?;
                let target = Target {
                    volume: v.id.clone(),
                    project: v.project_id.clone(),
                    size_gb: v.size_gb,
                    cipher: te.as_ref().map(Cipher::from),
                    mode,
                };
                let from = Origin::Backup {
                    id: b.id.clone(),
                    key: b.encryption_key_id.clone(),
                    onto: Some(Onto { previous_key: v.encryption_key_id.clone() }),
                };
                let job = Job::new(&v.id, &v.project_id, Some(&b.id), Flow::Make(Make::new(target, from)));
                db::set_status(&mut tx, &v.id, RESTORING).await?;
                pdb::set_backup_status(&mut tx, &b.id, "restoring", None).await?;
                engine::admit(&self.engine, &mut tx, &job).await?;
                tx.commit().await.map_err(crate::error::db("commit"))?;
                Ok((v, job))
            }
        }
    }
}


/// A backup taken: its own copy of the volume's key, then chunks and manifest.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TakeBackup {
    backup: String,
    volume: String,
    project: String,
    volume_key: Option<String>,
    parent: Option<String>,
    /// Read this snapshot instead of the volume (absent in jobs recorded
    /// before snapshot backups existed).
    #[serde(default)]
    snapshot: Option<String>,
    state: BackupState,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "at", rename_all = "snake_case")]
enum BackupState {
    BackupKey,
    BackupData,
}

impl TakeBackup {
    pub(crate) fn step_name(&self) -> Step {
        match self.state {
            BackupState::BackupKey => Step::BackupKey,
            BackupState::BackupData => Step::BackupData,
        }
    }

    pub(crate) async fn step(self, svc: &Arc<Service>, job: &str) -> Result<Transition<TakeBackup>> {
        match self.state {
            BackupState::BackupKey => {
                let tx = match &self.volume_key {
                    Some(k) => {
                        let copy = job_copy_key(svc.keys.as_ref(), job, &self.project, "backup", &self.project, k).await?;
                        let mut tx = svc.tx().await?;
                        pdb::set_backup_key(&mut tx, &self.backup, Some(&copy)).await?;
                        tx
                    }
                    None => svc.tx().await?,
                };
                Ok(Transition::next(tx, TakeBackup { state: BackupState::BackupData, ..self }))
            }
            BackupState::BackupData => {
                // Redone from scratch after a crash.
                fault::point(Point::start(Step::BackupData)).await;
                let (backend, r) = (svc.backend.clone(), repo(svc)?);
                let (bid, vid, parent, snap) = (self.backup.clone(), self.volume.clone(), self.parent.clone(), self.snapshot.clone());
                let stored = blocking(move || {
                    let io = match &snap {
                        Some(s) => backend.open_snapshot(s)?,
                        None => backend.open(&vid)?,
                    };
                    r.write(&bid, &vid, io.as_ref(), parent.as_deref())
                })
                .await?;
                tracing::info!(backup = %self.backup, chunks = stored.chunks, bytes = stored.bytes, data_chunks = stored.data_chunks, "backup written");
                let mut tx = svc.tx().await?;
                pdb::set_backup_stored(&mut tx, &self.backup, stored.chunks, stored.bytes).await?;
                pdb::set_backup_status(&mut tx, &self.backup, "available", None).await?;
                // A forced backup of an attached volume leaves it in-use.
                let settled = db::settled_status(&mut tx, &self.volume).await?;
                db::set_status(&mut tx, &self.volume, settled).await?;
                Ok(Transition::done(tx))
            }
        }
    }

    pub(crate) async fn roll_back(self, svc: &Service, job: &str, error: &str) -> Result<Tx> {
        let mut tx = forget_keys(svc, job, &self.project, [None, None], None).await?;
        pdb::set_backup_status(&mut tx, &self.backup, "error", Some(&format!("backup failed: {error}"))).await?;
        let settled = db::settled_status(&mut tx, &self.volume).await?;
        db::set_status(&mut tx, &self.volume, settled).await?;
        Ok(tx)
    }
}
