//! Generic volume groups (3.13+) and group snapshots (3.14+), as Cinder
//! keeps them: a group has a group type and the volume types its volumes
//! may have; a group snapshot is one snapshot of each of the group's
//! volumes, all admitted in one transaction. A group made from another
//! group or from a group snapshot gets a clone of each source volume, or a
//! volume from each snapshot, in one transaction too: each of those is an
//! ordinary clone or volume-from-snapshot job, so each gets its own key.
//!
//! A group has no job of its own; its members' jobs do the work. A group
//! (or group snapshot) whose status waits on its members is `settling`:
//! `creating` until none of its volumes (snapshots) is still being made,
//! then `available`, or `error` if one failed; a group being deleted with
//! its volumes is gone once its last volume is. It settles when it is read
//! (shown, listed, or used by another request), from the members' records
//! alone, so a crash at any point leaves nothing to repair: the records
//! say where the group stands. A status set by an admin (`reset_status`)
//! ends the settling.

use std::collections::BTreeMap;

use sqlx::any::AnyRow;
use sqlx::Row;

use crate::db::{self, Conn, Tx};
use crate::error::{db as dberr, Result, ServiceError};
use crate::model::{now_iso, Caller, Volume};
use crate::paths::db::{self as pdb, Snapshot};
use crate::paths::snapshots::CreateSnapshot;
use crate::paths::volumes::Source;
use crate::paths::Job;
use crate::quotas::{self, Delta};
use crate::service::{CreateVolume, Service};

/// Cinder's group statuses (`reset_status` takes one of them).
pub const GROUP_STATUSES: &[&str] = &["available", "creating", "deleting", "deleted", "error", "error_deleting", "updating", "in-use"];
/// Cinder's group snapshot statuses.
pub const GROUP_SNAPSHOT_STATUSES: &[&str] = &["available", "creating", "deleting", "deleted", "error", "error_deleting", "updating"];
/// The only availability zone rekey has.
const ZONE: &str = "nova";

/// A group of volumes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    /// UUID.
    pub id: String,
    /// Owning project.
    pub project_id: String,
    /// Creating user.
    pub user_id: String,
    /// Name.
    pub name: Option<String>,
    /// Description.
    pub description: Option<String>,
    /// Its group type.
    pub group_type_id: String,
    /// The volume types its volumes may have.
    pub volume_type_ids: Vec<String>,
    /// One of [`GROUP_STATUSES`].
    pub status: String,
    /// Always `nova`.
    pub availability_zone: String,
    /// The group snapshot it was made from.
    pub group_snapshot_id: Option<String>,
    /// The group it was made from.
    pub source_group_id: Option<String>,
    /// Creation time.
    pub created_at: String,
    /// Update time.
    pub updated_at: String,
    /// Its status waits on its members' (see the module's text).
    pub(crate) settling: bool,
}

/// A snapshot of every volume of a group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupSnapshot {
    /// UUID.
    pub id: String,
    /// Owning project.
    pub project_id: String,
    /// Creating user.
    pub user_id: String,
    /// The group it is of.
    pub group_id: String,
    /// The group's type.
    pub group_type_id: String,
    /// Name.
    pub name: Option<String>,
    /// Description.
    pub description: Option<String>,
    /// One of [`GROUP_SNAPSHOT_STATUSES`].
    pub status: String,
    /// Creation time.
    pub created_at: String,
    /// Update time.
    pub updated_at: String,
    /// Its status waits on its members' (see the module's text).
    pub(crate) settling: bool,
}

/// A group-create request.
#[derive(Debug, Clone, Default)]
pub struct CreateGroup {
    /// Name.
    pub name: Option<String>,
    /// Description.
    pub description: Option<String>,
    /// Group type id or name.
    pub group_type: String,
    /// Volume type ids or names (at least one).
    pub volume_types: Vec<String>,
    /// Availability zone.
    pub availability_zone: Option<String>,
}

