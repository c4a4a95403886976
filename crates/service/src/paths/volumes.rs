//! Volumes made (empty, or from a volume, a snapshot or a backup) and
//! deleted: the one admission of every way a volume is made, and the
//! `Create`, `Make` and `Delete` machines.

use std::sync::Arc;

use rekey_keys::Project;
use rekey_luks::{FormatOptions, PbkdfOptions, Volume as LuksVolume};
use serde::{Deserialize, Serialize};

use super::db::{self as pdb, restorable};
use super::repo::repo;
use super::rekey::{Record, Tail};
use super::{forget_keys, Cipher, Flow, Job, Target};
use crate::messages::{Action, Detail};
use crate::db;
use crate::engine::{self, blocking, job_copy_key, job_new_key, Transition, Tx, GIB};
use crate::error::{ErrorKind, Result, ServiceError};
use crate::fault::{self, Point, Step};
use crate::model::{now_iso, status, Caller, RekeyMode, Volume, DEFAULT_TYPE_NAME};
use crate::quotas::{self, Delta};
use crate::service::{check_rekey_mode, CreateVolume, Service};

/// Where a new volume's data comes from.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Source<'a> {
    /// Nowhere: a new empty volume.
    Nothing,
    /// A clone of this volume.
    Volume(&'a str),
    /// This snapshot's data.
    Snapshot(&'a str),
    /// This backup, restored.
    Backup(&'a str),
}

/// What admission learned of a source.
struct Found {
    id: String,
    type_id: String,
    size_gb: u64,
    key: Option<String>,
}

impl Service {
    /// Admits a volume create or clone (`req.source_volid`): checks it,
    /// records the volume as `creating` together with its job, and returns
    /// both. The caller starts the job with [`crate::engine::spawn`].
    pub async fn create_volume(&self, caller: &Caller, req: CreateVolume) -> Result<(Volume, Job)> {
        let src = req.source_volid.clone();
        self.admit_volume(caller, req, src.as_deref().map_or(Source::Nothing, Source::Volume)).await
    }

    /// Admits a volume made from snapshot `snapshot_id`.
    pub async fn create_volume_from_snapshot(&self, caller: &Caller, req: CreateVolume, snapshot_id: &str) -> Result<(Volume, Job)> {
        self.admit_volume(caller, req, Source::Snapshot(snapshot_id)).await
    }

    /// Admits a new volume restored from backup `backup_id`.
    pub async fn create_volume_from_backup(&self, caller: &Caller, req: CreateVolume, backup_id: &str) -> Result<(Volume, Job)> {
        self.admit_volume(caller, req, Source::Backup(backup_id)).await
    }

    /// The one admission of a new volume, whatever its source: the type is
    /// the request's or the source's (whose encryption it must share), the
    /// size at least the source's; the volume is recorded `creating` with
    /// its job, whose state holds all of this.
    pub(crate) async fn admit_volume(&self, caller: &Caller, req: CreateVolume, source: Source<'_>) -> Result<(Volume, Job)> {
        let mut tx = self.tx().await?;
        let made = self.admit_volume_in(&mut tx, caller, req, source, false).await?;
        tx.commit().await.map_err(crate::error::db("commit"))?;
        Ok(made)
    }

    /// [`Service::admit_volume`] in the caller's transaction, which starts
    /// the job once it is committed. `group_copy`: the volume is one of a
    /// group made from another group or a group snapshot (`req.group_id`),
    /// whose types the group was given from its source.
    pub(crate) async fn admit_volume_in(
        &self,
        tx: &mut Tx,
        caller: &Caller,
        req: CreateVolume,
        source: Source<'_>,
        group_copy: bool,
    ) -> Result<(Volume, Job)> {
        Project::new(caller.project.clone()).map_err(|e| ServiceError::invalid(e.to_string()))?;
        let group = match &req.group_id {
            Some(g) => Some(crate::groups::joinable(tx, caller, g, group_copy).await?),
            None => None,
        };
        let found = match source {
            Source::Nothing => None,
            Source::Volume(src) => {
                let s = db::get_volume(tx, src)
                    .await?
                    .filter(|s| s.project_id == caller.project)
                    .ok_or_else(|| ServiceError::not_found("Volume", src))?;
                if s.status != status::AVAILABLE {
                    return Err(ServiceError::invalid(format!(
                        "Invalid volume: Source volume {src} status must be available, but is {}.",
                        s.status
                    )));
                }
                Some(Found { id: s.id, type_id: s.volume_type_id, size_gb: s.size_gb, key: s.encryption_key_id })
            }
            Source::Snapshot(sid) => {
                let s = pdb::get_snapshot(tx, sid)
                    .await?
                    .filter(|s| s.project_id == caller.project)
                    .ok_or_else(|| ServiceError::not_found("Snapshot", sid))?;
                if s.status != "available" {
                    return Err(ServiceError::invalid(format!(
                        "Invalid snapshot: Originating snapshot status must be one of 'available' values, but is {}.",
                        s.status
                    )));
                }
                let v = db::get_volume(tx, &s.volume_id)
                    .await?
                    .ok_or_else(|| ServiceError::not_found("Volume", s.volume_id.clone()))?;
                Some(Found { id: s.id, type_id: v.volume_type_id, size_gb: s.size_gb, key: s.encryption_key_id })
            }
            Source::Backup(bid) => {
                let b = restorable(tx, caller, bid).await?;
                Some(Found { id: b.id, type_id: b.volume_type_id, size_gb: b.size_gb, key: b.encryption_key_id })
            }
        };
        let vtype = match (&req.volume_type, &found) {
            (Some(t), _) => {
                let found = db::find_type(tx, t).await?;
                crate::type_access::visible_or_none(tx, caller, found)
                    .await?
                    .ok_or_else(|| ServiceError::not_found("Volume type", t.clone()))?
            }
            (None, Some(f)) => {
                db::get_type(tx, &f.type_id).await?.ok_or_else(|| ServiceError::not_found("Volume type", f.type_id.clone()))?
            }
            (None, None) => db::default_type_for(tx, &caller.project)
                .await?
                .ok_or_else(|| ServiceError::not_found("Volume type", DEFAULT_TYPE_NAME))?,
        };
        if let Some(g) = group.as_ref().filter(|_| !group_copy) {
            if req.volume_type.is_none() {
                return Err(ServiceError::invalid("Invalid input received: volume_type must be provided when creating a volume in a group."));
            }
            if !g.volume_type_ids.contains(&vtype.id) {
                return Err(ServiceError::invalid(format!(
                    "Invalid input received: Invalid volume_type provided: {} (requested type must be supported by this group).",
                    vtype.name
                )));
            }
        }
        let enc = db::get_encryption(tx, &vtype.id).await?;
        if let Some(e) = &enc {
            e.provider.version()?;
        }
        let mode = self.rekey_mode(&vtype)?;
        let clone = matches!(source, Source::Volume(_));
        let size_gb = match (req.size_gb, &found) {
            (Some(n), Some(f)) if n < f.size_gb => {
                return Err(ServiceError::invalid(format!(
                    "Invalid input received: Volume size {n}GB cannot be smaller than the source {}size {}GB.",
                    if clone { "volume " } else { "" },
                    f.size_gb
                )))
            }
            (Some(n), _) => n,
            (None, Some(f)) => f.size_gb,
            (None, None) => return Err(ServiceError::invalid("Invalid input received: size is required")),
        };
        if let Some(f) = &found {
            let src_enc = db::get_encryption(tx, &f.type_id).await?;
            if src_enc.as_ref().map(|e| (e.provider, e.cipher().to_owned(), e.key_size()))
                != enc.as_ref().map(|e| (e.provider, e.cipher().to_owned(), e.key_size()))
            {
                return Err(ServiceError::invalid(if clone {
                    "Invalid input received: a clone must have the same encryption as its source volume"
                } else {
                    "Invalid input received: the new volume's type must have the same encryption as the source's"
                }));
            }
            check_rekey_mode(mode, enc.as_ref())?;
        }
        self.check_size(size_gb)?;
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
            source_volid: matches!(source, Source::Volume(_)).then(|| found.as_ref().map(|f| f.id.clone())).flatten(),
            snapshot_id: matches!(source, Source::Snapshot(_)).then(|| found.as_ref().map(|f| f.id.clone())).flatten(),
            encryption_key_id: None,
            metadata: req.metadata,
            bootable: false,
            readonly: None,
            group_id: group.map(|g| g.id),
            created_at: now.clone(),
            updated_at: now,
        };
        let target = Target {
            volume: vol.id.clone(),
            project: vol.project_id.clone(),
            size_gb,
            cipher: enc.as_ref().map(Cipher::from),
            mode,
        };
        let flow = match (source, found) {
            (Source::Nothing, _) | (_, None) => Flow::Create(Create { target, state: CreateState::Allocate }),
            (Source::Volume(_), Some(f)) => Flow::Make(Make::new(target, Origin::Volume { id: f.id, key: f.key })),
            (Source::Snapshot(_), Some(f)) => Flow::Make(Make::new(target, Origin::Snapshot { id: f.id, key: f.key })),
            (Source::Backup(_), Some(f)) => {
                pdb::set_backup_status(tx, &f.id, "restoring", None).await?;
                Flow::Make(Make::new(target, Origin::Backup { id: f.id, key: f.key, onto: None }))
            }
        };
        let source_id = match &flow {
            Flow::Make(m) => Some(m.from.id().to_owned()),
            _ => None,
        };
        let job = Job::new(&vol.id, &vol.project_id, source_id.as_deref(), flow);
        quotas::reserve(tx, &vol.project_id, &Delta::volume(&vol.volume_type_id, size_gb)).await?;
        db::insert_volume(tx, &vol).await?;
        engine::admit(&self.engine, tx, &job).await?;
        Ok((vol, job))
    }

    /// Admits a delete: marks the volume `deleting` and records the job.
    pub async fn delete_volume(&self, caller: &Caller, id: &str, force: bool) -> Result<Job> {
        let mut tx = self.tx().await?;
        let job = self.delete_volume_in(&mut tx, caller, id, force, false).await?;
        tx.commit().await.map_err(crate::error::db("commit"))?;
        Ok(job)
    }

    /// [`Service::delete_volume`] in the caller's transaction; `with_group`:
    /// the volume's group is being deleted with its volumes (a volume in a
    /// group is otherwise not deleted, as Cinder's).
    pub(crate) async fn delete_volume_in(&self, tx: &mut Tx, caller: &Caller, id: &str, force: bool, with_group: bool) -> Result<Job> {
        // An admin deletes any project's volume, as Cinder's admin context does.
        let v = db::get_volume(tx, id)
            .await?
            .filter(|v| super::actions::reaches(caller, &v.project_id))
            .ok_or_else(|| ServiceError::not_found("Volume", id))?;
        let in_group = v.group_id.is_some() && !with_group;
        if db::is_being_cloned(tx, id).await? {
            return Err(ServiceError::invalid(format!(
                "Invalid volume: Volume {id} is the source of a clone in progress; delete it when the clone is done."
            )));
        }
        // Forced or not: an attached volume has a consumer (Cinder refuses it too).
        if in_group || db::has_attachments(tx, id).await? || !db::claim_for_delete(tx, id, force).await? {
            return Err(ServiceError::invalid(format!(
                "Invalid volume: Volume status must be available or error or error_restoring or error_extending \
                 or error_managing and must not be migrating, attached, belong to a group, have snapshots, \
                 awaiting a transfer, or be disassociated from snapshots after volume transfer. (status: {})",
                v.status
            )));
        }
        let flow = Flow::Delete(Delete { volume: v.id.clone(), project: v.project_id.clone(), key: v.encryption_key_id.clone() });
        let job = Job::new(id, &v.project_id, None, flow);
        engine::admit(&self.engine, tx, &job).await?;
        Ok(job)
    }
}

// ---- create --------------------------------------------------------------

/// A new empty volume, formatted when its type is encrypted.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Create {
    target: Target,
    state: CreateState,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "at", rename_all = "snake_case")]
