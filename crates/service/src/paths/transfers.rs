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
use super::rekey::Tail;
use super::{forget_keys, Cipher, Flow, Job, Target};
use crate::db;
use crate::engine::{self, job_copy_key, Transition, Tx};
use crate::error::{Result, ServiceError};
use crate::fault::Step;
use crate::model::{now_iso, status, Caller, RekeyMode, Volume};
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
            state: AcceptState::AcceptMove,
        };
        let job = Job::new(&v.id, &caller.project, Some(id), Flow::Accept(accept));
        engine::admit(&self.engine, &mut tx, &job).await?;
        tx.commit().await.map_err(crate::error::db("commit"))?;
        Ok((t, v, job))
    }
}

/// An accepted transfer: the volume and its snapshots move to the
/// recipient, then the volume is rekeyed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Accept {
    transfer: String,
    donor: String,
    /// The accepting user, the volume's new owner.
    user: String,
    volume_key: Option<String>,
    /// The volume, in the recipient's project.
    pub(crate) target: Target,
    state: AcceptState,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "at", rename_all = "snake_case")]
enum AcceptState {
    AcceptMove,
    Rekey(Tail),
}

impl Accept {
    pub(crate) fn tail(&self) -> Option<&Tail> {
        match &self.state {
            AcceptState::Rekey(t) => Some(t),
            AcceptState::AcceptMove => None,
        }
    }

    pub(crate) fn step_name(&self) -> Step {
        match &self.state {
            AcceptState::AcceptMove => Step::AcceptMove,
            AcceptState::Rekey(t) => t.step_name(),
        }
    }

    pub(crate) async fn step(self, svc: &Arc<Service>, job: &str) -> Result<Transition<Accept>> {
        match &self.state {
            AcceptState::AcceptMove => self.accept_move(svc, job).await,
            AcceptState::Rekey(tail) => {
                let (mut tx, next) = tail.clone().step(svc, job, &self.target, "interim key of a transferred volume").await?;
                match next {
                    Some(tail) => Ok(Transition::next(tx, Accept { state: AcceptState::Rekey(tail), ..self })),
                    None => {
                        db::set_status(&mut tx, &self.target.volume, status::AVAILABLE).await?;
                        Ok(Transition::done(tx))
                    }
                }
            }
        }
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
        let mut moved_snaps = Vec::with_capacity(snaps.len());
        for mut s in snaps {
            let old = s.encryption_key_id.clone();
            if let Some(k) = &old {
                let tag = format!("snapshot-{}", s.id);
                s.encryption_key_id = Some(job_copy_key(svc.keys.as_ref(), job, &t.project, &tag, &self.donor, k).await?);
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
        pdb::delete_transfer(&mut tx, &self.transfer).await?;
        match interim {
            Some(k) if t.mode != RekeyMode::None => Ok(Transition::next(tx, Accept { state: AcceptState::Rekey(Tail::start(k)), ..self })),
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
            AcceptState::Rekey(_) => db::set_status(&mut tx, &self.target.volume, status::ERROR).await?,
        }
        Ok(tx)
    }
}
