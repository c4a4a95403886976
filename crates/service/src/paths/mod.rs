//! The jobs: every path that makes, changes or hands over a volume, each a
//! typed state machine the engine runs ([`Flow`]), and the key-independence
//! audit.
//!
//! Everything a machine needs is captured once at admission — the target
//! volume (project, size, cipher, rekey mode), the source and its key id —
//! and travels in its state; a step reads no record to learn what it is
//! working on. Every machine that makes or hands over a volume ends in the
//! SAME rekey sub-machine ([`rekey::Tail`]: new key → add keyslot → persist
//! → destroy old keyslot, then the old key is queued for deletion).
//!
//! | flow (`kind`)                   | target      | source      | own states before the rekey tail |
//! |---------------------------------|-------------|-------------|----------------------------------|
//! | `Create` (`create`)             | new volume  | —           | `Allocate`, `Format` (no tail)   |
//! | `Make` (`clone`)                | new volume  | volume      | `CloneData` (data and both keys) |
//! | `Make` (`from_snapshot`)        | new volume  | snapshot    | `CloneData` (data and both keys) |
//! | `Make` (`restore`)              | volume      | backup      | `RestoreKey`, `RestoreData`      |
//! | `Accept` (`accept`)             | volume      | transfer    | `AcceptMove`; after the tail, per snapshot `SnapshotClone`, a tail on its scratch volume, `SnapshotReplace` |
//! | `Rekey` (`rekey_keyslot`, `rekey_volume_key`) | volume | — | — (the tail only)             |
//! | `Delete` (`delete`)             | volume      | —           | `DeleteData`                     |
//! | `Snapshot` (`snapshot`)         | snapshot    | volume      | `SnapshotKey`, `SnapshotData`    |
//! | `Backup` (`backup`)             | backup      | volume      | `BackupKey`, `BackupData`        |
//!
//! A clone's `CloneData` also makes the tail's new key (by the name the
//! tail's own `NewKey` would give it, so a re-run finds it) and starts the
//! tail at add keyslot: the copy, the interim key and the new key need no
//! commit of their own, which keeps a clone at four commits.
//!
//! A volume is made by ONE admission, [`volumes`]' `admit_volume`, whatever
//! its source (`Source::{Nothing, Volume, Snapshot, Backup}`).

pub mod actions;
pub mod audit;
pub(crate) mod backups;
pub(crate) mod db;
pub(crate) mod rekey;
pub mod repo;
pub(crate) mod snapshots;
pub(crate) mod transfers;
pub(crate) mod volumes;

use std::collections::HashSet;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::engine::{key_name, Machine, Transition, Tx};
use crate::error::Result;
use crate::fault::Step;
use crate::model::{Encryption, Provider, RekeyMode};
use crate::service::Service;

pub use db::{Backup, Snapshot, Transfer};

/// A job's state machine: one variant per flow.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Flow {
    /// A new empty volume.
    Create(volumes::Create),
    /// A volume made from another record (clone, from snapshot, restore).
    Make(volumes::Make),
    /// A volume deleted with its key.
    Delete(volumes::Delete),
    /// An existing volume rekeyed in place (`os-rekey`).
    Rekey(rekey::InPlace),
    /// A snapshot taken.
    Snapshot(snapshots::TakeSnapshot),
    /// A backup taken.
    Backup(backups::TakeBackup),
    /// An accepted transfer: the volume moves, then is rekeyed.
    Accept(transfers::Accept),
}

/// The job of a flow.
pub type Job = crate::engine::Job<Flow>;

/// The volume a machine makes or rekeys, as its admission found it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Target {
    pub(crate) volume: String,
    pub(crate) project: String,
    pub(crate) size_gb: u64,
    /// `None`: unencrypted.
    pub(crate) cipher: Option<Cipher>,
    pub(crate) mode: RekeyMode,
}

/// What the rekey and format steps need of an encryption type.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Cipher {
    pub(crate) provider: Provider,
    pub(crate) cipher: String,
    pub(crate) key_bits: u32,
}

impl From<&Encryption> for Cipher {
    fn from(e: &Encryption) -> Self {
        Cipher { provider: e.provider, cipher: e.cipher().to_owned(), key_bits: e.key_size() }
    }
}

impl<M> Transition<M> {
    fn map<N>(self, f: impl FnOnce(M) -> N) -> Transition<N> {
        Transition { tx: self.tx, next: self.next.map(f) }
    }
}

impl Machine for Flow {
    type Cx = Arc<Service>;

