//! Quotas as Cinder has them (`os-quota-sets`, `os-quota-class-sets`,
//! `/limits`): a limit per project and resource, falling back to the
//! `default` class and then to Cinder's built-in defaults; and the check
//! every admission makes, [`reserve`], inside its own transaction.
//!
//! Usage is never kept in counters: it is counted from the resource rows
//! when asked for, so it cannot drift when a delete finishes, a create
//! fails or a node dies between two writes. A volume whose transfer has
//! been accepted counts for the recipient from the accept on (with its
//! snapshots, unless the transfer leaves them behind), so the quota the
//! accept checked stays true while the job moves it.
//!
//! Check-then-insert is atomic because [`reserve`] first writes the
//! project's row in `quota_locks`: on PostgreSQL that row lock is held to
//! the commit, so admissions of one project queue behind each other and
//! each counts the rows the previous one committed (READ COMMITTED reads
//! afresh per statement); on SQLite every write transaction is `BEGIN
//! IMMEDIATE`, so writers already run one at a time.

use std::collections::BTreeMap;

use sqlx::Row;

use crate::db::Conn;
use crate::error::{db, Result, ServiceError};
use crate::model::Volume;
use crate::service::Service;

/// Cinder's resources and its built-in defaults (`quota_volumes`, ...;
/// `per_volume_size_limit`). Per-type resources default to unlimited.
const DEFAULTS: &[(&str, i64)] = &[
    ("volumes", 10),
    ("snapshots", 10),
    ("gigabytes", 1000),
    ("backups", 10),
    ("backup_gigabytes", 1000),
    ("per_volume_gigabytes", -1),
    ("groups", 10),
];

/// The resources Cinder adds for every volume type, as `<kind>_<type name>`.
const PER_TYPE: [&str; 3] = ["volumes", "snapshots", "gigabytes"];

/// Keys a quota-set body may carry that are not resources: Cinder's
/// `tenant_id` and `id`, and `skip_validation`, which `cinder quota-update`
/// still sends (older Cinders read it; usage is always checked here, as
/// today's Cinder does).
const NON_QUOTA_KEYS: [&str; 3] = ["tenant_id", "id", "skip_validation"];

/// The class every project falls back to.
pub const DEFAULT_CLASS: &str = "default";

/// One resource of a project: its limit (`-1` = unlimited) and how much of
/// it is in use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    /// The limit in force.
    pub limit: i64,
    /// Counted from the resource rows.
    pub in_use: i64,
}

/// What an admission adds to a project's usage.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Delta {
    /// Volumes added.
    pub volumes: i64,
    /// Snapshots added.
    pub snapshots: i64,
    /// Gigabytes of volumes and snapshots added.
    pub gigabytes: i64,
    /// Backups added.
    pub backups: i64,
    /// Gigabytes of backups added.
    pub backup_gigabytes: i64,
    /// Groups added.
    pub groups: i64,
    /// The volume type the volumes/snapshots/gigabytes belong to (its
    /// per-type resources are checked too).
    pub type_id: Option<String>,
    /// A volume's size after the change, checked against
    /// `per_volume_gigabytes`.
    pub volume_size: Option<i64>,
}

impl Delta {
    /// A new volume of `size` GiB of type `type_id`.
    pub fn volume(type_id: &str, size: u64) -> Delta {
        let size = gib(size);
        Delta { volumes: 1, gigabytes: size, type_id: Some(type_id.to_owned()), volume_size: Some(size), ..Delta::default() }
    }

    /// A new snapshot of a `size` GiB volume of type `type_id`.
    pub fn snapshot(type_id: &str, size: u64) -> Delta {
        Delta { snapshots: 1, gigabytes: gib(size), type_id: Some(type_id.to_owned()), ..Delta::default() }
    }

    /// A new backup of a `size` GiB volume.
    pub fn backup(size: u64) -> Delta {
        Delta { backups: 1, backup_gigabytes: gib(size), ..Delta::default() }
    }

    /// A new group.
    pub fn group() -> Delta {
        Delta { groups: 1, ..Delta::default() }
    }

    /// A volume of type `type_id` growing from `old` to `new` GiB.
    pub fn extend(type_id: &str, old: u64, new: u64) -> Delta {
        let (old, new) = (gib(old), gib(new));
        Delta { gigabytes: new - old, type_id: Some(type_id.to_owned()), volume_size: Some(new), ..Delta::default() }
    }

