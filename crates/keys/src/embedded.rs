//! The embedded key store: one SQLite file, keys wrapped under a KEK.
//!
//! Each row holds one key wrapped with AES-256-GCM under the key-encryption
//! key, a fresh 96-bit nonce per key. The additional authenticated data binds
//! the row's project, id, algorithm and bit length, so a row copied to another
//! project or id (or edited) fails to unwrap instead of yielding its key.
//!
//! A `meta` row holds a known value wrapped under the KEK; opening the store
//! with any other KEK fails at once rather than at the first volume unlock.
//!
//! `rotate_kek` re-wraps every row under a new KEK without a window in
//! which a key is unreadable: the new KEK is written to `<kek file>.new`
//! first, each row records the id (a hash) of the KEK that wraps it and is
//! re-wrapped in its own small transaction, the KEK check flips to the new
//! KEK only once no row is left under the old one, and the `.new` file is
//! renamed over the old KEK file last. Opening the store at any point in
//! between loads both files and reads every row with the KEK it names.
//!
//! SQLite is reached through sqlx (async, the same driver and the same
//! `libsqlite3-sys` the service uses for its own database: two different
//! SQLite bindings in one binary would not link). WAL with
//! `synchronous=NORMAL` and a [`WalSync`] after every commit makes every
//! committed key durable before the call returns, with concurrent commits
//! sharing their fsyncs; `secure_delete` overwrites deleted rows.