/// What a group is made from (`create-from-src`).
#[derive(Debug, Clone, Copy)]
pub enum GroupSource<'a> {
    /// A clone of each volume of this group.
    Group(&'a str),
    /// A volume from each snapshot of this group snapshot.
    GroupSnapshot(&'a str),
}

/// A group update: name, description, volumes to add and to remove.
#[derive(Debug, Clone, Default)]
pub struct UpdateGroup {
    /// New name.
    pub name: Option<String>,
    /// New description.
    pub description: Option<String>,
    /// Volume ids to add.
    pub add_volumes: Vec<String>,
    /// Volume ids to remove.
    pub remove_volumes: Vec<String>,
}

fn group_not_found(id: &str) -> ServiceError {
    ServiceError::not_found("Group", id)
}

fn group_snapshot_not_found(id: &str) -> ServiceError {
    ServiceError::not_found("GroupSnapshot", id)
}

fn group_from_row(r: &AnyRow) -> Group {
    let types: String = r.get("volume_type_ids");
    Group {
        id: r.get("id"),
        project_id: r.get("project_id"),
        user_id: r.get("user_id"),
        name: r.get("name"),
        description: r.get("description"),
        group_type_id: r.get("group_type_id"),
        volume_type_ids: serde_json::from_str(&types).unwrap_or_default(),
        status: r.get("status"),
        availability_zone: r.get("availability_zone"),
        group_snapshot_id: r.get("group_snapshot_id"),
        source_group_id: r.get("source_group_id"),
        created_at: r.get("created_at"),
        updated_at: r.get("updated_at"),
        settling: r.get::<i64, _>("settling") != 0,
    }
}

fn group_snapshot_from_row(r: &AnyRow) -> GroupSnapshot {
    GroupSnapshot {
        id: r.get("id"),
        project_id: r.get("project_id"),
        user_id: r.get("user_id"),
        group_id: r.get("group_id"),
        group_type_id: r.get("group_type_id"),
        name: r.get("name"),
        description: r.get("description"),
        status: r.get("status"),
        created_at: r.get("created_at"),
        updated_at: r.get("updated_at"),
        settling: r.get::<i64, _>("settling") != 0,
    }
}

async fn insert_group(c: &mut Conn, g: &Group) -> Result<()> {
    sqlx::query(
        "INSERT INTO volume_groups (id, project_id, user_id, name, description, group_type_id, volume_type_ids, status,
             availability_zone, group_snapshot_id, source_group_id, settling, created_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
    )
    .bind(&g.id)
    .bind(&g.project_id)
    .bind(&g.user_id)
    .bind(&g.name)
    .bind(&g.description)
    .bind(&g.group_type_id)
    .bind(serde_json::to_string(&g.volume_type_ids).unwrap_or_else(|_| "[]".into()))
    .bind(&g.status)
    .bind(&g.availability_zone)
    .bind(&g.group_snapshot_id)
    .bind(&g.source_group_id)
    .bind(i64::from(g.settling))
    .bind(&g.created_at)
    .bind(&g.updated_at)
    .execute(&mut *c)
    .await
    .map_err(dberr("create group"))?;
    Ok(())
}

async fn save_group(c: &mut Conn, g: &Group) -> Result<()> {
    sqlx::query("UPDATE volume_groups SET name = $1, description = $2, status = $3, settling = $4, updated_at = $5 WHERE id = $6")
        .bind(&g.name)
        .bind(&g.description)
        .bind(&g.status)
        .bind(i64::from(g.settling))
        .bind(now_iso())
        .bind(&g.id)
        .execute(&mut *c)
        .await
        .map_err(dberr("update group"))?;
    Ok(())
}

async fn load_group(c: &mut Conn, id: &str) -> Result<Option<Group>> {
    let row = sqlx::query("SELECT * FROM volume_groups WHERE id = $1")
        .bind(id)
        .fetch_optional(&mut *c)
        .await
        .map_err(dberr("read group"))?;
    Ok(row.as_ref().map(group_from_row))
}

async fn insert_group_snapshot(c: &mut Conn, g: &GroupSnapshot) -> Result<()> {
    sqlx::query(
        "INSERT INTO group_snapshots (id, project_id, user_id, group_id, group_type_id, name, description, status,
             settling, created_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
    )
    .bind(&g.id)
    .bind(&g.project_id)
    .bind(&g.user_id)
    .bind(&g.group_id)
    .bind(&g.group_type_id)
    .bind(&g.name)
    .bind(&g.description)
    .bind(&g.status)
    .bind(i64::from(g.settling))
    .bind(&g.created_at)
    .bind(&g.updated_at)
    .execute(&mut *c)
    .await
    .map_err(dberr("create group snapshot"))?;
    Ok(())
}

async fn set_group_snapshot_status(c: &mut Conn, id: &str, status: &str, settling: bool) -> Result<()> {
    sqlx::query("UPDATE group_snapshots SET status = $1, settling = $2, updated_at = $3 WHERE id = $4")
        .bind(status)
        .bind(i64::from(settling))
        .bind(now_iso())
        .bind(id)
        .execute(&mut *c)
        .await
        .map_err(dberr("update group snapshot"))?;
    Ok(())
}

async fn load_group_snapshot(c: &mut Conn, id: &str) -> Result<Option<GroupSnapshot>> {
    let row = sqlx::query("SELECT * FROM group_snapshots WHERE id = $1")
        .bind(id)
        .fetch_optional(&mut *c)
        .await
        .map_err(dberr("read group snapshot"))?;
    Ok(row.as_ref().map(group_snapshot_from_row))
}

/// The ids of group `id`'s volumes, oldest first.
async fn member_ids(c: &mut Conn, id: &str) -> Result<Vec<String>> {
    sqlx::query_scalar("SELECT id FROM volumes WHERE group_id = $1 ORDER BY created_at, id")
        .bind(id)
        .fetch_all(&mut *c)
        .await
        .map_err(dberr("read group volumes"))
}

/// The volumes of group `id`, oldest first.
async fn members(c: &mut Conn, id: &str) -> Result<Vec<Volume>> {
    let ids = member_ids(c, id).await?;
    let mut out = Vec::with_capacity(ids.len());
    for v in ids {
        if let Some(v) = db::get_volume(c, &v).await? {
            out.push(v);
        }
    }
    Ok(out)
}

/// The snapshots of group snapshot `id`, oldest first.
async fn snapshot_members(c: &mut Conn, id: &str) -> Result<Vec<Snapshot>> {
    let ids: Vec<String> = sqlx::query_scalar("SELECT id FROM snapshots WHERE group_snapshot_id = $1 ORDER BY created_at, id")
        .bind(id)
        .fetch_all(&mut *c)
        .await
        .map_err(dberr("read group snapshot members"))?;
    let mut out = Vec::with_capacity(ids.len());
    for s in ids {
        if let Some(s) = pdb::get_snapshot(c, &s).await? {
            out.push(s);
        }
    }
    Ok(out)
}

async fn group_snapshot_count(c: &mut Conn, group: &str) -> Result<i64> {
    sqlx::query_scalar("SELECT COUNT(*) FROM group_snapshots WHERE group_id = $1")
        .bind(group)
        .fetch_one(&mut *c)
        .await
        .map_err(dberr("read group snapshots"))
}

/// The status a settling record takes from its members' statuses: `None`
/// while one is still being made.
fn settled<'a>(statuses: impl Iterator<Item = &'a str>) -> Option<&'static str> {
    let mut failed = false;
    for s in statuses {
        match s {
            "creating" | "restoring-backup" | "downloading" => return None,
            s if s.starts_with("error") => failed = true,
            _ => {}
        }
    }
    Some(if failed { "error" } else { "available" })
}

