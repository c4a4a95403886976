//! Group commit for an SQLite database in WAL mode.
//!
//! With `synchronous=FULL` every commit waits for its own fsync of the WAL,
//! and commits queue behind the one write lock: on a disk whose fsync takes
//! 3–4 ms that caps a database at a few hundred commits a second, however
//! many jobs run at once. With `synchronous=NORMAL` a commit is written to
//! the WAL (and is safe from a killed process) but not synced, so a power
//! loss may roll it back. [`WalSync::sync`], awaited after such a commit,
//! makes it durable before the caller goes on: it fdatasyncs the WAL file,
//! and every caller whose commit was written before a sync began is served
//! by that one sync. Commit then sync is as durable as a `FULL` commit, and
//! concurrent commits share their fsyncs.
//!
//! Why it is sound: a WAL commit `write(2)`s its frames before `COMMIT`
//! returns, and an fdatasync of the file makes everything written to it
//! before the call durable. SQLite itself syncs the WAL before it
//! checkpoints it into the database file, so a WAL emptied by a checkpoint
//! holds nothing left to sync. The file is opened by path at each sync,
//! never kept open, so a WAL that SQLite deleted and made again (when its
//! last connection closed) is the one synced.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

/// The group-commit barrier of one SQLite database (see the module docs).
#[derive(Debug)]
pub struct WalSync {
    wal: PathBuf,
    /// Tickets handed out: one per commit that asked to be synced.
    requested: AtomicU64,
    /// The highest ticket a finished sync covers.
    synced: tokio::sync::Mutex<u64>,
}

impl WalSync {
    /// The barrier of the database file `db`, whose WAL is `<db>-wal`.
    pub fn new(db: impl Into<PathBuf>) -> Self {
        let mut wal = db.into().into_os_string();
        wal.push("-wal");
        WalSync { wal: wal.into(), requested: AtomicU64::new(0), synced: tokio::sync::Mutex::new(0) }
    }

    /// Makes every commit that returned before this call durable.
    pub async fn sync(&self) -> std::io::Result<()> {
        let ticket = self.requested.fetch_add(1, Ordering::SeqCst) + 1;
        let mut synced = self.synced.lock().await;
        if *synced >= ticket {
            return Ok(()); // a sync that began after our commit has finished
        }
        // Every ticket up to here was taken after its commit returned, so a
        // sync starting now covers all of them.
        let upto = self.requested.load(Ordering::SeqCst);
        let wal = self.wal.clone();
        tokio::task::spawn_blocking(move || match std::fs::File::open(&wal) {
            Ok(f) => f.sync_data(),
            // No WAL: the last connection checkpointed and removed it, which
            // SQLite syncs itself.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        })
        .await
        .map_err(std::io::Error::other)??;
        *synced = upto;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn concurrent_syncs_share_fsyncs_and_a_missing_wal_is_fine() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("x.sqlite");
        let s = std::sync::Arc::new(WalSync::new(&db));
        s.sync().await.unwrap(); // no WAL yet
        std::fs::write(dir.path().join("x.sqlite-wal"), b"frames").unwrap();
        let all: Vec<_> = (0..32).map(|_| tokio::spawn({
            let s = s.clone();
            async move { s.sync().await }
        })).collect();
        for t in all {
            t.await.unwrap().unwrap();
        }
        assert_eq!(*s.synced.lock().await, 33, "the last sync covers every ticket");
    }
}
