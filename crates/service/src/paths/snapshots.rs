//! Snapshots (`/snapshots`) and volumes made from them.
//!
//! A snapshot keeps its own copy of the volume's key at the time (its header
//! is the volume's header at the time), so a later rekey of the volume — a
//! transfer accept, a restore onto it — never leaves a snapshot no recorded
//! key opens. A volume made from a snapshot gets the snapshot's data, an
//! interim copy of the snapshot's key, then the clone's rekey steps.

use std::collections::BTreeMap;
use std::sync::Arc;

use rekey_keys::Project;

use super::db::{self as pdb, Snapshot};
use crate::db;
use crate::engine::{self, blocking, commit, job_copy_key, new_job, project, DONE, GIB};
use crate::error::{Result, ServiceError};
use crate::model::{now_iso, status, Caller, Job, JobKind, RekeyMode, Volume};
use crate::service::{check_rekey_mode, CreateVolume, Service};

/// A snapshot-create request.
#[derive(Debug, Clone, Default)]
pub struct CreateSnapshot {
    /// The volume to snapshot.
    pub volume_id: String,
    /// Name.
    pub name: Option<String>,
    /// Description.
    pub description: Option<String>,
    /// Cinder's `force`: also snapshot an in-use volume.
    pub force: bool,
    /// Metadata.
    pub metadata: BTreeMap<String, String>,
}

impl Service {
    /// Admits a snapshot: records it `creating` with its job.
    pub async fn create_snapshot(&self, caller: &Caller, req: CreateSnapshot) -> Result<(Snapshot, Job)> {
        let mut tx = self.tx().await?;
        let v = db::get_volume(&mut tx, &req.volume_id)
            .await?
            .filter(|v| v.project_id == caller.project)
            .ok_or_else(|| ServiceError::not_found("Volume", req.volume_id.clone()))?;
        let ok = v.status == status::AVAILABLE || (req.force && v.status == "in-use");
        if !ok {
            return Err(ServiceError::invalid(format!(
                "Invalid volume: Volume {} status must be available{}, but current status is: {}.",
                v.id,
                if req.force { " or in-use" } else { "" },
                v.status
            )));
        }
        let now = now_iso();
        let s = Snapshot {
            id: uuid::Uuid::new_v4().to_string(),
            project_id: v.project_id.clone(),
            user_id: caller.user.clone(),
            volume_id: v.id.clone(),
            name: req.name,
            description: req.description,
            size_gb: v.size_gb,
            status: "creating".into(),
            encryption_key_id: None,
            metadata: req.metadata,
            created_at: now.clone(),
            updated_at: now,
        };
        let job = new_job(JobKind::Snapshot, &s.id, &s.project_id, Some(&v.id));
        pdb::insert_snapshot(&mut tx, &s).await?;
        db::insert_job(&mut tx, &job).await?;
        tx.commit().await.map_err(crate::error::db("commit"))?;
        Ok((s, job))
    }

    /// A snapshot of the caller's project.
    pub async fn get_snapshot(&self, caller: &Caller, id: &str) -> Result<Snapshot> {
        let mut c = self.conn().await?;
        pdb::get_snapshot(&mut c, id)
            .await?
            .filter(|s| s.project_id == caller.project)
            .ok_or_else(|| ServiceError::not_found("Snapshot", id))
    }

    /// Snapshots visible to the caller.
    pub async fn list_snapshots(&self, caller: &Caller, all_tenants: bool, volume: Option<&str>) -> Result<Vec<Snapshot>> {
        if all_tenants && !caller.admin {
            return Err(ServiceError::Forbidden("Policy doesn't allow all_tenants.".into()));
        }
        let mut c = self.conn().await?;
        pdb::list_snapshots(&mut c, (!all_tenants).then_some(caller.project.as_str()), volume).await
    }