/// What settling changes of a record whose status waits on its members.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Settled {
    /// A group deleted with its volumes has none left: it goes.
    Gone,
    /// It takes this status, and stops settling.
    Status(&'static str),
}

/// What settling changes of group `g`, whose volumes have `statuses`.
fn group_settles(g: &Group, statuses: &[String]) -> Option<Settled> {
    if !g.settling {
        return None;
    }
    match g.status.as_str() {
        "deleting" if statuses.is_empty() => Some(Settled::Gone),
        "deleting" => statuses.iter().any(|s| s == "error_deleting").then_some(Settled::Status("error_deleting")),
        _ => settled(statuses.iter().map(String::as_str)).map(Settled::Status),
    }
}

/// What settling changes of group snapshot `g`, whose snapshots have `statuses`.
fn group_snapshot_settles(g: &GroupSnapshot, statuses: &[String]) -> Option<Settled> {
    g.settling.then(|| settled(statuses.iter().map(String::as_str)).map(Settled::Status)).flatten()
}

async fn statuses(c: &mut Conn, sql: &str, id: &str) -> Result<Vec<String>> {
    sqlx::query_scalar(sql).bind(id).fetch_all(&mut *c).await.map_err(dberr("read group members"))
}

async fn volume_statuses(c: &mut Conn, group: &str) -> Result<Vec<String>> {
    statuses(c, "SELECT status FROM volumes WHERE group_id = $1", group).await
}

async fn snapshot_statuses(c: &mut Conn, group_snapshot: &str) -> Result<Vec<String>> {
    statuses(c, "SELECT status FROM snapshots WHERE group_snapshot_id = $1", group_snapshot).await
}

/// Settles group `g` (see the module's text) in a write transaction;
/// `None` if it is gone.
async fn settle_group(c: &mut Conn, mut g: Group) -> Result<Option<Group>> {
    match group_settles(&g, &volume_statuses(c, &g.id).await?) {
        None => {}
        Some(Settled::Gone) => {
            sqlx::query("DELETE FROM volume_groups WHERE id = $1").bind(&g.id).execute(&mut *c).await.map_err(dberr("delete group"))?;
            return Ok(None);
        }
        Some(Settled::Status(s)) => {
            g.status = s.into();
            g.settling = false;
            save_group(c, &g).await?;
        }
    }
    Ok(Some(g))
}

async fn settle_group_snapshot(c: &mut Conn, mut g: GroupSnapshot) -> Result<GroupSnapshot> {
    if let Some(Settled::Status(s)) = group_snapshot_settles(&g, &snapshot_statuses(c, &g.id).await?) {
        g.status = s.into();
        g.settling = false;
        set_group_snapshot_status(c, &g.id, &g.status, false).await?;
    }
    Ok(g)
}

/// Settles `group` (if any) in the transaction that changed one of its
/// volumes: a group deleted with its volumes goes with its last one.
pub(crate) async fn member_changed(tx: &mut Tx, group: Option<&str>) -> Result<()> {
    if let Some(g) = match group {
        Some(id) => load_group(tx, id).await?,
        None => None,
    } {
        settle_group(tx, g).await?;
    }
    Ok(())
}

