//! The operation engine: persisted jobs that survive crashes.
//!
//! A job row names the volume it works on and its next step. Each step does
//! its action (storage, key manager, LUKS header), then records the result
//! and the next step in ONE transaction with the state change it implies.
//! Every action is safe to run again when a crash hits between the action and
//! its record, so on start the engine simply resumes every job at its
//! recorded step.
//!
//! The clone job is the rekey flow of DESIGN.md:
//!
//! | step                  | action                                  | recorded with it                         |
//! |-----------------------|-----------------------------------------|------------------------------------------|
//! | `clone_data`          | backend clone (+ extend)                | next step                                |
//! | `interim_key`         | store a copy of the source's key        | volume key = interim                     |
//! | `new_key`             | 1. new key-manager secret               | job.new_key_id                           |
//! | `add_keyslot`         | 2. keyslot for the new passphrase       | slots                                    |
//! | `persist`             | —                                       | 3. volume key = new, old pending removal |
//! | `destroy_old_keyslot` | 4. wipe the old keyslot                 | volume available, interim key queued     |
//! | (key-deletion queue)  | 5. delete the interim key, retried      | queue row removed                        |
//!
//! Until `persist` the volume's recorded key is the interim copy, whose
//! keyslot is still there; from `persist` on it is the new key, whose keyslot
//! was written and flushed before. So the recorded key always opens the
//! volume. A failure before `persist` marks the volume `error` and queues the
//! new key for deletion (the recorded interim key still opens the volume); a
//! failure at `persist` or after it never deletes the new key (Cinder's bug)
//! and leaves the job to be retried.
//!
//! An in-place rekey of an existing volume (the `os-rekey` action, kinds
//! `rekey_keyslot` and `rekey_volume_key`) starts at `new_key` with the
//! volume's own key as the old one; its mode is the one asked for, not the
//! volume type's, and the old key is queued for deletion at the end.

use std::sync::Arc;
use std::time::Duration;

use rekey_keys::{passphrase_hex, ErrorKind as KeyErrorKind, KeyId, Project};
use rekey_luks::{FormatOptions, PbkdfOptions, Volume as LuksVolume};
use zeroize::Zeroizing;

use crate::db;
use crate::error::{Result, ServiceError};
use crate::fault;
use crate::model::{status, Encryption, Job, JobKind, RekeyMode, Volume};
use crate::service::Service;

pub(crate) const GIB: u64 = 1 << 30;
/// Key-manager algorithm for volume keys (Cinder asks for the cipher's family).
pub(crate) const KEY_ALGORITHM: &str = "aes";
/// Attempts at a late step (`persist` or after) before the volume is marked
/// `error`; the job keeps retrying (see [`late_retry_delay`]).
const LATE_STEP_ATTEMPTS: u32 = 4;
/// The longest pause between two attempts at a late step.
const LATE_RETRY_MAX: Duration = Duration::from_secs(30);

/// Exponential backoff from 0.5 s, capped at [`LATE_RETRY_MAX`].
fn late_retry_delay(failures: u32) -> Duration {
    Duration::from_millis(250u64 << failures.min(10)).min(LATE_RETRY_MAX)
}
/// How often the key-deletion queue is looked at without being woken.
const KEY_GC_INTERVAL: Duration = Duration::from_secs(2);

/// The step a new job starts at.
pub(crate) fn first_step(kind: JobKind) -> &'static str {
    match kind {
        JobKind::Create => "allocate",
        JobKind::Clone => "clone_data",
        JobKind::Delete => "delete_data",
        // An in-place rekey: the volume's own key is the old one.
        JobKind::RekeyKeyslot | JobKind::RekeyVolumeKey => "new_key",
        kind => crate::paths::first_step(kind),
    }
}

pub(crate) const DONE: &str = "done";

/// A new job of `kind` on `volume_id`, at its first step.
pub(crate) fn new_job(kind: JobKind, volume_id: &str, project: &str, source: Option<&str>) -> Job {
    Job {
        id: uuid::Uuid::new_v4().to_string(),
        kind,
        volume_id: volume_id.to_owned(),
        project_id: project.to_owned(),
        source_id: source.map(str::to_owned),
        step: first_step(kind).into(),
        old_key_id: None,
        new_key_id: None,
        old_slot: None,
        new_slot: None,
        attempts: 0,
    }
}

