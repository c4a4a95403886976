//! Persistence: volumes, types, jobs and the key-deletion queue in SQL.
//!
//! The SQL is kept portable to PostgreSQL: `$N` placeholders numbered in
//! order of appearance (SQLite accepts them too), `BIGINT`/`TEXT` columns,
//! `ON CONFLICT` rather than `INSERT OR ...`, no SQLite-only functions. The
//! driver is SQLite today; the functions take a connection so callers can
//! group several into one transaction, which is how a job's step and the
//! state change it records commit together.

use std::collections::BTreeMap;
use std::str::FromStr;
use std::sync::Arc;

use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{Any, AnyConnection, AnyPool, Executor, Row};

use crate::error::{db, Result, ServiceError};
use crate::model::{now_iso, AttachMode, Attachment, Encryption, Provider, Volume, VolumeType, DEFAULT_TYPE_NAME};

/// A connection inside or outside a transaction.
pub type Conn = AnyConnection;

/// A write transaction, SQLite's or PostgreSQL's: a connection (it derefs
/// to one) whose [`Tx::commit`] returns once the commit is durable.
pub struct Tx {
    tx: sqlx::Transaction<'static, Any>,
    wal: Option<Arc<rekey_keys::WalSync>>,
}

impl Tx {
    /// Commits; on SQLite, then waits for the group sync of the WAL that
    /// makes it durable (shared with the commits made meanwhile).
    pub async fn commit(self) -> std::result::Result<(), sqlx::Error> {
        self.tx.commit().await?;
        match self.wal {
            Some(w) => w.sync().await.map_err(sqlx::Error::Io),
            None => Ok(()),
        }
    }
}

impl std::ops::Deref for Tx {
    type Target = AnyConnection;
    fn deref(&self) -> &AnyConnection {
        &self.tx
    }
}

impl std::ops::DerefMut for Tx {
    fn deref_mut(&mut self) -> &mut AnyConnection {
        &mut self.tx
    }
}

/// The service's database: SQLite (the embedded default) or PostgreSQL,
/// both through sqlx's `Any` driver, so every query below runs on either.
#[derive(Debug, Clone)]
pub struct Db {
    pool: AnyPool,
    /// Where write transactions run: on SQLite a pool of one connection, so
    /// writers queue in order in this process instead of polling SQLite's
    /// busy handler (which sleeps up to 100 ms between tries while the lock
    /// is free most of that time); on PostgreSQL the one pool.
    writer: AnyPool,
    /// SQLite's group commit; `None` on PostgreSQL.
    wal: Option<Arc<rekey_keys::WalSync>>,
    postgres: bool,
}

impl Db {
    /// A write transaction. SQLite: `BEGIN IMMEDIATE`, so two transactions
    /// that read then write never deadlock on the lock upgrade (they queue
    /// on the busy timeout instead). PostgreSQL: a plain `BEGIN` (row locks).
    pub async fn tx(&self) -> Result<Tx> {
        let tx = if self.postgres {
            self.writer.begin().await.map_err(db("begin"))?
        } else {
            self.writer.begin_with("BEGIN IMMEDIATE").await.map_err(db("begin"))?
        };
        Ok(Tx { tx, wal: self.wal.clone() })
    }

    /// Whether this is PostgreSQL (row locks can be skipped, not only waited for).
    pub fn is_postgres(&self) -> bool {
        self.postgres
    }