/// Group `id` as `caller` sees it, settled; 404 if it is not the caller's.
async fn group_for(c: &mut Conn, caller: &Caller, id: &str) -> Result<Group> {
    let g = load_group(c, id)
        .await?
        .filter(|g| crate::paths::actions::reaches(caller, &g.project_id))
        .ok_or_else(|| group_not_found(id))?;
    settle_group(c, g).await?.ok_or_else(|| group_not_found(id))
}

async fn group_snapshot_for(c: &mut Conn, caller: &Caller, id: &str) -> Result<GroupSnapshot> {
    let g = load_group_snapshot(c, id)
        .await?
        .filter(|g| crate::paths::actions::reaches(caller, &g.project_id))
        .ok_or_else(|| group_snapshot_not_found(id))?;
    settle_group_snapshot(c, g).await
}

/// The group a new volume joins (`group_id` of a volume create), in the
/// admission's transaction: the caller's, and `available` — or, for a
/// member of a group made from a source (`group_copy`), the new group
/// itself, still `creating`.
pub(crate) async fn joinable(tx: &mut Tx, caller: &Caller, id: &str, group_copy: bool) -> Result<Group> {
    let g = load_group(tx, id).await?.filter(|g| g.project_id == caller.project).ok_or_else(|| group_not_found(id))?;
    let g = if group_copy { g } else { settle_group(tx, g).await?.ok_or_else(|| group_not_found(id))? };
    let ok = if group_copy { g.status == "creating" } else { g.status == "available" };
    if !ok {
        return Err(ServiceError::invalid(format!(
            "Invalid group: Group {id} status must be available, but current status is: {}.",
            g.status
        )));
    }
    Ok(g)
}

/// Splits Cinder's comma-separated volume id list (`add_volumes`).
pub fn id_list(s: &str) -> Vec<String> {
    s.split(',').map(str::trim).filter(|x| !x.is_empty()).map(str::to_owned).collect()
}

fn python_tuple(items: &[&str]) -> String {
    format!("({})", items.iter().map(|s| format!("'{s}'")).collect::<Vec<_>>().join(", "))
}

impl Service {
    /// Creates an empty group, `available` at once.
    pub async fn create_group(&self, caller: &Caller, req: CreateGroup) -> Result<Group> {
        if let Some(z) = req.availability_zone.as_deref().filter(|z| *z != ZONE) {
            return Err(ServiceError::invalid(format!("Invalid input received: Availability zone '{z}' is invalid.")));
        }
        let mut tx = self.tx().await?;
        let gtype = crate::group_types::find(&mut tx, &req.group_type)
            .await?
            .ok_or_else(|| ServiceError::not_found("Group type", req.group_type.clone()))?;
        let mut type_ids = Vec::with_capacity(req.volume_types.len());
        for t in &req.volume_types {
            let found = db::find_type(&mut tx, t).await?;
            let vt = crate::type_access::visible_or_none(&mut tx, caller, found)
                .await?
                .ok_or_else(|| ServiceError::not_found("Volume type", t.clone()))?;
            if !type_ids.contains(&vt.id) {
                type_ids.push(vt.id);
            }
        }
        if type_ids.is_empty() {
            return Err(ServiceError::invalid("Invalid input received: volume_types must name at least one volume type"));
        }
        let now = now_iso();
        let g = Group {
            id: uuid::Uuid::new_v4().to_string(),
            project_id: caller.project.clone(),
            user_id: caller.user.clone(),
            name: req.name,
            description: req.description,
            group_type_id: gtype.id,
            volume_type_ids: type_ids,
            status: "available".into(),
            availability_zone: ZONE.into(),
            group_snapshot_id: None,
            source_group_id: None,
            created_at: now.clone(),
            updated_at: now,
            settling: false,
        };
        quotas::reserve(&mut tx, &g.project_id, &Delta::group()).await?;
        insert_group(&mut tx, &g).await?;
        tx.commit().await.map_err(dberr("commit"))?;
        Ok(g)
    }

