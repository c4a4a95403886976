//! SQL for snapshots, backups and transfers (same portability rules as
//! `crate::db`: `$N` placeholders, `BIGINT`/`TEXT`, no SQLite-only functions).

use std::collections::BTreeMap;

use sqlx::any::AnyRow;
use sqlx::Row;

use crate::db::Conn;
use crate::error::{db, Result, ServiceError};
use crate::model::{now_iso, Caller};

/// A snapshot record.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    /// UUID.
    pub id: String,
    /// Owning project (the volume's).
    pub project_id: String,
    /// Creating user.
    pub user_id: String,
    /// The volume it was taken of.
    pub volume_id: String,
    /// Name.
    pub name: Option<String>,
    /// Description.
    pub description: Option<String>,
    /// Size in GiB (the volume's at the time).
    pub size_gb: u64,
    /// `creating`, `available`, `deleting`, `error`, `error_deleting`.
    pub status: String,
    /// The snapshot's own copy of the volume's key at the time.
    pub encryption_key_id: Option<String>,
    /// User metadata.
    pub metadata: BTreeMap<String, String>,
    /// Creation time.
    pub created_at: String,
    /// Update time.
    pub updated_at: String,
    /// The volume whose backend snapshot holds the data, when it is not
    /// `volume_id`: a transferred snapshot is rekeyed through a scratch
    /// clone, which then holds it (and goes with the snapshot).
    pub backing_volume_id: Option<String>,
    /// The progress Nova last reported (`os-update_snapshot_status`).
    pub progress: Option<String>,
    /// The group snapshot it is part of (3.14+), if any.
    pub group_snapshot_id: Option<String>,
}

/// A backup record.
#[derive(Debug, Clone, PartialEq)]
pub struct Backup {
    /// UUID.
    pub id: String,
    /// Owning project.
    pub project_id: String,
    /// Creating user.
    pub user_id: String,
    /// The volume backed up.
    pub volume_id: String,
    /// That volume's type (for a restore to a new volume).
    pub volume_type_id: String,
    /// Name.
    pub name: Option<String>,
    /// Description.
    pub description: Option<String>,
    /// Size in GiB.
    pub size_gb: u64,
    /// `creating`, `available`, `restoring`, `deleting`, `error`.
    pub status: String,
    /// The backup an incremental backup stores its changes against.
    pub parent_id: Option<String>,
    /// The backup's own copy of the volume's key (as Cinder keeps one).
    pub encryption_key_id: Option<String>,
    /// Chunks this backup stored itself.
    pub object_count: u64,
    /// Bytes this backup stored itself (compressed chunks + manifest).
    pub stored_bytes: u64,
    /// Why it failed.
    pub fail_reason: Option<String>,
    /// The snapshot it was taken of, when it was (the volume's data then).
    pub snapshot_id: Option<String>,
    /// The volume's metadata when it was backed up: a restore to a new
    /// volume gives it back, as Cinder's does.
    pub volume_metadata: BTreeMap<String, String>,
    /// Creation time.
    pub created_at: String,
    /// Update time.
    pub updated_at: String,
}

/// A volume transfer offer.
#[derive(Debug, Clone, PartialEq)]
pub struct Transfer {
    /// UUID.
    pub id: String,
    /// The volume offered.
    pub volume_id: String,
    /// The donor project.
    pub project_id: String,
    /// The donor user.
    pub user_id: String,
    /// Name.
    pub name: Option<String>,
    /// Random salt (hex).
    pub salt: String,
    /// SHA-256 (hex) of salt ‖ auth_key: the auth key itself is never stored.
    pub crypt_hash: String,
    /// Whether the snapshots stay behind (they are then refused: see transfers).
    pub no_snapshots: bool,
    /// Accepted (the volume moves, or has moved, to the destination).
    pub accepted: bool,
    /// The recipient project, once accepted.
    pub destination_project_id: Option<String>,
    /// The recipient user, once accepted.
    pub destination_user_id: Option<String>,
    /// Creation time.
    pub created_at: String,
}

fn u64_col(r: &AnyRow, c: &str) -> u64 {
    u64::try_from(r.get::<i64, _>(c)).unwrap_or(0)
}

