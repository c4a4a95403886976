//! The rekey tail every flow that makes or hands over a volume ends in, and
//! the in-place rekey (`os-rekey`) that is nothing but the tail.
//!
//! | state               | action                                  | committed with it                         |
//! |---------------------|-----------------------------------------|-------------------------------------------|
//! | `NewKey`            | 1. new key-manager secret               | the state holds the new key id            |
//! | `AddKeyslot`        | 2. keyslot for the new passphrase       | the state holds both slots                |
//! | `Persist`           | —                                       | 3. volume key = new, the old one held     |
//! | `DestroyOldKeyslot` | 4. wipe the old keyslot                 | old key queued; the flow's final records  |
//! | (key-deletion queue)| 5. delete the old key, retried          | queue row removed                         |
//!
//! Until `Persist` the volume's recorded key is the old one (a clone's
//! interim copy, or the volume's own key), whose keyslot is still there;
//! from `Persist` on it is the new key, whose keyslot was written and
//! flushed before. So the recorded key always opens the volume. A failure
//! before `Persist` rolls the flow back and queues the new key for deletion
//! (the recorded old key still opens the volume) — except during
//! `AddKeyslot`, whose half-done volume-key re-encryption may already hold
//! data under the new key, which is then kept; a failure at `Persist` or
//! after it never deletes the new key (Cinder's bug) and is retried.

use std::sync::Arc;

use rekey_keys::{passphrase_hex, KeyId, Project};
use rekey_luks::{PbkdfOptions, Volume as LuksVolume};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::{forget_keys, Cipher, Flow, Job, Target};
use crate::db;
use crate::engine::{self, blocking, job_new_key, Transition, Tx};
use crate::error::{Result, ServiceError};
use crate::fault::Step;
use crate::model::{status, Caller, RekeyMode};
use crate::service::{check_rekey_mode, Service};

/// The rekey sub-machine: the key that opens the volume now, and where the
/// rekey stands.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Tail {
    old_key: String,
    /// The tag of the new key's name (`rekey-job-<job>-<tag>`): one per
    /// tail of a job, so a job that runs several (a transfer: the volume,
    /// then each snapshot) finds each its own key again after a crash.
    #[serde(default = "new_key_tag")]
    tag: String,
    state: TailState,
}

fn new_key_tag() -> String {
    Tail::NEW_KEY_TAG.to_owned()
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "at", rename_all = "snake_case")]
enum TailState {
    NewKey,
    AddKeyslot { new_key: String },
    Persist(Slots),
    DestroyOldKeyslot(Slots),
}

/// What records the tail's volume and its key.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Record<'a> {
    /// A volume record: `Persist` names the new key in it, and the end
    /// queues the old key for deletion (`old_key_why`).
    Volume { old_key_why: &'a str },
    /// None: the job's state is the only record of the new key, and the
    /// old key stays, until the flow records both itself (a transferred
    /// snapshot's scratch volume, whose snapshot still needs the old key
    /// until the rekeyed one replaces it).
    JobOnly,
}

/// A new key and its keyslot, and the old keyslot to wipe (`None` after a
/// volume-key re-encryption, which destroyed every old keyslot itself).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Slots {
    new_key: String,
    old_slot: Option<u32>,
    new_slot: u32,
}

impl Tail {
    /// The tag of a tail's new key unless the flow names another.
    pub(crate) const NEW_KEY_TAG: &'static str = "new";

    /// The tail of a volume that `old_key` opens now.
    pub(crate) fn start(old_key: String) -> Self {
        Tail { old_key, tag: new_key_tag(), state: TailState::NewKey }
    }

    /// The tail past its first state: the flow's own step already made
    /// the new key (named with [`Tail::NEW_KEY_TAG`], so a re-run of that
    /// step finds it), and committed it with its own effects.
    pub(crate) fn with_new_key(old_key: String, new_key: String) -> Self {
        Tail { old_key, tag: new_key_tag(), state: TailState::AddKeyslot { new_key } }
    }

    /// As [`Tail::start`], the new key named with `tag`.
    pub(crate) fn start_tagged(old_key: String, tag: String) -> Self {
        Tail { old_key, tag, state: TailState::NewKey }
    }