    /// Makes a group from another group (a clone of each of its volumes) or
    /// from a group snapshot (a volume from each of its snapshots), all in
    /// one admission; returns the group, `creating`, and the jobs to start.
    pub async fn create_group_from_source(
        &self,
        caller: &Caller,
        name: Option<String>,
        description: Option<String>,
        source: GroupSource<'_>,
    ) -> Result<(Group, Vec<Job>)> {
        let mut tx = self.tx().await?;
        // The new group's type and volume types are its source group's.
        // Each member's source (a volume or a snapshot) and volume type.
        let (origin, sources): (Group, Vec<(String, String)>) = match source {
            GroupSource::Group(id) => {
                let src = group_for(&mut tx, caller, id).await?;
                if src.project_id != caller.project {
                    return Err(group_not_found(id));
                }
                if src.status != "available" {
                    return Err(ServiceError::invalid(format!(
                        "Invalid group: Source group {id} status must be available, but current status is: {}.",
                        src.status
                    )));
                }
                let vols = members(&mut tx, id).await?;
                if vols.is_empty() {
                    return Err(ServiceError::invalid("Invalid group: Source Group is empty. No group will be created."));
                }
                let list = vols.into_iter().map(|v| (v.id, v.volume_type_id)).collect();
                (src, list)
            }
            GroupSource::GroupSnapshot(id) => {
                let gs = group_snapshot_for(&mut tx, caller, id).await?;
                if gs.project_id != caller.project {
                    return Err(group_snapshot_not_found(id));
                }
                if gs.status != "available" {
                    return Err(ServiceError::invalid(format!(
                        "Invalid group snapshot: Group snapshot {id} status must be available, but current status is: {}.",
                        gs.status
                    )));
                }
                let src = load_group(&mut tx, &gs.group_id).await?.ok_or_else(|| group_not_found(&gs.group_id))?;
                let snaps = snapshot_members(&mut tx, id).await?;
                if snaps.is_empty() {
                    return Err(ServiceError::invalid("Invalid group: Group snapshot is empty. No group will be created."));
                }
                let mut list = Vec::with_capacity(snaps.len());
                for s in snaps {
                    let v = db::get_volume(&mut tx, &s.volume_id).await?.ok_or_else(|| ServiceError::not_found("Volume", s.volume_id.clone()))?;
                    list.push((s.id, v.volume_type_id));
                }
                (src, list)
            }
        };
        let now = now_iso();
        let g = Group {
            id: uuid::Uuid::new_v4().to_string(),
            project_id: caller.project.clone(),
            user_id: caller.user.clone(),
            name,
            description,
            group_type_id: origin.group_type_id.clone(),
            volume_type_ids: origin.volume_type_ids.clone(),
            status: "creating".into(),
            availability_zone: ZONE.into(),
            group_snapshot_id: matches!(source, GroupSource::GroupSnapshot(_)).then(|| source_id(source).to_owned()),
            source_group_id: matches!(source, GroupSource::Group(_)).then(|| source_id(source).to_owned()),
            created_at: now.clone(),
            updated_at: now,
            settling: true,
        };
        quotas::reserve(&mut tx, &g.project_id, &Delta::group()).await?;
        insert_group(&mut tx, &g).await?;
        let mut jobs = Vec::with_capacity(sources.len());
        for (from, type_id) in &sources {
            let req = CreateVolume { volume_type: Some(type_id.clone()), group_id: Some(g.id.clone()), ..CreateVolume::default() };
            let from = match source {
                GroupSource::Group(_) => Source::Volume(from),
                GroupSource::GroupSnapshot(_) => Source::Snapshot(from),
            };
            let (_, job) = self.admit_volume_in(&mut tx, caller, req, from, true).await?;
            jobs.push(job);
        }
        tx.commit().await.map_err(dberr("commit"))?;
        Ok((g, jobs))
    }

    /// The caller's groups (every project's with `all_tenants`, admins only), settled.
    pub async fn list_groups(&self, caller: &Caller, all_tenants: bool) -> Result<Vec<Group>> {
        if all_tenants && !caller.admin {
            return Err(ServiceError::Forbidden("Policy doesn't allow all_tenants.".into()));
        }
        let project = (!all_tenants).then_some(caller.project.as_str());
        let rows = {
            let mut c = self.conn().await?;
            sqlx::query("SELECT * FROM volume_groups WHERE ($1 IS NULL OR project_id = $1) ORDER BY created_at, id")
                .bind(project)
                .fetch_all(&mut *c)
                .await
                .map_err(dberr("list groups"))?
        };
        let all: Vec<Group> = rows.iter().map(group_from_row).collect();
        let mut changes = false;
        {
            let mut c = self.conn().await?;
            for g in all.iter().filter(|g| g.settling) {
                changes |= group_settles(g, &volume_statuses(&mut c, &g.id).await?).is_some();
            }
        }
        if !changes {
            return Ok(all);
        }
        let mut tx = self.tx().await?;
        let mut out = Vec::with_capacity(all.len());
        for g in all {
            // Read again in the transaction: another request may have settled it.
            if let Some(g) = load_group(&mut tx, &g.id).await? {
                out.extend(settle_group(&mut tx, g).await?);
            }
        }
        tx.commit().await.map_err(dberr("commit"))?;
        Ok(out)
    }

    /// One group, settled: read, and written only when settling changes it
    /// (on SQLite a read never waits for the one writer).
    pub async fn get_group(&self, caller: &Caller, id: &str) -> Result<Group> {
        {
            let mut c = self.conn().await?;
            let g = load_group(&mut c, id)
                .await?
                .filter(|g| crate::paths::actions::reaches(caller, &g.project_id))
                .ok_or_else(|| group_not_found(id))?;
            if group_settles(&g, &volume_statuses(&mut c, id).await?).is_none() {
                return Ok(g);
            }
        }
        let mut tx = self.tx().await?;
        let g = group_for(&mut tx, caller, id).await?;
        tx.commit().await.map_err(dberr("commit"))?;
        Ok(g)
    }

