//! Snapshots (`/snapshots`) and volumes made from them.
//!
//! A snapshot keeps its own copy of the volume's key at the time (its header
//! is the volume's header at the time), so a later rekey of the volume — a
//! transfer accept, a restore onto it — never leaves a snapshot no recorded
//! key opens. A volume made from a snapshot gets the snapshot's data, an
//! interim copy of the snapshot's key, then the clone's rekey steps.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::db::{self as pdb, Snapshot};
use super::{forget_keys, Flow, Job};
use crate::db;
use crate::engine::{self, blocking, job_copy_key, Transition, Tx};
use crate::error::{Result, ServiceError};
use crate::fault::Step;
use crate::model::{now_iso, status, Caller};
use crate::quotas::{self, Delta};
use crate::service::Service;

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
    /// The group snapshot it is taken for, if any.
    pub group_snapshot_id: Option<String>,
}

impl Service {
    /// Admits a snapshot: records it `creating` with its job.
    pub async fn create_snapshot(&self, caller: &Caller, req: CreateSnapshot) -> Result<(Snapshot, Job)> {
        let mut tx = self.tx().await?;
        let made = self.create_snapshot_in(&mut tx, caller, req).await?;
        tx.commit().await.map_err(crate::error::db("commit"))?;
        Ok(made)
    }

    /// [`Service::create_snapshot`] in the caller's transaction, which
    /// starts the job once it is committed.
    pub(crate) async fn create_snapshot_in(&self, tx: &mut Tx, caller: &Caller, req: CreateSnapshot) -> Result<(Snapshot, Job)> {
        let v = db::get_volume(tx, &req.volume_id)
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
            backing_volume_id: None,
            progress: None,
            group_snapshot_id: req.group_snapshot_id,
        };
        let flow = Flow::Snapshot(TakeSnapshot {
            snapshot: s.id.clone(),
            volume: v.id.clone(),
            project: v.project_id.clone(),
            volume_key: v.encryption_key_id.clone(),
            state: SnapshotState::SnapshotKey,
        });
        let job = Job::new(&s.id, &s.project_id, Some(&v.id), flow);
        quotas::reserve(tx, &s.project_id, &Delta::snapshot(&v.volume_type_id, s.size_gb)).await?;
        pdb::insert_snapshot(tx, &s).await?;
        engine::admit(&self.engine, tx, &job).await?;
        Ok((s, job))
    }

    /// A snapshot of the caller's project.
    pub async fn get_snapshot(&self, caller: &Caller, id: &str) -> Result<Snapshot> {
        let mut c = self.conn().await?;
        pdb::get_snapshot(&mut c, id)
            .await?
            .filter(|s| super::actions::reaches(caller, &s.project_id))
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
            if !matches!(s.status.as_str(), "available" | "error" | "error_deleting" | "deleting") || s.group_snapshot_id.is_some() {
                return Err(ServiceError::invalid(format!(
                    "Invalid snapshot: Snapshot status must be available or error and must not be part of a group (status: {}).",
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

    /// Deletes a snapshot marked `deleting`: its backend snapshot, then its
    /// record (its key queued for deletion); `error_deleting` if the backend fails.
    pub(crate) async fn delete_snapshot_records(&self, s: &Snapshot) -> Result<()> {
        let (backend, sid) = (self.backend.clone(), s.id.clone());
        let (holder, backing) = (s.backing_volume_id.clone().unwrap_or_else(|| s.volume_id.clone()), s.backing_volume_id.clone());
        let gone = blocking(move || {
            if backend.snapshots(&holder).unwrap_or_default().contains(&sid) {
                backend.delete_snapshot(&sid)?;
            }
            // A transferred snapshot's scratch volume goes with it.
            if let Some(b) = backing.filter(|b| backend.exists(b).unwrap_or(false)) {
                backend.delete(&b)?;
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
        self.engine.wake_key_gc();
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

}

// ---- snapshot job --------------------------------------------------------

/// A snapshot taken: its own copy of the volume's key, then the data.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TakeSnapshot {
    snapshot: String,
    volume: String,
    project: String,
    volume_key: Option<String>,
    state: SnapshotState,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "at", rename_all = "snake_case")]
enum SnapshotState {
    SnapshotKey,
    SnapshotData,
}

impl TakeSnapshot {
    pub(crate) fn step_name(&self) -> Step {
        match self.state {
            SnapshotState::SnapshotKey => Step::SnapshotKey,
            SnapshotState::SnapshotData => Step::SnapshotData,
        }
    }

    pub(crate) async fn step(self, svc: &Arc<Service>, job: &str) -> Result<Transition<TakeSnapshot>> {
        match self.state {
            SnapshotState::SnapshotKey => {
                let copy = match &self.volume_key {
                    Some(k) => Some(job_copy_key(svc.keys.as_ref(), job, &self.project, "snapshot", &self.project, k).await?),
                    None => None,
                };
                let mut tx = svc.tx().await?;
                pdb::set_snapshot_key(&mut tx, &self.snapshot, copy.as_deref()).await?;
                Ok(Transition::next(tx, TakeSnapshot { state: SnapshotState::SnapshotData, ..self }))
            }
            SnapshotState::SnapshotData => {
                // The point-in-time copy (hole-aware, reflink where the filesystem has it).
                let (backend, sid, vid) = (svc.backend.clone(), self.snapshot.clone(), self.volume.clone());
                blocking(move || {
                    // A crash may have left the copy of an earlier attempt: start over.
                    if backend.snapshots(&vid)?.contains(&sid) {
                        backend.delete_snapshot(&sid)?;
                    }
                    backend.create_snapshot(&vid, &sid)?;
                    Ok(())
                })
                .await?;
                let mut tx = svc.tx().await?;
                pdb::set_snapshot_status(&mut tx, &self.snapshot, "available").await?;
                Ok(Transition::done(tx))
            }
        }
    }

    pub(crate) async fn roll_back(self, svc: &Service, job: &str) -> Result<Tx> {
        let mut tx = forget_keys(svc, job, &self.project, [None, None], None).await?;
        pdb::set_snapshot_status(&mut tx, &self.snapshot, "error").await?;
        Ok(tx)
    }
}