use std::fmt;
use std::fs::{self, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use openssl::symm::{decrypt_aead, encrypt_aead, Cipher};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use zeroize::Zeroizing;

use crate::config::{EmbeddedConfig, KEK_ENV};
use crate::error::KeyError;
use crate::types::{check_name, check_spec, check_stored, KeyBytes, KeyId, Project};
use crate::wal_sync::WalSync;
use crate::KeyManager;

const KEK_LEN: usize = 32;
const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;
const AAD_DOMAIN: &[u8] = b"rekey-keys/v1/key";
const KEK_CHECK_AAD: &[u8] = b"rekey-keys/v1/kek-check";
const KEK_CHECK_PLAIN: &[u8] = b"rekey embedded key store";
const KEK_ID_DOMAIN: &[u8] = b"rekey-keys/v1/kek-id";
/// Rows re-wrapped per transaction by `rotate_kek`.
const ROTATE_BATCH: i64 = 8;
const SCHEMA_VERSION: &str = "1";

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta (
    name  TEXT PRIMARY KEY,
    value BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS keys (
    id         TEXT PRIMARY KEY,
    project    TEXT NOT NULL,
    algorithm  TEXT NOT NULL,
    bit_length INTEGER NOT NULL,
    nonce      BLOB NOT NULL,
    wrapped    BLOB NOT NULL,
    created_ms INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS keys_by_project ON keys (project, created_ms);
";

/// The key-encryption key.
struct Kek(Zeroizing<[u8; KEK_LEN]>);

impl fmt::Debug for Kek {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Kek([REDACTED])")
    }
}

/// Keys in a local SQLite file, wrapped under a KEK. See the module docs.
#[derive(Debug)]
pub struct EmbeddedKeyManager {
    pool: SqlitePool,
    /// Where writes run: one connection, so this process's writers queue
    /// in order here instead of each polling SQLite's busy handler (sleeps
    /// of up to 100 ms while the lock is free most of that time) with a
    /// connection of `pool` held, which readers then wait for.
    writer: SqlitePool,
    /// Writers of every process that opens this store take turns here.
    turn: WriteTurn,
    /// The KEK the store's check verifies; new rows are wrapped under it.
    kek: Kek,
    /// The next KEK while a rotation is under way (`<kek file>.new`).
    pending: Option<Kek>,
    db_path: PathBuf,
    wal: WalSync,
}

/// The turn a writer takes before `BEGIN IMMEDIATE`: an exclusive `flock`
/// on `<db>-writer.lock`, held to the commit. Without it the writers of
/// several processes on one store (nodes sharing a data directory) meet
/// only in SQLite's busy handler, which polls with sleeps of up to 100 ms;
/// a blocked `flock` wakes the next writer as soon as the lock is free. A
/// separate file, because on NFS `flock` is emulated with the same byte-range
/// locks SQLite takes on the database. Within a process the single writer
/// connection already makes writers take turns.
#[derive(Debug)]
struct WriteTurn {
    file: std::sync::Arc<fs::File>,
}

/// A writer's turn, given back when dropped.
struct Turn(std::sync::Arc<fs::File>);

impl WriteTurn {
    fn open(db: &Path) -> Result<Self, KeyError> {
        let mut path = db.as_os_str().to_owned();
        path.push("-writer.lock");
        let path = PathBuf::from(path);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .map_err(|e| KeyError::storage("open writer lock", io_cause(&path, e)))?;
        Ok(WriteTurn { file: std::sync::Arc::new(file) })
    }

    async fn take(&self) -> io::Result<Turn> {
        let file = self.file.clone();
        // Free (no other process writing): no thread to wait on.
        match rustix::fs::flock(&*file, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => return Ok(Turn(file)),
            Err(e) if e == rustix::io::Errno::WOULDBLOCK => {}
            Err(e) => return Err(e.into()),
        }
        tokio::task::spawn_blocking(move || {
            rustix::fs::flock(&*file, rustix::fs::FlockOperation::LockExclusive)?;
            Ok(Turn(file))
        })
        .await
        .map_err(io::Error::other)?
    }
}

/// A write's connection and turn, given back in that order when dropped
/// (fields drop in declaration order: the turn first).
struct Writing {
    _turn: Turn,
    conn: sqlx::pool::PoolConnection<sqlx::Sqlite>,
}

impl Writing {
    async fn begin(&mut self, op: &'static str) -> Result<sqlx::Transaction<'_, sqlx::Sqlite>, KeyError> {
        sqlx::Connection::begin_with(&mut *self.conn, "BEGIN IMMEDIATE").await.map_err(db(op))
    }
}

impl Drop for Turn {
    fn drop(&mut self) {
        // Unlocking never blocks; closing the store would release it too.
        let _ = rustix::fs::flock(&*self.0, rustix::fs::FlockOperation::Unlock);
    }
}

/// What `rotate_kek` did.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct KekRotation {
    /// Rows re-wrapped by this run (an interrupted earlier run's are not
    /// counted again).
    pub rewrapped: u64,
    /// Rows in the store.
    pub total: u64,
    /// The KEK file that now holds the new KEK.
    pub kek_path: PathBuf,
}

impl EmbeddedKeyManager {
    /// Makes the commits made so far durable (see [`WalSync`]).
    async fn durable(&self, op: &'static str) -> Result<(), KeyError> {
        self.wal.sync().await.map_err(|e| KeyError::storage(op, io_cause(&self.db_path, e)))
    }

    /// Opens (creating if needed) the store `config` describes.
    ///
    /// The KEK comes from `config.kek_hex`, else `REKEY_KEK`, else the KEK
    /// file; a missing KEK file is created (0600) only for a store that holds
    /// no KEK check yet, so a lost KEK file is an error, never a silent new KEK.
    pub async fn open(config: &EmbeddedConfig) -> Result<Self, KeyError> {
        let db_path = config.db_path.clone();
        if let Some(dir) = db_path.parent().filter(|d| !d.as_os_str().is_empty()) {
            fs::create_dir_all(dir)
                .map_err(|e| KeyError::storage("create data directory", io_cause(dir, e)))?;
        }
        // Create the file ourselves so it starts 0600; SQLite gives its -wal
        // and -shm files the same mode.
        OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&db_path)
            .map_err(|e| KeyError::storage("create database", io_cause(&db_path, e)))?;

        let options = SqliteConnectOptions::new()
            .filename(&db_path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(10))
            .pragma("secure_delete", "ON");
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options.clone())
            .await
            .map_err(|e| {
                KeyError::storage("open database", format!("{}: {e}", db_path.display()))
            })?;
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options)
            .await
            .map_err(|e| {
                KeyError::storage("open database", format!("{}: {e}", db_path.display()))
            })?;

        // IMMEDIATE: a read-then-write transaction in WAL mode would fail at once
        // (not wait) if the running service wrote in between.
        let mut tx = pool.begin_with("BEGIN IMMEDIATE").await.map_err(db("migrate"))?;
        sqlx::raw_sql(SCHEMA)
            .execute(&mut *tx)
            .await
            .map_err(db("migrate"))?;
        // Key names came after version 1's first release: an additive column.
        let has_name: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM pragma_table_info('keys') WHERE name = 'name'")
                .fetch_one(&mut *tx)
                .await
                .map_err(db("migrate"))?;
        if has_name == 0 {
            sqlx::query("ALTER TABLE keys ADD COLUMN name TEXT")
                .execute(&mut *tx)
                .await
                .map_err(db("migrate"))?;
        }
        // Which KEK wraps a row (NULL: the store's first KEK), since KEK
        // rotation: an additive column too.
        let has_kek_id: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM pragma_table_info('keys') WHERE name = 'kek_id'")
                .fetch_one(&mut *tx)
                .await
                .map_err(db("migrate"))?;
        if has_kek_id == 0 {
            sqlx::query("ALTER TABLE keys ADD COLUMN kek_id TEXT")
                .execute(&mut *tx)
                .await
                .map_err(db("migrate"))?;
        }
        sqlx::query("CREATE INDEX IF NOT EXISTS keys_by_name ON keys (project, name)")
            .execute(&mut *tx)
            .await
            .map_err(db("migrate"))?;
        sqlx::query("INSERT OR IGNORE INTO meta (name, value) VALUES ('schema_version', ?)")
            .bind(SCHEMA_VERSION.as_bytes())
            .execute(&mut *tx)
            .await
            .map_err(db("migrate"))?;
        tx.commit().await.map_err(db("migrate"))?;

        let version: Vec<u8> =
            sqlx::query_scalar("SELECT value FROM meta WHERE name = 'schema_version'")
                .fetch_one(&pool)
                .await
                .map_err(db("read schema version"))?;
        if version != SCHEMA_VERSION.as_bytes() {
            return Err(KeyError::invalid(
                "key store",
                format!(
                    "{} has schema version {:?}, this build knows {SCHEMA_VERSION}",
                    db_path.display(),
                    String::from_utf8_lossy(&version)
                ),
            ));
        }

        let check: Option<Vec<u8>> =
            sqlx::query_scalar("SELECT value FROM meta WHERE name = 'kek_check'")
                .fetch_optional(&pool)
                .await
                .map_err(db("read KEK check"))?;

        let (mut kek, source) = load_kek(config, check.is_some())?;
        // A rotation in progress (or stopped by a crash) left its new KEK
        // next to the KEK file; only a file KEK is ever rotated.
        let mut pending = if source.starts_with("file ") {
            match read_kek_file(&pending_kek_path(config)) {
                Ok(k) => Some(k),
                Err(KekFileError::Missing) => None,
                Err(KekFileError::Bad(e)) => return Err(e),
            }
        } else {
            None
        };
        let check = match check {
            Some(c) => c,
            None => {
                // First open: record what this KEK wraps to. Two processes may
                // race here; whichever insert wins, both verify against it.
                let fresh = wrap(&kek, KEK_CHECK_AAD, KEK_CHECK_PLAIN)?;
                sqlx::query("INSERT OR IGNORE INTO meta (name, value) VALUES ('kek_check', ?)")
                    .bind(fresh)
                    .execute(&pool)
                    .await
                    .map_err(db("write KEK check"))?;
                sqlx::query_scalar("SELECT value FROM meta WHERE name = 'kek_check'")
                    .fetch_one(&pool)
                    .await
                    .map_err(db("read KEK check"))?
            }
        };
        if unwrap(&kek, KEK_CHECK_AAD, &check).is_none() {
            // A rotation that flipped the check but died before renaming the
            // new KEK file over the old one.
            if let Some(new) = pending.take_if(|p| unwrap(p, KEK_CHECK_AAD, &check).is_some()) {
                tracing::info!(db = %db_path.display(), "the KEK check names the pending KEK of an unfinished rotation; using it");
                kek = new;
            }
        }
        if unwrap(&kek, KEK_CHECK_AAD, &check).is_none() {
            return Err(KeyError::invalid(
                "key-encryption key",
                format!(
                    "the KEK from {source} is not the one key store {} was created with",
                    db_path.display()
                ),
            ));
        }
        tracing::info!(db = %db_path.display(), kek_source = %source, "opened embedded key store");
        let wal = WalSync::new(&db_path);
        let turn = WriteTurn::open(&db_path)?;
        Ok(EmbeddedKeyManager { pool, writer, turn, kek, pending, db_path, wal })
    }

    /// This process's writer connection and the turn of every process's
    /// writers ([`WriteTurn`]), in that order; dropping it gives both back
    /// (do so before [`Self::durable`], so the next writer need not wait
    /// for this one's sync).
    async fn write(&self, op: &'static str) -> Result<Writing, KeyError> {
        let conn = self.writer.acquire().await.map_err(db(op))?;
        let turn = self.turn.take().await.map_err(|e| KeyError::storage(op, io_cause(&self.db_path, e)))?;
        Ok(Writing { _turn: turn, conn })
    }

    /// The database file.
    pub fn db_path(&self) -> &Path {
        &self.db_path
    }

    /// A row's key, unwrapped with the KEK it names (the pending one during
    /// a rotation), else with the other.
    fn unwrap_row(&self, row_kek: Option<&str>, aad: &[u8], blob: &[u8]) -> Option<KeyBytes> {
        let named_pending = self
            .pending
            .as_ref()
            .filter(|p| row_kek == Some(kek_id(p).as_str()));
        let order = match named_pending {
            Some(p) => [Some(p), Some(&self.kek)],
            None => [Some(&self.kek), self.pending.as_ref()],
        };
        order.into_iter().flatten().find_map(|k| unwrap(k, aad, blob))
    }

    async fn insert(
        &self,
        project: &Project,
        name: Option<&str>,
        key: &KeyBytes,
        algorithm: &str,
        bit_length: u32,
    ) -> Result<KeyId, KeyError> {
        let id = KeyId::random();
        let blob = wrap(
            &self.kek,
            &aad(project, &id, algorithm, bit_length),
            key.expose(),
        )?;
        let (nonce, wrapped) = blob.split_at(NONCE_LEN);
        let mut write = self.write("store key").await?;
        let mut tx = write.begin("store key").await?;
        sqlx::query(
            "INSERT INTO keys (id, project, name, algorithm, bit_length, nonce, wrapped, created_ms, kek_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(id.as_str())
        .bind(project.as_str())
        .bind(name)
        .bind(algorithm)
        .bind(i64::from(bit_length))
        .bind(nonce)
        .bind(wrapped)
        .bind(now_ms())
        .bind(kek_id(&self.kek))
        .execute(&mut *tx)
        .await
        .map_err(db("store key"))?;
        tx.commit().await.map_err(db("store key"))?;
        drop(write);
        self.durable("store key").await?;
        Ok(id)
    }
}