    /// Which resource grows by how much, in the order Cinder reserves them
    /// (so the first one over is the one its error names).
    fn asks(&self, type_name: Option<&str>) -> Vec<(String, i64)> {
        let mut v = vec![
            ("volumes".to_owned(), self.volumes),
            ("snapshots".to_owned(), self.snapshots),
            ("gigabytes".to_owned(), self.gigabytes),
            ("backups".to_owned(), self.backups),
            ("backup_gigabytes".to_owned(), self.backup_gigabytes),
            ("groups".to_owned(), self.groups),
        ];
        if let Some(t) = type_name {
            v.push((format!("volumes_{t}"), self.volumes));
            v.push((format!("snapshots_{t}"), self.snapshots));
            v.push((format!("gigabytes_{t}"), self.gigabytes));
        }
        v.retain(|(_, n)| *n > 0);
        v
    }
}

/// Sizes are bounded by `DB_MAX_INT` on admission; saturate rather than wrap.
fn gib(size: u64) -> i64 {
    i64::try_from(size).unwrap_or(i64::MAX)
}

/// Checks that `d` fits in `project`'s quotas, holding the project's quota
/// lock until the transaction ends. Call it inside the admission's
/// transaction BEFORE the new rows are written (they would count twice).
/// Over quota: `OverLimit` with Cinder's message; nothing is written but
/// the lock row.
pub async fn reserve(c: &mut Conn, project: &str, d: &Delta) -> Result<()> {
    // Only a resource with a limit is counted, under the exclusive lock. An
    // admission that asks only for unlimited resources (a project whose
    // quota is lifted, the per-type defaults) takes the lock shared on
    // PostgreSQL: such admissions of one project no longer queue behind
    // each other's commits, and a quota update (exclusive) still waits for
    // them, so the usage it checks a new limit against includes theirs.
    let types = type_names(c).await?;
    let asks = if c.backend_name() == "PostgreSQL" && limited_asks(c, project, d, &types).await?.is_empty() {
        lock_shared(c, project).await?;
        if limited_asks(c, project, d, &types).await?.is_empty() {
            return Ok(());
        }
        // A quota update committed between the two reads: this transaction
        // cannot count under a shared lock, nor take the exclusive one
        // without risking a deadlock with another like it.
        return Err(ServiceError::Conflict(format!(
            "The quota of project {project} changed while this request was admitted; try again."
        )));
    } else {
        lock(c, project).await?;
        limited_asks(c, project, d, &types).await?
    };
    if asks.is_empty() {
        return Ok(());
    }
    let used = usage(c, project, &types).await?;
    for (name, n, limit) in asks {
        let consumed = used.get(&name).copied().unwrap_or(0);
        if consumed.saturating_add(n) > limit {
            return Err(over_quota(&name, d.backups > 0, n, consumed, limit));
        }
    }
    Ok(())
}

/// The resources `d` asks `project` for that have a limit, with the amount
/// asked and the limit; `per_volume_gigabytes` checked on the way.
async fn limited_asks(c: &mut Conn, project: &str, d: &Delta, types: &BTreeMap<String, String>) -> Result<Vec<(String, i64, i64)>> {
    let limits = project_limits(c, project, types).await?;
    if let (Some(size), Some(&max)) = (d.volume_size, limits.get("per_volume_gigabytes")) {
        if max >= 0 && size > max {
            return Err(ServiceError::OverLimit(format!(
                "VolumeSizeExceedsLimit: Requested volume size {size}G is larger than maximum allowed limit {max}G."
            )));
        }
    }
    let type_name = d.type_id.as_ref().and_then(|id| types.get(id)).map(String::as_str);
    Ok(d
        .asks(type_name)
        .into_iter()
        .filter_map(|(name, n)| {
            let limit = limits.get(&name).copied().unwrap_or(-1);
            (limit >= 0).then_some((name, n, limit))
        })
        .collect())
}