/// Starts running `job` in the background.
pub fn spawn(svc: Arc<Service>, job: Job) {
    tokio::spawn(run(svc, job));
}

/// Resumes every unfinished job (called once at start) and starts the
/// key-deletion worker.
pub async fn recover(svc: &Arc<Service>) -> Result<usize> {
    let jobs = {
        let mut c = svc.conn().await?;
        db::list_jobs(&mut c).await?
    };
    let n = jobs.len();
    for job in jobs {
        tracing::info!(job = %job.id, kind = job.kind.as_str(), volume = %job.volume_id, step = %job.step, "resuming job");
        spawn(svc.clone(), job);
    }
    tokio::spawn(key_gc(svc.clone()));
    Ok(n)
}

async fn run(svc: Arc<Service>, mut job: Job) {
    let mut late_failures = 0;
    loop {
        if job.step == DONE {
            return;
        }
        let step = job.step.clone();
        match run_step(&svc, &mut job).await {
            Ok(()) => {}
            Err(e) if is_late(&job, &step) => {
                late_failures += 1;
                tracing::warn!(job = %job.id, volume = %job.volume_id, %step, error = %e, attempt = late_failures, "step failed; will retry");
                if let Err(e2) = record_failure(&svc, &job, &e.to_string(), late_failures >= LATE_STEP_ATTEMPTS).await {
                    tracing::error!(job = %job.id, error = %e2, "cannot record failure");
                }
                // A late step cannot be rolled back, so it is never given up:
                // the volume shows `error` meanwhile, and the job finishes as
                // soon as the step can run (e.g. Ceph is back).
                tokio::time::sleep(late_retry_delay(late_failures)).await;
            }
            Err(e) => {
                tracing::error!(job = %job.id, volume = %job.volume_id, %step, error = %e, "job failed; rolling back");
                if let Err(e2) = roll_back(&svc, &job, &e.to_string()).await {
                    tracing::error!(job = %job.id, error = %e2, "cannot record the failed job");
                }
                return;
            }
        }
    }
}

/// Steps that are only ever retried, never rolled back: `persist` (once
/// `add_keyslot` is recorded the volume may open only with the new key — a
/// volume-key re-encryption destroyed the old keyslots — so the record must
/// move forward to it) and everything after it (the recorded key is the new one).
fn is_late(job: &Job, step: &str) -> bool {
    job.kind.rekeys() && matches!(step, "persist" | "destroy_old_keyslot")
}

async fn record_failure(svc: &Service, job: &Job, error: &str, give_up: bool) -> Result<()> {
    let mut tx = svc.tx().await?;
    db::job_failed(&mut tx, &job.id, error).await?;
    if give_up {
        db::set_status(&mut tx, &job.volume_id, status::ERROR).await?;
    }
    tx.commit().await.map_err(crate::error::db("commit"))
}