    pub(crate) fn step_name(&self) -> Step {
        match self.state {
            TailState::NewKey => Step::NewKey,
            TailState::AddKeyslot { .. } => Step::AddKeyslot,
            TailState::Persist(_) => Step::Persist,
            TailState::DestroyOldKeyslot(_) => Step::DestroyOldKeyslot,
        }
    }

    /// `Persist` and after: once a keyslot for the new key is recorded the
    /// volume may open only with it (a volume-key re-encryption destroyed
    /// the old keyslots), so the record must move forward to it.
    pub(crate) fn is_late(&self) -> bool {
        matches!(self.state, TailState::Persist(_) | TailState::DestroyOldKeyslot(_))
    }

    /// The old and the new key.
    pub(crate) fn held_keys(&self) -> [Option<&str>; 2] {
        let new = match &self.state {
            TailState::NewKey => None,
            TailState::AddKeyslot { new_key } => Some(new_key.as_str()),
            TailState::Persist(s) | TailState::DestroyOldKeyslot(s) => Some(s.new_key.as_str()),
        };
        [Some(self.old_key.as_str()), new]
    }

    /// The new key a roll-back must keep: during `AddKeyslot` a half-done
    /// re-encryption may hold data under it (leaked at worst, never lost).
    pub(crate) fn keep_on_roll_back(&self) -> Option<&str> {
        match &self.state {
            TailState::AddKeyslot { new_key } => Some(new_key),
            _ => None,
        }
    }

    /// Runs one state on `t`'s volume. When the tail is finished (`None`)
    /// the flow adds its final records; with [`Record::Volume`] the
    /// transaction has queued the old key for deletion.
    pub(crate) async fn step(self, svc: &Arc<Service>, job: &str, t: &Target, record: Record<'_>) -> Result<(Tx, Option<Tail>)> {
        let Tail { old_key, tag, state } = self;
        let cipher = t.cipher.as_ref().ok_or_else(|| ServiceError::Internal("rekey of an unencrypted volume".into()))?;
        let next = match state {
            TailState::NewKey => {
                let key = job_new_key(svc.keys.as_ref(), job, &t.project, &tag, cipher.key_bits).await?;
                TailState::AddKeyslot { new_key: key.to_string() }
            }
            TailState::AddKeyslot { new_key } => {
                let slots = add_keyslot(svc, t, &old_key, &new_key).await?;
                if t.mode == RekeyMode::VolumeKey {
                    let bytes = t.size_gb * engine::GIB;
                    svc.engine.metrics.bytes_reencrypted.fetch_add(bytes, std::sync::atomic::Ordering::Relaxed);
                }
                TailState::Persist(Slots { new_key, old_slot: slots.0, new_slot: slots.1 })
            }
            TailState::Persist(slots) => {
                let mut tx = svc.tx().await?;
                if let Record::Volume { .. } = record {
                    db::set_key(&mut tx, &t.volume, Some(&slots.new_key)).await?;
                }
                return Ok((tx, Some(Tail { old_key, tag, state: TailState::DestroyOldKeyslot(slots) })));
            }
            TailState::DestroyOldKeyslot(slots) => {
                destroy_old_keyslot(svc, t, &slots).await?;
                let mut tx = svc.tx().await?;
                if let Record::Volume { old_key_why } = record {
                    db::queue_key_deletion(&mut tx, &old_key, &t.project, old_key_why).await?;
                }
                return Ok((tx, None));
            }
        };
        Ok((svc.tx().await?, Some(Tail { old_key, tag, state: next })))
    }
}

async fn passphrase(svc: &Service, project: &str, id: &str) -> Result<Zeroizing<String>> {
    let key = svc.keys.get_key(&Project::new(project.to_owned())?, &KeyId::parse(id)?).await?;
    Ok(passphrase_hex(&key))
}