enum CreateState {
    Allocate,
    Format { key: String },
}

impl Create {
    pub(crate) fn step_name(&self) -> Step {
        match self.state {
            CreateState::Allocate => Step::Allocate,
            CreateState::Format { .. } => Step::Format,
        }
    }

    pub(crate) async fn step(self, svc: &Arc<Service>, job: &str) -> Result<Transition<Create>> {
        let Create { target: t, state } = self;
        match state {
            CreateState::Allocate => {
                if let Some(why) = crate::inventory::unschedulable(svc, &t.volume_type(svc).await?).await? {
                    return Err(ServiceError::invalid(format!("{NO_VALID_BACKEND} {why}")));
                }
                let (backend, id, size) = (svc.backend.clone(), t.volume.clone(), t.size_gb * GIB);
                blocking(move || {
                    // A crash may have left the file of an earlier attempt: start over.
                    if backend.exists(&id)? {
                        backend.delete(&id)?;
                    }
                    backend.create(&id, size)?;
                    Ok(())
                })
                .await?;
                let mut tx;
                match &t.cipher {
                    Some(c) => {
                        let key = job_new_key(svc.keys.as_ref(), job, &t.project, "volume", c.key_bits).await?;
                        tx = svc.tx().await?;
                        db::set_key(&mut tx, &t.volume, Some(key.as_str())).await?;
                        Ok(Transition::next(tx, Create { target: t, state: CreateState::Format { key: key.to_string() } }))
                    }
                    None => {
                        tx = svc.tx().await?;
                        db::set_status(&mut tx, &t.volume, status::AVAILABLE).await?;
                        Ok(Transition::done(tx))
                    }
                }
            }
            CreateState::Format { key } => {
                let c = t.cipher.as_ref().ok_or_else(|| ServiceError::Internal("format of an unencrypted volume".into()))?;
                let opts = format_options(c)?;
                let pass = svc.keys.get_key(&Project::new(t.project.clone())?, &rekey_keys::KeyId::parse(&key)?).await?;
                let pass = rekey_keys::passphrase_hex(&pass);
                let (backend, id) = (svc.backend.clone(), t.volume.clone());
                blocking(move || {
                    LuksVolume::format(backend.open(&id)?, &opts, pass.as_bytes(), None)?;
                    Ok(())
                })
                .await?;
                let mut tx = svc.tx().await?;
                db::set_status(&mut tx, &t.volume, status::AVAILABLE).await?;
                Ok(Transition::done(tx))
            }
        }
    }

