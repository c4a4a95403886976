//! Moving every key a data directory references from one key manager to
//! another (`rekey key migrate`), with the service stopped.
//!
//! For each volume, snapshot and backup record, in this order:
//!
//! 1. copy its key to the target manager as a *named* key,
//!    `rekey-migrate:<old key id>`, reusing a copy an interrupted run left
//!    (found by that name), so a rerun never makes a second copy;
//! 2. check the copy: its bytes equal the source's, and for a volume or a
//!    snapshot its passphrase unlocks the LUKS header on the backend;
//! 3. point the record at the copy (`UPDATE … WHERE encryption_key_id =
//!    <old>`, one row, atomic);
//! 4. delete the old key from the source manager.
//!
//! A crash between any two steps is repaired by the next run: a record that
//! already names a target key has its old key's id in that key's name, so a
//! source key left behind by a crash between 3 and 4 is found and deleted.
//! Nothing is ever in neither manager, and once a run completes nothing is
//! in both.
//!
//! It reads and writes the `encryption_key_id` columns of `volumes`,
//! `snapshots` and `backups` directly, so the service must not run: it
//! refuses while jobs or queued key deletions are pending (start the service
//! once to let them finish).

use std::sync::Arc;

use rekey_keys::{passphrase_hex, ErrorKind, KeyBytes, KeyId, KeyManager, KeyManagerConfig, Project};
use serde::Serialize;

use crate::config::Config;
use crate::db::Db;
use crate::fault::{Point, Step};
use crate::error::{db, Result, ServiceError};

/// Prefix of the name a migrated key carries in the target manager.
pub const MIGRATED_NAME_PREFIX: &str = "rekey-migrate:";

/// The tables whose records name a key, and what the record is.
const TABLES: [(&str, RecordKind); 3] = [
    ("volumes", RecordKind::Volume),
    ("snapshots", RecordKind::Snapshot),
    ("backups", RecordKind::Backup),
];

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
enum RecordKind {
    Volume,
    Snapshot,
    Backup,
}

/// What a migration run did.
#[derive(Debug, Default, Clone, Serialize, PartialEq, Eq)]
pub struct MigrationSummary {
    /// The source and target managers (`embedded`, `barbican`, `vault`).
    pub from: String,
    /// See `from`.
    pub to: String,
    /// Records naming a key.
    pub records: u64,
    /// Records moved by this run.
    pub migrated: u64,
    /// Records an earlier run had already moved.
    pub already_migrated: u64,
    /// Old keys deleted from the source that an interrupted run left there.
    pub leftovers_deleted: u64,
    /// Records whose key is in neither manager (left untouched), as
    /// `table/id`.
    pub missing: Vec<String>,
}

/// One record naming a key.
struct Record {
    table: &'static str,
    kind: RecordKind,
    id: String,
    project: Project,
    key: KeyId,
}

/// Moves every key the records of `config`'s data directory name from
/// `config`'s key manager to `target`. `progress(done, total)` after each
/// record.
pub async fn migrate_keys(
    config: &Config,
    target: &KeyManagerConfig,
    mut progress: impl FnMut(u64, u64),
) -> Result<MigrationSummary> {
    let source_config = config.key_manager();
    if same_manager(&source_config, target) {
        return Err(ServiceError::Config(
            "the target key manager is the one the data directory already uses".into(),
        ));
    }
    let pool = crate::db::open(&config.database_url()).await?;
    refuse_pending_work(&pool).await?;
    let source = rekey_keys::open_key_manager(&source_config).await?;
    let target = rekey_keys::open_key_manager(target).await?;
    let backend_config = config.backend();
    let backend = tokio::task::spawn_blocking(move || rekey_storage::open_backend(&backend_config))
        .await
        .map_err(|e| ServiceError::Internal(e.to_string()))??;

    let records = load_records(&pool).await?;
    let mut summary = MigrationSummary {
        from: source.backend().into(),
        to: target.backend().into(),
        records: records.len() as u64,
        ..Default::default()
    };
    let total = records.len() as u64;
    for (done, r) in records.iter().enumerate() {
        migrate_one(&pool, &*source, &*target, &backend, r, &mut summary).await?;
        progress(done as u64 + 1, total);
    }
    tracing::info!(?summary, "key migration finished");
    Ok(summary)
}

fn same_manager(a: &KeyManagerConfig, b: &KeyManagerConfig) -> bool {
    match (a, b) {
        (KeyManagerConfig::Embedded(x), KeyManagerConfig::Embedded(y)) => x.db_path == y.db_path,
        (KeyManagerConfig::Barbican(x), KeyManagerConfig::Barbican(y)) => x.url == y.url,
        (KeyManagerConfig::Vault(x), KeyManagerConfig::Vault(y)) => {
            x.url == y.url && x.kv_mountpoint == y.kv_mountpoint && x.kv_path == y.kv_path
        }
        _ => false,
    }
}

/// Rows in `table` (opening the database made every table the schema has).
async fn table_rows(pool: &Db, table: &str) -> Result<i64> {
    let mut c = pool.conn().await?;
    sqlx::query_scalar(&format!("SELECT COUNT(*) FROM {table}"))
        .fetch_one(&mut *c)
        .await
        .map_err(db("inspect database"))
}