/// [`reserve`] for the recipient of volume `v`'s transfer: the volume and,
/// when they move with it, its snapshots. Call it before the transfer is
/// marked accepted (from then on they count for the recipient).
pub async fn reserve_transfer(c: &mut Conn, recipient: &str, v: &Volume, with_snapshots: bool) -> Result<()> {
    // Cinder's accept does not hold the volume to per_volume_gigabytes again.
    let mut d = Delta { volume_size: None, ..Delta::volume(&v.volume_type_id, v.size_gb) };
    if with_snapshots {
        let s = sqlx::query("SELECT COUNT(*) AS n, CAST(COALESCE(SUM(size_gb), 0) AS BIGINT) AS gb FROM snapshots WHERE volume_id = $1")
            .bind(&v.id)
            .fetch_one(&mut *c)
            .await
            .map_err(db("count snapshots"))?;
        d.snapshots = s.get::<i64, _>("n");
        d.gigabytes += s.get::<i64, _>("gb");
    }
    reserve(c, recipient, &d).await
}

/// Cinder's 413 message for resource `name` over its `limit`
/// (`quota_utils.process_reserve_over_quota`).
fn over_quota(name: &str, backup: bool, requested: i64, consumed: i64, limit: i64) -> ServiceError {
    let m = if name.contains("gigabytes") {
        if backup {
            format!(
                "VolumeBackupSizeExceedsAvailableQuota: Requested backup exceeds allowed Backup gigabytes quota. \
                 Requested {requested}G, quota is {limit}G and {consumed}G has been consumed."
            )
        } else {
            format!(
                "VolumeSizeExceedsAvailableQuota: Requested volume or snapshot exceeds allowed {name} quota. \
                 Requested {requested}G, quota is {limit}G and {consumed}G has been consumed."
            )
        }
    } else if name.starts_with("volumes") {
        format!("VolumeLimitExceeded: Maximum number of volumes allowed ({limit}) exceeded for quota '{name}'.")
    } else if name.starts_with("snapshots") {
        format!("SnapshotLimitExceeded: Maximum number of snapshots allowed ({limit}) exceeded")
    } else if name == "groups" {
        format!("GroupLimitExceeded: Maximum number of groups allowed ({limit}) exceeded")
    } else {
        format!("BackupLimitExceeded: Maximum number of backups allowed ({limit}) exceeded")
    };
    ServiceError::OverLimit(m)
}

/// Takes `project`'s quota lock shared for the rest of the transaction
/// (PostgreSQL only: `FOR SHARE` on its row, made first if need be).
async fn lock_shared(c: &mut Conn, project: &str) -> Result<()> {
    sqlx::query("INSERT INTO quota_locks (project_id, serial) VALUES ($1, 0) ON CONFLICT (project_id) DO NOTHING")
        .bind(project)
        .execute(&mut *c)
        .await
        .map_err(db("lock quota"))?;
    sqlx::query("SELECT serial FROM quota_locks WHERE project_id = $1 FOR SHARE")
        .bind(project)
        .fetch_all(&mut *c)
        .await
        .map_err(db("lock quota"))?;
    Ok(())
}

/// Takes `project`'s quota lock for the rest of the transaction.
async fn lock(c: &mut Conn, project: &str) -> Result<()> {
    sqlx::query(
        "INSERT INTO quota_locks (project_id, serial) VALUES ($1, 1)
         ON CONFLICT (project_id) DO UPDATE SET serial = quota_locks.serial + 1",
    )
    .bind(project)
    .execute(&mut *c)
    .await
    .map_err(db("lock quota"))?;
    Ok(())
}

/// Volume type id → name.
async fn type_names(c: &mut Conn) -> Result<BTreeMap<String, String>> {
    let rows = sqlx::query("SELECT id, name FROM volume_types").fetch_all(&mut *c).await.map_err(db("list volume types"))?;
    Ok(rows.iter().map(|r| (r.get::<String, _>("id"), r.get::<String, _>("name"))).collect())
}

/// Every resource name, fixed and per type.
fn resource_names(types: &BTreeMap<String, String>) -> Vec<String> {
    let mut v: Vec<String> = DEFAULTS.iter().map(|(n, _)| (*n).to_owned()).collect();
    for t in types.values() {
        v.extend(PER_TYPE.iter().map(|k| format!("{k}_{t}")));
    }
    v
}

async fn rows(c: &mut Conn, sql: &str, key: &str) -> Result<BTreeMap<String, i64>> {
    let rows = sqlx::query(sql).bind(key).fetch_all(&mut *c).await.map_err(db("read quotas"))?;
    Ok(rows.iter().map(|r| (r.get::<String, _>("resource"), r.get::<i64, _>("hard_limit"))).collect())
}