    /// Renames, re-describes or replaces metadata.
    pub async fn update_snapshot(
        &self,
        caller: &Caller,
        id: &str,
        name: Option<Option<String>>,
        description: Option<Option<String>>,
        metadata: Option<BTreeMap<String, String>>,
    ) -> Result<Snapshot> {
        let mut tx = self.tx().await?;
        let mut s = pdb::get_snapshot(&mut tx, id)
            .await?
            .filter(|s| s.project_id == caller.project)
            .ok_or_else(|| ServiceError::not_found("Snapshot", id))?;
        if let Some(n) = name {
            s.name = n;
        }
        if let Some(d) = description {
            s.description = d;
        }
        if let Some(m) = metadata {
            s.metadata = m;
        }
        pdb::update_snapshot(&mut tx, &s).await?;
        tx.commit().await.map_err(crate::error::db("commit"))?;
        Ok(s)
    }

    /// Deletes a snapshot: its data, then (in one transaction) its record
    /// and the queueing of its key for deletion.
    pub async fn delete_snapshot(&self, caller: &Caller, id: &str) -> Result<()> {
        let s = {
            let mut tx = self.tx().await?;
            let s = pdb::get_snapshot(&mut tx, id)
                .await?
                .filter(|s| s.project_id == caller.project)
                .ok_or_else(|| ServiceError::not_found("Snapshot", id))?;
            if !matches!(s.status.as_str(), "available" | "error" | "error_deleting" | "deleting") {
                return Err(ServiceError::invalid(format!(
                    "Invalid snapshot: Snapshot status must be available or error, but is {}.",
                    s.status
                )));
            }
            if db::is_being_cloned(&mut tx, id).await? {
                return Err(ServiceError::invalid(format!(
                    "Invalid snapshot: a volume is being created from snapshot {id}; delete it when that is done."
                )));
            }
            pdb::set_snapshot_status(&mut tx, id, "deleting").await?;
            tx.commit().await.map_err(crate::error::db("commit"))?;
            s
        };
        self.delete_snapshot_records(&s).await
    }

    async fn delete_snapshot_records(&self, s: &Snapshot) -> Result<()> {
        let (backend, sid, vid) = (self.backend.clone(), s.id.clone(), s.volume_id.clone());
        let gone = blocking(move || {
            if backend.snapshots(&vid).unwrap_or_default().contains(&sid) {
                backend.delete_snapshot(&sid)?;
            }
            Ok(())
        })
        .await;
        let mut tx = self.tx().await?;
        if let Err(e) = gone {
            pdb::set_snapshot_status(&mut tx, &s.id, "error_deleting").await?;
            tx.commit().await.map_err(crate::error::db("commit"))?;
            return Err(e);
        }
        if let Some(k) = &s.encryption_key_id {
            db::queue_key_deletion(&mut tx, k, &s.project_id, "key of a deleted snapshot").await?;
        }
        pdb::delete_snapshot(&mut tx, &s.id).await?;
        tx.commit().await.map_err(crate::error::db("commit"))?;
        self.key_gc.notify_one();
        Ok(())
    }

    /// Before a volume delete: a volume with snapshots is refused unless
    /// `cascade`, which deletes the snapshots first.
    pub async fn delete_volume_snapshots(&self, caller: &Caller, volume_id: &str, cascade: bool) -> Result<()> {
        let snaps = {
            let mut c = self.conn().await?;
            pdb::list_snapshots(&mut c, Some(&caller.project), Some(volume_id)).await?
        };
        if snaps.is_empty() {
            return Ok(());
        }
        if !cascade {
            return Err(ServiceError::invalid(format!(
                "Invalid volume: Volume {volume_id} has {} dependent snapshot(s); delete them first or use cascade=true.",
                snaps.len()
            )));
        }
        for s in snaps {
            if s.status == "creating" {
                return Err(ServiceError::invalid(format!("Invalid volume: snapshot {} is still being created.", s.id)));
            }
            self.delete_snapshot(caller, &s.id).await?;
        }
        Ok(())
    }