/// Jobs hold key ids of their own and the deletion queue names keys in the
/// source manager; both belong to a running service.
async fn refuse_pending_work(pool: &Db) -> Result<()> {
    for (table, what) in [("jobs", "unfinished jobs"), ("key_deletions", "queued key deletions")] {
        let n = table_rows(pool, table).await?;
        if n > 0 {
            return Err(ServiceError::Config(format!(
                "the data directory has {n} {what}; start the service until they finish, stop it, then migrate"
            )));
        }
    }
    Ok(())
}

async fn load_records(pool: &Db) -> Result<Vec<Record>> {
    let mut c = pool.conn().await?;
    let mut out = Vec::new();
    for (table, kind) in TABLES {
        let rows: Vec<(String, String, String)> = sqlx::query_as(&format!(
            "SELECT id, project_id, encryption_key_id FROM {table} WHERE encryption_key_id IS NOT NULL ORDER BY created_at, id"
        ))
        .fetch_all(&mut *c)
        .await
        .map_err(db("list records"))?;
        for (id, project, key) in rows {
            out.push(Record { table, kind, id, project: Project::new(project)?, key: KeyId::parse(&key)? });
        }
    }
    Ok(out)
}

async fn migrate_one(
    pool: &Db,
    source: &dyn KeyManager,
    target: &dyn KeyManager,
    backend: &Arc<dyn rekey_storage::Backend>,
    r: &Record,
    summary: &mut MigrationSummary,
) -> Result<()> {
    if target.exists(&r.project, &r.key).await? {
        // Moved by an earlier run; its old key may still be in the source.
        summary.already_migrated += 1;
        let name = target
            .list_named(&r.project, MIGRATED_NAME_PREFIX)
            .await?
            .into_iter()
            .find(|(id, _)| id == &r.key)
            .map(|(_, name)| name);
        if let Some(old) = name.as_deref().and_then(|n| n.strip_prefix(MIGRATED_NAME_PREFIX)) {
            let old = KeyId::parse(old)?;
            if old != r.key && delete_if_present(source, &r.project, &old).await? {
                summary.leftovers_deleted += 1;
            }
        }
        return Ok(());
    }
    let bytes = match source.get_key(&r.project, &r.key).await {
        Ok(b) => b,
        Err(e) if e.kind() == ErrorKind::NotFound => {
            tracing::warn!(table = r.table, id = %r.id, key_id = %r.key, "key in neither manager; record left as it is");
            summary.missing.push(format!("{}/{}", r.table, r.id));
            return Ok(());
        }
        Err(e) => return Err(e.into()),
    };
    let name = format!("{MIGRATED_NAME_PREFIX}{}", r.key);
    let copy = match target.find_named(&r.project, &name).await? {
        Some(id) => id,
        None => {
            crate::fault::point(Point::start(Step::MigrateCopy)).await;
            target.store_named_key(&r.project, Some(&name), &bytes, "aes", bytes.len() as u32 * 8).await?
        }
    };
    crate::fault::point(Point::done(Step::MigrateCopy)).await;
    verify_copy(target, backend, r, &copy, &bytes).await?;
    let moved = sqlx::query(&format!("UPDATE {} SET encryption_key_id = $1 WHERE id = $2 AND encryption_key_id = $3", r.table))
        .bind(copy.as_str())
        .bind(&r.id)
        .bind(r.key.as_str())
        .execute(&mut *pool.conn().await?)
        .await
        .map_err(db("record migrated key"))?;
    if moved.rows_affected() != 1 {
        return Err(ServiceError::Internal(format!(
            "{} {} changed during the migration (is the service running?)",
            r.table, r.id
        )));
    }
    crate::fault::point(Point::recorded(Step::MigrateRecord)).await;
    delete_if_present(source, &r.project, &r.key).await?;
    summary.migrated += 1;
    tracing::info!(table = r.table, id = %r.id, old = %r.key, new = %copy, "key migrated");
    Ok(())
}

async fn delete_if_present(km: &dyn KeyManager, project: &Project, id: &KeyId) -> Result<bool> {
    match km.delete_key(project, id).await {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// The target's copy reads back as the same bytes and, where the record's
/// data has a LUKS header on the backend, unlocks it.
async fn verify_copy(
    target: &dyn KeyManager,
    backend: &Arc<dyn rekey_storage::Backend>,
    r: &Record,
    copy: &KeyId,
    original: &KeyBytes,
) -> Result<()> {
    let back = target.get_key(&r.project, copy).await?;
    if &back != original {
        return Err(ServiceError::Internal(format!(
            "the copy {copy} of key {} reads back different bytes",
            r.key
        )));
    }
    let (backend, id, kind) = (backend.clone(), r.id.clone(), r.kind);
    let pass = passphrase_hex(&back);
    let opened = tokio::task::spawn_blocking(move || -> std::result::Result<bool, String> {
        let io = match kind {
            RecordKind::Volume => backend.open(&id),
            RecordKind::Snapshot => backend.open_snapshot(&id),
            // A backup's bytes live in the backup repository, as chunks; the
            // byte comparison above is its check.
            RecordKind::Backup => return Ok(true),
        }
        .map_err(|e| e.to_string())?;
        let volume = rekey_luks::Volume::open(io).map_err(|e| e.to_string())?;
        Ok(volume.unlock(pass.as_bytes(), None).is_ok())
    })
    .await
    .map_err(|e| ServiceError::Internal(e.to_string()))?
    .map_err(|e| ServiceError::Internal(format!("cannot check {} {} with its copied key: {e}", r.table, r.id)))?;
    if !opened {
        return Err(ServiceError::Internal(format!(
            "the copied key {copy} does not open {} {}; nothing recorded",
            r.table, r.id
        )));
    }
    Ok(())
}
