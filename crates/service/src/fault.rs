//! Fault injection for crash tests.
//!
//! `REKEY_CRASH_AT=<point>` makes the process call `std::process::abort()`
//! (no destructors, no flush: as abrupt as `kill -9`) when the job engine
//! reaches that point. A point is a typed [`Point`]: a job state ([`Step`])
//! and a phase — `<step>` means the state's action happened but is not yet
//! recorded, `<step>.recorded` that the database now holds the next state,
//! `<step>.start` that the action is about to begin. Tests build the value
//! from the types (`Point::recorded(Step::AddKeyslot).to_string()`), so a
//! renamed state fails to compile instead of silently testing nothing. Only
//! tests set this; an unset or unknown value does nothing. See docs/service.md.
//!
//! `REKEY_STALL_AT=<point>:<milliseconds>` instead pauses the job there, so a
//! test can act while a job is in progress (e.g. delete a clone's source).

use std::fmt;
use std::sync::OnceLock;

/// The environment variable naming the crash point.
pub const CRASH_ENV: &str = "REKEY_CRASH_AT";

/// The label of a job state: what a state machine of the engine is about to
/// do. Each flow's state enum maps its states onto these; the engine logs,
/// persists (for display) and injects faults by them, and never dispatches on
/// them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Step {
    /// Create: the backend allocates the volume (and its key is made).
    Allocate,
    /// Create: the LUKS header is written.
    Format,
    /// Clone / from snapshot: the backend copies the source's data.
    CloneData,
    /// Clone / from snapshot: the new volume's copy of the source's key.
    InterimKey,
    /// Rekey tail 1: a new key-manager secret.
    NewKey,
    /// Rekey tail 2: a keyslot for it (or the re-encryption, volume-key mode).
    AddKeyslot,
    /// Rekey tail 3: the record names the new key.
    Persist,
    /// Rekey tail 4: the old keyslot is wiped.
    DestroyOldKeyslot,
    /// Key GC (rekey tail 5): a queued key is deleted.
    DeleteInterimKey,
    /// Delete: the backend deletes the data.
    DeleteData,
    /// Snapshot: its own copy of the volume's key.
    SnapshotKey,
    /// Snapshot: the point-in-time copy.
    SnapshotData,
    /// Backup: its own copy of the volume's key.
    BackupKey,
    /// Backup: chunks and manifest.
    BackupData,
    /// Restore: the volume's interim copy of the backup's key.
    RestoreKey,
    /// Restore: the backup's bytes onto the volume.
    RestoreData,
    /// Transfer accept: the volume and its snapshots move to the recipient.
    AcceptMove,
    /// Transfer accept: a moved snapshot is cloned into a scratch volume,
    /// which the rekey tail then gives a new key.
    SnapshotClone,
    /// Transfer accept: the old snapshot is replaced by a snapshot of the
    /// rekeyed scratch volume under the same id.
    SnapshotReplace,
    /// `rekey key migrate`: a record's key is copied to the target manager.
    MigrateCopy,
    /// `rekey key migrate`: the record names the copy.
    MigrateRecord,
}

impl Step {
    /// Every step, for parsing.
    pub const ALL: &'static [Step] = &[
        Step::Allocate,
        Step::Format,
        Step::CloneData,
        Step::InterimKey,
        Step::NewKey,
        Step::AddKeyslot,
        Step::Persist,
        Step::DestroyOldKeyslot,
        Step::DeleteInterimKey,
        Step::DeleteData,
        Step::SnapshotKey,
        Step::SnapshotData,
        Step::BackupKey,
        Step::BackupData,
        Step::RestoreKey,
        Step::RestoreData,
        Step::AcceptMove,
        Step::SnapshotClone,
        Step::SnapshotReplace,
        Step::MigrateCopy,
        Step::MigrateRecord,
    ];

    /// The spelling in logs, the jobs table and fault-injection values.
    pub fn as_str(self) -> &'static str {
        match self {
            Step::Allocate => "allocate",
            Step::Format => "format",
            Step::CloneData => "clone_data",
            Step::InterimKey => "interim_key",
            Step::NewKey => "new_key",
            Step::AddKeyslot => "add_keyslot",
            Step::Persist => "persist",
            Step::DestroyOldKeyslot => "destroy_old_keyslot",
            Step::DeleteInterimKey => "delete_interim_key",
            Step::DeleteData => "delete_data",
            Step::SnapshotKey => "snapshot_key",
            Step::SnapshotData => "snapshot_data",
            Step::BackupKey => "backup_key",
            Step::BackupData => "backup_data",
            Step::RestoreKey => "restore_key",
            Step::RestoreData => "restore_data",
            Step::AcceptMove => "accept_move",
            Step::SnapshotClone => "snapshot_clone",
            Step::SnapshotReplace => "snapshot_replace",
            Step::MigrateCopy => "migrate_copy",
            Step::MigrateRecord => "migrate_record",
        }
    }

    /// From [`Self::as_str`].
    pub fn parse(s: &str) -> Option<Step> {
        Step::ALL.iter().copied().find(|p| p.as_str() == s)
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where in a step a fault point sits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Phase {
    /// The action is about to start.
    Start,
    /// The action happened; its record is not yet committed.
    Done,
    /// The record (the next state) is committed.
    Recorded,
}

/// A fault-injection point: a step and a phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Point {
    /// The job state.
    pub step: Step,
    /// Where in it.
    pub phase: Phase,
}