#[async_trait]
impl KeyManager for EmbeddedKeyManager {
    fn backend(&self) -> &'static str {
        "embedded"
    }

    async fn create_named_key(
        &self,
        project: &Project,
        name: Option<&str>,
        algorithm: &str,
        bit_length: u32,
    ) -> Result<KeyId, KeyError> {
        check_spec(algorithm, bit_length)?;
        name.map(check_name).transpose()?;
        let key = KeyBytes::random(bit_length as usize / 8)?;
        let id = self.insert(project, name, &key, algorithm, bit_length).await?;
        tracing::info!(backend = "embedded", %project, key_id = %id, algorithm, bit_length, "created key");
        Ok(id)
    }

    async fn get_key(&self, project: &Project, id: &KeyId) -> Result<KeyBytes, KeyError> {
        let row: Option<(String, i64, Vec<u8>, Vec<u8>, Option<String>)> = sqlx::query_as(
            "SELECT algorithm, bit_length, nonce, wrapped, kek_id FROM keys WHERE id = ? AND project = ?",
        )
        .bind(id.as_str())
        .bind(project.as_str())
        .fetch_optional(&self.pool)
        .await
        .map_err(db("get key"))?;
        let Some((algorithm, bit_length, nonce, wrapped, row_kek)) = row else {
            tracing::debug!(backend = "embedded", %project, key_id = %id, "key not found");
            return Err(KeyError::NotFound {
                project: project.clone(),
                id: id.clone(),
            });
        };
        let integrity = || KeyError::Integrity {
            project: project.clone(),
            id: id.clone(),
        };
        let bit_length = u32::try_from(bit_length).map_err(|_| integrity())?;
        let mut blob = nonce;
        blob.extend_from_slice(&wrapped);
        let key = self
            .unwrap_row(row_kek.as_deref(), &aad(project, id, &algorithm, bit_length), &blob)
            .ok_or_else(integrity)?;
        if key.len() as u64 * 8 != u64::from(bit_length) {
            return Err(integrity());
        }
        tracing::debug!(backend = "embedded", %project, key_id = %id, "read key");
        Ok(key)
    }

    async fn store_named_key(
        &self,
        project: &Project,
        name: Option<&str>,
        key: &KeyBytes,
        algorithm: &str,
        bit_length: u32,
    ) -> Result<KeyId, KeyError> {
        check_stored(key, algorithm, bit_length)?;
        name.map(check_name).transpose()?;
        let id = self.insert(project, name, key, algorithm, bit_length).await?;
        tracing::info!(backend = "embedded", %project, key_id = %id, algorithm, bit_length, "stored key");
        Ok(id)
    }

    async fn delete_key(&self, project: &Project, id: &KeyId) -> Result<(), KeyError> {
        let mut write = self.write("delete key").await?;
        let mut tx = write.begin("delete key").await?;
        let done = sqlx::query("DELETE FROM keys WHERE id = ? AND project = ?")
            .bind(id.as_str())
            .bind(project.as_str())
            .execute(&mut *tx)
            .await
            .map_err(db("delete key"))?;
        tx.commit().await.map_err(db("delete key"))?;
        drop(write);
        self.durable("delete key").await?;
        if done.rows_affected() == 0 {
            return Err(KeyError::NotFound {
                project: project.clone(),
                id: id.clone(),
            });
        }
        tracing::info!(backend = "embedded", %project, key_id = %id, "deleted key");
        Ok(())
    }

    async fn exists(&self, project: &Project, id: &KeyId) -> Result<bool, KeyError> {
        let found: Option<i64> =
            sqlx::query_scalar("SELECT 1 FROM keys WHERE id = ? AND project = ?")
                .bind(id.as_str())
                .bind(project.as_str())
                .fetch_optional(&self.pool)
                .await
                .map_err(db("look up key"))?;
        Ok(found.is_some())
    }

    async fn list(&self, project: &Project) -> Result<Vec<KeyId>, KeyError> {
        let ids: Vec<String> =
            sqlx::query_scalar("SELECT id FROM keys WHERE project = ? ORDER BY created_ms, rowid")
                .bind(project.as_str())
                .fetch_all(&self.pool)
                .await
                .map_err(db("list keys"))?;
        ids.iter().map(|s| KeyId::parse(s)).collect()
    }

    async fn find_named(&self, project: &Project, name: &str) -> Result<Option<KeyId>, KeyError> {
        check_name(name)?;
        let id: Option<String> = sqlx::query_scalar(
            "SELECT id FROM keys WHERE project = ? AND name = ? ORDER BY created_ms, rowid LIMIT 1",
        )
        .bind(project.as_str())
        .bind(name)
        .fetch_optional(&self.pool)
        .await
        .map_err(db("find key"))?;
        id.map(|s| KeyId::parse(&s)).transpose()
    }

    async fn list_named(&self, project: &Project, prefix: &str) -> Result<Vec<(KeyId, String)>, KeyError> {
        let rows: Vec<(String, String)> = sqlx::query_as(
            "SELECT id, name FROM keys WHERE project = ? AND name IS NOT NULL ORDER BY created_ms, rowid",
        )
        .bind(project.as_str())
        .fetch_all(&self.pool)
        .await
        .map_err(db("list keys"))?;
        rows.into_iter()
            .filter(|(_, n)| n.starts_with(prefix))
            .map(|(id, n)| Ok((KeyId::parse(&id)?, n)))
            .collect()
    }
}