/// A job failed before its point of no return: the volume ends `error`
/// (`error_deleting` for a delete) and keeps the key its record names; a new
/// key the record does not name is queued for deletion.
async fn roll_back(svc: &Service, job: &Job, error: &str) -> Result<()> {
    // Keys the job made but never recorded (a step failed between making a
    // key and recording it). Looked up before the transaction: a network call.
    let unrecorded = unrecorded_job_keys(svc, job).await.unwrap_or_else(|e| {
        tracing::warn!(job = %job.id, error = %e, "cannot list the failed job's keys; the audit will show any left");
        Vec::new()
    });
    let mut tx = svc.tx().await?;
    let vol = db::get_volume(&mut tx, &job.volume_id).await?;
    // Once add_keyslot has started, the volume may already need the new key
    // (a half-finished volume-key re-encryption holds data under it): keep
    // it, leaked at worst, rather than lose data.
    let keep_new = job.step == "add_keyslot" || job.new_slot.is_some();
    if let (Some(new), Some(v)) = (&job.new_key_id, &vol) {
        if v.encryption_key_id.as_deref() != Some(new.as_str()) && !keep_new {
            db::queue_key_deletion(&mut tx, new, &job.project_id, "new key of a failed rekey").await?;
        }
    }
    // An interim key the record does not name opens nothing the service knows.
    if let (Some(old), Some(v)) = (&job.old_key_id, &vol) {
        if v.encryption_key_id.as_deref() != Some(old.as_str()) {
            db::queue_key_deletion(&mut tx, old, &job.project_id, "interim key of a failed job").await?;
        }
    }
    for k in unrecorded {
        if keep_new && job.new_key_id.as_deref() == Some(k.as_str()) {
            continue;
        }
        db::queue_key_deletion(&mut tx, &k, &job.project_id, "unrecorded key of a failed job").await?;
    }
    let st = match job.kind {
        JobKind::Delete => status::ERROR_DELETING,
        // An in-place rekey that failed before touching the volume leaves it
        // as it was: its recorded key still opens it.
        JobKind::RekeyKeyslot | JobKind::RekeyVolumeKey if job.step == "new_key" => status::AVAILABLE,
        _ => status::ERROR,
    };
    db::set_status(&mut tx, &job.volume_id, st).await?;
    crate::paths::on_roll_back(&mut tx, job, error).await?;
    db::delete_job(&mut tx, &job.id).await?;
    tx.commit().await.map_err(crate::error::db("commit"))?;
    svc.key_gc.notify_one();
    Ok(())
}

/// What a step needs to know about its volume.
pub(crate) struct Target {
    pub(crate) vol: Volume,
    pub(crate) enc: Option<Encryption>,
    pub(crate) mode: RekeyMode,
}

pub(crate) async fn target(svc: &Service, job: &Job) -> Result<Target> {
    let mut c = svc.conn().await?;
    let vol = db::get_volume(&mut c, &job.volume_id)
        .await?
        .ok_or_else(|| ServiceError::not_found("Volume", job.volume_id.clone()))?;
    let enc = db::get_encryption(&mut c, &vol.volume_type_id).await?;
    let mode = match job.kind.forced_mode() {
        Some(forced) => forced,
        None => svc.type_rekey_mode(&mut c, &vol.volume_type_id).await?,
    };
    Ok(Target { vol, enc, mode })
}

pub(crate) async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f).await.map_err(|e| ServiceError::Internal(format!("blocking task: {e}")))?
}

pub(crate) fn project(job: &Job) -> Result<Project> {
    Project::new(job.project_id.clone()).map_err(ServiceError::from)
}

pub(crate) fn key_id(s: Option<&str>, what: &str) -> Result<KeyId> {
    let s = s.ok_or_else(|| ServiceError::Internal(format!("job has no {what}")))?;
    KeyId::parse(s).map_err(ServiceError::from)
}

pub(crate) async fn passphrase(svc: &Service, job: &Job, id: &KeyId) -> Result<Zeroizing<String>> {
    let key = svc.keys.get_key(&project(job)?, id).await?;
    Ok(passphrase_hex(&key))
}

// ---- keys the jobs make ----------------------------------------------------

/// Every key the service makes is named `rekey-job-<job id>-<tag>`, so that a
/// step re-run after a crash finds the key its interrupted run made instead
/// of making another (which would leave the first one orphaned), a rolled-back
/// job's unrecorded keys can be found and deleted, and the audit can tell the
/// service's keys from anything else in a Barbican project.
pub(crate) const KEY_NAME_PREFIX: &str = "rekey-job-";

/// The name of the key `job_id` makes at `tag`.
pub(crate) fn key_name(job_id: &str, tag: &str) -> String {
    format!("{KEY_NAME_PREFIX}{job_id}-{tag}")
}

/// The job id a service key's name carries (`None` for other names).
pub(crate) fn key_name_job(name: &str) -> Option<&str> {
    let rest = name.strip_prefix(KEY_NAME_PREFIX)?;
    // A job id is a UUID: 36 characters.
    rest.get(..36).filter(|_| rest.as_bytes().get(36) == Some(&b'-'))
}