    /// Admits a volume made from snapshot `snapshot_id`.
    pub async fn create_volume_from_snapshot(&self, caller: &Caller, req: CreateVolume, snapshot_id: &str) -> Result<(Volume, Job)> {
        let mut tx = self.tx().await?;
        let s = pdb::get_snapshot(&mut tx, snapshot_id)
            .await?
            .filter(|s| s.project_id == caller.project)
            .ok_or_else(|| ServiceError::not_found("Snapshot", snapshot_id))?;
        if s.status != "available" {
            return Err(ServiceError::invalid(format!(
                "Invalid snapshot: Originating snapshot status must be one of 'available' values, but is {}.",
                s.status
            )));
        }
        let src = db::get_volume(&mut tx, &s.volume_id)
            .await?
            .ok_or_else(|| ServiceError::not_found("Volume", s.volume_id.clone()))?;
        let (vol, job) = new_volume(self, &mut tx, caller, req, &src.volume_type_id, s.size_gb, JobKind::FromSnapshot, &s.id).await?;
        tx.commit().await.map_err(crate::error::db("commit"))?;
        Ok((vol, job))
    }
}

/// Records a new `creating` volume made from another record (snapshot,
/// backup) with its job: the type is the request's or `source_type`, whose
/// encryption it must share; the size at least `min_size`.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn new_volume(
    svc: &Service,
    tx: &mut crate::db::Conn,
    caller: &Caller,
    req: CreateVolume,
    source_type: &str,
    min_size: u64,
    kind: JobKind,
    source_id: &str,
) -> Result<(Volume, Job)> {
    Project::new(caller.project.clone()).map_err(|e| ServiceError::invalid(e.to_string()))?;
    let vtype = match &req.volume_type {
        Some(t) => db::find_type(tx, t).await?.ok_or_else(|| ServiceError::not_found("Volume type", t.clone()))?,
        None => db::get_type(tx, source_type).await?.ok_or_else(|| ServiceError::not_found("Volume type", source_type))?,
    };
    let enc = db::get_encryption(tx, &vtype.id).await?;
    let src_enc = db::get_encryption(tx, source_type).await?;
    if enc.as_ref().map(|e| (e.provider, e.cipher().to_owned(), e.key_size()))
        != src_enc.as_ref().map(|e| (e.provider, e.cipher().to_owned(), e.key_size()))
    {
        return Err(ServiceError::invalid(
            "Invalid input received: the new volume's type must have the same encryption as the source's",
        ));
    }
    let mode = svc.rekey_mode(&vtype)?;
    check_rekey_mode(mode, enc.as_ref())?;
    let size_gb = match req.size_gb {
        Some(n) if n < min_size => {
            return Err(ServiceError::invalid(format!(
                "Invalid input received: Volume size {n}GB cannot be smaller than the source size {min_size}GB."
            )))
        }
        Some(n) => n,
        None => min_size,
    };
    svc.check_size(size_gb)?;
    let now = now_iso();
    let vol = Volume {
        id: uuid::Uuid::new_v4().to_string(),
        project_id: caller.project.clone(),
        user_id: caller.user.clone(),
        name: req.name,
        description: req.description,
        size_gb,
        status: status::CREATING.into(),
        volume_type_id: vtype.id.clone(),
        source_volid: None,
        snapshot_id: (kind == JobKind::FromSnapshot).then(|| source_id.to_owned()),
        encryption_key_id: None,
        metadata: req.metadata,
        created_at: now.clone(),
        updated_at: now,
    };
    let job = new_job(kind, &vol.id, &vol.project_id, Some(source_id));
    db::insert_volume(tx, &vol).await?;
    db::insert_job(tx, &job).await?;
    Ok((vol, job))
}

// ---- snapshot job --------------------------------------------------------

