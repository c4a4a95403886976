//! `/snapshots`, `/backups`, `/volume-transfers` (and the older
//! `/os-volume-transfer`) and the admin audit `GET /os-rekey/audit`: routing,
//! bodies and views. Handlers only parse and call the domain
//! (`crate::paths`).

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::http::{Method, StatusCode, Uri};
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::error::ApiError;
use super::listing::{metadata_filter, Paging};
use super::views::links;
use super::{body, one_action, query, truthy, Reply};
use crate::model::Caller;
use crate::paths::{Backup, Snapshot, Transfer};
use crate::error::ServiceError;
use crate::service::Service;

/// Operations of this module.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathsEndpoint {
    /// `GET /snapshots[/detail]`.
    ListSnapshots(bool),
    /// `POST /snapshots`.
    CreateSnapshot,
    /// `GET /snapshots/{id}`.
    ShowSnapshot(String),
    /// `PUT /snapshots/{id}`.
    UpdateSnapshot(String),
    /// `DELETE /snapshots/{id}`.
    DeleteSnapshot(String),
    /// `GET /backups[/detail]`.
    ListBackups(bool),
    /// `POST /backups`.
    CreateBackup,
    /// `GET /backups/{id}`.
    ShowBackup(String),
    /// `DELETE /backups/{id}`.
    DeleteBackup(String),
    /// `POST /backups/{id}/restore`.
    RestoreBackup(String),
    /// `GET /volume-transfers[/detail]`.
    ListTransfers(bool),
    /// `POST /volume-transfers`.
    CreateTransfer,
    /// `GET /volume-transfers/{id}`.
    ShowTransfer(String),
    /// `DELETE /volume-transfers/{id}`.
    DeleteTransfer(String),
    /// `POST /volume-transfers/{id}/accept`.
    AcceptTransfer(String),
    /// `GET /os-rekey/audit`: the key-independence audit (admin).
    Audit,
    /// `GET /volumes/summary` (3.12+).
    VolumeSummary,
    /// `/volumes/{id}/metadata[/{key}]` and `/snapshots/{id}/metadata[/{key}]`.
    Metadata(MetaOf, String, MetaOp),
    /// `POST /snapshots/{id}/action`.
    SnapshotAction(String),
    /// `POST /backups/{id}/action`.
    BackupAction(String),
    /// `PUT /backups/{id}` (3.9+).
    UpdateBackup(String),
    /// `GET /backups/{id}/export_record` (admin).
    ExportBackup(String),
    /// `POST /backups/import_record` (admin).
    ImportBackup,
}

/// Whose metadata.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetaOf {
    /// A volume's.
    Volume,
    /// A snapshot's.
    Snapshot,
}

/// What is done to metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MetaOp {
    /// `GET .../metadata`.
    List,
    /// `POST .../metadata`: merge.
    Merge,
    /// `PUT .../metadata`: replace.
    Replace,
    /// `GET .../metadata/{key}`.
    Show(String),
    /// `PUT .../metadata/{key}`.
    Set(String),
    /// `DELETE .../metadata/{key}`.
    Delete(String),
}

impl MetaOp {
    /// Whether it only reads.
    pub fn reads(&self) -> bool {
        matches!(self, MetaOp::List | MetaOp::Show(_))
    }
}