    /// A connection outside any transaction.
    pub async fn conn(&self) -> Result<sqlx::pool::PoolConnection<Any>> {
        self.pool.acquire().await.map_err(db("connect"))
    }
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS qos_specs (
    id         TEXT PRIMARY KEY,
    name       TEXT NOT NULL UNIQUE,
    consumer   TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS qos_spec_keys (
    qos_id     TEXT NOT NULL,
    spec_key   TEXT NOT NULL,
    spec_value TEXT NOT NULL,
    PRIMARY KEY (qos_id, spec_key)
);
CREATE TABLE IF NOT EXISTS qos_associations (
    type_id TEXT PRIMARY KEY,
    qos_id  TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS volume_type_projects (
    type_id    TEXT NOT NULL,
    project_id TEXT NOT NULL,
    PRIMARY KEY (type_id, project_id)
);
CREATE TABLE IF NOT EXISTS messages (
    id               TEXT PRIMARY KEY,
    project_id       TEXT NOT NULL,
    request_id       TEXT NOT NULL,
    resource_type    TEXT NOT NULL,
    resource_uuid    TEXT NOT NULL,
    event_id         TEXT NOT NULL,
    message_level    TEXT NOT NULL,
    user_message     TEXT NOT NULL,
    created_at       TEXT NOT NULL,
    guaranteed_until TEXT NOT NULL,
    expires_ms       BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS messages_by_project ON messages (project_id, created_at);
CREATE TABLE IF NOT EXISTS group_types (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    description TEXT,
    is_public   BIGINT NOT NULL,
    created_at  TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS group_type_specs (
    type_id    TEXT NOT NULL,
    spec_key   TEXT NOT NULL,
    spec_value TEXT NOT NULL,
    PRIMARY KEY (type_id, spec_key)
);
CREATE TABLE IF NOT EXISTS volume_groups (
    id                TEXT PRIMARY KEY,
    project_id        TEXT NOT NULL,
    user_id           TEXT NOT NULL,
    name              TEXT,
    description       TEXT,
    group_type_id     TEXT NOT NULL,
    volume_type_ids   TEXT NOT NULL,
    status            TEXT NOT NULL,
    availability_zone TEXT NOT NULL,
    group_snapshot_id TEXT,
    source_group_id   TEXT,
    settling          BIGINT NOT NULL,
    created_at        TEXT NOT NULL,
    updated_at        TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS volume_groups_by_project ON volume_groups (project_id, created_at);
CREATE TABLE IF NOT EXISTS group_snapshots (
    id            TEXT PRIMARY KEY,
    project_id    TEXT NOT NULL,
    user_id       TEXT NOT NULL,
    group_id      TEXT NOT NULL,
    group_type_id TEXT NOT NULL,
    name          TEXT,
    description   TEXT,
    status        TEXT NOT NULL,
    settling      BIGINT NOT NULL,
    created_at    TEXT NOT NULL,
    updated_at    TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS group_snapshots_by_group ON group_snapshots (group_id);
CREATE TABLE IF NOT EXISTS services (
    host            TEXT NOT NULL,
    service_binary  TEXT NOT NULL,
    disabled        BIGINT NOT NULL,
    disabled_reason TEXT,
    frozen          BIGINT NOT NULL,
    created_at      TEXT NOT NULL,
    updated_at      TEXT NOT NULL,
    heartbeat_ms    BIGINT NOT NULL,
    PRIMARY KEY (host, service_binary)
);
CREATE TABLE IF NOT EXISTS volume_types (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    description TEXT,
    is_public   BIGINT NOT NULL,
    created_at  TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS project_default_types (
    project_id     TEXT PRIMARY KEY,
    volume_type_id TEXT NOT NULL,
    created_at     TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS type_extra_specs (
    type_id    TEXT NOT NULL,
    spec_key   TEXT NOT NULL,
    spec_value TEXT NOT NULL,
    PRIMARY KEY (type_id, spec_key)
);
CREATE TABLE IF NOT EXISTS encryption_types (
    type_id          TEXT PRIMARY KEY,
    encryption_id    TEXT NOT NULL,
    provider         TEXT NOT NULL,
    cipher           TEXT,
    key_size         BIGINT,
    control_location TEXT NOT NULL,
    created_at       TEXT NOT NULL,
    updated_at       TEXT
);
CREATE TABLE IF NOT EXISTS volumes (
    id                TEXT PRIMARY KEY,
    project_id        TEXT NOT NULL,
    user_id           TEXT NOT NULL,
    name              TEXT,
    description       TEXT,
    size_gb           BIGINT NOT NULL,
    status            TEXT NOT NULL,
    volume_type_id    TEXT NOT NULL,
    source_volid      TEXT,
    snapshot_id       TEXT,
    encryption_key_id TEXT UNIQUE,
    metadata          TEXT NOT NULL,
    created_at        TEXT NOT NULL,
    updated_at        TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS volumes_by_project ON volumes (project_id, created_at);
CREATE TABLE IF NOT EXISTS jobs (
    id              TEXT PRIMARY KEY,
    kind            TEXT NOT NULL,
    target_id       TEXT NOT NULL UNIQUE,
    project_id      TEXT NOT NULL,
    source_id       TEXT,
    step            TEXT NOT NULL,
    state           TEXT NOT NULL,
    old_key_id      TEXT,
    new_key_id      TEXT,
    attempts        BIGINT NOT NULL,
    next_attempt_at BIGINT NOT NULL,
    epoch           BIGINT NOT NULL,
    lease_owner     TEXT,
    lease_until     BIGINT NOT NULL DEFAULT 0,
    last_error      TEXT,
    created_at      TEXT NOT NULL,
    updated_at      TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS jobs_by_source ON jobs (source_id);
CREATE TABLE IF NOT EXISTS step_log (
    id         TEXT PRIMARY KEY,
    job_id     TEXT NOT NULL,
    kind       TEXT NOT NULL,
    step       TEXT NOT NULL,
    node       TEXT NOT NULL,
    epoch      BIGINT NOT NULL,
    started_at BIGINT NOT NULL,
    ended_at   BIGINT,
    outcome    TEXT
);
CREATE INDEX IF NOT EXISTS step_log_by_job ON step_log (job_id, started_at);
CREATE TABLE IF NOT EXISTS storage_sessions (
    session     TEXT PRIMARY KEY,
    node        TEXT NOT NULL,
    alive_until BIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS key_deletions (
    key_id     TEXT PRIMARY KEY,
    project_id TEXT NOT NULL,
    reason     TEXT NOT NULL,
    attempts   BIGINT NOT NULL,
    last_error TEXT,
    created_at TEXT NOT NULL,
    next_attempt_at BIGINT NOT NULL DEFAULT 0,
    lease_owner TEXT,
    lease_until BIGINT NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS snapshots (
    id                TEXT PRIMARY KEY,
    project_id        TEXT NOT NULL,
    user_id           TEXT NOT NULL,
    volume_id         TEXT NOT NULL,
    name              TEXT,
    description       TEXT,
    size_gb           BIGINT NOT NULL,
    status            TEXT NOT NULL,
    encryption_key_id TEXT UNIQUE,
    metadata          TEXT NOT NULL,
    created_at        TEXT NOT NULL,
    updated_at        TEXT NOT NULL,
    backing_volume_id TEXT
);
CREATE INDEX IF NOT EXISTS snapshots_by_volume ON snapshots (volume_id);
CREATE INDEX IF NOT EXISTS snapshots_by_project ON snapshots (project_id);
CREATE TABLE IF NOT EXISTS backups (
    id                TEXT PRIMARY KEY,
    project_id        TEXT NOT NULL,
    user_id           TEXT NOT NULL,
    volume_id         TEXT NOT NULL,
    volume_type_id    TEXT NOT NULL,
    name              TEXT,
    description       TEXT,
    size_gb           BIGINT NOT NULL,
    status            TEXT NOT NULL,
    parent_id         TEXT,
    encryption_key_id TEXT UNIQUE,
    object_count      BIGINT NOT NULL,
    stored_bytes      BIGINT NOT NULL,
    fail_reason       TEXT,
    created_at        TEXT NOT NULL,
    updated_at        TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS backups_by_volume ON backups (volume_id, created_at);
CREATE INDEX IF NOT EXISTS backups_by_project ON backups (project_id);
CREATE TABLE IF NOT EXISTS transfers (
    id           TEXT PRIMARY KEY,
    volume_id    TEXT NOT NULL UNIQUE,
    project_id   TEXT NOT NULL,
    user_id      TEXT NOT NULL,
    name         TEXT,
    salt         TEXT NOT NULL,
    crypt_hash   TEXT NOT NULL,
    no_snapshots BIGINT NOT NULL,
    accepted     BIGINT NOT NULL,
    destination_project_id TEXT,
    destination_user_id    TEXT,
    created_at   TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS attachments (
    id             TEXT PRIMARY KEY,
    volume_id      TEXT NOT NULL,
    project_id     TEXT NOT NULL,
    instance_uuid  TEXT,
    attach_status  TEXT NOT NULL,
    attach_mode    TEXT NOT NULL,
    mountpoint     TEXT,
    attached_host  TEXT,
    connector      TEXT,
    export_name    TEXT UNIQUE,
    node           TEXT NOT NULL,
    attach_time    TEXT,
    created_at     TEXT NOT NULL,
    updated_at     TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS attachments_by_volume ON attachments (volume_id, created_at);
CREATE TABLE IF NOT EXISTS quotas (
    project_id TEXT NOT NULL,
    resource   TEXT NOT NULL,
    hard_limit BIGINT NOT NULL,
    PRIMARY KEY (project_id, resource)
);
CREATE TABLE IF NOT EXISTS quota_classes (
    class_name TEXT NOT NULL,
    resource   TEXT NOT NULL,
    hard_limit BIGINT NOT NULL,
    PRIMARY KEY (class_name, resource)
);
CREATE TABLE IF NOT EXISTS quota_locks (
    project_id TEXT PRIMARY KEY,
    serial     BIGINT NOT NULL
);
";

/// Opens (creating and migrating) the database at `url`: `sqlite://PATH`
/// or `postgres://…`.
pub async fn open(url: &str) -> Result<Db> {
    sqlx::any::install_default_drivers();
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        return open_postgres(url).await;
    }
    let options = SqliteConnectOptions::from_str(url)
        .map_err(|e| ServiceError::Config(format!("database_url {url:?}: {e}")))?;
    let file = options.get_filename().to_owned();
    if let Some(dir) = file.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .map_err(|e| ServiceError::Config(format!("cannot create {}: {e}", dir.display())))?;
    }
    let any_url = format!("sqlite://{}?mode=rwc", file.display());
    // NORMAL: a commit is written to the WAL but not synced; `Tx::commit`
    // then syncs it through the group commit, so it is as durable as with
    // FULL while concurrent commits share one fsync (see `WalSync`).
    let sqlite_pool = |n| {
        AnyPoolOptions::new().max_connections(n).after_connect(|c, _| {
            Box::pin(async move {
                c.execute("PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA busy_timeout = 30000; PRAGMA foreign_keys = ON;")
                    .await?;
                Ok(())
            })
        })
    };
    let pool = sqlite_pool(8)
        .connect(&any_url)
        .await
        .map_err(|e| ServiceError::Config(format!("cannot open database {url:?}: {e}")))?;
    let writer = sqlite_pool(1)
        .connect(&any_url)
        .await
        .map_err(|e| ServiceError::Config(format!("cannot open database {url:?}: {e}")))?;
    // IMMEDIATE: take the write lock up front, so a migration racing the
    // running service (an admin command) waits instead of failing busy.
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await.map_err(db("migrate"))?;
    drop_untyped_jobs(&mut tx).await?;
    sqlx::raw_sql(SCHEMA).execute(&mut *tx).await.map_err(db("migrate"))?;
    // Added after the first release: a column databases made before lack.
    let has_snapshot_id: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM pragma_table_info('volumes') WHERE name = 'snapshot_id'")
            .fetch_one(&mut *tx)
            .await
            .map_err(db("migrate"))?;
    if has_snapshot_id == 0 {
        sqlx::query("ALTER TABLE volumes ADD COLUMN snapshot_id TEXT").execute(&mut *tx).await.map_err(db("migrate"))?;
    }
    for (column, ddl) in [
        ("next_attempt_at", "ALTER TABLE key_deletions ADD COLUMN next_attempt_at BIGINT NOT NULL DEFAULT 0"),
        ("lease_owner", "ALTER TABLE key_deletions ADD COLUMN lease_owner TEXT"),
        ("lease_until", "ALTER TABLE key_deletions ADD COLUMN lease_until BIGINT NOT NULL DEFAULT 0"),
    ] {
        if !has_column(&mut tx, "key_deletions", column).await? {
            sqlx::query(ddl).execute(&mut *tx).await.map_err(db("migrate"))?;
        }
    }
    for (table, column, ddl) in ADDED_COLUMNS {
        if !has_column(&mut tx, table, column).await? {
            sqlx::query(ddl).execute(&mut *tx).await.map_err(db("migrate"))?;
        }
    }
    insert_default_type(&mut tx).await?;
    tx.commit().await.map_err(db("migrate"))?;
    let wal = Arc::new(rekey_keys::WalSync::new(&file));
    wal.sync().await.map_err(|e| ServiceError::Config(format!("cannot sync database {url:?}: {e}")))?;
    Ok(Db { pool, writer, wal: Some(wal), postgres: false })
}

async fn open_postgres(url: &str) -> Result<Db> {
    let pool = AnyPoolOptions::new()
        .max_connections(16)
        .connect(url)
        .await
        .map_err(|e| ServiceError::Config(format!("cannot open database {}: {e}", redact(url))))?;
    // A database that has every table and index is left alone: the DDL of
    // `IF NOT EXISTS` still locks the tables it names (CREATE INDEX takes a
    // SHARE lock before it finds the index there), which deadlocks against
    // the running nodes' writes when an admin command or another node opens
    // the database.
    if postgres_schema_present(&pool).await? && postgres_columns_present(&pool).await? {
        return Ok(Db { writer: pool.clone(), pool, wal: None, postgres: true });
    }
    let mut tx = pool.begin().await.map_err(db("migrate"))?;
    // Several nodes may start at once: one migrates, the others wait.
    sqlx::query("SELECT pg_advisory_xact_lock(7312657)").execute(&mut *tx).await.map_err(db("migrate"))?;
    sqlx::raw_sql(SCHEMA).execute(&mut *tx).await.map_err(db("migrate"))?;
    for (table, column, ddl) in ADDED_COLUMNS {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM information_schema.columns WHERE table_name = $1 AND column_name = $2")
            .bind(*table)
            .bind(*column)
            .fetch_one(&mut *tx)
            .await
            .map_err(db("migrate"))?;
        if n == 0 {
            sqlx::query(ddl).execute(&mut *tx).await.map_err(db("migrate"))?;
        }
    }
    insert_default_type(&mut tx).await?;
    tx.commit().await.map_err(db("migrate"))?;
    Ok(Db { writer: pool.clone(), pool, wal: None, postgres: true })
}

/// Columns added to [`SCHEMA`]'s tables after databases were made with
/// them: (table, column, DDL adding it), for both engines.
const ADDED_COLUMNS: &[(&str, &str, &str)] = &[
    ("snapshots", "backing_volume_id", "ALTER TABLE snapshots ADD COLUMN backing_volume_id TEXT"),
    ("volumes", "bootable", "ALTER TABLE volumes ADD COLUMN bootable BIGINT NOT NULL DEFAULT 0"),
    ("volumes", "readonly", "ALTER TABLE volumes ADD COLUMN readonly BIGINT"),
    ("snapshots", "progress", "ALTER TABLE snapshots ADD COLUMN progress TEXT"),
    ("backups", "snapshot_id", "ALTER TABLE backups ADD COLUMN snapshot_id TEXT"),
    ("backups", "volume_metadata", "ALTER TABLE backups ADD COLUMN volume_metadata TEXT"),
    ("volumes", "group_id", "ALTER TABLE volumes ADD COLUMN group_id TEXT"),
    ("snapshots", "group_snapshot_id", "ALTER TABLE snapshots ADD COLUMN group_snapshot_id TEXT"),
];

/// Whether every column of [`ADDED_COLUMNS`] exists (a catalog read).
async fn postgres_columns_present(pool: &AnyPool) -> Result<bool> {
    for (table, column, _) in ADDED_COLUMNS {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM information_schema.columns WHERE table_name = $1 AND column_name = $2")
            .bind(*table)
            .bind(*column)
            .fetch_one(pool)
            .await
            .map_err(db("migrate"))?;
        if n == 0 {
            return Ok(false);
        }
    }
    Ok(true)
}

/// The tables and indexes [`SCHEMA`] creates.
fn schema_objects() -> impl Iterator<Item = &'static str> {
    SCHEMA.lines().filter_map(|l| {
        let l = l.trim();
        l.strip_prefix("CREATE TABLE IF NOT EXISTS ")
            .or_else(|| l.strip_prefix("CREATE INDEX IF NOT EXISTS "))
            .and_then(|rest| rest.split_whitespace().next())
    })
}

/// Whether every object of [`SCHEMA`] exists: one catalog read, no locks.
/// The names are the schema's own identifiers (letters, digits, `_`).
async fn postgres_schema_present(pool: &AnyPool) -> Result<bool> {
    let names: Vec<String> = schema_objects().map(|n| format!("('{n}')")).collect();
    let sql = format!("SELECT COUNT(*) FROM (VALUES {}) AS o(name) WHERE to_regclass(o.name) IS NULL", names.join(", "));
    let missing: i64 = sqlx::query_scalar(&sql).fetch_one(pool).await.map_err(db("migrate"))?;
    Ok(missing == 0)
}

/// `url` without a password, for messages.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}://…@{}", &url[..s], &url[at + 1..]),
        _ => url.to_owned(),
    }
}

async fn insert_default_type(c: &mut Conn) -> Result<()> {
    sqlx::query(
        "INSERT INTO volume_types (id, name, description, is_public, created_at) VALUES ($1, $2, $3, 1, $4)
         ON CONFLICT DO NOTHING",
    )
    .bind(uuid::Uuid::new_v4().to_string())
    .bind(DEFAULT_TYPE_NAME)
    .bind("Default Volume Type")
    .bind(now_iso())
    .execute(&mut *c)
    .await
    .map_err(db("migrate"))?;
    Ok(())
}

async fn has_column(c: &mut Conn, table: &str, column: &str) -> Result<bool> {
    let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM pragma_table_info($1) WHERE name = $2")
        .bind(table)
        .bind(column)
        .fetch_one(&mut *c)
        .await
        .map_err(db("migrate"))?;
    Ok(n > 0)
}

/// Jobs were once rows of string-named steps; their table is replaced by the
/// typed one when it holds nothing. A database with unfinished jobs of that
/// shape is refused: finish them with the release that made them.
async fn drop_untyped_jobs(c: &mut Conn) -> Result<()> {
    let exists: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = 'jobs'")
        .fetch_one(&mut *c)
        .await
        .map_err(db("migrate"))?;
    if exists == 0 || has_column(c, "jobs", "state").await? {
        return Ok(());
    }
    let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM jobs").fetch_one(&mut *c).await.map_err(db("migrate"))?;
    if n > 0 {
        return Err(ServiceError::Config(format!(
            "the database holds {n} unfinished job(s) of an earlier release; finish them with that release first"
        )));
    }
    sqlx::query("DROP TABLE jobs").execute(&mut *c).await.map_err(db("migrate"))?;
    Ok(())
}

// ---- volume types --------------------------------------------------------

fn type_from_row(r: &AnyRow) -> VolumeType {
    VolumeType {
        id: r.get("id"),
        name: r.get("name"),
        description: r.get("description"),
        is_public: r.get::<i64, _>("is_public") != 0,
        extra_specs: BTreeMap::new(),
        qos_specs_id: None,
    }
}

async fn load_specs(c: &mut Conn, t: &mut VolumeType) -> Result<()> {
    let rows = sqlx::query("SELECT spec_key, spec_value FROM type_extra_specs WHERE type_id = $1")
        .bind(&t.id)
        .fetch_all(&mut *c)
        .await
        .map_err(db("read extra specs"))?;
    t.extra_specs = rows.iter().map(|r| (r.get("spec_key"), r.get("spec_value"))).collect();
    t.qos_specs_id = sqlx::query_scalar("SELECT qos_id FROM qos_associations WHERE type_id = $1")
        .bind(&t.id)
        .fetch_optional(&mut *c)
        .await
        .map_err(db("read qos association"))?;
    Ok(())
}

/// A type by id.
pub async fn get_type(c: &mut Conn, id: &str) -> Result<Option<VolumeType>> {
    let row = sqlx::query("SELECT * FROM volume_types WHERE id = $1")
        .bind(id)
        .fetch_optional(&mut *c)
        .await
        .map_err(db("read volume type"))?;
    let Some(row) = row else { return Ok(None) };
    let mut t = type_from_row(&row);
    load_specs(c, &mut t).await?;
    Ok(Some(t))
}

/// A type by id, or else by name (volume create accepts either).
pub async fn find_type(c: &mut Conn, id_or_name: &str) -> Result<Option<VolumeType>> {
    if let Some(t) = get_type(c, id_or_name).await? {
        return Ok(Some(t));
    }
    let row = sqlx::query("SELECT * FROM volume_types WHERE name = $1")
        .bind(id_or_name)
        .fetch_optional(&mut *c)
        .await
        .map_err(db("read volume type"))?;
    let Some(row) = row else { return Ok(None) };
    let mut t = type_from_row(&row);
    load_specs(c, &mut t).await?;
    Ok(Some(t))
}

/// Every type, by name.
pub async fn list_types(c: &mut Conn) -> Result<Vec<VolumeType>> {
    let rows = sqlx::query("SELECT * FROM volume_types ORDER BY name")
        .fetch_all(&mut *c)
        .await
        .map_err(db("list volume types"))?;
    let mut out = Vec::with_capacity(rows.len());
    for r in &rows {
        let mut t = type_from_row(r);
        load_specs(c, &mut t).await?;
        out.push(t);
    }
    Ok(out)
}

/// Inserts a type and its extra specs; `Conflict` on a duplicate name.
pub async fn insert_type(c: &mut Conn, t: &VolumeType) -> Result<()> {
    let done = sqlx::query(
        "INSERT INTO volume_types (id, name, description, is_public, created_at) VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT DO NOTHING",
    )
    .bind(&t.id)
    .bind(&t.name)
    .bind(&t.description)
    .bind(i64::from(t.is_public))
    .bind(now_iso())
    .execute(&mut *c)
    .await
    .map_err(db("create volume type"))?;
    if done.rows_affected() == 0 {
        return Err(ServiceError::Conflict(format!("Volume Type {} already exists.", t.name)));
    }
    set_specs(c, &t.id, &t.extra_specs).await
}

/// Updates name/description/is_public.
pub async fn update_type(c: &mut Conn, t: &VolumeType) -> Result<()> {
    let clash: Option<String> = sqlx::query_scalar("SELECT id FROM volume_types WHERE name = $1 AND id <> $2")
        .bind(&t.name)
        .bind(&t.id)
        .fetch_optional(&mut *c)
        .await
        .map_err(db("update volume type"))?;
    if clash.is_some() {
        return Err(ServiceError::Conflict(format!("Volume Type {} already exists.", t.name)));
    }
    sqlx::query("UPDATE volume_types SET name = $1, description = $2, is_public = $3 WHERE id = $4")
        .bind(&t.name)
        .bind(&t.description)
        .bind(i64::from(t.is_public))
        .bind(&t.id)
        .execute(&mut *c)
        .await
        .map_err(db("update volume type"))?;
    Ok(())
}

/// Sets (adds or replaces) extra specs.
pub async fn set_specs(c: &mut Conn, type_id: &str, specs: &BTreeMap<String, String>) -> Result<()> {
    for (k, v) in specs {
        sqlx::query(
            "INSERT INTO type_extra_specs (type_id, spec_key, spec_value) VALUES ($1, $2, $3)
             ON CONFLICT (type_id, spec_key) DO UPDATE SET spec_value = excluded.spec_value",
        )
        .bind(type_id)
        .bind(k)
        .bind(v)
        .execute(&mut *c)
        .await
        .map_err(db("set extra spec"))?;
    }
    Ok(())
}

/// Deletes one extra spec; false if it was not there.
pub async fn delete_spec(c: &mut Conn, type_id: &str, key: &str) -> Result<bool> {
    let r = sqlx::query("DELETE FROM type_extra_specs WHERE type_id = $1 AND spec_key = $2")
        .bind(type_id)
        .bind(key)
        .execute(&mut *c)
        .await
        .map_err(db("delete extra spec"))?;
    Ok(r.rows_affected() > 0)
}

/// Deletes a type with its specs and encryption.
pub async fn delete_type(c: &mut Conn, type_id: &str) -> Result<()> {
    for q in [
        "DELETE FROM type_extra_specs WHERE type_id = $1",
        "DELETE FROM encryption_types WHERE type_id = $1",
        "DELETE FROM qos_associations WHERE type_id = $1",
        "DELETE FROM volume_type_projects WHERE type_id = $1",
        "DELETE FROM volume_types WHERE id = $1",
    ] {
        sqlx::query(q).bind(type_id).execute(&mut *c).await.map_err(db("delete volume type"))?;
    }
    Ok(())
}

/// Every project's default type: (project, type id), by project.
pub async fn list_default_types(c: &mut Conn) -> Result<Vec<(String, String)>> {
    sqlx::query_as("SELECT project_id, volume_type_id FROM project_default_types ORDER BY project_id")
        .fetch_all(&mut *c)
        .await
        .map_err(db("read default types"))
}

/// The default type id of `project`.
pub async fn get_default_type(c: &mut Conn, project: &str) -> Result<Option<String>> {
    sqlx::query_scalar("SELECT volume_type_id FROM project_default_types WHERE project_id = $1")
        .bind(project)
        .fetch_optional(&mut *c)
        .await
        .map_err(db("read default type"))
}

/// Sets (or replaces) `project`'s default type.
pub async fn set_default_type(c: &mut Conn, project: &str, type_id: &str) -> Result<()> {
    sqlx::query(
        "INSERT INTO project_default_types (project_id, volume_type_id, created_at) VALUES ($1, $2, $3)
         ON CONFLICT (project_id) DO UPDATE SET volume_type_id = excluded.volume_type_id",
    )
    .bind(project)
    .bind(type_id)
    .bind(now_iso())
    .execute(&mut *c)
    .await
    .map_err(db("set default type"))?;
    Ok(())
}

/// Unsets `project`'s default type.
pub async fn unset_default_type(c: &mut Conn, project: &str) -> Result<()> {
    sqlx::query("DELETE FROM project_default_types WHERE project_id = $1")
        .bind(project)
        .execute(&mut *c)
        .await
        .map_err(db("unset default type"))?;
    Ok(())
}

/// The type a volume of `project` gets when its create names none: the
/// project's default (3.62), else the service's `__DEFAULT__`.
pub async fn default_type_for(c: &mut Conn, project: &str) -> Result<Option<VolumeType>> {
    if let Some(id) = get_default_type(c, project).await? {
        if let Some(t) = get_type(c, &id).await? {
            return Ok(Some(t));
        }
    }
    find_type(c, DEFAULT_TYPE_NAME).await
}

/// Whether the type is some project's default.
pub async fn type_is_a_default(c: &mut Conn, type_id: &str) -> Result<bool> {
    let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM project_default_types WHERE volume_type_id = $1")
        .bind(type_id)
        .fetch_one(&mut *c)
        .await
        .map_err(db("read default types"))?;
    Ok(n > 0)
}

/// Whether any volume uses the type.
pub async fn type_in_use(c: &mut Conn, type_id: &str) -> Result<bool> {
    let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM volumes WHERE volume_type_id = $1")
        .bind(type_id)
        .fetch_one(&mut *c)
        .await
        .map_err(db("count volumes of type"))?;
    Ok(n > 0)
}

// ---- encryption types ----------------------------------------------------

/// The encryption of a type, if it has one.
pub async fn get_encryption(c: &mut Conn, type_id: &str) -> Result<Option<Encryption>> {
    let row = sqlx::query("SELECT * FROM encryption_types WHERE type_id = $1")
        .bind(type_id)
        .fetch_optional(&mut *c)
        .await
        .map_err(db("read encryption type"))?;
    row.map(|r| {
        let provider: String = r.get("provider");
        Ok(Encryption {
            volume_type_id: r.get("type_id"),
            encryption_id: r.get("encryption_id"),
            provider: Provider::of(&provider),
            provider_name: provider,
            cipher: r.get("cipher"),
            key_size: r.get::<Option<i64>, _>("key_size").and_then(|k| u32::try_from(k).ok()),
            control_location: r.get("control_location"),
            created_at: r.get("created_at"),
            updated_at: r.get("updated_at"),
        })
    })
    .transpose()
}

/// Inserts or replaces the encryption of a type.
pub async fn put_encryption(c: &mut Conn, e: &Encryption) -> Result<()> {
    sqlx::query(
        "INSERT INTO encryption_types (type_id, encryption_id, provider, cipher, key_size, control_location, created_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
         ON CONFLICT (type_id) DO UPDATE SET provider = excluded.provider, cipher = excluded.cipher,
             key_size = excluded.key_size, control_location = excluded.control_location, updated_at = excluded.updated_at",
    )
    .bind(&e.volume_type_id)
    .bind(&e.encryption_id)
    .bind(&e.provider_name)
    .bind(&e.cipher)
    .bind(e.key_size.map(i64::from))
    .bind(&e.control_location)
    .bind(&e.created_at)
    .bind(&e.updated_at)
    .execute(&mut *c)
    .await
    .map_err(db("write encryption type"))?;
    Ok(())
}

/// Removes the encryption of a type.
pub async fn delete_encryption(c: &mut Conn, type_id: &str) -> Result<()> {
    sqlx::query("DELETE FROM encryption_types WHERE type_id = $1")
        .bind(type_id)
        .execute(&mut *c)
        .await
        .map_err(db("delete encryption type"))?;
    Ok(())
}

// ---- volumes -------------------------------------------------------------

fn volume_from_row(r: &AnyRow) -> Volume {
    let metadata: String = r.get("metadata");
    Volume {
        id: r.get("id"),
        project_id: r.get("project_id"),
        user_id: r.get("user_id"),
        name: r.get("name"),
        description: r.get("description"),
        size_gb: u64::try_from(r.get::<i64, _>("size_gb")).unwrap_or(0),
        status: r.get("status"),
        volume_type_id: r.get("volume_type_id"),
        source_volid: r.get("source_volid"),
        snapshot_id: r.get("snapshot_id"),
        encryption_key_id: r.get("encryption_key_id"),
        metadata: serde_json::from_str(&metadata).unwrap_or_default(),
        bootable: r.get::<i64, _>("bootable") != 0,
        readonly: r.get::<Option<i64>, _>("readonly").map(|n| n != 0),
        group_id: r.get("group_id"),
        created_at: r.get("created_at"),
        updated_at: r.get("updated_at"),
    }
}

/// A volume by id, whatever its project.
pub async fn get_volume(c: &mut Conn, id: &str) -> Result<Option<Volume>> {
    let row = sqlx::query("SELECT * FROM volumes WHERE id = $1")
        .bind(id)
        .fetch_optional(&mut *c)
        .await
        .map_err(db("read volume"))?;
    Ok(row.as_ref().map(volume_from_row))
}

/// Volumes of `project` (all projects when `None`), oldest first, filtered.
pub async fn list_volumes(
    c: &mut Conn,
    project: Option<&str>,
    name: Option<&str>,
    status: Option<&str>,
) -> Result<Vec<Volume>> {
    let rows = sqlx::query(
        "SELECT * FROM volumes WHERE ($1 IS NULL OR project_id = $1) AND ($2 IS NULL OR name = $2)
         AND ($3 IS NULL OR status = $3) ORDER BY created_at, id",
    )
    .bind(project)
    .bind(name)
    .bind(status)
    .fetch_all(&mut *c)
    .await
    .map_err(db("list volumes"))?;
    Ok(rows.iter().map(volume_from_row).collect())
}

/// Inserts a new volume record.
pub async fn insert_volume(c: &mut Conn, v: &Volume) -> Result<()> {
    sqlx::query(
        "INSERT INTO volumes (id, project_id, user_id, name, description, size_gb, status, volume_type_id,
             source_volid, snapshot_id, encryption_key_id, metadata, created_at, updated_at, group_id)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)",
    )
    .bind(&v.id)
    .bind(&v.project_id)
    .bind(&v.user_id)
    .bind(&v.name)
    .bind(&v.description)
    .bind(i64::try_from(v.size_gb).unwrap_or(i64::MAX))
    .bind(&v.status)
    .bind(&v.volume_type_id)
    .bind(&v.source_volid)
    .bind(&v.snapshot_id)
    .bind(&v.encryption_key_id)
    .bind(serde_json::to_string(&v.metadata).unwrap_or_else(|_| "{}".into()))
    .bind(&v.created_at)
    .bind(&v.updated_at)
    .bind(&v.group_id)
    .execute(&mut *c)
    .await
    .map_err(db("create volume"))?;
    Ok(())
}

/// Updates name, description and metadata.
pub async fn update_volume_info(c: &mut Conn, v: &Volume) -> Result<()> {
    sqlx::query("UPDATE volumes SET name = $1, description = $2, metadata = $3, updated_at = $4 WHERE id = $5")
        .bind(&v.name)
        .bind(&v.description)
        .bind(serde_json::to_string(&v.metadata).unwrap_or_else(|_| "{}".into()))
        .bind(now_iso())
        .bind(&v.id)
        .execute(&mut *c)
        .await
        .map_err(db("update volume"))?;
    Ok(())
}

/// Sets a volume's status.
pub async fn set_status(c: &mut Conn, id: &str, status: &str) -> Result<()> {
    sqlx::query("UPDATE volumes SET status = $1, updated_at = $2 WHERE id = $3")
        .bind(status)
        .bind(now_iso())
        .bind(id)
        .execute(&mut *c)
        .await
        .map_err(db("set volume status"))?;
    Ok(())
}

/// Sets the key that opens a volume.
pub async fn set_key(c: &mut Conn, id: &str, key_id: Option<&str>) -> Result<()> {
    sqlx::query("UPDATE volumes SET encryption_key_id = $1, updated_at = $2 WHERE id = $3")
        .bind(key_id)
        .bind(now_iso())
        .bind(id)
        .execute(&mut *c)
        .await
        .map_err(db("set volume key"))?;
    Ok(())
}

/// Marks `id` deleting if it may be deleted: in a final state (any state but
/// `deleting` when forced: a `creating` with no job is one an admin reset)
/// and not the source or target of a job in progress. One statement, so it cannot race a clone
/// that is being admitted. Returns false if the volume was not in such a state.
pub async fn claim_for_delete(c: &mut Conn, id: &str, force: bool) -> Result<bool> {
    let r = sqlx::query(
        "UPDATE volumes SET status = 'deleting', updated_at = $1 WHERE id = $2
         AND (status IN ('available', 'error', 'error_deleting') OR ($3 = 1 AND status <> 'deleting'))
         AND NOT EXISTS (SELECT 1 FROM jobs WHERE jobs.source_id = $2)
         AND NOT EXISTS (SELECT 1 FROM jobs WHERE jobs.target_id = $2)",
    )
    .bind(now_iso())
    .bind(id)
    .bind(i64::from(force))
    .execute(&mut *c)
    .await
    .map_err(db("claim volume for delete"))?;
    Ok(r.rows_affected() == 1)
}

/// Whether a clone of `id` is in progress.
pub async fn is_being_cloned(c: &mut Conn, id: &str) -> Result<bool> {
    let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM jobs WHERE source_id = $1")
        .bind(id)
        .fetch_one(&mut *c)
        .await
        .map_err(db("read jobs"))?;
    Ok(n > 0)
}

/// Removes a volume record.
pub async fn delete_volume(c: &mut Conn, id: &str) -> Result<()> {
    sqlx::query("DELETE FROM volumes WHERE id = $1")
        .bind(id)
        .execute(&mut *c)
        .await
        .map_err(db("delete volume"))?;
    Ok(())
}

// ---- attachments ---------------------------------------------------------

fn attachment_from_row(r: &AnyRow) -> Attachment {
    let connector: Option<String> = r.get("connector");
    let mode: String = r.get("attach_mode");
    Attachment {
        id: r.get("id"),
        volume_id: r.get("volume_id"),
        project_id: r.get("project_id"),
        instance_uuid: r.get("instance_uuid"),
        attach_status: r.get("attach_status"),
        attach_mode: AttachMode::parse(&mode).unwrap_or(AttachMode::Rw),
        mountpoint: r.get("mountpoint"),
        attached_host: r.get("attached_host"),
        connector: connector.and_then(|c| serde_json::from_str(&c).ok()),
        export_name: r.get("export_name"),
        node: r.get("node"),
        attach_time: r.get("attach_time"),
        created_at: r.get("created_at"),
        updated_at: r.get("updated_at"),
    }
}

/// Inserts or replaces an attachment record.
pub async fn put_attachment(c: &mut Conn, a: &Attachment) -> Result<()> {
    sqlx::query(
        "INSERT INTO attachments (id, volume_id, project_id, instance_uuid, attach_status, attach_mode, mountpoint,
             attached_host, connector, export_name, node, attach_time, created_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)
         ON CONFLICT (id) DO UPDATE SET instance_uuid = excluded.instance_uuid, attach_status = excluded.attach_status,
             attach_mode = excluded.attach_mode, mountpoint = excluded.mountpoint, attached_host = excluded.attached_host,
             connector = excluded.connector, export_name = excluded.export_name, node = excluded.node,
             attach_time = excluded.attach_time, updated_at = excluded.updated_at",
    )
    .bind(&a.id)
    .bind(&a.volume_id)
    .bind(&a.project_id)
    .bind(&a.instance_uuid)
    .bind(&a.attach_status)
    .bind(a.attach_mode.as_str())
    .bind(&a.mountpoint)
    .bind(&a.attached_host)
    .bind(a.connector.as_ref().map(|c| c.to_string()))
    .bind(&a.export_name)
    .bind(&a.node)
    .bind(&a.attach_time)
    .bind(&a.created_at)
    .bind(now_iso())
    .execute(&mut *c)
    .await
    .map_err(db("write attachment"))?;
    Ok(())
}

/// An attachment by id, whatever its project.
pub async fn get_attachment(c: &mut Conn, id: &str) -> Result<Option<Attachment>> {
    let row = sqlx::query("SELECT * FROM attachments WHERE id = $1")
        .bind(id)
        .fetch_optional(&mut *c)
        .await
        .map_err(db("read attachment"))?;
    Ok(row.as_ref().map(attachment_from_row))
}

/// Attachments of `project` (all when `None`), of `volume` when given, oldest first.
pub async fn list_attachments(c: &mut Conn, project: Option<&str>, volume: Option<&str>) -> Result<Vec<Attachment>> {
    let rows = sqlx::query(
        "SELECT * FROM attachments WHERE ($1 IS NULL OR project_id = $1) AND ($2 IS NULL OR volume_id = $2)
         ORDER BY created_at, id",
    )
    .bind(project)
    .bind(volume)
    .fetch_all(&mut *c)
    .await
    .map_err(db("list attachments"))?;
    Ok(rows.iter().map(attachment_from_row).collect())
}

/// The attachments whose export `node` serves.
pub async fn node_exports(c: &mut Conn, node: &str) -> Result<Vec<Attachment>> {
    let rows = sqlx::query("SELECT * FROM attachments WHERE node = $1 AND export_name IS NOT NULL ORDER BY created_at, id")
        .bind(node)
        .fetch_all(&mut *c)
        .await
        .map_err(db("list exports"))?;
    Ok(rows.iter().map(attachment_from_row).collect())
}

/// Removes an attachment record.
pub async fn delete_attachment(c: &mut Conn, id: &str) -> Result<()> {
    sqlx::query("DELETE FROM attachments WHERE id = $1")
        .bind(id)
        .execute(&mut *c)
        .await
        .map_err(db("delete attachment"))?;
    Ok(())
}

/// Whether any attachment of `volume` exists, in whatever state.
pub async fn has_attachments(c: &mut Conn, volume: &str) -> Result<bool> {
    let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM attachments WHERE volume_id = $1")
        .bind(volume)
        .fetch_one(&mut *c)
        .await
        .map_err(db("read attachments"))?;
    Ok(n > 0)
}

/// The status an idle volume returns to: `in-use` while a complete
/// attachment remains, `available` when none is left at all, and the
/// attach-in-progress status in between.
pub async fn settled_status(c: &mut Conn, volume: &str) -> Result<&'static str> {
    use crate::model::{attach_status as a, status as s};
    let rows = list_attachments(c, None, Some(volume)).await?;
    let any = |st: &str| rows.iter().any(|r| r.attach_status == st);
    Ok(if any(a::ATTACHED) {
        s::IN_USE
    } else if any(a::ATTACHING) {
        s::ATTACHING
    } else if any(a::RESERVED) {
        s::RESERVED
    } else {
        s::AVAILABLE
    })
}

// ---- jobs ----------------------------------------------------------------

/// A job as stored: the engine's bookkeeping plus the machine's state,
/// serialised (the engine reads it back; nothing here looks inside).
#[derive(Debug, Clone)]
pub struct JobRow {
    pub id: String,
    pub kind: String,
    pub target_id: String,
    pub project_id: String,
    pub source_id: Option<String>,
    /// The current state's label, for people and `rekey job list`.
    pub step: String,
    pub state: String,
    pub old_key_id: Option<String>,
    pub new_key_id: Option<String>,
    pub attempts: u32,
    pub next_attempt_at: i64,
    pub epoch: i64,
    /// The node whose lease the job is under, and until when (ms).
    pub lease_owner: Option<String>,
    pub lease_until: i64,
    /// Why the last attempt failed (only ever set by the engine).
    pub last_error: Option<String>,
    pub created_at: String,
    /// Set by [`claim_jobs`]: the node whose lease ran out.
    pub previous_owner: Option<String>,
}

fn job_from_row(r: &AnyRow) -> JobRow {
    JobRow {
        id: r.get("id"),
        kind: r.get("kind"),
        target_id: r.get("target_id"),
        project_id: r.get("project_id"),
        source_id: r.get("source_id"),
        step: r.get("step"),
        state: r.get("state"),
        old_key_id: r.get("old_key_id"),
        new_key_id: r.get("new_key_id"),
        attempts: u32::try_from(r.get::<i64, _>("attempts")).unwrap_or(u32::MAX),
        next_attempt_at: r.get("next_attempt_at"),
        epoch: r.get("epoch"),
        lease_owner: r.get("lease_owner"),
        lease_until: r.get("lease_until"),
        last_error: r.get("last_error"),
        created_at: r.get("created_at"),
        previous_owner: None,
    }
}

/// Inserts a job.
pub async fn insert_job(c: &mut Conn, j: &JobRow) -> Result<()> {
    let now = now_iso();
    sqlx::query(
        "INSERT INTO jobs (id, kind, target_id, project_id, source_id, step, state, old_key_id, new_key_id,
             attempts, next_attempt_at, epoch, lease_owner, lease_until, last_error, created_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, NULL, $15, $16)",
    )
    .bind(&j.id)
    .bind(&j.kind)
    .bind(&j.target_id)
    .bind(&j.project_id)
    .bind(&j.source_id)
    .bind(&j.step)
    .bind(&j.state)
    .bind(&j.old_key_id)
    .bind(&j.new_key_id)
    .bind(i64::from(j.attempts))
    .bind(j.next_attempt_at)
    .bind(j.epoch)
    .bind(&j.lease_owner)
    .bind(j.lease_until)
    .bind(&now)
    .bind(&now)
    .execute(&mut *c)
    .await
    .map_err(db("create job"))?;
    Ok(())
}

/// Takes a job up for a new run on `node`, leased until `until` (ms): its
/// epoch goes up by one, which fences off every earlier run. With
/// `own_only`, only if `node` holds its lease already (a job `node` just
/// admitted). The new epoch, or `None` if the job is gone (or not `node`'s).
pub async fn take_job(c: &mut Conn, id: &str, node: &str, until: i64, own_only: bool) -> Result<Option<i64>> {
    let own = if own_only { " AND lease_owner = $1" } else { "" };
    sqlx::query_scalar(&format!(
        "UPDATE jobs SET epoch = epoch + 1, lease_owner = $1, lease_until = $2, updated_at = $3 WHERE id = $4{own} RETURNING epoch"
    ))
    .bind(node)
    .bind(until)
    .bind(now_iso())
    .bind(id)
    .fetch_optional(&mut *c)
    .await
    .map_err(db("take job"))
}

/// Claims up to `limit` jobs whose lease has run out (a dead or stalled
/// node's, or nobody's) for `node`, each with a new epoch, and returns them.
/// On PostgreSQL the rows are locked `FOR UPDATE SKIP LOCKED`, so nodes
/// claiming at once never wait for, or claim, the same row; SQLite's
/// `BEGIN IMMEDIATE` serialises the claimers instead.
pub async fn claim_jobs(c: &mut Conn, postgres: bool, node: &str, now: i64, until: i64, limit: i64) -> Result<Vec<JobRow>> {
    let lock = if postgres { " FOR UPDATE SKIP LOCKED" } else { "" };
    let ids: Vec<(String, Option<String>)> = sqlx::query_as(&format!(
        "SELECT id, lease_owner FROM jobs WHERE lease_owner IS NULL OR lease_until < $1 ORDER BY created_at, id LIMIT $2{lock}"
    ))
    .bind(now)
    .bind(limit)
    .fetch_all(&mut *c)
    .await
    .map_err(db("claim jobs"))?;
    let mut out = Vec::with_capacity(ids.len());
    for (id, previous_owner) in ids {
        if take_job(c, &id, node, until, false).await?.is_some() {
            let r = sqlx::query("SELECT * FROM jobs WHERE id = $1").bind(&id).fetch_one(&mut *c).await.map_err(db("claim jobs"))?;
            out.push(JobRow { previous_owner, ..job_from_row(&r) });
        }
    }
    Ok(out)
}

/// Records (or renews) a process's storage session, alive until `until`.
pub async fn session_alive(c: &mut Conn, session: &str, node: &str, until: i64) -> Result<()> {
    sqlx::query(
        "INSERT INTO storage_sessions (session, node, alive_until) VALUES ($1, $2, $3)
         ON CONFLICT (session) DO UPDATE SET alive_until = excluded.alive_until",
    )
    .bind(session)
    .bind(node)
    .bind(until)
    .execute(&mut *c)
    .await
    .map_err(db("record storage session"))?;
    Ok(())
}

/// Storage sessions whose process stopped renewing them before `now`:
/// (session, node).
pub async fn dead_sessions(c: &mut Conn, now: i64) -> Result<Vec<(String, String)>> {
    sqlx::query_as("SELECT session, node FROM storage_sessions WHERE alive_until < $1")
        .bind(now)
        .fetch_all(&mut *c)
        .await
        .map_err(db("read storage sessions"))
}

/// Forgets a fenced session, unless its process renewed it after `now`.
pub async fn forget_session(c: &mut Conn, session: &str, now: i64) -> Result<()> {
    sqlx::query("DELETE FROM storage_sessions WHERE session = $1 AND alive_until < $2")
        .bind(session)
        .bind(now)
        .execute(&mut *c)
        .await
        .map_err(db("forget storage session"))?;
    Ok(())
}

/// Extends `node`'s leases on jobs `ids` to `until`: the heartbeat. On
/// PostgreSQL a job whose row another transaction holds is skipped rather
/// than waited for: that is the job's own step committing, which extends
/// its lease itself ([`save_job`]), and waiting for it would hold up the
/// renewal of every other job in this beat behind one slow commit.
pub async fn renew_leases(c: &mut Conn, postgres: bool, ids: &[String], node: &str, until: i64) -> Result<()> {
    // SQLite has no row locks: its writers take turns on the whole file.
    let lock = if postgres { " FOR UPDATE SKIP LOCKED" } else { "" };
    // sqlx's `Any` driver binds no arrays: one placeholder per id.
    for chunk in ids.chunks(500) {
        let list = (0..chunk.len()).map(|i| format!("${}", i + 3)).collect::<Vec<_>>().join(", ");
        let sql = format!(
            "UPDATE jobs SET lease_until = $1 WHERE id IN (SELECT id FROM jobs WHERE lease_owner = $2 AND id IN ({list}){lock})"
        );
        let mut q = sqlx::query(&sql).bind(until).bind(node);
        for id in chunk {
            q = q.bind(id);
        }
        q.execute(&mut *c).await.map_err(db("renew leases"))?;
    }
    Ok(())
}

/// Whether job `id` is still at `epoch` (no other run has taken it up).
pub async fn job_is_current(c: &mut Conn, id: &str, epoch: i64) -> Result<bool> {
    let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM jobs WHERE id = $1 AND epoch = $2")
        .bind(id)
        .bind(epoch)
        .fetch_one(&mut *c)
        .await
        .map_err(db("read job"))?;
    Ok(n > 0)
}

/// One attempt at one step, as the step log records it.
#[derive(Debug, Clone)]
pub struct StepLogEntry {
    pub id: String,
    pub job_id: String,
    pub kind: String,
    pub step: String,
    pub node: String,
    pub epoch: i64,
    pub started_at: i64,
}

/// Records that a step attempt starts (committed on its own, before the
/// action: a node that dies mid-step leaves a row without an end).
pub async fn step_started(c: &mut Conn, e: &StepLogEntry) -> Result<()> {
    sqlx::query(
        "INSERT INTO step_log (id, job_id, kind, step, node, epoch, started_at, ended_at, outcome)
         VALUES ($1, $2, $3, $4, $5, $6, $7, NULL, NULL)",
    )
    .bind(&e.id)
    .bind(&e.job_id)
    .bind(&e.kind)
    .bind(&e.step)
    .bind(&e.node)
    .bind(e.epoch)
    .bind(e.started_at)
    .execute(&mut *c)
    .await
    .map_err(db("log step"))?;
    Ok(())
}

/// Records a step attempt's end, in the transaction that commits its outcome.
pub async fn step_ended(c: &mut Conn, id: &str, ended_at: i64, outcome: &str) -> Result<()> {
    sqlx::query("UPDATE step_log SET ended_at = $1, outcome = $2 WHERE id = $3")
        .bind(ended_at)
        .bind(outcome)
        .bind(id)
        .execute(&mut *c)
        .await
        .map_err(db("log step"))?;
    Ok(())
}

/// Records a job's next state and extends its lease to `j.lease_until`, if
/// the job is still at `j.epoch`; false if another run has taken it up since.
pub async fn save_job(c: &mut Conn, j: &JobRow) -> Result<bool> {
    let r = sqlx::query(
        "UPDATE jobs SET step = $1, state = $2, old_key_id = $3, new_key_id = $4, attempts = $5, next_attempt_at = $6,
             last_error = NULL, updated_at = $7, lease_until = CASE WHEN lease_until < $10 THEN $10 ELSE lease_until END WHERE id = $8 AND epoch = $9",
    )
    .bind(&j.step)
    .bind(&j.state)
    .bind(&j.old_key_id)
    .bind(&j.new_key_id)
    .bind(i64::from(j.attempts))
    .bind(j.next_attempt_at)
    .bind(now_iso())
    .bind(&j.id)
    .bind(j.epoch)
    .bind(j.lease_until)
    .execute(&mut *c)
    .await
    .map_err(db("save job"))?;
    Ok(r.rows_affected() == 1)
}

/// Records a failed attempt and when to try again (fenced as [`save_job`]).
pub async fn job_failed(c: &mut Conn, id: &str, epoch: i64, error: &str, attempts: u32, next_attempt_at: i64) -> Result<bool> {
    let r = sqlx::query(
        "UPDATE jobs SET attempts = $1, next_attempt_at = $2, last_error = $3, updated_at = $4 WHERE id = $5 AND epoch = $6",
    )
    .bind(i64::from(attempts))
    .bind(next_attempt_at)
    .bind(error)
    .bind(now_iso())
    .bind(id)
    .bind(epoch)
    .execute(&mut *c)
    .await
    .map_err(db("save job"))?;
    Ok(r.rows_affected() == 1)
}

/// Removes a finished (or rolled-back) job, fenced as [`save_job`].
pub async fn delete_job(c: &mut Conn, id: &str, epoch: i64) -> Result<bool> {
    let r = sqlx::query("DELETE FROM jobs WHERE id = $1 AND epoch = $2")
        .bind(id)
        .bind(epoch)
        .execute(&mut *c)
        .await
        .map_err(db("finish job"))?;
    Ok(r.rows_affected() == 1)
}

/// Unfinished jobs counted by (kind, step).
pub async fn job_counts(c: &mut Conn) -> Result<Vec<(String, String, i64)>> {
    let rows = sqlx::query("SELECT kind, step, COUNT(*) AS n FROM jobs GROUP BY kind, step ORDER BY kind, step")
        .fetch_all(&mut *c)
        .await
        .map_err(db("count jobs"))?;
    Ok(rows.iter().map(|r| (r.get("kind"), r.get("step"), r.get("n"))).collect())
}

/// Volumes counted by status.
pub async fn volume_counts(c: &mut Conn) -> Result<Vec<(String, i64)>> {
    let rows = sqlx::query("SELECT status, COUNT(*) AS n FROM volumes GROUP BY status ORDER BY status")
        .fetch_all(&mut *c)
        .await
        .map_err(db("count volumes"))?;
    Ok(rows.iter().map(|r| (r.get("status"), r.get("n"))).collect())
}

/// Every unfinished job, oldest first.
pub async fn list_jobs(c: &mut Conn) -> Result<Vec<JobRow>> {
    let rows = sqlx::query("SELECT * FROM jobs ORDER BY created_at, id")
        .fetch_all(&mut *c)
        .await
        .map_err(db("list jobs"))?;
    Ok(rows.iter().map(job_from_row).collect())
}

// ---- key deletion queue --------------------------------------------------

/// Queues a key for deletion (idempotent).
pub async fn queue_key_deletion(c: &mut Conn, key_id: &str, project_id: &str, reason: &str) -> Result<()> {
    sqlx::query(
        "INSERT INTO key_deletions (key_id, project_id, reason, attempts, last_error, created_at)
         VALUES ($1, $2, $3, 0, NULL, $4) ON CONFLICT DO NOTHING",
    )
    .bind(key_id)
    .bind(project_id)
    .bind(reason)
    .bind(now_iso())
    .execute(&mut *c)
    .await
    .map_err(db("queue key deletion"))?;
    Ok(())
}

/// Leases queued key `key_id` to `node` until `until` if nobody holds it:
/// nodes sharing the queue never delete the same key at once.
pub async fn claim_key_deletion(c: &mut Conn, key_id: &str, node: &str, now: i64, until: i64) -> Result<bool> {
    let r = sqlx::query(
        "UPDATE key_deletions SET lease_owner = $1, lease_until = $2
         WHERE key_id = $3 AND (lease_owner IS NULL OR lease_owner = $1 OR lease_until < $4)",
    )
    .bind(node)
    .bind(until)
    .bind(key_id)
    .bind(now)
    .execute(&mut *c)
    .await
    .map_err(db("claim key deletion"))?;
    Ok(r.rows_affected() == 1)
}

/// Queued key deletions due at `now_ms`: (key id, project id, attempts).
pub async fn due_key_deletions(c: &mut Conn, now_ms: i64) -> Result<Vec<(String, String, u32)>> {
    let rows = sqlx::query(
        "SELECT key_id, project_id, attempts FROM key_deletions WHERE next_attempt_at <= $1 ORDER BY created_at",
    )
    .bind(now_ms)
    .fetch_all(&mut *c)
        .await
        .map_err(db("list key deletions"))?;
    Ok(rows
        .iter()
        .map(|r| (r.get("key_id"), r.get("project_id"), u32::try_from(r.get::<i64, _>("attempts")).unwrap_or(0)))
        .collect())
}

/// Drops a done key deletion.
pub async fn key_deleted(c: &mut Conn, key_id: &str) -> Result<()> {
    sqlx::query("DELETE FROM key_deletions WHERE key_id = $1")
        .bind(key_id)
        .execute(&mut *c)
        .await
        .map_err(db("finish key deletion"))?;
    Ok(())
}

/// Records a failed key deletion attempt and when to try again.
pub async fn key_deletion_failed(c: &mut Conn, key_id: &str, error: &str, next_attempt_at: i64) -> Result<()> {
    sqlx::query(
        "UPDATE key_deletions SET attempts = attempts + 1, last_error = $1, next_attempt_at = $2 WHERE key_id = $3",
    )
    .bind(error)
    .bind(next_attempt_at)
    .bind(key_id)
        .execute(&mut *c)
        .await
        .map_err(db("record key deletion failure"))?;
    Ok(())
}

/// The project that owns a key this service knows (a volume's key, a key a
/// job made, or one queued for deletion).
pub async fn key_project(c: &mut Conn, key_id: &str) -> Result<Option<String>> {
    sqlx::query_scalar(
        "SELECT project_id FROM volumes WHERE encryption_key_id = $1
         UNION SELECT project_id FROM jobs WHERE old_key_id = $1 OR new_key_id = $1
         UNION SELECT project_id FROM key_deletions WHERE key_id = $1
         UNION SELECT project_id FROM snapshots WHERE encryption_key_id = $1
         UNION SELECT project_id FROM backups WHERE encryption_key_id = $1",
    )
    .bind(key_id)
    .fetch_optional(&mut *c)
    .await
    .map_err(db("find key owner"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_objects_names_every_table_and_index() {
        let names: Vec<&str> = schema_objects().collect();
        assert_eq!(names.len(), SCHEMA.matches("IF NOT EXISTS").count());
        for n in ["volume_types", "project_default_types", "volumes", "volumes_by_project", "jobs", "step_log", "key_deletions", "transfers", "attachments"] {
            assert!(names.contains(&n), "{n} missing from {names:?}");
        }
        assert!(names.iter().all(|n| n.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')), "{names:?}");
    }

    /// A SQLite database made before `snapshots.backing_volume_id` (and
    /// `storage_sessions`) existed gets both when it is opened.
    #[test]
    fn an_older_sqlite_database_gets_the_added_column_and_table() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("old.sqlite").display());
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let db = open(&url).await.unwrap();
            let mut c = db.conn().await.unwrap();
            sqlx::raw_sql("ALTER TABLE snapshots DROP COLUMN backing_volume_id; DROP TABLE storage_sessions;")
                .execute(&mut *c)
                .await
                .unwrap();
            assert!(!has_column(&mut c, "snapshots", "backing_volume_id").await.unwrap());
            drop(c);
            drop(db);
            let db = open(&url).await.unwrap();
            let mut c = db.conn().await.unwrap();
            assert!(has_column(&mut c, "snapshots", "backing_volume_id").await.unwrap(), "column not added");
            session_alive(&mut c, "127.0.0.1:0/1", "n", 5).await.unwrap();
            assert_eq!(dead_sessions(&mut c, 6).await.unwrap(), vec![("127.0.0.1:0/1".to_owned(), "n".to_owned())]);
            assert!(dead_sessions(&mut c, 5).await.unwrap().is_empty(), "a session alive until 5 is not dead at 5");
            forget_session(&mut c, "127.0.0.1:0/1", 6).await.unwrap();
            assert!(dead_sessions(&mut c, 100).await.unwrap().is_empty());
        });
    }
}