/// A fresh key for `job`'s step `tag`, or the one an interrupted run of the
/// same step already made.
pub(crate) async fn job_new_key(svc: &Service, job: &Job, tag: &str, bits: u32) -> Result<KeyId> {
    let p = project(job)?;
    let name = key_name(&job.id, tag);
    if let Some(id) = svc.keys.find_named(&p, &name).await? {
        tracing::info!(job = %job.id, key = %id, %tag, "reusing the key an interrupted step made");
        return Ok(id);
    }
    Ok(svc.keys.create_named_key(&p, Some(&name), KEY_ALGORITHM, bits).await?)
}

/// A copy (same bytes, new id, in `job`'s project) of key `from` of project
/// `from_project`, for `job`'s step `tag`; or the copy an interrupted run of
/// the same step already made. No two records ever share a key id.
pub(crate) async fn job_copy_key(svc: &Service, job: &Job, tag: &str, from_project: &Project, from: &str) -> Result<String> {
    let p = project(job)?;
    let name = key_name(&job.id, tag);
    if let Some(id) = svc.keys.find_named(&p, &name).await? {
        tracing::info!(job = %job.id, key = %id, %tag, "reusing the key copy an interrupted step made");
        return Ok(id.to_string());
    }
    let bytes = svc.keys.get_key(from_project, &key_id(Some(from), "source key")?).await?;
    let id = svc.keys.store_named_key(&p, Some(&name), &bytes, KEY_ALGORITHM, (bytes.len() * 8) as u32).await?;
    Ok(id.to_string())
}

/// The keys `job` made that no record names: what a roll-back deletes.
async fn unrecorded_job_keys(svc: &Service, job: &Job) -> Result<Vec<String>> {
    let made = svc.keys.list_named(&project(job)?, &key_name(&job.id, "")).await?;
    if made.is_empty() {
        return Ok(Vec::new());
    }
    let mut c = svc.conn().await?;
    let recorded: std::collections::HashSet<String> =
        crate::paths::db::all_recorded_keys(&mut c).await?.into_iter().map(|(k, _, _)| k).collect();
    Ok(made.into_iter().map(|(id, _)| id.to_string()).filter(|id| !recorded.contains(id)).collect())
}

/// Commits `job`'s new step (plus whatever `tx` already holds), with the
/// fault-injection points around the commit.
pub(crate) async fn commit(mut tx: sqlx::Transaction<'static, sqlx::Sqlite>, job: &Job, done_step: &str) -> Result<()> {
    if job.step == DONE {
        db::set_status(&mut tx, &job.volume_id, status::AVAILABLE).await?;
        crate::paths::on_done(&mut tx, job).await?;
        db::delete_job(&mut tx, &job.id).await?;
    } else {
        db::save_job(&mut tx, job).await?;
    }
    fault::point(done_step).await;
    tx.commit().await.map_err(crate::error::db("commit"))?;
    fault::point(&format!("{done_step}.recorded")).await;
    Ok(())
}

async fn run_step(svc: &Arc<Service>, job: &mut Job) -> Result<()> {
    let step = job.step.clone();
    match (job.kind, step.as_str()) {
        (JobKind::Create, "allocate") => allocate(svc, job).await,
        (JobKind::Create, "format") => format(svc, job).await,
        (JobKind::Clone, "clone_data") => clone_data(svc, job).await,
        (JobKind::Clone, "interim_key") => interim_key(svc, job).await,
        // Every path that makes or hands over a volume ends in these steps.
        (k, "new_key") if k.rekeys() => new_key(svc, job).await,
        (k, "add_keyslot") if k.rekeys() => add_keyslot(svc, job).await,
        (k, "persist") if k.rekeys() => persist(svc, job).await,
        (k, "destroy_old_keyslot") if k.rekeys() => destroy_old_keyslot(svc, job).await,
        (JobKind::Delete, "delete_data") => delete_data(svc, job).await,
        (k, _) if crate::paths::handles(k) => crate::paths::run_step(svc, job).await,
        (kind, step) => Err(ServiceError::Internal(format!("job {} ({}) at unknown step {step:?}", job.id, kind.as_str()))),
    }
}

// ---- create --------------------------------------------------------------

