//! Volume transfers (`/volume-transfers`): the donor offers a volume and gets
//! an `auth_key` once; another project accepts with it. On accept the volume
//! and its snapshots move to the recipient, the volume's key is copied into
//! the recipient's project (the interim key), the donor's key is queued for
//! deletion, and the clone's rekey steps give the volume a new key owned by
//! the recipient, so nothing the donor ever held opens it.
//!
//! The auth key is never stored: only SHA-256(salt ‖ auth_key), compared in
//! constant time.

use std::sync::Arc;

use rekey_keys::Project;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use serde::{Deserialize, Serialize};

use super::db::{self as pdb, Transfer};
use super::rekey::{Record, Tail};
use super::{forget_keys, Cipher, Flow, Job, Target};
use crate::db;
use crate::engine::{self, blocking, job_copy_key, Transition, Tx};
use crate::error::{Result, ServiceError};
use crate::fault::Step;
use crate::model::{now_iso, status, Caller, RekeyMode, Volume};
use crate::quotas;
use crate::service::{check_rekey_mode, Service};

/// Volume status while a transfer is offered.
pub(crate) const AWAITING_TRANSFER: &str = "awaiting-transfer";
/// Volume status while an accepted transfer moves and rekeys it.
const ACCEPTING: &str = "maintenance";
/// Microversion from which encrypted volumes may be transferred (Cinder).
const ENCRYPTED_TRANSFER_MV: (u32, u32) = (3, 70);

fn crypt_hash(salt: &str, auth_key: &str) -> String {
    let mut h = Sha256::new();
    h.update(salt.as_bytes());
    h.update(auth_key.as_bytes());
    hex::encode(h.finalize())
}

fn random_hex(bytes: usize) -> String {
    let r = rekey_luks::Secret::random(bytes);
    hex::encode(r.expose())
}

impl Service {
    /// Offers a volume: returns the transfer and its auth key (shown once).
    pub async fn create_transfer(
        &self,
        caller: &Caller,
        volume_id: &str,
        name: Option<String>,
        no_snapshots: bool,
        mv: (u32, u32),
    ) -> Result<(Transfer, String)> {
        let mut tx = self.tx().await?;
        let v = db::get_volume(&mut tx, volume_id)
            .await?
            .filter(|v| v.project_id == caller.project)
            .ok_or_else(|| ServiceError::not_found("Volume", volume_id))?;
        if v.status != status::AVAILABLE {
            return Err(ServiceError::invalid(format!(
                "Invalid volume: status must be available to transfer, but is {}.",
                v.status
            )));
        }
        if v.encryption_key_id.is_some() && mv < ENCRYPTED_TRANSFER_MV {
            return Err(ServiceError::invalid(format!(
                "Invalid volume: transferring an encrypted volume needs microversion {}.{} or later.",
                ENCRYPTED_TRANSFER_MV.0, ENCRYPTED_TRANSFER_MV.1
            )));
        }
        if db::is_being_cloned(&mut tx, volume_id).await? {
            return Err(ServiceError::invalid(format!(
                "Invalid volume: a clone, snapshot or backup of volume {volume_id} is in progress."
            )));
        }
        let snaps = pdb::list_snapshots(&mut tx, Some(&caller.project), Some(volume_id)).await?;
        if no_snapshots && !snaps.is_empty() {
            return Err(ServiceError::invalid(
                "Invalid volume: the volume has snapshots; they move with it (no_snapshots=false) or are deleted first.",
            ));
        }
        if let Some(s) = snaps.iter().find(|s| s.status != "available") {
            return Err(ServiceError::invalid(format!("Invalid snapshot: snapshot {} is {}.", s.id, s.status)));
        }
        let auth_key = random_hex(8);
        let salt = random_hex(8);
        let t = Transfer {
            id: uuid::Uuid::new_v4().to_string(),
            volume_id: v.id.clone(),
            project_id: caller.project.clone(),
            user_id: caller.user.clone(),
            name,
            crypt_hash: crypt_hash(&salt, &auth_key),
            salt,
            no_snapshots,
            accepted: false,
            destination_project_id: None,
            destination_user_id: None,
            created_at: now_iso(),
        };
        if !pdb::insert_transfer(&mut tx, &t).await? {
            return Err(ServiceError::invalid(format!("Invalid volume: volume {volume_id} already has a transfer.")));
        }
        db::set_status(&mut tx, volume_id, AWAITING_TRANSFER).await?;
        tx.commit().await.map_err(crate::error::db("commit"))?;
        Ok((t, auth_key))
    }

