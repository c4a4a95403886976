//! Every other path that makes or hands over a volume — from a snapshot, a
//! backup restore, a transfer accept — and the key-independence audit.
//!
//! Each path is a job of the operation engine whose first steps are its own
//! (take the data, make the interim key) and whose last steps are the SAME
//! rekey steps as a clone (`engine::new_key` … `engine::destroy_old_keyslot`):
//! the job kinds for which [`crate::model::JobKind::rekeys`] is true.
//!
//! | kind            | `volume_id` of the job | `source_id`  | own steps                                      |
//! |-----------------|------------------------|--------------|------------------------------------------------|
//! | `snapshot`      | snapshot id            | volume id    | `snapshot_key`, `snapshot_data`                |
//! | `from_snapshot` | new volume             | snapshot id  | `snapshot_clone_data`, `snapshot_interim_key`  |
//! | `backup`        | backup id              | volume id    | `backup_key`, `backup_data`                    |
//! | `restore`       | target volume          | backup id    | `restore_key`, `restore_data`                  |
//! | `accept`        | the volume             | transfer id  | `accept_move`                                  |

pub mod audit;
pub(crate) mod backups;
pub(crate) mod db;
pub mod repo;
pub(crate) mod snapshots;
pub(crate) mod transfers;

use std::sync::Arc;

use crate::db::Conn;
use crate::error::{Result, ServiceError};
use crate::model::{Job, JobKind};
use crate::service::Service;

pub use db::{Backup, Snapshot, Transfer};

/// The first step of a job kind this module owns.
pub(crate) fn first_step(kind: JobKind) -> &'static str {
    match kind {
        JobKind::Snapshot => "snapshot_key",
        JobKind::FromSnapshot => "snapshot_clone_data",
        JobKind::Backup => "backup_key",
        JobKind::Restore => "restore_key",
        JobKind::Accept => "accept_move",
        // The engine's own kinds never get here.
        JobKind::Create | JobKind::Clone | JobKind::Delete | JobKind::RekeyKeyslot | JobKind::RekeyVolumeKey => {
            crate::engine::DONE
        }
    }
}

/// Whether this module runs (some) steps of `kind`.
pub(crate) fn handles(kind: JobKind) -> bool {
    matches!(kind, JobKind::Snapshot | JobKind::FromSnapshot | JobKind::Backup | JobKind::Restore | JobKind::Accept)
}

/// Runs the job's current step (one of this module's own steps).
pub(crate) async fn run_step(svc: &Arc<Service>, job: &mut Job) -> Result<()> {
    let step = job.step.clone();
    match (job.kind, step.as_str()) {
        (JobKind::Snapshot, "snapshot_key") => snapshots::snapshot_key(svc, job).await,
        (JobKind::Snapshot, "snapshot_data") => snapshots::snapshot_data(svc, job).await,
        (JobKind::FromSnapshot, "snapshot_clone_data") => snapshots::clone_data(svc, job).await,
        (JobKind::FromSnapshot, "snapshot_interim_key") => snapshots::interim_key(svc, job).await,
        (JobKind::Backup, "backup_key") => backups::backup_key(svc, job).await,
        (JobKind::Backup, "backup_data") => backups::backup_data(svc, job).await,
        (JobKind::Restore, "restore_key") => backups::restore_key(svc, job).await,
        (JobKind::Restore, "restore_data") => backups::restore_data(svc, job).await,
        (JobKind::Accept, "accept_move") => transfers::accept_move(svc, job).await,
        (kind, step) => Err(ServiceError::Internal(format!("job {} ({}) at unknown step {step:?}", job.id, kind.as_str()))),
    }
}

/// Recorded with a job's last step, in the same transaction: the states of
/// the records other than the job's volume.
pub(crate) async fn on_done(c: &mut Conn, job: &Job) -> Result<()> {
    match job.kind {
        JobKind::Snapshot => {
            db::set_snapshot_status(c, &job.volume_id, "available").await?;
        }
        JobKind::Backup => {
            db::set_backup_status(c, &job.volume_id, "available", None).await?;
            if let Some(v) = &job.source_id {
                crate::db::set_status(c, v, crate::model::status::AVAILABLE).await?;
            }
        }
        JobKind::Restore => {
            if let Some(b) = &job.source_id {
                db::set_backup_status(c, b, "available", None).await?;
            }
        }
        _ => {}
    }
    Ok(())
}

/// Recorded with a job's roll-back (which failed with `error`), in the same transaction.
pub(crate) async fn on_roll_back(c: &mut Conn, job: &Job, error: &str) -> Result<()> {
    match job.kind {
        JobKind::Snapshot => {
            db::set_snapshot_status(c, &job.volume_id, "error").await?;
        }
        JobKind::Backup => {
            db::set_backup_status(c, &job.volume_id, "error", Some(&format!("backup failed: {error}"))).await?;
            if let Some(v) = &job.source_id {
                crate::db::set_status(c, v, crate::model::status::AVAILABLE).await?;
            }
        }
        JobKind::Restore => {
            // A corrupt backup stays `error` (with its reason); otherwise it is usable again.
            if let Some(b) = db::get_backup(c, job.source_id.as_deref().unwrap_or_default()).await? {
                if b.status == "restoring" {
                    db::set_backup_status(c, &b.id, "available", None).await?;
                }
            }
        }
        JobKind::Accept if job.step == "accept_move" => {
            // Nothing moved: the transfer is still open, the volume still the donor's.
            crate::db::set_status(c, &job.volume_id, transfers::AWAITING_TRANSFER).await?;
            if let Some(t) = &job.source_id {
                db::unclaim_transfer(c, t).await?;
            }
        }
        _ => {}
    }
    Ok(())
}