    pub(crate) async fn roll_back(self, svc: &Service, job: &str, error: &str) -> Result<Tx> {
        let mut tx = forget_keys(svc, job, &self.target.project, [None, None], None).await?;
        db::set_status(&mut tx, &self.target.volume, status::ERROR).await?;
        // The project learns why from a user message, as from Cinder's.
        let (action, detail) = if error.starts_with(NO_VALID_BACKEND) {
            (Action::ScheduleAllocateVolume, Detail::NoBackendAvailable)
        } else {
            (Action::CreateVolumeFromBackend, Detail::UnknownError)
        };
        crate::messages::record_volume(&mut tx, &self.target.project, &self.target.volume, &format!("req-{job}"), action, detail).await?;
        Ok(tx)
    }
}

/// How a create that no backend can take fails (Cinder's `NoValidBackend`).
const NO_VALID_BACKEND: &str = "No valid backend was found.";

impl Target {
    /// The id of the volume's type.
    async fn volume_type(&self, svc: &Service) -> Result<String> {
        let mut c = svc.conn().await?;
        let v = db::get_volume(&mut c, &self.volume).await?.ok_or_else(|| ServiceError::not_found("Volume", self.volume.clone()))?;
        Ok(v.volume_type_id)
    }
}

/// LUKS options for an encryption type. Keyslots for key-manager keys use the
/// minimal KDF: the passphrase is 256 bits of full entropy, which no KDF
/// strengthening changes (see docs/service.md).
fn format_options(c: &Cipher) -> Result<FormatOptions> {
    let cipher = rekey_luks::crypto::CipherSpec::parse(&c.cipher)
        .map_err(|e| ServiceError::invalid(format!("cipher {:?}: {e}", c.cipher)))?;
    Ok(FormatOptions {
        version: c.provider.version()?,
        cipher,
        key_size_bits: c.key_bits,
        pbkdf: PbkdfOptions::minimal(),
        // The volume was made by the backend in the step before: all zeros.
        zeroed: true,
        ..FormatOptions::default()
    })
}