    /// A transfer the caller's project offered.
    pub async fn get_transfer(&self, caller: &Caller, id: &str) -> Result<Transfer> {
        let mut c = self.conn().await?;
        pdb::get_transfer(&mut c, id)
            .await?
            .filter(|t| t.project_id == caller.project && !t.accepted)
            .ok_or_else(|| ServiceError::not_found("Transfer", id))
    }

    /// Open transfers of the caller's project (every project's with `all_tenants`).
    pub async fn list_transfers(&self, caller: &Caller, all_tenants: bool) -> Result<Vec<Transfer>> {
        if all_tenants && !caller.admin {
            return Err(ServiceError::Forbidden("Policy doesn't allow all_tenants.".into()));
        }
        let mut c = self.conn().await?;
        let all = pdb::list_transfers(&mut c, (!all_tenants).then_some(caller.project.as_str())).await?;
        Ok(all.into_iter().filter(|t| !t.accepted).collect())
    }

    /// Withdraws an offer: the volume is available again.
    pub async fn delete_transfer(&self, caller: &Caller, id: &str) -> Result<()> {
        let mut tx = self.tx().await?;
        let t = pdb::get_transfer(&mut tx, id)
            .await?
            .filter(|t| t.project_id == caller.project && !t.accepted)
            .ok_or_else(|| ServiceError::not_found("Transfer", id))?;
        if let Some(v) = db::get_volume(&mut tx, &t.volume_id).await? {
            if v.status == AWAITING_TRANSFER {
                db::set_status(&mut tx, &v.id, status::AVAILABLE).await?;
            }
        }
        pdb::delete_transfer(&mut tx, id).await?;
        tx.commit().await.map_err(crate::error::db("commit"))
    }

    /// Accepts a transfer: checks the auth key, records the acceptance and
    /// the job that moves and rekeys the volume.
    pub async fn accept_transfer(&self, caller: &Caller, id: &str, auth_key: &str, mv: (u32, u32)) -> Result<(Transfer, Volume, Job)> {
        Project::new(caller.project.clone()).map_err(|e| ServiceError::invalid(e.to_string()))?;
        let mut tx = self.tx().await?;
        let t = pdb::get_transfer(&mut tx, id).await?.ok_or_else(|| ServiceError::not_found("Transfer", id))?;
        if t.accepted {
            return Err(ServiceError::invalid(format!("Invalid transfer: transfer {id} has already been accepted.")));
        }
        if t.project_id == caller.project {
            return Err(ServiceError::invalid(format!(
                "Invalid transfer: project {} cannot accept its own transfer {id}.",
                caller.project
            )));
        }
        let good: bool = crypt_hash(&t.salt, auth_key).as_bytes().ct_eq(t.crypt_hash.as_bytes()).into();
        if !good {
            return Err(ServiceError::Forbidden(format!("Attempt to transfer {id} with an invalid auth key.")));
        }
        let v = db::get_volume(&mut tx, &t.volume_id)
            .await?
            .ok_or_else(|| ServiceError::not_found("Volume", t.volume_id.clone()))?;
        if v.status != AWAITING_TRANSFER {
            return Err(ServiceError::invalid(format!(
                "Invalid volume: status must be {AWAITING_TRANSFER} to accept its transfer, but is {}.",
                v.status
            )));
        }
        if v.encryption_key_id.is_some() && mv < ENCRYPTED_TRANSFER_MV {
            return Err(ServiceError::invalid(format!(
                "Invalid volume: accepting an encrypted volume needs microversion {}.{} or later.",
                ENCRYPTED_TRANSFER_MV.0, ENCRYPTED_TRANSFER_MV.1
            )));
        }
        let enc = db::get_encryption(&mut tx, &v.volume_type_id).await?;
        let mode = self.type_rekey_mode(&mut tx, &v.volume_type_id).await?;
        check_rekey_mode(mode, enc.as_ref())?;
        quotas::reserve_transfer(&mut tx, &caller.project, &v, !t.no_snapshots).await?;
        if !pdb::claim_transfer(&mut tx, id, &caller.project, &caller.user).await? {
            return Err(ServiceError::invalid(format!("Invalid transfer: transfer {id} has already been accepted.")));
        }
        db::set_status(&mut tx, &v.id, ACCEPTING).await?;
        let accept = Accept {
            transfer: t.id.clone(),
            donor: v.project_id.clone(),
            user: caller.user.clone(),
            volume_key: v.encryption_key_id.clone(),
            target: Target {
                volume: v.id.clone(),
                project: caller.project.clone(),
                size_gb: v.size_gb,
                cipher: enc.as_ref().map(Cipher::from),
                mode,
            },
            snapshots: Vec::new(),
            state: AcceptState::AcceptMove,
        };
        let job = Job::new(&v.id, &caller.project, Some(id), Flow::Accept(accept));
        engine::admit(&self.engine, &mut tx, &job).await?;
        tx.commit().await.map_err(crate::error::db("commit"))?;
        Ok((t, v, job))
    }
}

