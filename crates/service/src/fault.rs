//! Fault injection for crash tests.
//!
//! `REKEY_CRASH_AT=<point>` makes the process call `std::process::abort()`
//! (no destructors, no flush: as abrupt as `kill -9`) when the job engine
//! reaches that named point. Points are named after the step just done:
//! `<step>` means its action happened but is not yet recorded in the
//! database, `<step>.recorded` means the database now says so. Only tests set
//! this; an unset or unknown value does nothing. See docs/service.md.
//!
//! `REKEY_STALL_AT=<point>:<milliseconds>` instead pauses the job there, so a
//! test can act while a job is in progress (e.g. delete a clone's source).

use std::sync::OnceLock;

/// The environment variable naming the crash point.
pub const CRASH_ENV: &str = "REKEY_CRASH_AT";

/// Every point the clone (rekey) flow passes, in order.
pub const CLONE_POINTS: &[&str] = &[
    "clone_data",
    "clone_data.recorded",
    "interim_key",
    "interim_key.recorded",
    "new_key",
    "new_key.recorded",
    "add_keyslot",
    "add_keyslot.recorded",
    "persist",
    "persist.recorded",
    "destroy_old_keyslot",
    "destroy_old_keyslot.recorded",
    "delete_interim_key",
];

fn target() -> Option<&'static str> {
    static TARGET: OnceLock<Option<String>> = OnceLock::new();
    TARGET.get_or_init(|| std::env::var(CRASH_ENV).ok().filter(|s| !s.is_empty())).as_deref()
}

/// The environment variable naming a point to pause at, `<point>:<ms>`.
pub const STALL_ENV: &str = "REKEY_STALL_AT";

fn stall() -> Option<(&'static str, u64)> {
    static STALL: OnceLock<Option<(String, u64)>> = OnceLock::new();
    STALL
        .get_or_init(|| {
            let v = std::env::var(STALL_ENV).ok()?;
            let (p, ms) = v.rsplit_once(':')?;
            Some((p.to_owned(), ms.parse().ok()?))
        })
        .as_ref()
        .map(|(p, ms)| (p.as_str(), *ms))
}

/// Aborts the process if `REKEY_CRASH_AT` names `point`; pauses if
/// `REKEY_STALL_AT` does.
pub async fn point(point: &str) {
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