/// Re-wraps every key of the store `config` describes under a new KEK and
/// replaces its KEK file; see the module docs for why a crash at any point
/// leaves every key readable. Resumes an interrupted rotation. Run it with
/// the service stopped: a service started before the rotation ends keeps
/// wrapping new keys under the old KEK.
///
/// `progress(done, total)` is called after every batch.
pub async fn rotate_kek(
    config: &EmbeddedConfig,
    mut progress: impl FnMut(u64, u64),
) -> Result<KekRotation, KeyError> {
    if config.kek_hex.is_some() || std::env::var_os(KEK_ENV).is_some() {
        return Err(KeyError::invalid(
            "key-encryption key",
            format!("rotate-kek replaces a KEK file; this store's KEK comes from the configuration or {KEK_ENV}, which you rotate yourself"),
        ));
    }
    let km = EmbeddedKeyManager::open(config).await?;
    let kek_path = config.resolved_kek_path();
    let new_path = pending_kek_path(config);
    let new = match km.pending.as_ref() {
        Some(p) => Kek(p.0.clone()),
        None => match read_kek_file(&new_path) {
            // Opening swapped to it: the check already names it.
            Ok(k) => k,
            Err(KekFileError::Missing) => create_kek_file(&new_path)?,
            Err(KekFileError::Bad(e)) => return Err(e),
        },
    };
    let new_id = kek_id(&new);
    let total: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM keys")
        .fetch_one(&km.pool)
        .await
        .map_err(db("count keys"))?;
    let total = total as u64;
    let mut rewrapped = 0u64;
    let check_is_new = kek_id(&km.kek) == new_id;
    if !check_is_new {
        loop {
            let rows: Vec<RowToRewrap> = sqlx::query_as(
                "SELECT id, project, algorithm, bit_length, nonce, wrapped, kek_id FROM keys \
                 WHERE kek_id IS NULL OR kek_id != ? LIMIT ?",
            )
            .bind(&new_id)
            .bind(ROTATE_BATCH)
            .fetch_all(&km.pool)
            .await
            .map_err(db("rotate KEK"))?;
            if rows.is_empty() {
                break;
            }
            let mut write = km.write("rotate KEK").await?;
            let mut tx = write.begin("rotate KEK").await?;
            for (id, project, algorithm, bit_length, nonce, wrapped, row_kek) in rows {
                let (project, id) = (Project::new(project)?, KeyId::parse(&id)?);
                let integrity = || KeyError::Integrity { project: project.clone(), id: id.clone() };
                let bits = u32::try_from(bit_length).map_err(|_| integrity())?;
                let aad = aad(&project, &id, &algorithm, bits);
                let mut blob = nonce.clone();
                blob.extend_from_slice(&wrapped);
                let key = km.unwrap_row(row_kek.as_deref(), &aad, &blob).ok_or_else(integrity)?;
                let fresh = wrap(&new, &aad, key.expose())?;
                let (n, w) = fresh.split_at(NONCE_LEN);
                // Only if the row is still the one read: a concurrent delete
                // or an earlier batch must not be undone.
                sqlx::query("UPDATE keys SET nonce = ?, wrapped = ?, kek_id = ? WHERE id = ? AND nonce = ?")
                    .bind(n)
                    .bind(w)
                    .bind(&new_id)
                    .bind(id.as_str())
                    .bind(&nonce)
                    .execute(&mut *tx)
                    .await
                    .map_err(db("rotate KEK"))?;
                rewrapped += 1;
            }
            tx.commit().await.map_err(db("rotate KEK"))?;
            drop(write);
            km.durable("rotate KEK").await?;
            progress(rewrapped.min(total), total);
        }
        // Flip the check only if no row under the old KEK appeared since.
        let mut write = km.write("rotate KEK").await?;
        let mut tx = write.begin("rotate KEK").await?;
        let left: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM keys WHERE kek_id IS NULL OR kek_id != ?")
            .bind(&new_id)
            .fetch_one(&mut *tx)
            .await
            .map_err(db("rotate KEK"))?;
        if left != 0 {
            return Err(KeyError::storage(
                "rotate KEK",
                format!("{left} keys were added under the old KEK while rotating; stop the service and run rotate-kek again"),
            ));
        }
        sqlx::query("UPDATE meta SET value = ? WHERE name = 'kek_check'")
            .bind(wrap(&new, KEK_CHECK_AAD, KEK_CHECK_PLAIN)?)
            .execute(&mut *tx)
            .await
            .map_err(db("rotate KEK"))?;
        tx.commit().await.map_err(db("rotate KEK"))?;
        drop(write);
        km.durable("rotate KEK").await?;
    }
    km.pool.close().await;
    km.writer.close().await;
    crash_point("rotate-kek-before-rename");
    fs::rename(&new_path, &kek_path)
        .map_err(|e| KeyError::storage("replace KEK file", io_cause(&kek_path, e)))?;
    let dir = match kek_path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    fs::File::open(&dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| KeyError::storage("replace KEK file", io_cause(&dir, e)))?;
    tracing::info!(kek = %kek_path.display(), rewrapped, total, "KEK rotated");
    Ok(KekRotation { rewrapped, total, kek_path })
}