// ---- made from another record ----------------------------------------------

/// The record a volume is made from, and the key id that opens its data,
/// as admission found them.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(crate) enum Origin {
    Volume {
        id: String,
        key: Option<String>,
    },
    Snapshot {
        id: String,
        key: Option<String>,
    },
    /// `onto`: restored onto an existing volume, whose key (if any) is
    /// replaced; `None` for a new volume.
    Backup {
        id: String,
        key: Option<String>,
        onto: Option<Onto>,
    },
}

/// An existing volume a backup is restored onto.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Onto {
    pub(crate) previous_key: Option<String>,
}

impl Origin {
    fn id(&self) -> &str {
        match self {
            Origin::Volume { id, .. } | Origin::Snapshot { id, .. } | Origin::Backup { id, .. } => id,
        }
    }
    fn key(&self) -> Option<&str> {
        match self {
            Origin::Volume { key, .. } | Origin::Snapshot { key, .. } | Origin::Backup { key, .. } => key.as_deref(),
        }
    }
}

/// A volume made from another record: its data copied (clone, from
/// snapshot) or restored (backup), an interim copy of the source's key, then
/// the rekey tail.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Make {
    pub(crate) target: Target,
    pub(crate) from: Origin,
    state: MakeState,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "at", rename_all = "snake_case")]