    /// The ids of group `g`'s volumes.
    pub async fn group_volume_ids(&self, g: &Group) -> Result<Vec<String>> {
        let mut c = self.conn().await?;
        member_ids(&mut c, &g.id).await
    }

    /// Renames or re-describes a group, adds volumes to it and removes
    /// volumes from it, with Cinder's checks; nothing changes if one fails.
    pub async fn update_group(&self, caller: &Caller, id: &str, u: UpdateGroup) -> Result<()> {
        let both: Vec<&String> = u.add_volumes.iter().filter(|a| u.remove_volumes.contains(a)).collect();
        if !both.is_empty() {
            return Err(ServiceError::invalid(format!("Invalid volume: UUIDs {both:?} are in both add and remove volume list.")));
        }
        let mut tx = self.tx().await?;
        let mut g = group_for(&mut tx, caller, id).await?;
        let current = member_ids(&mut tx, id).await?;
        let mut add = Vec::new();
        for vid in u.add_volumes.iter().filter(|v| !current.contains(v)) {
            let cannot = |why: String| ServiceError::invalid(format!("Invalid volume: Cannot add volume {vid} to group {id} {why}"));
            let v = db::get_volume(&mut tx, vid)
                .await?
                .filter(|v| v.project_id == caller.project || caller.admin)
                .ok_or_else(|| cannot("because volume cannot be found.".into()))?;
            if let Some(other) = &v.group_id {
                return Err(cannot(format!("because it is already in group {other}.")));
            }
            if v.project_id != g.project_id {
                return Err(cannot("as they belong to different projects.".into()));
            }
            if !g.volume_type_ids.contains(&v.volume_type_id) {
                return Err(cannot(format!("because volume type {} is not supported by the group.", v.volume_type_id)));
            }
            const VALID: &[&str] = &["available", "in-use"];
            if !VALID.contains(&v.status.as_str()) {
                return Err(cannot(format!(
                    "because volume is in an invalid state: {}. Valid states are: {}.",
                    v.status,
                    python_tuple(VALID)
                )));
            }
            add.push(v.id);
        }
        let mut remove = Vec::new();
        for vid in &u.remove_volumes {
            let cannot = |why: String| ServiceError::invalid(format!("Invalid volume: Cannot remove volume {vid} from group {id} {why}"));
            if !current.contains(vid) {
                return Err(cannot("because it is not in the group.".into()));
            }
            let v = db::get_volume(&mut tx, vid).await?.ok_or_else(|| cannot("because it is not in the group.".into()))?;
            const VALID: &[&str] = &["available", "in-use", "error", "error_deleting"];
            if !VALID.contains(&v.status.as_str()) {
                return Err(cannot(format!(
                    "because volume is in an invalid state: {}. Valid states are: {}.",
                    v.status,
                    python_tuple(VALID)
                )));
            }
            remove.push(v.id);
        }
        if u.name.is_none() && u.description.is_none() && add.is_empty() && remove.is_empty() {
            return Err(ServiceError::invalid(format!(
                "Invalid group: Cannot update group {id} because no valid name, description, add_volumes, or remove_volumes were provided."
            )));
        }
        if !(add.is_empty() && remove.is_empty()) && g.status != "available" {
            return Err(ServiceError::invalid("Invalid group: Group status must be available."));
        }
        if let Some(n) = u.name {
            g.name = Some(n);
        }
        if let Some(d) = u.description {
            g.description = Some(d);
        }
        // As Cinder's: a change of name or description alone makes the group available.
        g.status = "available".into();
        g.settling = false;
        save_group(&mut tx, &g).await?;
        for (ids, to) in [(&add, Some(id)), (&remove, None)] {
            for v in ids {
                sqlx::query("UPDATE volumes SET group_id = $1, updated_at = $2 WHERE id = $3")
                    .bind(to)
                    .bind(now_iso())
                    .bind(v)
                    .execute(&mut *tx)
                    .await
                    .map_err(dberr("update volume group"))?;
            }
        }
        tx.commit().await.map_err(dberr("commit"))?;
        Ok(())
    }