/// An accepted transfer: the volume and its snapshots move to the
/// recipient, then the volume is rekeyed, then each of its snapshots.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Accept {
    transfer: String,
    donor: String,
    /// The accepting user, the volume's new owner.
    user: String,
    volume_key: Option<String>,
    /// The volume, in the recipient's project.
    pub(crate) target: Target,
    /// The encrypted snapshots that moved with it, to rekey after it.
    #[serde(default)]
    snapshots: Vec<MovedSnapshot>,
    state: AcceptState,
}

/// A snapshot that moved with the volume. A snapshot cannot be rewritten
/// (an RBD snapshot is immutable; the file backend's is a frozen copy), so
/// it is rekeyed through a scratch clone that then takes its place.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct MovedSnapshot {
    id: String,
    /// The key that opens it now: the recipient's copy of the donor's.
    key: String,
    /// The clone the rekey runs on, which then holds the snapshot.
    scratch: String,
    /// What held it before (it was transferred before): deleted once the
    /// scratch volume holds it.
    old_backing: Option<String>,
}

/// | state             | action                                        | committed with it                                  |
/// |-------------------|-----------------------------------------------|----------------------------------------------------|
/// | `AcceptMove`      | copies of the donor's keys, recipient's project | records moved, donor's keys queued, snapshots `updating` |
/// | `Rekey`           | the volume's rekey tail                       | (see `rekey`)                                      |
/// | `SnapshotClone`   | snapshot `at` cloned into its scratch volume  | —                                                  |
/// | `SnapshotRekey`   | the tail on the scratch volume (keyslot mode) | the new key in the state only                      |
/// | `SnapshotReplace` | old snapshot deleted (RBD: scratch flattened first), scratch snapshotted under the same id | snapshot names the new key and its backing volume, `available`; the copy key queued |
///
/// Until `SnapshotReplace` commits, the snapshot record names the copy key,
/// which opens the old snapshot; the re-run of an interrupted replace finds
/// the new snapshot in place and only records it. Every snapshot state is
/// past the volume's point of no return, so it is retried, never rolled back.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "at", rename_all = "snake_case")]
enum AcceptState {
    AcceptMove,
    Rekey(Tail),
    SnapshotClone { snapshot: usize },
    SnapshotRekey { snapshot: usize, tail: Tail },
    SnapshotReplace { snapshot: usize, new_key: String },
}

impl Accept {
    pub(crate) fn tail(&self) -> Option<&Tail> {
        match &self.state {
            AcceptState::Rekey(t) | AcceptState::SnapshotRekey { tail: t, .. } => Some(t),
            AcceptState::AcceptMove | AcceptState::SnapshotClone { .. } | AcceptState::SnapshotReplace { .. } => None,
        }
    }

    pub(crate) fn is_late(&self) -> bool {
        match &self.state {
            AcceptState::AcceptMove => false,
            AcceptState::Rekey(t) => t.is_late(),
            AcceptState::SnapshotClone { .. } | AcceptState::SnapshotRekey { .. } | AcceptState::SnapshotReplace { .. } => true,
        }
    }

    /// The keys only this job's state names: the volume's tail's, or a
    /// snapshot's copy key and its new key.
    pub(crate) fn held_keys(&self) -> [Option<&str>; 2] {
        match &self.state {
            AcceptState::AcceptMove | AcceptState::SnapshotClone { .. } => [None, None],
            AcceptState::Rekey(t) | AcceptState::SnapshotRekey { tail: t, .. } => t.held_keys(),
            AcceptState::SnapshotReplace { snapshot, new_key } => [self.snapshots.get(*snapshot).map(|s| s.key.as_str()), Some(new_key)],
        }
    }