enum MakeState {
    /// The data copied and, when encrypted, the interim key copied and the
    /// new key made, all in one step: both keys are found again by name
    /// when the step runs again after a crash, so they need no commit of
    /// their own (each commit is a few statements and a sync per clone).
    CloneData,
    /// What `CloneData` did in two more steps before: only a job recorded
    /// by an older version is here. Copies the interim key and goes on
    /// with the whole rekey tail.
    InterimKey,
    RestoreKey,
    RestoreData { interim: Option<String> },
    Rekey(Tail),
}

impl Make {
    pub(crate) fn new(target: Target, from: Origin) -> Self {
        let state = match from {
            Origin::Volume { .. } | Origin::Snapshot { .. } => MakeState::CloneData,
            Origin::Backup { .. } => MakeState::RestoreKey,
        };
        Make { target, from, state }
    }

    pub(crate) fn kind(&self) -> &'static str {
        match self.from {
            Origin::Volume { .. } => "clone",
            Origin::Snapshot { .. } => "from_snapshot",
            Origin::Backup { .. } => "restore",
        }
    }

    pub(crate) fn tail(&self) -> Option<&Tail> {
        match &self.state {
            MakeState::Rekey(t) => Some(t),
            _ => None,
        }
    }

    pub(crate) fn step_name(&self) -> Step {
        match &self.state {
            MakeState::CloneData => Step::CloneData,
            MakeState::InterimKey => Step::InterimKey,
            MakeState::RestoreKey => Step::RestoreKey,
            MakeState::RestoreData { .. } => Step::RestoreData,
            MakeState::Rekey(t) => t.step_name(),
        }
    }

    pub(crate) fn held_keys(&self) -> [Option<&str>; 2] {
        match &self.state {
            MakeState::RestoreData { interim } => [interim.as_deref(), None],
            MakeState::Rekey(t) => t.held_keys(),
            _ => [None, None],
        }
    }

    pub(crate) async fn step(self, svc: &Arc<Service>, job: &str) -> Result<Transition<Make>> {
        let t = &self.target;
        match &self.state {
            MakeState::CloneData => {
                fault::point(Point::start(Step::CloneData)).await;
                let (backend, id, size) = (svc.backend.clone(), t.volume.clone(), t.size_gb * GIB);
                let from = self.from.clone();
                let kind = blocking(move || {
                    if backend.exists(&id)? {
                        backend.delete(&id)?;
                    }
                    let kind = match &from {
                        Origin::Snapshot { id: snap, .. } => backend.clone_from_snapshot(snap, &id)?,
                        other => backend.clone_volume(other.id(), &id)?,
                    };
                    if backend.size(&id)? < size {
                        backend.extend(&id, size)?;
                    }
                    Ok(kind)
                })
                .await?;
                tracing::debug!(volume = %t.volume, clone = %kind, "volume data copied");
                let Some(cipher) = &t.cipher else {
                    return self.done(svc.tx().await?).await;
                };
                let interim = self.interim_key(svc, job).await?;
                let new_key = match t.mode {
                    RekeyMode::None => None,
                    _ => Some(job_new_key(svc.keys.as_ref(), job, &t.project, Tail::NEW_KEY_TAG, cipher.key_bits).await?.to_string()),
                };
                let mut tx = svc.tx().await?;
                db::set_key(&mut tx, &t.volume, Some(&interim)).await?;
                match new_key {
                    Some(new_key) => Ok(Transition::next(tx, Make { state: MakeState::Rekey(Tail::with_new_key(interim, new_key)), ..self })),
                    None => self.done(tx).await,
                }
            }
            MakeState::InterimKey => {
                let interim = self.interim_key(svc, job).await?;
                let mut tx = svc.tx().await?;
                db::set_key(&mut tx, &t.volume, Some(&interim)).await?;
                self.rekey_or_done(tx, Some(interim)).await
            }
            MakeState::RestoreKey => {
                let interim = match self.from.key() {
                    Some(k) => Some(job_copy_key(svc.keys.as_ref(), job, &t.project, "interim", &t.project, k).await?),
                    None => None,
                };
                let tx = svc.tx().await?;
                Ok(Transition::next(tx, Make { state: MakeState::RestoreData { interim }, ..self }))
            }
            MakeState::RestoreData { interim } => {
                let Origin::Backup { id: bid, onto, .. } = &self.from else {
                    return Err(ServiceError::Internal("restore of something that is not a backup".into()));
                };
                let is_new = onto.is_none();
                let (backend, r, id, size, b) = (svc.backend.clone(), repo(svc)?, t.volume.clone(), t.size_gb * GIB, bid.clone());
                fault::point(Point::start(Step::RestoreData)).await;
                let written = blocking(move || {
                    if is_new {
                        if backend.exists(&id)? {
                            backend.delete(&id)?;
                        }
                        backend.create(&id, size)?;
                    }
                    r.restore(&b, backend.open(&id)?.as_ref(), !is_new)
                })
                .await;
                if let Err(e) = written {
                    if e.kind() == ErrorKind::Invalid {
                        // A corrupt backup: say so on the backup, for good.
                        let mut tx = svc.tx().await?;
                        pdb::set_backup_status(&mut tx, bid, "error", Some(&e.to_string())).await?;
                        tx.commit().await.map_err(crate::error::db("commit"))?;
                    }
                    return Err(e);
                }
                let mut tx = svc.tx().await?;
                if let Some(prev) = onto.as_ref().and_then(|o| o.previous_key.as_deref()).filter(|k| Some(*k) != interim.as_deref()) {
                    db::queue_key_deletion(&mut tx, prev, &t.project, "key of a volume a backup was restored onto").await?;
                }
                db::set_key(&mut tx, &t.volume, interim.as_deref()).await?;
                let interim = interim.clone();
                self.rekey_or_done(tx, interim).await
            }
            MakeState::Rekey(tail) => {
                let (tx, next) = tail.clone().step(svc, job, t, Record::Volume { old_key_why: "interim key of a rekeyed volume" }).await?;
                match next {
                    Some(tail) => Ok(Transition::next(tx, Make { state: MakeState::Rekey(tail), ..self })),
                    None => self.done(tx).await,
                }
            }
        }
    }

    /// The new volume's own copy of the source's key (same bytes, new id):
    /// what opens it until the rekey, so no two records ever share a key id.
    async fn interim_key(&self, svc: &Service, job: &str) -> Result<String> {
        let src_key = self
            .from
            .key()
            .ok_or_else(|| ServiceError::Internal(format!("source {} of an encrypted volume has no key", self.from.id())))?;
        job_copy_key(svc.keys.as_ref(), job, &self.target.project, "interim", &self.target.project, src_key).await
    }

    async fn rekey_or_done(self, tx: Tx, interim: Option<String>) -> Result<Transition<Make>> {
        match interim {
            Some(k) if self.target.mode != RekeyMode::None => Ok(Transition::next(tx, Make { state: MakeState::Rekey(Tail::start(k)), ..self })),
            _ => self.done(tx).await,
        }
    }

    /// The final records, in the last step's transaction.
    async fn done(self, mut tx: Tx) -> Result<Transition<Make>> {
        db::set_status(&mut tx, &self.target.volume, status::AVAILABLE).await?;
        if let Origin::Backup { id, .. } = &self.from {
            pdb::set_backup_status(&mut tx, id, "available", None).await?;
        }
        Ok(Transition::done(tx))
    }

    pub(crate) async fn roll_back(self, svc: &Service, job: &str) -> Result<Tx> {
        let keep = self.tail().and_then(Tail::keep_on_roll_back).map(str::to_owned);
        let mut tx = forget_keys(svc, job, &self.target.project, self.held_keys(), keep.as_deref()).await?;
        db::set_status(&mut tx, &self.target.volume, status::ERROR).await?;
        if let Origin::Backup { id, .. } = &self.from {
            // A corrupt backup stays `error` (with its reason); otherwise it is usable again.
            if pdb::get_backup(&mut tx, id).await?.is_some_and(|b| b.status == "restoring") {
                pdb::set_backup_status(&mut tx, id, "available", None).await?;
            }
        }
        Ok(tx)
    }
}