    /// Deletes a group: an empty one at once; with `delete_volumes`, its
    /// volumes too (the group goes when the last of them has). Returns the
    /// volumes' delete jobs to start.
    pub async fn delete_group(&self, caller: &Caller, id: &str, delete_volumes: bool) -> Result<Vec<Job>> {
        let mut tx = self.tx().await?;
        let mut g = group_for(&mut tx, caller, id).await?;
        if !delete_volumes && !matches!(g.status.as_str(), "available" | "error") {
            return Err(ServiceError::invalid(format!(
                "Invalid group: Group status must be available or error, but current status is: {}",
                g.status
            )));
        }
        if g.settling && g.status == "creating" {
            return Err(ServiceError::invalid(format!(
                "Invalid group: Cannot delete group {id}. Group status must be available or error and must not have dependent \
                 group snapshots, and it cannot be the source for an ongoing group or group snapshot creation."
            )));
        }
        if group_snapshot_count(&mut tx, id).await? > 0 {
            return Err(ServiceError::invalid("Invalid group: Group has existing snapshots."));
        }
        let vols = members(&mut tx, id).await?;
        if !vols.is_empty() && !delete_volumes {
            return Err(ServiceError::invalid(format!(
                "Invalid group: Group {id} still contains volumes. The delete-volumes flag is required to delete it."
            )));
        }
        for v in &vols {
            if db::has_attachments(&mut tx, &v.id).await? {
                return Err(ServiceError::invalid(format!("Invalid group: Volume in group {id} is attached. Need to detach first.")));
            }
            if !pdb::list_snapshots(&mut tx, None, Some(&v.id)).await?.is_empty() {
                return Err(ServiceError::invalid("Invalid group: Volume in group still has dependent snapshots."));
            }
        }
        let mut jobs = Vec::with_capacity(vols.len());
        for v in &vols {
            // Deleting volumes are left to their jobs.
            if v.status != "deleting" {
                jobs.push(self.delete_volume_in(&mut tx, caller, &v.id, true, true).await?);
            }
        }
        if vols.is_empty() {
            sqlx::query("DELETE FROM volume_groups WHERE id = $1").bind(id).execute(&mut *tx).await.map_err(dberr("delete group"))?;
        } else {
            g.status = "deleting".into();
            g.settling = true;
            save_group(&mut tx, &g).await?;
        }
        tx.commit().await.map_err(dberr("commit"))?;
        Ok(jobs)
    }

    /// Sets a group's status (admin, 3.20).
    pub async fn reset_group_status(&self, caller: &Caller, id: &str, to: &str) -> Result<()> {
        if !GROUP_STATUSES.contains(&to) {
            return Err(ServiceError::invalid(format!("Invalid input received: Group status {to} is not one of {}", GROUP_STATUSES.join(", "))));
        }
        let mut tx = self.tx().await?;
        let mut g = group_for(&mut tx, caller, id).await?;
        g.status = to.into();
        g.settling = false;
        save_group(&mut tx, &g).await?;
        tx.commit().await.map_err(dberr("commit"))
    }

    /// Takes a snapshot of each of a group's volumes in one admission;
    /// returns the group snapshot, `creating`, and the jobs to start.
    pub async fn create_group_snapshot(
        &self,
        caller: &Caller,
        group_id: &str,
        name: Option<String>,
        description: Option<String>,
    ) -> Result<(GroupSnapshot, Vec<Job>)> {
        let mut tx = self.tx().await?;
        let g = group_for(&mut tx, caller, group_id).await?;
        if g.project_id != caller.project {
            return Err(group_not_found(group_id));
        }
        if !matches!(g.status.as_str(), "available" | "in-use") {
            return Err(ServiceError::invalid(format!(
                "Invalid group: Group {group_id} status must be available or in-use, but current status is: {}.",
                g.status
            )));
        }
        let vols = members(&mut tx, group_id).await?;
        let now = now_iso();
        let gs = GroupSnapshot {
            id: uuid::Uuid::new_v4().to_string(),
            project_id: caller.project.clone(),
            user_id: caller.user.clone(),
            group_id: g.id.clone(),
            group_type_id: g.group_type_id.clone(),
            name: name.clone(),
            description: description.clone(),
            status: if vols.is_empty() { "available" } else { "creating" }.into(),
            created_at: now.clone(),
            updated_at: now,
            settling: !vols.is_empty(),
        };
        insert_group_snapshot(&mut tx, &gs).await?;
        let mut jobs = Vec::with_capacity(vols.len());
        for v in vols {
            let req = CreateSnapshot {
                volume_id: v.id,
                name: name.clone(),
                description: description.clone(),
                force: true,
                metadata: BTreeMap::new(),
                group_snapshot_id: Some(gs.id.clone()),
            };
            let (_, job) = self.create_snapshot_in(&mut tx, caller, req).await?;
            jobs.push(job);
        }
        tx.commit().await.map_err(dberr("commit"))?;
        Ok((gs, jobs))
    }

    /// The caller's group snapshots (every project's with `all_tenants`), settled.
    pub async fn list_group_snapshots(&self, caller: &Caller, all_tenants: bool) -> Result<Vec<GroupSnapshot>> {
        if all_tenants && !caller.admin {
            return Err(ServiceError::Forbidden("Policy doesn't allow all_tenants.".into()));
        }
        let project = (!all_tenants).then_some(caller.project.as_str());
        let all: Vec<GroupSnapshot> = {
            let mut c = self.conn().await?;
            let rows = sqlx::query("SELECT * FROM group_snapshots WHERE ($1 IS NULL OR project_id = $1) ORDER BY created_at, id")
                .bind(project)
                .fetch_all(&mut *c)
                .await
                .map_err(dberr("list group snapshots"))?;
            let all: Vec<GroupSnapshot> = rows.iter().map(group_snapshot_from_row).collect();
            let mut changes = false;
            for g in all.iter().filter(|g| g.settling) {
                changes |= group_snapshot_settles(g, &snapshot_statuses(&mut c, &g.id).await?).is_some();
            }
            if !changes {
                return Ok(all);
            }
            all
        };
        let mut tx = self.tx().await?;
        let mut out = Vec::with_capacity(all.len());
        for g in all {
            if let Some(g) = load_group_snapshot(&mut tx, &g.id).await? {
                out.push(settle_group_snapshot(&mut tx, g).await?);
            }
        }
        tx.commit().await.map_err(dberr("commit"))?;
        Ok(out)
    }