    fn kind(&self) -> &'static str {
        match self {
            Flow::Create(_) => "create",
            Flow::Make(m) => m.kind(),
            Flow::Delete(_) => "delete",
            Flow::Rekey(m) => m.kind(),
            Flow::Snapshot(_) => "snapshot",
            Flow::Backup(_) => "backup",
            Flow::Accept(_) => "accept",
        }
    }

    fn step_name(&self) -> Step {
        match self {
            Flow::Create(m) => m.step_name(),
            Flow::Make(m) => m.step_name(),
            Flow::Delete(_) => Step::DeleteData,
            Flow::Rekey(m) => m.tail.step_name(),
            Flow::Snapshot(m) => m.step_name(),
            Flow::Backup(m) => m.step_name(),
            Flow::Accept(m) => m.step_name(),
        }
    }

    fn is_late(&self) -> bool {
        match self {
            Flow::Make(m) => m.tail().is_some_and(rekey::Tail::is_late),
            Flow::Rekey(m) => m.tail.is_late(),
            Flow::Accept(m) => m.is_late(),
            Flow::Create(_) | Flow::Delete(_) | Flow::Snapshot(_) | Flow::Backup(_) => false,
        }
    }

    fn held_keys(&self) -> [Option<&str>; 2] {
        match self {
            Flow::Make(m) => m.held_keys(),
            Flow::Rekey(m) => m.tail.held_keys(),
            Flow::Accept(m) => m.held_keys(),
            Flow::Create(_) | Flow::Delete(_) | Flow::Snapshot(_) | Flow::Backup(_) => [None, None],
        }
    }

    async fn step(self, svc: &Arc<Service>, job: &str) -> Result<Transition<Flow>> {
        Ok(match self {
            Flow::Create(m) => m.step(svc, job).await?.map(Flow::Create),
            Flow::Make(m) => m.step(svc, job).await?.map(Flow::Make),
            Flow::Delete(m) => m.step(svc).await?.map(Flow::Delete),
            Flow::Rekey(m) => m.step(svc, job).await?.map(Flow::Rekey),
            Flow::Snapshot(m) => m.step(svc, job).await?.map(Flow::Snapshot),
            Flow::Backup(m) => m.step(svc, job).await?.map(Flow::Backup),
            Flow::Accept(m) => m.step(svc, job).await?.map(Flow::Accept),
        })
    }

    async fn roll_back(self, svc: &Arc<Service>, job: &str, error: &str) -> Result<Tx> {
        match self {
            Flow::Create(m) => m.roll_back(svc, job, error).await,
            Flow::Make(m) => m.roll_back(svc, job).await,
            Flow::Delete(m) => m.roll_back(svc).await,
            Flow::Rekey(m) => m.roll_back(svc, job).await,
            Flow::Snapshot(m) => m.roll_back(svc, job).await,
            Flow::Backup(m) => m.roll_back(svc, job, error).await,
            Flow::Accept(m) => m.roll_back(svc, job).await,
        }
    }

    async fn give_up(&self, tx: &mut Tx) -> Result<()> {
        let volume = match self {
            Flow::Make(m) => &m.target.volume,
            Flow::Rekey(m) => &m.target.volume,
            Flow::Accept(m) => &m.target.volume,
            // No late states.
            Flow::Create(_) | Flow::Delete(_) | Flow::Snapshot(_) | Flow::Backup(_) => return Ok(()),
        };
        crate::db::set_status(tx, volume, crate::model::status::ERROR).await
    }
}

/// The start of every roll-back: queues for deletion each key job `job`
/// made or holds (`held`) that no record names — except `keep`, a key the
/// volume may already need — and returns the transaction to record the
/// failed states in.
pub(crate) async fn forget_keys(svc: &Service, job: &str, project: &str, held: [Option<&str>; 2], keep: Option<&str>) -> Result<Tx> {
    let mut candidates: Vec<String> = held.iter().flatten().map(|k| (*k).to_owned()).collect();
    // Keys the job made but never recorded (a step failed between making a
    // key and recording it). Looked up before the transaction: a network call.
    match rekey_keys::Project::new(project.to_owned()) {
        Ok(p) => match svc.keys.list_named(&p, &key_name(job, "")).await {
            Ok(made) => candidates.extend(made.into_iter().map(|(id, _)| id.to_string())),
            Err(e) => tracing::warn!(%job, error = %e, "cannot list the failed job's keys; the audit will show any left"),
        },
        Err(e) => tracing::warn!(%job, error = %e, "job of an unusable project"),
    }
    let mut tx = svc.tx().await?;
    let recorded: HashSet<String> = db::all_recorded_keys(&mut tx).await?.into_iter().map(|(k, _, _)| k).collect();
    let mut queued = HashSet::new();
    for k in candidates {
        if recorded.contains(&k) || keep == Some(k.as_str()) || !queued.insert(k.clone()) {
            continue;
        }
        crate::db::queue_key_deletion(&mut tx, &k, project, "unrecorded key of a failed job").await?;
    }
    Ok(tx)
}