/// (id, project, algorithm, bit_length, nonce, wrapped, kek_id) of a row.
type RowToRewrap = (String, String, String, i64, Vec<u8>, Vec<u8>, Option<String>);

/// Where a rotation keeps the next KEK until it replaces the KEK file.
fn pending_kek_path(config: &EmbeddedConfig) -> PathBuf {
    let mut p = config.resolved_kek_path().into_os_string();
    p.push(".new");
    PathBuf::from(p)
}

/// A short public name of a KEK (a hash; it reveals nothing of the KEK).
fn kek_id(kek: &Kek) -> String {
    let mut input = Zeroizing::new(KEK_ID_DOMAIN.to_vec());
    input.extend_from_slice(&kek.0[..]);
    let digest = openssl::sha::sha256(&input);
    digest[..8].iter().map(|b| format!("{b:02x}")).collect()
}

/// Aborts the process when `REKEY_CRASH_AT` names `point`, for crash tests
/// of the one step a random kill rarely hits.
fn crash_point(point: &str) {
    if std::env::var("REKEY_CRASH_AT").is_ok_and(|v| v == point) {
        std::process::abort();
    }
}

fn db(op: &'static str) -> impl Fn(sqlx::Error) -> KeyError {
    move |e| KeyError::storage(op, e)
}