impl Point {
    /// `step`'s action about to begin.
    pub const fn start(step: Step) -> Point {
        Point { step, phase: Phase::Start }
    }
    /// `step`'s action done, not yet recorded.
    pub const fn done(step: Step) -> Point {
        Point { step, phase: Phase::Done }
    }
    /// `step` recorded.
    pub const fn recorded(step: Step) -> Point {
        Point { step, phase: Phase::Recorded }
    }

    /// From the spelling [`fmt::Display`] gives.
    pub fn parse(s: &str) -> Option<Point> {
        let (step, phase) = match s.rsplit_once('.') {
            Some((st, "recorded")) => (st, Phase::Recorded),
            Some((st, "start")) => (st, Phase::Start),
            Some(_) => return None,
            None => (s, Phase::Done),
        };
        Some(Point { step: Step::parse(step)?, phase })
    }
}

impl fmt::Display for Point {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.phase {
            Phase::Start => write!(f, "{}.start", self.step),
            Phase::Done => write!(f, "{}", self.step),
            Phase::Recorded => write!(f, "{}.recorded", self.step),
        }
    }
}

/// Every point the clone (rekey) flow passes, in order.
pub const CLONE_POINTS: &[Point] = &[
    Point::done(Step::CloneData),
    Point::recorded(Step::CloneData),
    Point::done(Step::AddKeyslot),
    Point::recorded(Step::AddKeyslot),
    Point::done(Step::Persist),
    Point::recorded(Step::Persist),
    Point::done(Step::DestroyOldKeyslot),
    Point::recorded(Step::DestroyOldKeyslot),
    Point::done(Step::DeleteInterimKey),
];

fn target() -> Option<Point> {
    static TARGET: OnceLock<Option<Point>> = OnceLock::new();
    *TARGET.get_or_init(|| std::env::var(CRASH_ENV).ok().as_deref().and_then(Point::parse))
}

/// The environment variable naming a point to pause at, `<point>:<ms>`.
pub const STALL_ENV: &str = "REKEY_STALL_AT";

fn stall() -> Option<(Point, u64)> {
    static STALL: OnceLock<Option<(Point, u64)>> = OnceLock::new();
    *STALL.get_or_init(|| {
        let v = std::env::var(STALL_ENV).ok()?;
        let (p, ms) = v.rsplit_once(':')?;
        Some((Point::parse(p)?, ms.parse().ok()?))
    })
}

/// Aborts the process if `REKEY_CRASH_AT` names `point`; pauses if
/// `REKEY_STALL_AT` does.
pub async fn point(point: Point) {
    if target() == Some(point) {
        eprintln!("rekey: {CRASH_ENV}={point}: aborting (fault injection)");
        std::process::abort();
    }
    if let Some((p, ms)) = stall() {
        if p == point {
            tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn points_round_trip() {
        for s in Step::ALL {
            for p in [Point::start(*s), Point::done(*s), Point::recorded(*s)] {
                assert_eq!(Point::parse(&p.to_string()), Some(p));
            }
        }
        assert_eq!(Point::parse("add_keyslot.later"), None);
        assert_eq!(Point::parse("nothing"), None);
    }
}