    pub(crate) fn step_name(&self) -> Step {
        match &self.state {
            AcceptState::AcceptMove => Step::AcceptMove,
            AcceptState::Rekey(t) | AcceptState::SnapshotRekey { tail: t, .. } => t.step_name(),
            AcceptState::SnapshotClone { .. } => Step::SnapshotClone,
            AcceptState::SnapshotReplace { .. } => Step::SnapshotReplace,
        }
    }

    pub(crate) async fn step(self, svc: &Arc<Service>, job: &str) -> Result<Transition<Accept>> {
        match self.state.clone() {
            AcceptState::AcceptMove => self.accept_move(svc, job).await,
            AcceptState::Rekey(tail) => {
                let record = Record::Volume { old_key_why: "interim key of a transferred volume" };
                let (tx, next) = tail.step(svc, job, &self.target, record).await?;
                match next {
                    Some(tail) => Ok(Transition::next(tx, Accept { state: AcceptState::Rekey(tail), ..self })),
                    None => self.next_snapshot(tx, 0).await,
                }
            }
            AcceptState::SnapshotClone { snapshot } => {
                let m = self.moved(snapshot)?;
                let (backend, id, scratch) = (svc.backend.clone(), m.id.clone(), m.scratch.clone());
                // A clone appears whole or not at all: one left by an
                // interrupted run is the one to go on with.
                blocking(move || {
                    if !backend.exists(&scratch)? {
                        backend.clone_from_snapshot(&id, &scratch)?;
                    }
                    Ok(())
                })
                .await?;
                let tail = Tail::start_tagged(m.key.clone(), format!("snapshot-{}-new", m.id));
                Ok(Transition::next(svc.tx().await?, Accept { state: AcceptState::SnapshotRekey { snapshot, tail }, ..self }))
            }
            AcceptState::SnapshotRekey { snapshot, tail } => {
                let scratch = self.scratch_target(snapshot)?;
                let new_key = tail.held_keys()[1].map(str::to_owned);
                let (tx, next) = tail.step(svc, job, &scratch, Record::JobOnly).await?;
                let state = match (next, new_key) {
                    (Some(tail), _) => AcceptState::SnapshotRekey { snapshot, tail },
                    (None, Some(new_key)) => AcceptState::SnapshotReplace { snapshot, new_key },
                    (None, None) => return Err(ServiceError::Internal("a snapshot's rekey ended without a new key".into())),
                };
                Ok(Transition::next(tx, Accept { state, ..self }))
            }
            AcceptState::SnapshotReplace { snapshot, new_key } => {
                let m = self.moved(snapshot)?.clone();
                let (backend, id, scratch, old) = (svc.backend.clone(), m.id.clone(), m.scratch.clone(), m.old_backing.clone());
                blocking(move || {
                    if !backend.snapshots(&scratch)?.contains(&id) {
                        // RBD flattens the scratch clone (and any other
                        // clone of the snapshot) before the snapshot goes.
                        match backend.delete_snapshot(&id) {
                            Err(e) if e.kind() != rekey_storage::ErrorKind::NotFound => return Err(e.into()),
                            _ => {}
                        }
                        backend.create_snapshot(&scratch, &id)?;
                    }
                    if let Some(old) = old.filter(|o| *o != scratch && backend.exists(o).unwrap_or(false)) {
                        backend.delete(&old)?;
                    }
                    Ok(())
                })
                .await?;
                let mut tx = svc.tx().await?;
                let mut s = pdb::get_snapshot(&mut tx, &m.id).await?.ok_or_else(|| ServiceError::not_found("Snapshot", m.id.clone()))?;
                s.encryption_key_id = Some(new_key);
                s.backing_volume_id = Some(m.scratch.clone());
                pdb::update_snapshot(&mut tx, &s).await?;
                pdb::set_snapshot_status(&mut tx, &m.id, "available").await?;
                db::queue_key_deletion(&mut tx, &m.key, &self.target.project, "interim key of a transferred snapshot").await?;
                self.next_snapshot(tx, snapshot + 1).await
            }
        }
    }

    fn moved(&self, i: usize) -> Result<&MovedSnapshot> {
        self.snapshots.get(i).ok_or_else(|| ServiceError::Internal(format!("transfer job has no snapshot {i}")))
    }

    /// The scratch volume of snapshot `i`, rekeyed in keyslot mode whatever
    /// the type's mode: a snapshot is read, never written, so a new
    /// passphrase is what the recipient needs of it.
    fn scratch_target(&self, i: usize) -> Result<Target> {
        Ok(Target { volume: self.moved(i)?.scratch.clone(), mode: RekeyMode::Keyslot, ..self.target.clone() })
    }