fn io_cause(path: &Path, e: io::Error) -> String {
    format!("{}: {e}", path.display())
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Length-prefixed fields, so no two (project, id, algorithm, bits) tuples
/// share an encoding.
fn aad(project: &Project, id: &KeyId, algorithm: &str, bit_length: u32) -> Vec<u8> {
    let mut out = AAD_DOMAIN.to_vec();
    for field in [project.as_str(), id.as_str(), algorithm] {
        out.extend_from_slice(&(field.len() as u32).to_be_bytes());
        out.extend_from_slice(field.as_bytes());
    }
    out.extend_from_slice(&bit_length.to_be_bytes());
    out
}

/// `nonce || ciphertext || tag`.
fn wrap(kek: &Kek, aad: &[u8], plain: &[u8]) -> Result<Vec<u8>, KeyError> {
    let mut nonce = [0u8; NONCE_LEN];
    openssl::rand::rand_bytes(&mut nonce).map_err(|e| KeyError::storage("wrap key", e))?;
    let mut tag = [0u8; TAG_LEN];
    let ct = encrypt_aead(
        Cipher::aes_256_gcm(),
        &kek.0[..],
        Some(&nonce),
        aad,
        plain,
        &mut tag,
    )
    .map_err(|e| KeyError::storage("wrap key", e))?;
    let mut out = Vec::with_capacity(NONCE_LEN + ct.len() + TAG_LEN);
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&ct);
    out.extend_from_slice(&tag);
    Ok(out)
}