/// The limits of class `class`: its own rows, else the `default` class's,
/// else the built-in defaults (Cinder's `get_class_quotas`).
async fn class_limits(c: &mut Conn, class: &str, types: &BTreeMap<String, String>) -> Result<BTreeMap<String, i64>> {
    let sql = "SELECT resource, hard_limit FROM quota_classes WHERE class_name = $1";
    let own = rows(c, sql, class).await?;
    let defaults = if class == DEFAULT_CLASS { BTreeMap::new() } else { rows(c, sql, DEFAULT_CLASS).await? };
    let builtin: BTreeMap<&str, i64> = DEFAULTS.iter().copied().collect();
    Ok(resource_names(types)
        .into_iter()
        .map(|n| {
            let v = own.get(&n).or_else(|| defaults.get(&n)).copied().unwrap_or_else(|| builtin.get(n.as_str()).copied().unwrap_or(-1));
            (n, v)
        })
        .collect())
}

/// A project's limits: its own rows over the default class.
async fn project_limits(c: &mut Conn, project: &str, types: &BTreeMap<String, String>) -> Result<BTreeMap<String, i64>> {
    let mut limits = class_limits(c, DEFAULT_CLASS, types).await?;
    let own = rows(c, "SELECT resource, hard_limit FROM quotas WHERE project_id = $1", project).await?;
    for (k, v) in own {
        if let Some(slot) = limits.get_mut(&k) {
            *slot = v;
        }
    }
    Ok(limits)
}

/// What `project` uses of every resource, counted from the rows (see the
/// module docs for who a volume in transfer counts for). Each count is the
/// project's own rows (found by the `*_by_project` indexes) plus what an
/// accepted transfer brings it, so an admission reads one project, not
/// every volume there is.
async fn usage(c: &mut Conn, project: &str, types: &BTreeMap<String, String>) -> Result<BTreeMap<String, i64>> {
    let mut used: BTreeMap<String, i64> = resource_names(types).into_iter().map(|n| (n, 0)).collect();
    let mut add = |key: String, n: i64| {
        if let Some(slot) = used.get_mut(&key) {
            *slot += n;
        }
    };
    let volumes = sqlx::query(
        "SELECT type_id, COUNT(*) AS n, CAST(COALESCE(SUM(size_gb), 0) AS BIGINT) AS gb FROM (
             SELECT v.volume_type_id AS type_id, v.size_gb FROM volumes v
             WHERE v.project_id = $1
               AND NOT EXISTS (SELECT 1 FROM transfers t WHERE t.volume_id = v.id AND t.accepted = 1)
             UNION ALL
             SELECT v.volume_type_id, v.size_gb FROM transfers t JOIN volumes v ON v.id = t.volume_id
             WHERE t.accepted = 1 AND t.destination_project_id = $1
         ) AS owned GROUP BY type_id",
    )
    .bind(project)
    .fetch_all(&mut *c)
    .await
    .map_err(db("count volumes"))?;
    let snapshots = sqlx::query(
        "SELECT type_id, COUNT(*) AS n, CAST(COALESCE(SUM(size_gb), 0) AS BIGINT) AS gb FROM (
             SELECT COALESCE(v.volume_type_id, '') AS type_id, s.size_gb FROM snapshots s LEFT JOIN volumes v ON v.id = s.volume_id
             WHERE s.project_id = $1
               AND NOT EXISTS (SELECT 1 FROM transfers t WHERE t.volume_id = s.volume_id AND t.accepted = 1 AND t.no_snapshots = 0)
             UNION ALL
             SELECT COALESCE(v.volume_type_id, ''), s.size_gb FROM transfers t JOIN snapshots s ON s.volume_id = t.volume_id
             LEFT JOIN volumes v ON v.id = s.volume_id
             WHERE t.accepted = 1 AND t.no_snapshots = 0 AND t.destination_project_id = $1
         ) AS owned GROUP BY type_id",
    )
    .bind(project)
    .fetch_all(&mut *c)
    .await
    .map_err(db("count snapshots"))?;
    for (kind, rows) in [("volumes", &volumes), ("snapshots", &snapshots)] {
        for r in rows {
            let (type_id, n, gb) = (r.get::<String, _>("type_id"), r.get::<i64, _>("n"), r.get::<i64, _>("gb"));
            add(kind.to_owned(), n);
            add("gigabytes".to_owned(), gb);
            if let Some(t) = types.get(&type_id) {
                add(format!("{kind}_{t}"), n);
                add(format!("gigabytes_{t}"), gb);
            }
        }
    }
    let b = sqlx::query("SELECT COUNT(*) AS n, CAST(COALESCE(SUM(size_gb), 0) AS BIGINT) AS gb FROM backups WHERE project_id = $1")
        .bind(project)
        .fetch_one(&mut *c)
        .await
        .map_err(db("count backups"))?;
    add("backups".to_owned(), b.get::<i64, _>("n"));
    add("backup_gigabytes".to_owned(), b.get::<i64, _>("gb"));
    let groups: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM volume_groups WHERE project_id = $1")
        .bind(project)
        .fetch_one(&mut *c)
        .await
        .map_err(db("count groups"))?;
    add("groups".to_owned(), groups);
    Ok(used)
}