/// Routes the path segments after `/v3[/{project}]`.
pub(super) fn resource(m: &Method, segs: &[&str]) -> Result<PathsEndpoint, ApiError> {
    use PathsEndpoint::*;
    let s = |x: &&str| (*x).to_owned();
    let e = match (segs, m) {
        (["snapshots"], &Method::GET) => ListSnapshots(false),
        (["snapshots", "detail"], &Method::GET) => ListSnapshots(true),
        (["snapshots"], &Method::POST) => CreateSnapshot,
        (["snapshots", id], &Method::GET) => ShowSnapshot(s(id)),
        (["snapshots", id], &Method::PUT) => UpdateSnapshot(s(id)),
        (["snapshots", id], &Method::DELETE) => DeleteSnapshot(s(id)),
        (["backups"], &Method::GET) => ListBackups(false),
        (["backups", "detail"], &Method::GET) => ListBackups(true),
        (["backups"], &Method::POST) => CreateBackup,
        (["backups", id], &Method::GET) => ShowBackup(s(id)),
        (["backups", id], &Method::DELETE) => DeleteBackup(s(id)),
        (["backups", id, "restore"], &Method::POST) => RestoreBackup(s(id)),
        ([t], &Method::GET) if is_transfers(t) => ListTransfers(false),
        ([t, "detail"], &Method::GET) if is_transfers(t) => ListTransfers(true),
        ([t], &Method::POST) if is_transfers(t) => CreateTransfer,
        ([t, id], &Method::GET) if is_transfers(t) => ShowTransfer(s(id)),
        ([t, id], &Method::DELETE) if is_transfers(t) => DeleteTransfer(s(id)),
        ([t, id, "accept"], &Method::POST) if is_transfers(t) => AcceptTransfer(s(id)),
        (["os-rekey", "audit"], &Method::GET) => Audit,
        (["volumes", "summary"], &Method::GET) => VolumeSummary,
        ([kind @ ("volumes" | "snapshots"), id, "metadata"], m) => {
            let op = match *m {
                Method::GET => MetaOp::List,
                Method::POST => MetaOp::Merge,
                Method::PUT => MetaOp::Replace,
                _ => return Err(ApiError::bad_method()),
            };
            Metadata(meta_of(kind), s(id), op)
        }
        ([kind @ ("volumes" | "snapshots"), id, "metadata", key], m) => {
            let op = match *m {
                Method::GET => MetaOp::Show(s(key)),
                Method::PUT => MetaOp::Set(s(key)),
                Method::DELETE => MetaOp::Delete(s(key)),
                _ => return Err(ApiError::bad_method()),
            };
            Metadata(meta_of(kind), s(id), op)
        }
        (["snapshots", id, "action"], &Method::POST) => SnapshotAction(s(id)),
        (["backups", "import_record"], &Method::POST) => ImportBackup,
        (["backups", id, "action"], &Method::POST) => BackupAction(s(id)),
        (["backups", id, "export_record"], &Method::GET) => ExportBackup(s(id)),
        (["backups", id], &Method::PUT) => UpdateBackup(s(id)),
        (["snapshots"] | ["snapshots", _] | ["backups"] | ["backups", _] | ["backups", _, "restore"], _)
        | (["snapshots", _, "action"] | ["backups", _, "action" | "export_record"], _) => return Err(ApiError::bad_method()),
        ([t] | [t, _] | [t, _, "accept"], _) if is_transfers(t) => return Err(ApiError::bad_method()),
        (["os-rekey", "audit"], _) => return Err(ApiError::bad_method()),
        _ => return Err(ApiError::not_found_path()),
    };
    Ok(e)
}

/// Sortable snapshot fields.
const SNAPSHOT_SORT_KEYS: &[&str] = &[
    "id", "name", "display_name", "description", "display_description", "status", "size", "volume_id", "created_at",
    "updated_at", "project_id", "user_id",
];

/// A field that may be `null`: `None` only when absent.
mod present {
    use serde::{Deserialize, Deserializer};
    use serde_json::Value;
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
        Value::deserialize(d).map(Some)
    }
}

/// Sortable backup fields.
const BACKUP_SORT_KEYS: &[&str] =
    &["id", "name", "display_name", "description", "status", "size", "volume_id", "created_at", "updated_at", "project_id"];

fn meta_of(kind: &str) -> MetaOf {
    if kind == "volumes" {
        MetaOf::Volume
    } else {
        MetaOf::Snapshot
    }
}

fn is_transfers(seg: &str) -> bool {
    seg == "volume-transfers" || seg == "os-volume-transfer"
}