/// Step 2: a keyslot for the new passphrase, the old keyslot kept; or, in
/// volume-key mode, the data re-encrypted under a fresh volume key whose
/// only keyslot opens with the new passphrase (resumable). Returns the old
/// keyslot (to wipe at step 4) and the new one.
async fn add_keyslot(svc: &Service, t: &Target, old_key: &str, new_key: &str) -> Result<(Option<u32>, u32)> {
    let old = passphrase(svc, &t.project, old_key).await?;
    let new = passphrase(svc, &t.project, new_key).await?;
    if t.mode == RekeyMode::VolumeKey {
        let exports = crate::online::local_exports(svc, &t.volume).await?;
        if !exports.is_empty() {
            return Ok((None, crate::online::reencrypt_attached(svc, &t.volume, old, new, &exports).await?));
        }
    }
    let (backend, id, mode) = (svc.backend.clone(), t.volume.clone(), t.mode);
    blocking(move || {
        let (old_b, new_b) = (old.as_bytes(), new.as_bytes());
        if mode == RekeyMode::VolumeKey {
            use rekey_luks::reencrypt::{self, ReencryptOptions};
            let v = LuksVolume::open(backend.open(&id)?)?;
            let opts = ReencryptOptions { pbkdf: PbkdfOptions::minimal(), ..Default::default() };
            let progress = ProgressLog::new(&id);
            if reencrypt::in_progress(&v) {
                tracing::info!(volume = %id, "resuming the re-encryption under a new volume key");
                return Ok((None, reencrypt::resume(v, old_b, Some(new_b), &opts, &|d, t| progress.at(d, t))?.1.keyslot));
            }
            return match v.unlock(new_b, None) {
                Ok((s, _)) if v.unlock(old_b, None).is_err() => Ok((None, s)), // finished before a crash
                _ => Ok((None, reencrypt::reencrypt(v, old_b, Some(new_b), &opts, &|d, t| progress.at(d, t))?.1.keyslot)),
            };
        }
        let mut v = LuksVolume::open(backend.open(&id)?)?;
        let (old_slot, vk) = v.unlock(old_b, None)?;
        // Resumed after a crash that followed the write: the slot is there.
        let new_slot = match v.unlock(new_b, None) {
            Ok((s, _)) => s,
            Err(e) if e.kind() == rekey_luks::ErrorKind::WrongPassphrase => {
                v.add_keyslot_with_key(&vk, new_b, None, &PbkdfOptions::minimal())?
            }
            Err(e) => return Err(e.into()),
        };
        if old_slot == new_slot {
            return Err(ServiceError::Internal("the old and the new key open the same keyslot".into()));
        }
        Ok((Some(old_slot), new_slot))
    })
    .await
}

/// Logs how far a volume-key re-encryption has come, at most every
/// [`ProgressLog::EVERY`], so a long one is seen moving (or not).
struct ProgressLog<'a> {
    volume: &'a str,
    last: std::sync::Mutex<std::time::Instant>,
}

impl<'a> ProgressLog<'a> {
    const EVERY: std::time::Duration = std::time::Duration::from_secs(10);

    fn new(volume: &'a str) -> Self {
        ProgressLog { volume, last: std::sync::Mutex::new(std::time::Instant::now()) }
    }

    fn at(&self, done: u64, total: u64) {
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        if last.elapsed() >= Self::EVERY {
            *last = std::time::Instant::now();
            tracing::info!(volume = %self.volume, done_mib = done >> 20, total_mib = total >> 20, "re-encrypting");
        }
    }
}

/// Step 4: wipe the old keyslot, never the one that opens with the new key.
async fn destroy_old_keyslot(svc: &Service, t: &Target, s: &Slots) -> Result<()> {
    let new = passphrase(svc, &t.project, &s.new_key).await?;
    let (backend, id, old_slot, new_slot) = (svc.backend.clone(), t.volume.clone(), s.old_slot, s.new_slot);
    blocking(move || {
        let mut v = LuksVolume::open(backend.open(&id)?)?;
        v.unlock(new.as_bytes(), Some(new_slot))?;
        if let Some(old_slot) = old_slot.filter(|o| *o != new_slot && v.active_keyslots().contains(o)) {
            v.destroy_keyslot(old_slot)?;
        }
        Ok(())
    })
    .await
}

// ---- in-place rekey ------------------------------------------------------

/// An existing volume rekeyed in place: the tail, with the volume's own key
/// as the old one, in the mode the request asked for (not the type's).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InPlace {
    pub(crate) target: Target,
    pub(crate) tail: Tail,
}