/// Checks the keys of a quota-set or quota-class-set body: each must be a
/// resource (or, for a quota set, one of the ignored id keys).
fn check_keys(changes: &BTreeMap<String, i64>, types: &BTreeMap<String, String>, what: &str) -> Result<()> {
    let names = resource_names(types);
    let bad: Vec<&str> = changes.keys().map(String::as_str).filter(|k| !names.iter().any(|n| n == k)).collect();
    if bad.is_empty() {
        Ok(())
    } else {
        Err(ServiceError::invalid(format!("Invalid input received: Bad key(s) in {what}: {}", bad.join(", "))))
    }
}

/// Drops the keys a quota-set body may carry that are not resources.
fn without_id_keys(changes: BTreeMap<String, i64>) -> BTreeMap<String, i64> {
    changes.into_iter().filter(|(k, _)| !NON_QUOTA_KEYS.contains(&k.as_str())).collect()
}

/// Whether `key` is one a quota-set body may carry without it being a
/// resource (`tenant_id`, `id`: Cinder ignores them).
pub fn is_id_key(key: &str) -> bool {
    NON_QUOTA_KEYS.contains(&key)
}

impl Service {
    /// `project`'s limits and usage of every resource.
    pub async fn quota_usage(&self, project: &str) -> Result<BTreeMap<String, Usage>> {
        let mut c = self.conn().await?;
        let types = type_names(&mut c).await?;
        let limits = project_limits(&mut c, project, &types).await?;
        let used = usage(&mut c, project, &types).await?;
        Ok(limits.into_iter().map(|(k, limit)| {
            let in_use = used.get(&k).copied().unwrap_or(0);
            (k, Usage { limit, in_use })
        }).collect())
    }

    /// `project`'s limits.
    pub async fn quota_limits(&self, project: &str) -> Result<BTreeMap<String, i64>> {
        let mut c = self.conn().await?;
        let types = type_names(&mut c).await?;
        project_limits(&mut c, project, &types).await
    }

    /// The limits of quota class `class` (`default`: every project's defaults).
    pub async fn quota_class(&self, class: &str) -> Result<BTreeMap<String, i64>> {
        let mut c = self.conn().await?;
        let types = type_names(&mut c).await?;
        class_limits(&mut c, class, &types).await
    }

    /// Sets some of `project`'s limits; returns them all. A limit below
    /// what is in use is refused (except `-1` and `per_volume_gigabytes`),
    /// and then nothing changes.
    pub async fn update_quota_set(&self, project: &str, changes: BTreeMap<String, i64>) -> Result<BTreeMap<String, i64>> {
        let changes = without_id_keys(changes);
        let mut tx = self.tx().await?;
        // The same lock admissions take: no create slips in between the check and the new limit.
        lock(&mut tx, project).await?;
        let types = type_names(&mut tx).await?;
        check_keys(&changes, &types, "quota set")?;
        let used = usage(&mut tx, project, &types).await?;
        for (key, &value) in &changes {
            let in_use = used.get(key).copied().unwrap_or(0);
            if key != "per_volume_gigabytes" && value != -1 && value < in_use {
                return Err(ServiceError::invalid(format!(
                    "Quota {key} limit must be equal or greater than existing resources. \
                     Current usage is {in_use} and the requested limit is {value}."
                )));
            }
        }
        for (key, value) in &changes {
            upsert(&mut tx, "quotas", "project_id", project, key, *value).await?;
        }
        let limits = project_limits(&mut tx, project, &types).await?;
        tx.commit().await.map_err(db("commit"))?;
        Ok(limits)
    }