    /// One group snapshot, settled (written only when settling changes it).
    pub async fn get_group_snapshot(&self, caller: &Caller, id: &str) -> Result<GroupSnapshot> {
        {
            let mut c = self.conn().await?;
            let g = load_group_snapshot(&mut c, id)
                .await?
                .filter(|g| crate::paths::actions::reaches(caller, &g.project_id))
                .ok_or_else(|| group_snapshot_not_found(id))?;
            if group_snapshot_settles(&g, &snapshot_statuses(&mut c, id).await?).is_none() {
                return Ok(g);
            }
        }
        let mut tx = self.tx().await?;
        let g = group_snapshot_for(&mut tx, caller, id).await?;
        tx.commit().await.map_err(dberr("commit"))?;
        Ok(g)
    }

    /// Deletes a group snapshot and its snapshots. A failure part-way
    /// leaves it `deleting` (or a snapshot `error_deleting`); deleting it
    /// again goes on from there.
    pub async fn delete_group_snapshot(&self, caller: &Caller, id: &str) -> Result<()> {
        let snaps = {
            let mut tx = self.tx().await?;
            let gs = group_snapshot_for(&mut tx, caller, id).await?;
            if !matches!(gs.status.as_str(), "available" | "error" | "deleting" | "error_deleting") || gs.settling {
                return Err(ServiceError::invalid(
                    "Invalid group snapshot: GroupSnapshot status must be available or error, and no Group can be currently \
                     using it as source for its creation.",
                ));
            }
            let in_use: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM volume_groups WHERE group_snapshot_id = $1 AND status = 'creating'")
                .bind(id)
                .fetch_one(&mut *tx)
                .await
                .map_err(dberr("read groups"))?;
            if in_use > 0 {
                return Err(ServiceError::invalid(
                    "Invalid group snapshot: GroupSnapshot status must be available or error, and no Group can be currently \
                     using it as source for its creation.",
                ));
            }
            let snaps = snapshot_members(&mut tx, id).await?;
            for s in &snaps {
                if db::is_being_cloned(&mut tx, &s.id).await? {
                    return Err(ServiceError::invalid(format!(
                        "Invalid group snapshot: a volume is being created from its snapshot {}; delete it when that is done.",
                        s.id
                    )));
                }
                pdb::set_snapshot_status(&mut tx, &s.id, "deleting").await?;
            }
            set_group_snapshot_status(&mut tx, id, "deleting", false).await?;
            tx.commit().await.map_err(dberr("commit"))?;
            snaps
        };
        for s in &snaps {
            if let Err(e) = self.delete_snapshot_records(s).await {
                let mut c = self.conn().await?;
                set_group_snapshot_status(&mut c, id, "error_deleting", false).await?;
                return Err(e);
            }
        }
        let mut c = self.conn().await?;
        sqlx::query("DELETE FROM group_snapshots WHERE id = $1").bind(id).execute(&mut *c).await.map_err(dberr("delete group snapshot"))?;
        Ok(())
    }

    /// Sets a group snapshot's status (admin, 3.19).
    pub async fn reset_group_snapshot_status(&self, caller: &Caller, id: &str, to: &str) -> Result<()> {
        if !GROUP_SNAPSHOT_STATUSES.contains(&to) {
            return Err(ServiceError::invalid(format!(
                "Invalid input received: Group snapshot status {to} is not one of {}",
                GROUP_SNAPSHOT_STATUSES.join(", ")
            )));
        }
        let mut tx = self.tx().await?;
        group_snapshot_for(&mut tx, caller, id).await?;
        set_group_snapshot_status(&mut tx, id, to, false).await?;
        tx.commit().await.map_err(dberr("commit"))
    }
}

fn source_id<'a>(s: GroupSource<'a>) -> &'a str {
    match s {
        GroupSource::Group(id) | GroupSource::GroupSnapshot(id) => id,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settling_follows_the_members() {
        assert_eq!(settled(["available", "creating"].into_iter()), None);
        assert_eq!(settled(["available", "in-use"].into_iter()), Some("available"));
        assert_eq!(settled(["available", "error"].into_iter()), Some("error"));
        assert_eq!(settled(std::iter::empty()), Some("available"));
    }

    #[test]
    fn id_lists_are_cinders() {
        assert_eq!(id_list("a,b,"), vec!["a", "b"]);
        assert_eq!(id_list(",a , b"), vec!["a", "b"]);
        assert!(id_list("").is_empty());
        assert_eq!(python_tuple(&["available", "in-use"]), "('available', 'in-use')");
    }
}