/// The plaintext of `blob`, or `None` if it does not authenticate.
fn unwrap(kek: &Kek, aad: &[u8], blob: &[u8]) -> Option<KeyBytes> {
    if blob.len() < NONCE_LEN + TAG_LEN {
        return None;
    }
    let (nonce, rest) = blob.split_at(NONCE_LEN);
    let (ct, tag) = rest.split_at(rest.len() - TAG_LEN);
    decrypt_aead(Cipher::aes_256_gcm(), &kek.0[..], Some(nonce), aad, ct, tag)
        .ok()
        .map(KeyBytes::new)
}

/// The KEK and a description of where it came from (for messages).
fn load_kek(config: &EmbeddedConfig, store_has_check: bool) -> Result<(Kek, String), KeyError> {
    if let Some(hex) = &config.kek_hex {
        return Ok((
            parse_kek_hex(hex, "the configuration")?,
            "the configuration".into(),
        ));
    }
    if let Some(value) = std::env::var_os(KEK_ENV) {
        let value = Zeroizing::new(value.into_string().map_err(|_| {
            KeyError::invalid("key-encryption key", format!("{KEK_ENV} is not UTF-8"))
        })?);
        return Ok((parse_kek_hex(&value, KEK_ENV)?, KEK_ENV.into()));
    }
    let path = config.resolved_kek_path();
    let source = format!("file {}", path.display());
    match read_kek_file(&path) {
        Ok(kek) => Ok((kek, source)),
        Err(KekFileError::Missing) if !store_has_check => Ok((create_kek_file(&path)?, source)),
        Err(KekFileError::Missing) => Err(KeyError::invalid(
            "key-encryption key",
            format!(
                "{} is missing but key store {} already holds keys wrapped under a KEK; restore the KEK file or set {KEK_ENV}",
                path.display(),
                config.db_path.display()
            ),
        )),
        Err(KekFileError::Bad(e)) => Err(e),
    }
}