fn i64_of(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn meta(r: &AnyRow) -> BTreeMap<String, String> {
    let m: String = r.get("metadata");
    serde_json::from_str(&m).unwrap_or_default()
}

// ---- snapshots -----------------------------------------------------------

fn snapshot_from_row(r: &AnyRow) -> Snapshot {
    Snapshot {
        id: r.get("id"),
        project_id: r.get("project_id"),
        user_id: r.get("user_id"),
        volume_id: r.get("volume_id"),
        name: r.get("name"),
        description: r.get("description"),
        size_gb: u64_col(r, "size_gb"),
        status: r.get("status"),
        encryption_key_id: r.get("encryption_key_id"),
        metadata: meta(r),
        created_at: r.get("created_at"),
        updated_at: r.get("updated_at"),
        backing_volume_id: r.get("backing_volume_id"),
        progress: r.get("progress"),
        group_snapshot_id: r.get("group_snapshot_id"),
    }
}

/// Inserts a snapshot.
pub(crate) async fn insert_snapshot(c: &mut Conn, s: &Snapshot) -> Result<()> {
    sqlx::query(
        "INSERT INTO snapshots (id, project_id, user_id, volume_id, name, description, size_gb, status,
             encryption_key_id, metadata, created_at, updated_at, backing_volume_id, group_snapshot_id)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
    )
    .bind(&s.id)
    .bind(&s.project_id)
    .bind(&s.user_id)
    .bind(&s.volume_id)
    .bind(&s.name)
    .bind(&s.description)
    .bind(i64_of(s.size_gb))
    .bind(&s.status)
    .bind(&s.encryption_key_id)
    .bind(serde_json::to_string(&s.metadata).unwrap_or_else(|_| "{}".into()))
    .bind(&s.created_at)
    .bind(&s.updated_at)
    .bind(&s.backing_volume_id)
    .bind(&s.group_snapshot_id)
    .execute(&mut *c)
    .await
    .map_err(db("create snapshot"))?;
    Ok(())
}

/// A snapshot by id, any project.
pub(crate) async fn get_snapshot(c: &mut Conn, id: &str) -> Result<Option<Snapshot>> {
    let row = sqlx::query("SELECT * FROM snapshots WHERE id = $1")
        .bind(id)
        .fetch_optional(&mut *c)
        .await
        .map_err(db("read snapshot"))?;
    Ok(row.as_ref().map(snapshot_from_row))
}

/// Snapshots of `project` (all when `None`), optionally of one volume.
pub(crate) async fn list_snapshots(c: &mut Conn, project: Option<&str>, volume: Option<&str>) -> Result<Vec<Snapshot>> {
    let rows = sqlx::query(
        "SELECT * FROM snapshots WHERE ($1 IS NULL OR project_id = $1) AND ($2 IS NULL OR volume_id = $2)
         ORDER BY created_at, id",
    )
    .bind(project)
    .bind(volume)
    .fetch_all(&mut *c)
    .await
    .map_err(db("list snapshots"))?;
    Ok(rows.iter().map(snapshot_from_row).collect())
}

/// Sets a snapshot's status.
pub(crate) async fn set_snapshot_status(c: &mut Conn, id: &str, status: &str) -> Result<()> {
    sqlx::query("UPDATE snapshots SET status = $1, updated_at = $2 WHERE id = $3")
        .bind(status)
        .bind(now_iso())
        .bind(id)
        .execute(&mut *c)
        .await
        .map_err(db("set snapshot status"))?;
    Ok(())
}

/// Writes name, description, metadata, key and project.
pub(crate) async fn update_snapshot(c: &mut Conn, s: &Snapshot) -> Result<()> {
    sqlx::query(
        "UPDATE snapshots SET name = $1, description = $2, metadata = $3, encryption_key_id = $4, project_id = $5,
             user_id = $6, updated_at = $7, backing_volume_id = $8 WHERE id = $9",
    )
    .bind(&s.name)
    .bind(&s.description)
    .bind(serde_json::to_string(&s.metadata).unwrap_or_else(|_| "{}".into()))
    .bind(&s.encryption_key_id)
    .bind(&s.project_id)
    .bind(&s.user_id)
    .bind(now_iso())
    .bind(&s.backing_volume_id)
    .bind(&s.id)
    .execute(&mut *c)
    .await
    .map_err(db("update snapshot"))?;
    Ok(())
}