async fn allocate(svc: &Arc<Service>, job: &mut Job) -> Result<()> {
    let t = target(svc, job).await?;
    let (backend, id, size) = (svc.backend.clone(), job.volume_id.clone(), t.vol.size_gb * GIB);
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
    match &t.enc {
        Some(enc) => {
            let key = job_new_key(svc, job, "volume", enc.key_size()).await?;
            job.new_key_id = Some(key.to_string());
            job.step = "format".into();
            tx = svc.tx().await?;
            db::set_key(&mut tx, &job.volume_id, Some(key.as_str())).await?;
        }
        None => {
            job.step = DONE.into();
            tx = svc.tx().await?;
        }
    }
    commit(tx, job, "allocate").await
}

/// LUKS options for an encryption type. Keyslots for key-manager keys use the
/// minimal KDF: the passphrase is 256 bits of full entropy, which no KDF
/// strengthening changes (see docs/service.md).
fn format_options(enc: &Encryption) -> Result<FormatOptions> {
    let cipher = rekey_luks::crypto::CipherSpec::parse(enc.cipher())
        .map_err(|e| ServiceError::invalid(format!("cipher {:?}: {e}", enc.cipher())))?;
    Ok(FormatOptions {
        version: enc.provider.version(),
        cipher,
        key_size_bits: enc.key_size(),
        pbkdf: PbkdfOptions::minimal(),
        ..FormatOptions::default()
    })
}

async fn format(svc: &Arc<Service>, job: &mut Job) -> Result<()> {
    let t = target(svc, job).await?;
    let enc = t.enc.ok_or_else(|| ServiceError::Internal("format step for an unencrypted volume".into()))?;
    let opts = format_options(&enc)?;
    let pass = passphrase(svc, job, &key_id(job.new_key_id.as_deref(), "key")?).await?;
    let (backend, id) = (svc.backend.clone(), job.volume_id.clone());
    blocking(move || {
        let io = backend.open(&id)?;
        LuksVolume::format(io, &opts, pass.as_bytes(), None)?;
        Ok(())
    })
    .await?;
    job.step = DONE.into();
    commit(svc.tx().await?, job, "format").await
}

// ---- clone + rekey -------------------------------------------------------

async fn clone_data(svc: &Arc<Service>, job: &mut Job) -> Result<()> {
    let t = target(svc, job).await?;
    let src = job.source_id.clone().ok_or_else(|| ServiceError::Internal("clone job without source".into()))?;
    let (backend, id, size) = (svc.backend.clone(), job.volume_id.clone(), t.vol.size_gb * GIB);
    let kind = blocking(move || {
        if backend.exists(&id)? {
            backend.delete(&id)?;
        }
        let kind = backend.clone_volume(&src, &id)?;
        if backend.size(&id)? < size {
            backend.extend(&id, size)?;
        }
        Ok(kind)
    })
    .await?;
    tracing::debug!(volume = %job.volume_id, clone = %kind, "cloned data");
    job.step = if t.enc.is_some() { "interim_key" } else { DONE }.into();
    commit(svc.tx().await?, job, "clone_data").await
}

/// The clone's own copy of the source's key (same bytes, new id): what opens
/// the clone until the rekey, so no two volume records share a key id.
async fn interim_key(svc: &Arc<Service>, job: &mut Job) -> Result<()> {
    let t = target(svc, job).await?;
    if t.enc.is_none() {
        return Err(ServiceError::Internal("interim key for an unencrypted volume".into()));
    }
    let src_key = {
        let mut c = svc.conn().await?;
        let src = job.source_id.as_deref().unwrap_or_default();
        let s = db::get_volume(&mut c, src).await?.ok_or_else(|| ServiceError::not_found("Volume", src))?;
        s.encryption_key_id.ok_or_else(|| ServiceError::Internal("job has no source key".into()))?
    };
    let interim = job_copy_key(svc, job, "interim", &project(job)?, &src_key).await?;
    job.old_key_id = Some(interim.clone());
    job.step = if t.mode == RekeyMode::None { DONE } else { "new_key" }.into();
    let mut tx = svc.tx().await?;
    db::set_key(&mut tx, &job.volume_id, Some(interim.as_str())).await?;
    commit(tx, job, "interim_key").await
}