async fn snapshot_and_volume(svc: &Service, job: &Job) -> Result<(Snapshot, Volume)> {
    let mut c = svc.conn().await?;
    let s = pdb::get_snapshot(&mut c, &job.volume_id)
        .await?
        .ok_or_else(|| ServiceError::not_found("Snapshot", job.volume_id.clone()))?;
    let v = db::get_volume(&mut c, &s.volume_id).await?.ok_or_else(|| ServiceError::not_found("Volume", s.volume_id.clone()))?;
    Ok((s, v))
}

/// The snapshot's own copy of the volume's key.
pub(crate) async fn snapshot_key(svc: &Arc<Service>, job: &mut Job) -> Result<()> {
    let (mut s, v) = snapshot_and_volume(svc, job).await?;
    if let (Some(k), None) = (&v.encryption_key_id, &s.encryption_key_id) {
        s.encryption_key_id = Some(job_copy_key(svc, job, "snapshot", &project(job)?, k).await?);
    }
    job.step = "snapshot_data".into();
    let mut tx = svc.tx().await?;
    pdb::update_snapshot(&mut tx, &s).await?;
    commit(tx, job, "snapshot_key").await
}

/// The point-in-time copy (hole-aware, reflink where the filesystem has it).
pub(crate) async fn snapshot_data(svc: &Arc<Service>, job: &mut Job) -> Result<()> {
    let (s, v) = snapshot_and_volume(svc, job).await?;
    let backend = svc.backend.clone();
    blocking(move || {
        // A crash may have left the copy of an earlier attempt: start over.
        if backend.snapshots(&v.id)?.contains(&s.id) {
            backend.delete_snapshot(&s.id)?;
        }
        backend.create_snapshot(&v.id, &s.id)?;
        Ok(())
    })
    .await?;
    job.step = DONE.into();
    commit(svc.tx().await?, job, "snapshot_data").await
}

// ---- volume from snapshot ------------------------------------------------

pub(crate) async fn clone_data(svc: &Arc<Service>, job: &mut Job) -> Result<()> {
    let t = engine::target(svc, job).await?;
    let snap = job.source_id.clone().ok_or_else(|| ServiceError::Internal("from-snapshot job without snapshot".into()))?;
    let (backend, id, size) = (svc.backend.clone(), job.volume_id.clone(), t.vol.size_gb * GIB);
    let kind = blocking(move || {
        if backend.exists(&id)? {
            backend.delete(&id)?;
        }
        let kind = backend.clone_from_snapshot(&snap, &id)?;
        if backend.size(&id)? < size {
            backend.extend(&id, size)?;
        }
        Ok(kind)
    })
    .await?;
    tracing::debug!(volume = %job.volume_id, clone = %kind, "volume data from snapshot");
    job.step = if t.enc.is_some() { "snapshot_interim_key" } else { DONE }.into();
    commit(svc.tx().await?, job, "snapshot_clone_data").await
}

/// The new volume's interim copy of the snapshot's key; then the rekey steps.
pub(crate) async fn interim_key(svc: &Arc<Service>, job: &mut Job) -> Result<()> {
    let t = engine::target(svc, job).await?;
    let snap_key = {
        let mut c = svc.conn().await?;
        let sid = job.source_id.as_deref().unwrap_or_default();
        let s = pdb::get_snapshot(&mut c, sid).await?.ok_or_else(|| ServiceError::not_found("Snapshot", sid))?;
        s.encryption_key_id.ok_or_else(|| ServiceError::Internal(format!("snapshot {sid} of an encrypted volume has no key")))?
    };
    let interim = job_copy_key(svc, job, "interim", &project(job)?, &snap_key).await?;
    job.old_key_id = Some(interim.clone());
    job.step = if t.mode == RekeyMode::None { DONE } else { "new_key" }.into();
    let mut tx = svc.tx().await?;
    db::set_key(&mut tx, &job.volume_id, Some(&interim)).await?;
    commit(tx, job, "snapshot_interim_key").await
}