/// Removes a snapshot record.
pub(crate) async fn delete_snapshot(c: &mut Conn, id: &str) -> Result<()> {
    sqlx::query("DELETE FROM snapshots WHERE id = $1").bind(id).execute(&mut *c).await.map_err(db("delete snapshot"))?;
    Ok(())
}

// ---- backups -------------------------------------------------------------

fn backup_from_row(r: &AnyRow) -> Backup {
    Backup {
        id: r.get("id"),
        project_id: r.get("project_id"),
        user_id: r.get("user_id"),
        volume_id: r.get("volume_id"),
        volume_type_id: r.get("volume_type_id"),
        name: r.get("name"),
        description: r.get("description"),
        size_gb: u64_col(r, "size_gb"),
        status: r.get("status"),
        parent_id: r.get("parent_id"),
        encryption_key_id: r.get("encryption_key_id"),
        object_count: u64_col(r, "object_count"),
        stored_bytes: u64_col(r, "stored_bytes"),
        fail_reason: r.get("fail_reason"),
        snapshot_id: r.get("snapshot_id"),
        volume_metadata: r.get::<Option<String>, _>("volume_metadata").and_then(|m| serde_json::from_str(&m).ok()).unwrap_or_default(),
        created_at: r.get("created_at"),
        updated_at: r.get("updated_at"),
    }
}

/// Inserts a backup.
pub(crate) async fn insert_backup(c: &mut Conn, b: &Backup) -> Result<()> {
    sqlx::query(
        "INSERT INTO backups (id, project_id, user_id, volume_id, volume_type_id, name, description, size_gb, status,
             parent_id, encryption_key_id, object_count, stored_bytes, fail_reason, created_at, updated_at, snapshot_id,
             volume_metadata)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18)",
    )
    .bind(&b.id)
    .bind(&b.project_id)
    .bind(&b.user_id)
    .bind(&b.volume_id)
    .bind(&b.volume_type_id)
    .bind(&b.name)
    .bind(&b.description)
    .bind(i64_of(b.size_gb))
    .bind(&b.status)
    .bind(&b.parent_id)
    .bind(&b.encryption_key_id)
    .bind(i64_of(b.object_count))
    .bind(i64_of(b.stored_bytes))
    .bind(&b.fail_reason)
    .bind(&b.created_at)
    .bind(&b.updated_at)
    .bind(&b.snapshot_id)
    .bind(serde_json::to_string(&b.volume_metadata).unwrap_or_else(|_| "{}".into()))
    .execute(&mut *c)
    .await
    .map_err(db("create backup"))?;
    Ok(())
}

/// A backup by id, any project.
pub(crate) async fn get_backup(c: &mut Conn, id: &str) -> Result<Option<Backup>> {
    let row = sqlx::query("SELECT * FROM backups WHERE id = $1")
        .bind(id)
        .fetch_optional(&mut *c)
        .await
        .map_err(db("read backup"))?;
    Ok(row.as_ref().map(backup_from_row))
}

/// Backups of `project` (all when `None`), oldest first.
pub(crate) async fn list_backups(c: &mut Conn, project: Option<&str>, volume: Option<&str>) -> Result<Vec<Backup>> {
    let rows = sqlx::query(
        "SELECT * FROM backups WHERE ($1 IS NULL OR project_id = $1) AND ($2 IS NULL OR volume_id = $2)
         ORDER BY created_at, id",
    )
    .bind(project)
    .bind(volume)
    .fetch_all(&mut *c)
    .await
    .map_err(db("list backups"))?;
    Ok(rows.iter().map(backup_from_row).collect())
}

/// Whether an incremental backup depends on `id`.
pub(crate) async fn has_dependents(c: &mut Conn, id: &str) -> Result<bool> {
    let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM backups WHERE parent_id = $1")
        .bind(id)
        .fetch_one(&mut *c)
        .await
        .map_err(db("read backups"))?;
    Ok(n > 0)
}