// ---- delete --------------------------------------------------------------

/// A volume deleted: its data, then its record, with its key queued.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Delete {
    volume: String,
    project: String,
    key: Option<String>,
}

impl Delete {
    pub(crate) async fn step(self, svc: &Arc<Service>) -> Result<Transition<Delete>> {
        let (backend, id) = (svc.backend.clone(), self.volume.clone());
        blocking(move || {
            if backend.exists(&id)? {
                backend.delete(&id)?;
            }
            Ok(())
        })
        .await?;
        let mut tx = svc.tx().await?;
        if let Some(k) = &self.key {
            db::queue_key_deletion(&mut tx, k, &self.project, "key of a deleted volume").await?;
        }
        let group = db::get_volume(&mut tx, &self.volume).await?.and_then(|v| v.group_id);
        db::delete_volume(&mut tx, &self.volume).await?;
        // The last volume of a group deleted with its volumes takes the group along.
        crate::groups::member_changed(&mut tx, group.as_deref()).await?;
        Ok(Transition::done(tx))
    }

    pub(crate) async fn roll_back(self, svc: &Service) -> Result<Tx> {
        let mut tx = svc.tx().await?;
        db::set_status(&mut tx, &self.volume, status::ERROR_DELETING).await?;
        let group = db::get_volume(&mut tx, &self.volume).await?.and_then(|v| v.group_id);
        crate::groups::member_changed(&mut tx, group.as_deref()).await?;
        Ok(tx)
    }
}