    /// Forgets `project`'s own limits: the defaults apply again.
    pub async fn delete_quota_set(&self, project: &str) -> Result<()> {
        let mut tx = self.tx().await?;
        sqlx::query("DELETE FROM quotas WHERE project_id = $1").bind(project).execute(&mut *tx).await.map_err(db("delete quotas"))?;
        tx.commit().await.map_err(db("commit"))
    }

    /// Sets some limits of quota class `class`; returns them all.
    pub async fn update_quota_class(&self, class: &str, changes: BTreeMap<String, i64>) -> Result<BTreeMap<String, i64>> {
        let mut tx = self.tx().await?;
        let types = type_names(&mut tx).await?;
        check_keys(&changes, &types, "quota class set")?;
        for (key, value) in &changes {
            upsert(&mut tx, "quota_classes", "class_name", class, key, *value).await?;
        }
        let limits = class_limits(&mut tx, class, &types).await?;
        tx.commit().await.map_err(db("commit"))?;
        Ok(limits)
    }
}

/// Sets one limit row of `table` (`quotas` or `quota_classes`, keyed by
/// `owner_col`). The names are this module's constants, never input.
async fn upsert(c: &mut Conn, table: &str, owner_col: &str, owner: &str, resource: &str, limit: i64) -> Result<()> {
    let sql = format!(
        "INSERT INTO {table} ({owner_col}, resource, hard_limit) VALUES ($1, $2, $3)
         ON CONFLICT ({owner_col}, resource) DO UPDATE SET hard_limit = $3"
    );
    sqlx::query(&sql).bind(owner).bind(resource).bind(limit).execute(&mut *c).await.map_err(db("set quota"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn asks_follow_cinders_order_and_skip_nothing_asked() {
        let d = Delta::volume("t1", 5);
        let names: Vec<String> = d.asks(Some("gold")).into_iter().map(|(n, _)| n).collect();
        assert_eq!(names, ["volumes", "gigabytes", "volumes_gold", "gigabytes_gold"]);
        let b: Vec<(String, i64)> = Delta::backup(3).asks(None);
        assert_eq!(b, [("backups".to_owned(), 1), ("backup_gigabytes".to_owned(), 3)]);
        assert!(Delta::extend("t", 4, 4).asks(Some("gold")).is_empty());
    }

    #[test]
    fn over_quota_messages_are_cinders() {
        let m = |e: ServiceError| e.to_string();
        assert_eq!(
            m(over_quota("volumes", false, 1, 10, 10)),
            "VolumeLimitExceeded: Maximum number of volumes allowed (10) exceeded for quota 'volumes'."
        );
        assert_eq!(
            m(over_quota("gigabytes_gold", false, 2, 1, 2)),
            "VolumeSizeExceedsAvailableQuota: Requested volume or snapshot exceeds allowed gigabytes_gold quota. \
             Requested 2G, quota is 2G and 1G has been consumed."
        );
        assert!(m(over_quota("backup_gigabytes", true, 2, 0, 1)).starts_with("VolumeBackupSizeExceedsAvailableQuota: "));
        assert_eq!(m(over_quota("snapshots_x", false, 1, 1, 1)), "SnapshotLimitExceeded: Maximum number of snapshots allowed (1) exceeded");
        assert_eq!(m(over_quota("backups", true, 1, 1, 1)), "BackupLimitExceeded: Maximum number of backups allowed (1) exceeded");
    }

    #[test]
    fn bad_keys_are_named() {
        let types: BTreeMap<String, String> = [("id1".to_owned(), "gold".to_owned())].into();
        let ok: BTreeMap<String, i64> = [("volumes_gold".to_owned(), 1), ("groups".to_owned(), 2)].into();
        assert!(check_keys(&ok, &types, "quota set").is_ok());
        let bad: BTreeMap<String, i64> = [("volumes_silver".to_owned(), 1), ("wheels".to_owned(), 2)].into();
        assert_eq!(
            check_keys(&bad, &types, "quota set").unwrap_err().to_string(),
            "Invalid input received: Bad key(s) in quota set: volumes_silver, wheels"
        );
    }
}