    /// Snapshot `i`'s rekey next, or the volume is done.
    async fn next_snapshot(self, mut tx: Tx, i: usize) -> Result<Transition<Accept>> {
        if i < self.snapshots.len() {
            return Ok(Transition::next(tx, Accept { state: AcceptState::SnapshotClone { snapshot: i }, ..self }));
        }
        db::set_status(&mut tx, &self.target.volume, status::AVAILABLE).await?;
        Ok(Transition::done(tx))
    }

    /// Moves the volume and its snapshots to the recipient in one
    /// transaction: the volume's key becomes an interim copy in the
    /// recipient's project, the donor's keys are queued for deletion.
    async fn accept_move(self, svc: &Arc<Service>, job: &str) -> Result<Transition<Accept>> {
        let t = &self.target;
        let snaps = {
            let mut c = svc.conn().await?;
            pdb::list_snapshots(&mut c, Some(&self.donor), Some(&t.volume)).await?
        };
        // Copies of the donor's keys, made in the recipient's project.
        let interim = match &self.volume_key {
            Some(k) => Some(job_copy_key(svc.keys.as_ref(), job, &t.project, "interim", &self.donor, k).await?),
            None => None,
        };
        let rekeyed = interim.is_some() && t.mode != RekeyMode::None;
        let mut moved_snaps = Vec::with_capacity(snaps.len());
        let mut to_rekey = Vec::new();
        for mut s in snaps {
            let old = s.encryption_key_id.clone();
            if let Some(k) = &old {
                let tag = format!("snapshot-{}", s.id);
                let copy = job_copy_key(svc.keys.as_ref(), job, &t.project, &tag, &self.donor, k).await?;
                if rekeyed {
                    // The scratch id is fixed here, in the committed state,
                    // so a re-run clones into the same volume.
                    to_rekey.push(MovedSnapshot {
                        id: s.id.clone(),
                        key: copy.clone(),
                        scratch: uuid::Uuid::new_v4().to_string(),
                        old_backing: s.backing_volume_id.clone(),
                    });
                }
                s.encryption_key_id = Some(copy);
            }
            s.project_id = t.project.clone();
            s.user_id = self.user.clone();
            moved_snaps.push((s, old));
        }
        let mut tx = svc.tx().await?;
        pdb::move_volume(&mut tx, &t.volume, &t.project, &self.user).await?;
        if let Some(k) = &self.volume_key {
            db::set_key(&mut tx, &t.volume, interim.as_deref()).await?;
            db::queue_key_deletion(&mut tx, k, &self.donor, "donor's key of a transferred volume").await?;
        }
        for (s, old) in &moved_snaps {
            pdb::update_snapshot(&mut tx, s).await?;
            if let Some(k) = old {
                db::queue_key_deletion(&mut tx, k, &self.donor, "donor's key of a transferred snapshot").await?;
            }
        }
        // Not to be cloned from (or deleted) before its rekey replaced it.
        for m in &to_rekey {
            pdb::set_snapshot_status(&mut tx, &m.id, "updating").await?;
        }
        pdb::delete_transfer(&mut tx, &self.transfer).await?;
        match interim {
            Some(k) if rekeyed => {
                Ok(Transition::next(tx, Accept { state: AcceptState::Rekey(Tail::start(k)), snapshots: to_rekey, ..self }))
            }
            _ => {
                db::set_status(&mut tx, &t.volume, status::AVAILABLE).await?;
                Ok(Transition::done(tx))
            }
        }
    }

    pub(crate) async fn roll_back(self, svc: &Service, job: &str) -> Result<Tx> {
        let (held, keep) = match self.tail() {
            Some(t) => (t.held_keys(), t.keep_on_roll_back().map(str::to_owned)),
            None => ([None, None], None),
        };
        let mut tx = forget_keys(svc, job, &self.target.project, held, keep.as_deref()).await?;
        match self.state {
            AcceptState::AcceptMove => {
                // Nothing moved: the transfer is still open, the volume still the donor's.
                db::set_status(&mut tx, &self.target.volume, AWAITING_TRANSFER).await?;
                pdb::unclaim_transfer(&mut tx, &self.transfer).await?;
            }
            AcceptState::Rekey(_) | AcceptState::SnapshotClone { .. } | AcceptState::SnapshotRekey { .. } | AcceptState::SnapshotReplace { .. } => {
                db::set_status(&mut tx, &self.target.volume, status::ERROR).await?
            }
        }
        Ok(tx)
    }
}