/// Sets a backup's status (and failure reason).
pub(crate) async fn set_backup_status(c: &mut Conn, id: &str, status: &str, reason: Option<&str>) -> Result<()> {
    sqlx::query("UPDATE backups SET status = $1, fail_reason = $2, updated_at = $3 WHERE id = $4")
        .bind(status)
        .bind(reason)
        .bind(now_iso())
        .bind(id)
        .execute(&mut *c)
        .await
        .map_err(db("set backup status"))?;
    Ok(())
}

/// Records a backup's key.
pub(crate) async fn set_backup_key(c: &mut Conn, id: &str, key: Option<&str>) -> Result<()> {
    sqlx::query("UPDATE backups SET encryption_key_id = $1, updated_at = $2 WHERE id = $3")
        .bind(key)
        .bind(now_iso())
        .bind(id)
        .execute(&mut *c)
        .await
        .map_err(db("set backup key"))?;
    Ok(())
}

/// Records what a finished backup stored.
pub(crate) async fn set_backup_stored(c: &mut Conn, id: &str, objects: u64, bytes: u64) -> Result<()> {
    sqlx::query("UPDATE backups SET object_count = $1, stored_bytes = $2, updated_at = $3 WHERE id = $4")
        .bind(i64_of(objects))
        .bind(i64_of(bytes))
        .bind(now_iso())
        .bind(id)
        .execute(&mut *c)
        .await
        .map_err(db("record backup size"))?;
    Ok(())
}

/// Removes a backup record.
pub(crate) async fn delete_backup(c: &mut Conn, id: &str) -> Result<()> {
    sqlx::query("DELETE FROM backups WHERE id = $1").bind(id).execute(&mut *c).await.map_err(db("delete backup"))?;
    Ok(())
}

// ---- transfers -----------------------------------------------------------

fn transfer_from_row(r: &AnyRow) -> Transfer {
    Transfer {
        id: r.get("id"),
        volume_id: r.get("volume_id"),
        project_id: r.get("project_id"),
        user_id: r.get("user_id"),
        name: r.get("name"),
        salt: r.get("salt"),
        crypt_hash: r.get("crypt_hash"),
        no_snapshots: r.get::<i64, _>("no_snapshots") != 0,
        accepted: r.get::<i64, _>("accepted") != 0,
        destination_project_id: r.get("destination_project_id"),
        destination_user_id: r.get("destination_user_id"),
        created_at: r.get("created_at"),
    }
}

/// Inserts a transfer; false if the volume already has one.
pub(crate) async fn insert_transfer(c: &mut Conn, t: &Transfer) -> Result<bool> {
    let r = sqlx::query(
        "INSERT INTO transfers (id, volume_id, project_id, user_id, name, salt, crypt_hash, no_snapshots, accepted,
             destination_project_id, destination_user_id, created_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 0, NULL, NULL, $9) ON CONFLICT DO NOTHING",
    )
    .bind(&t.id)
    .bind(&t.volume_id)
    .bind(&t.project_id)
    .bind(&t.user_id)
    .bind(&t.name)
    .bind(&t.salt)
    .bind(&t.crypt_hash)
    .bind(i64::from(t.no_snapshots))
    .bind(&t.created_at)
    .execute(&mut *c)
    .await
    .map_err(db("create transfer"))?;
    Ok(r.rows_affected() == 1)
}

/// A transfer by id.
pub(crate) async fn get_transfer(c: &mut Conn, id: &str) -> Result<Option<Transfer>> {
    let row = sqlx::query("SELECT * FROM transfers WHERE id = $1")
        .bind(id)
        .fetch_optional(&mut *c)
        .await
        .map_err(db("read transfer"))?;
    Ok(row.as_ref().map(transfer_from_row))
}

/// Transfers of `project` (all when `None`).
pub(crate) async fn list_transfers(c: &mut Conn, project: Option<&str>) -> Result<Vec<Transfer>> {
    let rows = sqlx::query("SELECT * FROM transfers WHERE ($1 IS NULL OR project_id = $1) ORDER BY created_at, id")
        .bind(project)
        .fetch_all(&mut *c)
        .await
        .map_err(db("list transfers"))?;
    Ok(rows.iter().map(transfer_from_row).collect())
}