/// Step 1: a new secret in the key manager.
async fn new_key(svc: &Arc<Service>, job: &mut Job) -> Result<()> {
    let t = target(svc, job).await?;
    let enc = t.enc.ok_or_else(|| ServiceError::Internal("rekey of an unencrypted volume".into()))?;
    let key = job_new_key(svc, job, "new", enc.key_size()).await?;
    job.new_key_id = Some(key.to_string());
    job.step = "add_keyslot".into();
    commit(svc.tx().await?, job, "new_key").await
}

/// Step 2: a keyslot for the new passphrase; the old keyslot stays.
async fn add_keyslot(svc: &Arc<Service>, job: &mut Job) -> Result<()> {
    let old = passphrase(svc, job, &key_id(job.old_key_id.as_deref(), "old key")?).await?;
    let new = passphrase(svc, job, &key_id(job.new_key_id.as_deref(), "new key")?).await?;
    let (backend, id) = (svc.backend.clone(), job.volume_id.clone());
    if target(svc, job).await?.mode == RekeyMode::VolumeKey {
        // volume-key mode: re-encrypt the data under a fresh volume key; the
        // only keyslot left opens with the new passphrase. Resumable.
        let new_slot = blocking(move || {
            use rekey_luks::reencrypt::{self, ReencryptOptions};
            let v = LuksVolume::open(backend.open(&id)?)?;
            let opts = ReencryptOptions { pbkdf: PbkdfOptions::minimal(), ..Default::default() };
            let (old_b, new_b) = (old.as_bytes(), new.as_bytes());
            if reencrypt::in_progress(&v) {
                return Ok(reencrypt::resume(v, old_b, Some(new_b), &opts, &|_, _| {})?.1.keyslot);
            }
            match v.unlock(new_b, None) {
                Ok((s, _)) if v.unlock(old_b, None).is_err() => Ok(s), // finished before a crash
                _ => Ok(reencrypt::reencrypt(v, old_b, Some(new_b), &opts, &|_, _| {})?.1.keyslot),
            }
        })
        .await?;
        job.old_slot = None;
        job.new_slot = Some(new_slot);
        job.step = "persist".into();
        return commit(svc.tx().await?, job, "add_keyslot").await;
    }
    let (old_slot, new_slot) = blocking(move || {
        let mut v = LuksVolume::open(backend.open(&id)?)?;
        let (old_slot, vk) = v.unlock(old.as_bytes(), None)?;
        // Resumed after a crash that followed the write: the slot is there.
        let new_slot = match v.unlock(new.as_bytes(), None) {
            Ok((s, _)) => s,
            Err(e) if e.kind() == rekey_luks::ErrorKind::WrongPassphrase => {
                v.add_keyslot_with_key(&vk, new.as_bytes(), None, &PbkdfOptions::minimal())?
            }
            Err(e) => return Err(e.into()),
        };
        Ok((old_slot, new_slot))
    })
    .await?;
    job.old_slot = Some(old_slot);
    job.new_slot = Some(new_slot);
    job.step = "persist".into();
    commit(svc.tx().await?, job, "add_keyslot").await
}

/// Step 3: the database now names the new key; the old one is pending removal.
async fn persist(svc: &Arc<Service>, job: &mut Job) -> Result<()> {
    let new = job.new_key_id.clone().ok_or_else(|| ServiceError::Internal("persist without new key".into()))?;
    job.step = "destroy_old_keyslot".into();
    let mut tx = svc.tx().await?;
    db::set_key(&mut tx, &job.volume_id, Some(&new)).await?;
    commit(tx, job, "persist").await
}