impl InPlace {
    pub(crate) fn kind(&self) -> &'static str {
        match self.target.mode {
            RekeyMode::VolumeKey => "rekey_volume_key",
            _ => "rekey_keyslot",
        }
    }

    pub(crate) async fn step(self, svc: &Arc<Service>, job: &str) -> Result<Transition<InPlace>> {
        let InPlace { target, tail } = self;
        let (mut tx, next) = tail.step(svc, job, &target, Record::Volume { old_key_why: "previous key of a rekeyed volume" }).await?;
        match next {
            Some(tail) => Ok(Transition::next(tx, InPlace { target, tail })),
            None => {
                // `in-use` again when a consumer stayed attached throughout.
                let settled = db::settled_status(&mut tx, &target.volume).await?;
                db::set_status(&mut tx, &target.volume, settled).await?;
                Ok(Transition::done(tx))
            }
        }
    }

    pub(crate) async fn roll_back(self, svc: &Service, job: &str) -> Result<Tx> {
        let mut tx = forget_keys(svc, job, &self.target.project, self.tail.held_keys(), self.tail.keep_on_roll_back()).await?;
        // Failed before touching the volume: it is as it was, and its
        // recorded key still opens it.
        let st = if self.tail.step_name() == Step::NewKey { db::settled_status(&mut tx, &self.target.volume).await? } else { status::ERROR };
        db::set_status(&mut tx, &self.target.volume, st).await?;
        Ok(tx)
    }
}

/// Volume-key mode on an attached back-end volume: rekey serves the
/// plaintext export, so it re-encrypts under live I/O by swapping the
/// export's data path (`crate::online`).
fn admit_online_volume_key(_svc: &Service, _v: &crate::model::Volume) -> Result<()> {
    Ok(())
}

impl Service {
    /// Admits an in-place rekey (`os-rekey`): the volume gets a new key (and,
    /// in volume-key mode, a new volume key with every sector re-encrypted);
    /// its old key is deleted at the end. Marks it `maintenance` and records
    /// the job.
    pub async fn rekey_volume(&self, caller: &Caller, id: &str, mode: RekeyMode) -> Result<Job> {
        if mode == RekeyMode::None {
            return Err(ServiceError::invalid("Invalid input received: os-rekey mode must be keyslot or volume-key"));
        }
        let mut tx = self.tx().await?;
        let v = db::get_volume(&mut tx, id)
            .await?
            .filter(|v| v.project_id == caller.project)
            .ok_or_else(|| ServiceError::not_found("Volume", id))?;
        let enc = db::get_encryption(&mut tx, &v.volume_type_id).await?;
        let (Some(enc), Some(key)) = (enc, v.encryption_key_id.clone()) else {
            return Err(ServiceError::invalid(format!("Invalid volume: volume {id} is not encrypted; there is no key to rekey.")));
        };
        if v.status != status::AVAILABLE && v.status != status::IN_USE {
            return Err(ServiceError::invalid(format!(
                "Invalid volume: Volume status must be available or in-use to rekey, but is {}.",
                v.status
            )));
        }
        if mode == RekeyMode::VolumeKey && db::has_attachments(&mut tx, id).await? {
            if enc.control_location == "back-end" {
                admit_online_volume_key(self, &v)?;
            } else {
                return Err(ServiceError::Conflict(format!(
                    "Volume {id} is attached with control_location front-end: its consumer holds the volume key, \
                     which volume-key mode would replace under it. Detach it first, or use mode keyslot."
                )));
            }
        }
        if db::is_being_cloned(&mut tx, id).await? {
            return Err(ServiceError::invalid(format!(
                "Invalid volume: a clone, snapshot or backup of volume {id} is in progress; rekey it when that is done."
            )));
        }
        check_rekey_mode(mode, Some(&enc))?;
        let target = Target {
            volume: v.id.clone(),
            project: v.project_id.clone(),
            size_gb: v.size_gb,
            cipher: Some(Cipher::from(&enc)),
            mode,
        };
        let job = Job::new(id, &v.project_id, None, Flow::Rekey(InPlace { target, tail: Tail::start(key) }));
        db::set_status(&mut tx, id, status::MAINTENANCE).await?;
        engine::admit(&self.engine, &mut tx, &job).await?;
        tx.commit().await.map_err(crate::error::db("commit"))?;
        Ok(job)
    }
}