fn parse_kek_hex(text: &str, source: &str) -> Result<Kek, KeyError> {
    let text = text.trim();
    let bad = || {
        KeyError::invalid(
            "key-encryption key",
            format!("{source} must hold exactly {} hex digits", KEK_LEN * 2),
        )
    };
    if text.len() != KEK_LEN * 2 {
        return Err(bad());
    }
    let mut kek = Zeroizing::new([0u8; KEK_LEN]);
    for (i, pair) in text.as_bytes().chunks(2).enumerate() {
        let hi = (pair[0] as char).to_digit(16).ok_or_else(bad)?;
        let lo = (pair[1] as char).to_digit(16).ok_or_else(bad)?;
        kek[i] = (hi * 16 + lo) as u8;
    }
    Ok(Kek(kek))
}

enum KekFileError {
    Missing,
    Bad(KeyError),
}

fn read_kek_file(path: &Path) -> Result<Kek, KekFileError> {
    let mut file = match fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(KekFileError::Missing),
        Err(e) => {
            return Err(KekFileError::Bad(KeyError::storage(
                "read KEK file",
                io_cause(path, e),
            )))
        }
    };
    let meta = file
        .metadata()
        .map_err(|e| KekFileError::Bad(KeyError::storage("read KEK file", io_cause(path, e))))?;
    if !meta.is_file() {
        return Err(KekFileError::Bad(KeyError::invalid(
            "KEK file",
            format!("{} is not a regular file", path.display()),
        )));
    }
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(KekFileError::Bad(KeyError::invalid(
            "KEK file",
            format!(
                "{} has mode {mode:03o}; group and others must have no access (chmod 600)",
                path.display()
            ),
        )));
    }
    // 64 hex digits and a newline; anything much longer is not a KEK file.
    let mut text = Zeroizing::new(String::with_capacity(128));
    Read::take(&mut file, 128)
        .read_to_string(&mut text)
        .map_err(|e| KekFileError::Bad(KeyError::storage("read KEK file", io_cause(path, e))))?;
    parse_kek_hex(&text, &format!("KEK file {}", path.display())).map_err(KekFileError::Bad)
}

/// Writes a new random KEK to `path`: temp file (0600) → fsync → publish →
/// fsync the directory.
///
/// Publishing is `link(2)` rather than `rename(2)`: rename would silently
/// replace a KEK that another process created a moment earlier, orphaning
/// every key wrapped under it. If we lose that race we use the winner's KEK.
fn create_kek_file(path: &Path) -> Result<Kek, KeyError> {
    let err = |e: io::Error| KeyError::storage("create KEK file", io_cause(path, e));
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    fs::create_dir_all(&dir).map_err(err)?;
    let mut kek = Zeroizing::new([0u8; KEK_LEN]);
    openssl::rand::rand_bytes(&mut kek[..]).map_err(|e| KeyError::storage("create KEK", e))?;
    let mut text = Zeroizing::new(String::with_capacity(KEK_LEN * 2 + 1));
    for b in kek.iter() {
        text.push(char::from(b"0123456789abcdef"[usize::from(b >> 4)]));
        text.push(char::from(b"0123456789abcdef"[usize::from(b & 0x0f)]));
    }
    text.push('\n');

    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "kek".into());
    let tmp = dir.join(format!(
        ".{name}.tmp-{}-{}",
        std::process::id(),
        uuid::Uuid::new_v4().simple()
    ));
    let written = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()
    })();
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        return Err(err(e));
    }
    let linked = fs::hard_link(&tmp, path);
    let _ = fs::remove_file(&tmp);
    match linked {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            tracing::info!(kek = %path.display(), "another process created the KEK file first; using it");
            return match read_kek_file(path) {
                Ok(k) => Ok(k),
                Err(KekFileError::Bad(e)) => Err(e),
                Err(KekFileError::Missing) => Err(KeyError::storage(
                    "create KEK file",
                    format!("{} vanished", path.display()),
                )),
            };
        }
        Err(e) => return Err(err(e)),
    }
    fs::File::open(&dir)
        .and_then(|d| d.sync_all())
        .map_err(err)?;
    tracing::info!(kek = %path.display(), "created a new key-encryption key file");
    Ok(Kek(kek))
}