/// Step 4: wipe the old keyslot; the volume is ready; the interim key goes to
/// the deletion queue (step 5) in the same transaction.
async fn destroy_old_keyslot(svc: &Arc<Service>, job: &mut Job) -> Result<()> {
    let new = passphrase(svc, job, &key_id(job.new_key_id.as_deref(), "new key")?).await?;
    let (old_slot, new_slot) = match (job.old_slot, job.new_slot) {
        (Some(o), Some(n)) if o != n => (Some(o), n),
        // volume-key mode: re-encryption already destroyed every old keyslot.
        (None, Some(n)) => (None, n),
        _ => return Err(ServiceError::Internal("destroy step without two distinct keyslots".into())),
    };
    let (backend, id) = (svc.backend.clone(), job.volume_id.clone());
    blocking(move || {
        let mut v = LuksVolume::open(backend.open(&id)?)?;
        // Never wipe the slot that opens with the new key.
        v.unlock(new.as_bytes(), Some(new_slot))?;
        if let Some(old_slot) = old_slot.filter(|s| v.active_keyslots().contains(s)) {
            v.destroy_keyslot(old_slot)?;
        }
        Ok(())
    })
    .await?;
    job.step = DONE.into();
    let mut tx = svc.tx().await?;
    if let Some(old) = &job.old_key_id {
        let why = if job.kind.forced_mode().is_some() { "previous key of a rekeyed volume" } else { "interim key of a rekeyed clone" };
        db::queue_key_deletion(&mut tx, old, &job.project_id, why).await?;
    }
    commit(tx, job, "destroy_old_keyslot").await?;
    svc.key_gc.notify_one();
    Ok(())
}

// ---- delete --------------------------------------------------------------

async fn delete_data(svc: &Arc<Service>, job: &mut Job) -> Result<()> {
    let t = target(svc, job).await?;
    let (backend, id) = (svc.backend.clone(), job.volume_id.clone());
    blocking(move || {
        if backend.exists(&id)? {
            backend.delete(&id)?;
        }
        Ok(())
    })
    .await?;
    fault::point("delete_data").await;
    let mut tx = svc.tx().await?;
    if let Some(k) = &t.vol.encryption_key_id {
        db::queue_key_deletion(&mut tx, k, &job.project_id, "key of a deleted volume").await?;
    }
    db::delete_volume(&mut tx, &job.volume_id).await?;
    db::delete_job(&mut tx, &job.id).await?;
    tx.commit().await.map_err(crate::error::db("commit"))?;
    job.step = DONE.into();
    svc.key_gc.notify_one();
    Ok(())
}

// ---- step 5: the key-deletion queue --------------------------------------

/// Deletes queued keys; failures are logged and retried with backoff, never
/// fatal, so no key is orphaned for good.
async fn key_gc(svc: Arc<Service>) {
    let mut round: u64 = 0;
    loop {
        if let Err(e) = key_gc_pass(&svc, round).await {
            tracing::warn!(error = %e, "key deletion pass failed");
        }
        round = round.wrapping_add(1);
        tokio::select! {
            _ = svc.key_gc.notified() => {}
            _ = tokio::time::sleep(KEY_GC_INTERVAL) => {}
        }
    }
}

async fn key_gc_pass(svc: &Service, round: u64) -> Result<()> {
    let pending = {
        let mut c = svc.conn().await?;
        db::pending_key_deletions(&mut c).await?
    };
    for (key, project, attempts) in pending {
        // Exponential backoff in passes: after n failures, every 2^n-th pass.
        if attempts > 0 && !round.is_multiple_of(1u64 << attempts.min(6)) {
            continue;
        }
        let result = match (Project::new(project.clone()), KeyId::parse(&key)) {
            (Ok(p), Ok(k)) => match svc.keys.delete_key(&p, &k).await {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == KeyErrorKind::NotFound => Ok(()),
                Err(e) => Err(e.to_string()),
            },
            (Err(e), _) | (_, Err(e)) => {
                tracing::error!(%key, error = %e, "unusable key id in deletion queue; dropping it");
                Ok(())
            }
        };
        let mut c = svc.conn().await?;
        match result {
            Ok(()) => {
                fault::point("delete_interim_key").await;
                db::key_deleted(&mut c, &key).await?;
                tracing::info!(%key, %project, "deleted key");
            }
            Err(e) => {
                tracing::warn!(%key, %project, error = %e, attempts = attempts + 1, "key deletion failed; will retry");
                db::key_deletion_failed(&mut c, &key, &e).await?;
            }
        }
    }
    Ok(())
}