/// `true`/`false` as JSON or as Cinder's strings.
fn flag(v: &Option<Value>, what: &str) -> Result<bool, ApiError> {
    match v {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(Value::String(s)) if matches!(s.to_ascii_lowercase().as_str(), "true" | "false" | "0" | "1" | "yes" | "no") => {
            Ok(truthy(s))
        }
        Some(v) => Err(ApiError::bad_request(format!("Invalid input received: {what} {v} is not a boolean"))),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SnapshotBody {
    snapshot: SnapshotFields,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SnapshotFields {
    #[serde(default, with = "present")]
    volume_id: Option<Value>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    display_name: Option<String>,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    display_description: Option<String>,
    #[serde(default)]
    force: Option<Value>,
    #[serde(default)]
    metadata: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BackupBody {
    backup: BackupFields,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BackupFields {
    volume_id: String,
    #[serde(default)]
    container: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    incremental: Option<Value>,
    #[serde(default)]
    force: Option<Value>,
    #[serde(default)]
    snapshot_id: Option<String>,
    #[serde(default)]
    metadata: Option<BTreeMap<String, String>>,
    #[serde(default)]
    availability_zone: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RestoreBody {
    restore: RestoreFields,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RestoreFields {
    #[serde(default)]
    volume_id: Option<String>,
    #[serde(default)]
    name: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TransferBody {
    transfer: TransferFields,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TransferFields {
    volume_id: String,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    no_snapshots: Option<Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AcceptBody {
    accept: AcceptFields,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AcceptFields {
    auth_key: String,
}

/// Handles one of this module's endpoints.
pub(super) async fn handle(
    svc: &Arc<Service>,
    who: &Caller,
    e: PathsEndpoint,
    uri: &Uri,
    bytes: &Bytes,
    base: &str,
    mv: (u32, u32),
) -> Reply {
    use PathsEndpoint::*;
    let all_tenants = query(uri).iter().any(|(k, v)| k == "all_tenants" && truthy(v));
    let q_volume = query(uri).into_iter().find(|(k, _)| k == "volume_id").map(|(_, v)| v);
    match e {
        ListSnapshots(detail) => {
            let q = query(uri);
            let paging = Paging::parse(&q, SNAPSHOT_SORT_KEYS, mv)?;
            let want = |k: &str| q.iter().rev().find(|(key, _)| key == k).map(|(_, v)| v.clone());
            let (name, status) = (want("name").or_else(|| want("display_name")), want("status"));
            let metadata = want("metadata").map(|m| metadata_filter(&m)).transpose()?;
            let snaps = svc.list_snapshots(who, all_tenants, q_volume.as_deref()).await?;
            let rows = snaps
                .into_iter()
                .filter(|s| name.is_none() || s.name == name)
                .filter(|s| status.as_deref().is_none_or(|st| s.status == st))
                .filter(|s| metadata.as_ref().is_none_or(|m| m.iter().all(|(k, v)| s.metadata.get(k) == Some(v))))
                .map(|s| {
                    let f = json!({
                        "id": s.id, "name": s.name, "display_name": s.name, "description": s.description,
                        "display_description": s.description, "status": s.status, "size": s.size_gb,
                        "volume_id": s.volume_id, "created_at": s.created_at, "updated_at": s.updated_at,
                        "project_id": s.project_id, "user_id": s.user_id,
                    });
                    (s, f)
                })
                .collect();
            let (page, total) = paging.apply(rows)?;
            let out: Vec<Value> = page.iter().map(|s| snapshot_view(s, mv, detail)).collect();
            let mut body = json!({ "snapshots": out });
            if let Some(l) = paging.next_link(base, uri, page.len(), page.last().map(|s| s.id.as_str())) {
                body["snapshots_links"] = l;
            }
            if paging.with_count {
                body["count"] = json!(total);
            }
            Ok((StatusCode::OK, body))
        }
        CreateSnapshot => {
            let b: SnapshotBody = body(bytes)?;
            let f = b.snapshot;
            // Cinder looks a null volume_id up (404); a missing one fails its schema (400).
            let volume_id = match f.volume_id {
                None => return Err(ApiError::bad_request("Invalid input received: volume_id is required")),
                Some(Value::String(v)) => v,
                Some(Value::Null) => return Err(ServiceError::not_found("Volume", "None").into()),
                Some(v) => return Err(ApiError::bad_request(format!("Invalid input received: volume_id {v} is not a string"))),
            };
            let req = crate::paths::snapshots::CreateSnapshot {
                volume_id,
                name: f.name.or(f.display_name),
                description: f.description.or(f.display_description),
                force: flag(&f.force, "force")?,
                metadata: f.metadata.unwrap_or_default(),
                group_snapshot_id: None,
            };
            let (s, job) = svc.create_snapshot(who, req).await?;
            crate::engine::spawn(svc.clone(), job);
            Ok((StatusCode::ACCEPTED, json!({ "snapshot": snapshot_view(&s, mv, false) })))
        }
        ShowSnapshot(id) => Ok((StatusCode::OK, json!({ "snapshot": snapshot_view(&svc.get_snapshot(who, &id).await?, mv, true) }))),
        UpdateSnapshot(id) => {
            let b: SnapshotBody = body(bytes)?;
            let f = b.snapshot;
            if f.volume_id.is_some() || f.force.is_some() {
                return Err(ApiError::bad_request("Invalid input received: only name, description and metadata can be updated"));
            }
            let name = f.name.or(f.display_name).map(Some);
            let desc = f.description.or(f.display_description).map(Some);
            let s = svc.update_snapshot(who, &id, name, desc, f.metadata).await?;
            Ok((StatusCode::OK, json!({ "snapshot": snapshot_view(&s, mv, false) })))
        }
        DeleteSnapshot(id) => {
            svc.delete_snapshot(who, &id).await?;
            Ok((StatusCode::ACCEPTED, Value::Null))
        }
        ListBackups(detail) => {
            let q = query(uri);
            let paging = Paging::parse(&q, BACKUP_SORT_KEYS, mv)?;
            let want = |k: &str| q.iter().rev().find(|(key, _)| key == k).map(|(_, v)| v.clone());
            let (name, status) = (want("name").or_else(|| want("display_name")), want("status"));
            let list = svc.list_backups(who, all_tenants, q_volume.as_deref()).await?;
            let rows = list
                .into_iter()
                .filter(|b| name.is_none() || b.name == name)
                .filter(|b| status.as_deref().is_none_or(|st| b.status == st))
                .map(|b| {
                    let f = json!({
                        "id": b.id, "name": b.name, "display_name": b.name, "description": b.description,
                        "status": b.status, "size": b.size_gb, "volume_id": b.volume_id,
                        "created_at": b.created_at, "updated_at": b.updated_at, "project_id": b.project_id,
                    });
                    (b, f)
                })
                .collect();
            // tempest's schemas have no `backups_links`: the page is cut, no link given.
            let (page, total) = paging.apply(rows)?;
            let mut out = Vec::with_capacity(page.len());
            for b in &page {
                out.push(backup_view(svc, base, b, mv, detail, who.admin).await?);
            }
            let mut body = json!({ "backups": out });
            if paging.with_count {
                body["count"] = json!(total);
            }
            Ok((StatusCode::OK, body))
        }
        CreateBackup => {
            let b: BackupBody = body(bytes)?;
            let f = b.backup;
            let _ = (&f.container, &f.availability_zone);
            let req = crate::paths::backups::CreateBackup {
                volume_id: f.volume_id,
                name: f.name,
                description: f.description,
                incremental: flag(&f.incremental, "incremental")?,
                force: flag(&f.force, "force")?,
                metadata: f.metadata.unwrap_or_default(),
                snapshot_id: f.snapshot_id,
            };
            let (bk, job) = svc.create_backup(who, req).await?;
            crate::engine::spawn(svc.clone(), job);
            Ok((StatusCode::ACCEPTED, json!({ "backup": {"id": bk.id, "name": bk.name, "links": links(base, &bk.project_id, "backups", &bk.id)} })))
        }
        ShowBackup(id) => {
            let b = svc.get_backup(who, &id).await?;
            Ok((StatusCode::OK, json!({ "backup": backup_view(svc, base, &b, mv, true, who.admin).await? })))
        }
        DeleteBackup(id) => {
            svc.delete_backup(who, &id).await?;
            Ok((StatusCode::ACCEPTED, Value::Null))
        }
        RestoreBackup(id) => {
            let b: RestoreBody = body(bytes)?;
            let (vol, job) = svc.restore_backup(who, &id, b.restore.volume_id.as_deref(), b.restore.name).await?;
            crate::engine::spawn(svc.clone(), job);
            Ok((StatusCode::ACCEPTED, json!({ "restore": {"backup_id": id, "volume_id": vol.id, "volume_name": vol.name} })))
        }
        ListTransfers(detail) => {
            let list = svc.list_transfers(who, all_tenants).await?;
            let out: Vec<Value> = list.iter().map(|t| transfer_view(base, t, None, mv, detail)).collect();
            Ok((StatusCode::OK, json!({ "transfers": out })))
        }
        CreateTransfer => {
            let b: TransferBody = body(bytes)?;
            let f = b.transfer;
            let no_snapshots = flag(&f.no_snapshots, "no_snapshots")?;
            if no_snapshots && mv < (3, 55) {
                return Err(ApiError::bad_request("Invalid input received: no_snapshots needs microversion 3.55 or later"));
            }
            let (t, auth_key) = svc.create_transfer(who, &f.volume_id, f.name, no_snapshots, mv).await?;
            Ok((StatusCode::ACCEPTED, json!({ "transfer": transfer_view(base, &t, Some(auth_key.as_str()), mv, true) })))
        }
        ShowTransfer(id) => {
            let t = svc.get_transfer(who, &id).await?;
            Ok((StatusCode::OK, json!({ "transfer": transfer_view(base, &t, None, mv, true) })))
        }
        DeleteTransfer(id) => {
            svc.delete_transfer(who, &id).await?;
            Ok((StatusCode::ACCEPTED, Value::Null))
        }
        AcceptTransfer(id) => {
            let b: AcceptBody = body(bytes)?;
            let (t, vol, job) = svc.accept_transfer(who, &id, &b.accept.auth_key, mv).await?;
            crate::engine::spawn(svc.clone(), job);
            Ok((
                StatusCode::ACCEPTED,
                json!({ "transfer": {"id": t.id, "name": t.name, "volume_id": vol.id, "links": links(base, &vol.project_id, "os-volume-transfer", &t.id)} }),
            ))
        }
        Audit => {
            if !who.admin {
                return Err(ApiError::forbidden("Policy doesn't allow the audit."));
            }
            let report = crate::paths::audit::run(svc).await?;
            Ok((StatusCode::OK, json!({ "audit": report })))
        }
        VolumeSummary => {
            let v = super::volumes::Ctx { svc, who, base, mv };
            super::volumes::summary(&v, uri).await
        }
        Metadata(of, id, op) => super::metadata::handle(svc, who, of, &id, op, bytes).await,
        SnapshotAction(id) => snapshot_action(svc, who, &id, bytes).await,
        BackupAction(id) => backup_action(svc, who, &id, bytes).await,
        UpdateBackup(id) => {
            if mv < (3, 9) {
                return Err(ApiError::not_found_path());
            }
            let b: BackupUpdateBody = body(bytes)?;
            let f = b.backup;
            if f.metadata.is_some() {
                return Err(ApiError::bad_request("Invalid input received: backup metadata is not kept by this service"));
            }
            let bk = svc.update_backup(who, &id, f.name, f.description).await?;
            Ok((StatusCode::OK, json!({ "backup": {"id": bk.id, "name": bk.name, "links": links(base, &bk.project_id, "backups", &bk.id)} })))
        }
        ExportBackup(id) => {
            let (service, url) = svc.export_backup(who, &id).await?;
            Ok((StatusCode::OK, json!({ "backup-record": {"backup_service": service, "backup_url": url} })))
        }
        ImportBackup => {
            let b: ImportBody = body(bytes)?;
            let f = b.backup_record;
            let bk = svc.import_backup(who, &f.backup_service, &f.backup_url).await?;
            Ok((StatusCode::CREATED, json!({ "backup": {"id": bk.id, "name": bk.name, "links": links(base, &bk.project_id, "backups", &bk.id)} })))
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BackupUpdateBody {
    backup: BackupUpdate,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BackupUpdate {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    metadata: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ImportBody {
    #[serde(rename = "backup-record")]
    backup_record: ImportFields,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ImportFields {
    backup_service: String,
    backup_url: String,
}

fn status_arg(args: &Value) -> Result<String, ApiError> {
    match args.get("status") {
        Some(Value::String(s)) => Ok(s.clone()),
        _ => Err(ApiError::bad_request("Invalid input received: Must specify 'status'")),
    }
}

fn admin_only(who: &Caller, name: &str) -> Result<(), ApiError> {
    if who.admin {
        Ok(())
    } else {
        Err(super::policy::forbidden(name))
    }
}

/// `os-reset_status`, `os-update_snapshot_status`, `os-force_delete` of a snapshot.
async fn snapshot_action(svc: &Arc<Service>, who: &Caller, id: &str, bytes: &Bytes) -> Reply {
    let (name, args) = one_action(bytes)?;
    match name.as_str() {
        "os-reset_status" => {
            admin_only(who, "volume_extension:snapshot_admin_actions:reset_status")?;
            svc.reset_snapshot_status(who, id, &status_arg(&args)?).await?;
        }
        "os-update_snapshot_status" => {
            let progress = match args.get("progress") {
                None | Some(Value::Null) => None,
                Some(Value::String(p)) if p.len() <= 255 => Some(p.as_str()),
                Some(p) => return Err(ApiError::bad_request(format!("Invalid input received: progress {p} is not a string"))),
            };
            svc.update_snapshot_status(who, id, &status_arg(&args)?, progress).await?
        }
        "os-force_delete" => {
            admin_only(who, "volume_extension:snapshot_admin_actions:force_delete")?;
            svc.force_delete_snapshot(who, id).await?;
        }
        other => return Err(ApiError::bad_request(format!("There is no such action: {other}"))),
    }
    Ok((StatusCode::ACCEPTED, Value::Null))
}

/// `os-reset_status`, `os-force_delete` of a backup.
async fn backup_action(svc: &Arc<Service>, who: &Caller, id: &str, bytes: &Bytes) -> Reply {
    let (name, args) = one_action(bytes)?;
    match name.as_str() {
        "os-reset_status" => {
            admin_only(who, "volume_extension:backup_admin_actions:reset_status")?;
            svc.reset_backup_status(who, id, &status_arg(&args)?).await?;
        }
        "os-force_delete" => {
            admin_only(who, "volume_extension:backup_admin_actions:force_delete")?;
            svc.force_delete_backup(who, id).await?;
        }
        other => return Err(ApiError::bad_request(format!("There is no such action: {other}"))),
    }
    Ok((StatusCode::ACCEPTED, Value::Null))
}

fn snapshot_view(s: &Snapshot, mv: (u32, u32), detail: bool) -> Value {
    let mut m = Map::new();
    let mut put = |k: &str, v: Value| {
        m.insert(k.to_owned(), v);
    };
    put("id", json!(s.id));
    put("name", json!(s.name));
    put("description", json!(s.description));
    put("status", json!(s.status));
    put("size", json!(s.size_gb));
    put("volume_id", json!(s.volume_id));
    put("metadata", json!(s.metadata));
    put("created_at", json!(s.created_at));
    put("updated_at", json!(s.updated_at));
    if detail {
        let progress = s.progress.clone().unwrap_or_else(|| if s.status == "available" { "100%" } else { "0%" }.to_owned());
        put("os-extended-snapshot-attributes:progress", json!(progress));
        put("os-extended-snapshot-attributes:project_id", json!(s.project_id));
    }
    if mv >= (3, 14) {
        put("group_snapshot_id", json!(s.group_snapshot_id));
    }
    if mv >= (3, 41) {
        put("user_id", json!(s.user_id));
    }
    if mv >= (3, 65) {
        put("consumes_quota", json!(true));
    }
    Value::Object(m)
}

async fn backup_view(svc: &Service, base: &str, b: &Backup, mv: (u32, u32), detail: bool, admin: bool) -> Result<Value, ApiError> {
    if !detail {
        return Ok(json!({"id": b.id, "name": b.name, "links": links(base, &b.project_id, "backups", &b.id)}));
    }
    let dependents = svc.backup_has_dependents(&b.id).await?;
    let mut v = json!({
        "id": b.id,
        "name": b.name,
        "description": b.description,
        "status": b.status,
        "availability_zone": "nova",
        "volume_id": b.volume_id,
        "snapshot_id": b.snapshot_id,
        "size": b.size_gb,
        "object_count": b.object_count,
        "container": "rekey-backups",
        "is_incremental": b.parent_id.is_some(),
        "has_dependent_backups": dependents,
        "fail_reason": b.fail_reason,
        "created_at": b.created_at,
        "updated_at": b.updated_at,
        "data_timestamp": b.created_at,
        "links": links(base, &b.project_id, "backups", &b.id),
    });
    if mv >= (3, 18) && admin {
        v["os-backup-project-attr:project_id"] = json!(b.project_id);
    }
    if mv >= (3, 43) {
        v["metadata"] = json!({});
    }
    if mv >= (3, 56) {
        v["user_id"] = json!(b.user_id);
    }
    if mv >= (3, 64) {
        v["encryption_key_id"] = json!(b.encryption_key_id);
    }
    Ok(v)
}

fn transfer_view(base: &str, t: &Transfer, auth_key: Option<&str>, mv: (u32, u32), detail: bool) -> Value {
    let mut v = json!({
        "id": t.id,
        "name": t.name,
        "volume_id": t.volume_id,
        "links": links(base, &t.project_id, "os-volume-transfer", &t.id),
    });
    if detail {
        v["created_at"] = json!(t.created_at);
    }
    if let Some(k) = auth_key {
        v["auth_key"] = json!(k);
    }
    if mv >= (3, 55) && detail {
        v["no_snapshots"] = json!(t.no_snapshots);
    }
    if mv >= (3, 57) && detail {
        v["source_project_id"] = json!(t.project_id);
        v["destination_project_id"] = json!(t.destination_project_id);
        v["accepted"] = json!(t.accepted);
    }
    v
}