/// Marks a transfer accepted by `project`; false if it already was.
pub(crate) async fn claim_transfer(c: &mut Conn, id: &str, project: &str, user: &str) -> Result<bool> {
    let r = sqlx::query(
        "UPDATE transfers SET accepted = 1, destination_project_id = $1, destination_user_id = $2
         WHERE id = $3 AND accepted = 0",
    )
    .bind(project)
    .bind(user)
    .bind(id)
    .execute(&mut *c)
    .await
    .map_err(db("accept transfer"))?;
    Ok(r.rows_affected() == 1)
}

/// Re-opens a transfer whose accept failed before anything moved.
pub(crate) async fn unclaim_transfer(c: &mut Conn, id: &str) -> Result<()> {
    sqlx::query("UPDATE transfers SET accepted = 0, destination_project_id = NULL, destination_user_id = NULL WHERE id = $1")
        .bind(id)
        .execute(&mut *c)
        .await
        .map_err(db("re-open transfer"))?;
    Ok(())
}

/// Removes a transfer.
pub(crate) async fn delete_transfer(c: &mut Conn, id: &str) -> Result<()> {
    sqlx::query("DELETE FROM transfers WHERE id = $1").bind(id).execute(&mut *c).await.map_err(db("delete transfer"))?;
    Ok(())
}

/// Moves a volume to another project.
pub(crate) async fn move_volume(c: &mut Conn, id: &str, project: &str, user: &str) -> Result<()> {
    sqlx::query("UPDATE volumes SET project_id = $1, user_id = $2, updated_at = $3 WHERE id = $4")
        .bind(project)
        .bind(user)
        .bind(now_iso())
        .bind(id)
        .execute(&mut *c)
        .await
        .map_err(db("move volume"))?;
    Ok(())
}

/// Every project the service has a record of (volumes, snapshots, backups,
/// jobs, queued key deletions).
pub(crate) async fn known_projects(c: &mut Conn) -> Result<Vec<String>> {
    sqlx::query_scalar(
        "SELECT project_id FROM volumes UNION SELECT project_id FROM snapshots
         UNION SELECT project_id FROM backups UNION SELECT project_id FROM jobs
         UNION SELECT project_id FROM key_deletions ORDER BY 1",
    )
    .fetch_all(&mut *c)
    .await
    .map_err(db("list projects"))
}

/// Every key id a record names (volumes, snapshots, backups): for the audit
/// and for tests that look for orphans.
pub(crate) async fn all_recorded_keys(c: &mut Conn) -> Result<Vec<(String, String, String)>> {
    let rows = sqlx::query(
        "SELECT encryption_key_id AS k, 'volume' AS kind, id FROM volumes WHERE encryption_key_id IS NOT NULL
         UNION ALL SELECT encryption_key_id, 'snapshot', id FROM snapshots WHERE encryption_key_id IS NOT NULL
         UNION ALL SELECT encryption_key_id, 'backup', id FROM backups WHERE encryption_key_id IS NOT NULL",
    )
    .fetch_all(&mut *c)
    .await
    .map_err(db("list recorded keys"))?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1), r.get(2))).collect())
}

/// Sets the key of a snapshot.
pub(crate) async fn set_snapshot_key(c: &mut Conn, id: &str, key: Option<&str>) -> Result<()> {
    sqlx::query("UPDATE snapshots SET encryption_key_id = $1, updated_at = $2 WHERE id = $3")
        .bind(key)
        .bind(now_iso())
        .bind(id)
        .execute(&mut *c)
        .await
        .map_err(db("set snapshot key"))?;
    Ok(())
}

/// A backup of the caller's project that may be restored now.
pub(crate) async fn restorable(c: &mut Conn, caller: &Caller, id: &str) -> Result<Backup> {
    let b = get_backup(c, id)
        .await?
        .filter(|b| b.project_id == caller.project)
        .ok_or_else(|| ServiceError::not_found("Backup", id))?;
    if b.status != "available" {
        return Err(ServiceError::invalid(format!("Invalid backup: Backup status must be available, but is {}.", b.status)));
    }
    Ok(b)
}
