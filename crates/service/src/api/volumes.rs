//! Volumes: bodies and handlers. Each handler extracts and checks its
//! input, calls one domain function and renders the answer.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::http::{StatusCode, Uri};
use serde::Deserialize;
use serde_json::{json, Value};

use super::error::ApiError;
use super::listing::{metadata_filter, Paging};
use super::{body, parse_size, policy, query, truthy, views, Reply};
use crate::paths::actions::check_metadata;
use crate::model::{attach_status, AttachMode, Caller, RekeyMode, Volume};
use crate::service::{CreateVolume, Service, VolumeFilter};

/// What every volume handler needs.
pub(super) struct Ctx<'a> {
    pub svc: &'a Arc<Service>,
    pub who: &'a Caller,
    pub base: &'a str,
    pub mv: (u32, u32),
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct VolumeCreateBody {
    volume: VolumeCreate,
    #[serde(rename = "OS-SCH-HNT:scheduler_hints", default)]
    _hints: Option<Value>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct VolumeCreate {
    #[serde(default)]
    size: Option<Value>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    display_name: Option<String>,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    display_description: Option<String>,
    #[serde(default)]
    volume_type: Option<String>,
    #[serde(default)]
    source_volid: Option<String>,
    #[serde(default)]
    snapshot_id: Option<String>,
    #[serde(default)]
    backup_id: Option<String>,
    #[serde(rename = "imageRef", default)]
    image_ref: Option<String>,
    #[serde(default)]
    availability_zone: Option<String>,
    #[serde(default)]
    metadata: Option<BTreeMap<String, String>>,
    #[serde(default)]
    consistencygroup_id: Option<String>,
    #[serde(default)]
    group_id: Option<String>,
    #[serde(default)]
    multiattach: Option<bool>,
    #[serde(default)]
    scheduler_hints: Option<Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct VolumeUpdateBody {
    volume: VolumeUpdate,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct VolumeUpdate {
    #[serde(default, with = "double_option")]
    name: Option<Option<String>>,
    #[serde(default, with = "double_option")]
    display_name: Option<Option<String>>,
    #[serde(default, with = "double_option")]
    description: Option<Option<String>>,
    #[serde(default, with = "double_option")]
    display_description: Option<Option<String>>,
    #[serde(default)]
    metadata: Option<BTreeMap<String, String>>,
}

/// Tells a missing field (`None`) from an explicit `null` (`Some(None)`).
mod double_option {
    use serde::{Deserialize, Deserializer};
    pub fn deserialize<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<Option<T>>, D::Error> {
        Option::<T>::deserialize(d).map(Some)
    }
}


/// Sortable volume fields (Cinder sorts by any column; these are the ones
/// a volume here has).
const VOLUME_SORT_KEYS: &[&str] = &[
    "id", "name", "display_name", "description", "display_description", "status", "size", "created_at", "updated_at",
    "bootable", "availability_zone", "volume_type_id", "project_id", "user_id",
];

fn sort_fields(v: &Volume) -> Value {
    json!({
        "id": v.id, "name": v.name, "display_name": v.name, "description": v.description,
        "display_description": v.description, "status": v.status, "size": v.size_gb, "created_at": v.created_at,
        "updated_at": v.updated_at, "bootable": v.bootable, "availability_zone": "nova",
        "volume_type_id": v.volume_type_id, "project_id": v.project_id, "user_id": v.user_id,
    })
}

/// `GET /volumes[/detail]` with Cinder's filters (`name`, `status`,
/// `bootable`, `availability_zone`, `metadata`; others are ignored, as
/// Cinder drops filters it does not know for non-admins) and paging.
pub(super) async fn list(c: &Ctx<'_>, uri: &Uri, detail: bool) -> Reply {
    let q = query(uri);
    let paging = Paging::parse(&q, VOLUME_SORT_KEYS, c.mv)?;
    let mut f = VolumeFilter::default();
    let mut bootable = None;
    let mut zone = None;
    let mut metadata = None;
    let mut project = None;
    for (k, v) in &q {
        match k.as_str() {
            "name" | "display_name" => f.name = Some(v.clone()),
            "status" => f.status = Some(v.clone()),
            "all_tenants" => f.all_tenants = truthy(v),
            "bootable" => bootable = Some(truthy(v)),
            "availability_zone" => zone = Some(v.clone()),
            // Meaningful with all_tenants (an admin's); a member's list is its project anyway.
            "project_id" | "tenant_id" => project = Some(v.clone()),
            "metadata" => metadata = Some(metadata_filter(v)?),
            _ => {}
        }
    }
    let vols = c.svc.list_volumes(c.who, &f).await?;
    let rows = vols
        .into_iter()
        .filter(|v| bootable.is_none_or(|b| v.bootable == b))
        .filter(|_| zone.as_deref().is_none_or(|z| z == "nova"))
        .filter(|v| project.as_deref().is_none_or(|p| v.project_id == p))
        .filter(|v| metadata.as_ref().is_none_or(|m| m.iter().all(|(k, val)| v.metadata.get(k) == Some(val))))
        .map(|v| {
            let s = sort_fields(&v);
            (v, s)
        })
        .collect();
    let (page, total) = paging.apply(rows)?;
    let mut out = Vec::with_capacity(page.len());
    for v in &page {
        out.push(if detail { detail_view(c, v, true).await? } else { views::volume_summary(c.base, v) });
    }
    let mut body = json!({ "volumes": out });
    if let Some(l) = paging.next_link(c.base, uri, page.len(), page.last().map(|v| v.id.as_str())) {
        body["volumes_links"] = l;
    }
    if paging.with_count {
        body["count"] = json!(total);
    }
    Ok((StatusCode::OK, body))
}

pub(super) async fn show(c: &Ctx<'_>, id: &str) -> Reply {
    let v = c.svc.get_volume(c.who, id).await?;
    Ok((StatusCode::OK, json!({ "volume": detail_view(c, &v, true).await? })))
}

pub(super) async fn update(c: &Ctx<'_>, id: &str, bytes: &Bytes) -> Reply {
    let b: VolumeUpdateBody = body(bytes)?;
    let u = crate::service::UpdateVolume {
        name: b.volume.name.or(b.volume.display_name),
        description: b.volume.description.or(b.volume.display_description),
        metadata: b.volume.metadata,
    };
    if let Some(m) = &u.metadata {
        check_metadata(m)?;
    }
    let v = c.svc.update_volume(c.who, id, u).await?;
    Ok((StatusCode::OK, json!({ "volume": detail_view(c, &v, false).await? })))
}

/// `DELETE /volumes/{id}[?cascade=&force=]`; forcing is admin-only (Cinder's
/// `volume:force_delete`), except under noauth.
pub(super) async fn delete(c: &Ctx<'_>, id: &str, uri: &Uri, noauth: bool) -> Reply {
    let (svc, who) = (c.svc, c.who);
    let force = query(uri).iter().any(|(k, v)| k == "force" && truthy(v));
    if force && !noauth && !who.admin {
        return Err(policy::forbidden("volume:force_delete"));
    }
    let cascade = query(uri).iter().any(|(k, v)| k == "cascade" && truthy(v));
    let owner = svc.acting_on_volume(who, id).await?;
    svc.delete_volume_snapshots(&owner, id, cascade).await?;
    let job = svc.delete_volume(&owner, id, force).await?;
    crate::engine::spawn(svc.clone(), job);
    Ok((StatusCode::ACCEPTED, Value::Null))
}

pub(super) async fn encryption(c: &Ctx<'_>, id: &str) -> Reply {
    let (v, e) = c.svc.volume_encryption(c.who, id).await?;
    Ok((StatusCode::OK, views::volume_encryption(&v, e.as_ref())))
}

/// `POST /volumes/{id}/action` with `{"os-rekey": {"mode": "volume-key"|"keyslot"}}`
/// (`mode` defaults to `volume-key`, the fix the audit names for a shared
/// volume key): 202 and the volume goes `maintenance` until rekeyed.
pub(super) async fn action(c: &Ctx<'_>, id: &str, bytes: &Bytes) -> Reply {
    let (svc, who) = (c.svc, c.who);
    let actions: serde_json::Map<String, Value> = body(bytes)?;
    let mut it = actions.into_iter();
    let (name, args) = match (it.next(), it.next()) {
        (Some(one), None) => one,
        _ => return Err(ApiError::bad_request("Invalid input received: the body must name exactly one action")),
    };
    match name.as_str() {
        "os-rekey" => {
            let a: RekeyAction = match args {
                Value::Null => RekeyAction::default(),
                v => serde_json::from_value(v).map_err(|e| ApiError::bad_request(format!("Invalid input received: os-rekey: {e}")))?,
            };
            let mode = match a.mode.as_deref() {
                None => RekeyMode::VolumeKey,
                Some(m) => m.parse::<RekeyMode>().map_err(|_| {
                    ApiError::bad_request(format!("Invalid input received: os-rekey mode must be keyslot or volume-key, not {m:?}"))
                })?,
            };
            let job = svc.rekey_volume(who, id, mode).await?;
            crate::engine::spawn(svc.clone(), job);
            Ok((StatusCode::ACCEPTED, Value::Null))
        }
        "os-reserve" => {
            svc.os_reserve(who, id).await?;
            Ok((StatusCode::ACCEPTED, Value::Null))
        }
        "os-unreserve" => {
            svc.os_unreserve(who, id).await?;
            Ok((StatusCode::ACCEPTED, Value::Null))
        }
        "os-initialize_connection" => {
            let connector = legacy_connector(&name, &args)?;
            let info = svc.os_initialize_connection(who, id, connector).await?;
            Ok((StatusCode::OK, json!({ "connection_info": info })))
        }
        "os-terminate_connection" => {
            let connector = legacy_connector(&name, &args)?;
            svc.os_terminate_connection(who, id, &connector).await?;
            Ok((StatusCode::ACCEPTED, Value::Null))
        }
        "os-attach" => {
            let a: AttachAction = legacy_args(&name, args)?;
            let mode = AttachMode::parse(a.mode.as_deref().unwrap_or("rw"))?;
            svc.os_attach(who, id, a.instance_uuid, a.mountpoint, a.host_name, mode).await?;
            Ok((StatusCode::ACCEPTED, Value::Null))
        }
        "os-begin_detaching" | "os-roll_detaching" => {
            svc.os_detaching(who, id, name == "os-begin_detaching").await?;
            Ok((StatusCode::ACCEPTED, Value::Null))
        }
        "os-detach" => {
            let a: DetachAction = legacy_args(&name, args)?;
            svc.os_detach(who, id, a.attachment_id.as_deref()).await?;
            Ok((StatusCode::ACCEPTED, Value::Null))
        }
        "os-extend" => {
            // Cinder finds the volume before it reads the arguments.
            svc.volume_metadata(who, id).await?;
            let new_size = match args.get("new_size") {
                None | Some(Value::Null) => return Err(ApiError::bad_request("Invalid input received: os-extend needs new_size")),
                Some(n) => parse_size(n)?,
            };
            svc.extend_volume(who, id, new_size).await?;
            Ok((StatusCode::ACCEPTED, Value::Null))
        }
        "os-reset_status" => {
            admin_only(who, "volume_extension:volume_admin_actions:reset_status")?;
            let a: ResetStatus = legacy_args(&name, args)?;
            if let Some(s) = &a.attach_status {
                if !matches!(s.as_str(), "attached" | "detached") {
                    return Err(ApiError::bad_request(format!("Invalid input received: Must specify a valid attach status, not {s:?}.")));
                }
            }
            match (&a.status, &a.attach_status, &a.migration_status) {
                (None, None, None) => Err(ApiError::bad_request("Invalid input received: Must specify 'status', 'attach_status' or 'migration_status' for update.")),
                (Some(st), _, _) => {
                    svc.reset_volume_status(who, id, st).await?;
                    Ok((StatusCode::ACCEPTED, Value::Null))
                }
                // Kept by the attachments themselves here; the volume must exist.
                _ => {
                    svc.volume_metadata(who, id).await?;
                    Ok((StatusCode::ACCEPTED, Value::Null))
                }
            }
        }
        "os-set_bootable" => {
            let flag = required_bool(&args, "bootable")?;
            svc.set_bootable(who, id, flag).await?;
            Ok((StatusCode::OK, Value::Null))
        }
        "os-update_readonly_flag" => {
            let flag = required_bool(&args, "readonly")?;
            svc.set_readonly(who, id, flag).await?;
            Ok((StatusCode::ACCEPTED, Value::Null))
        }
        "os-force_delete" => {
            admin_only(who, "volume_extension:volume_admin_actions:force_delete")?;
            let job = svc.delete_volume(who, id, true).await?;
            crate::engine::spawn(svc.clone(), job);
            Ok((StatusCode::ACCEPTED, Value::Null))
        }
        "os-retype" => {
            let a: RetypeAction = legacy_args(&name, args)?;
            let new_type = a.new_type.ok_or_else(|| ApiError::bad_request("Invalid input received: Retype requires new_type"))?;
            let on_demand = match a.migration_policy.as_deref() {
                None | Some("never") => false,
                Some("on-demand") => true,
                Some(p) => return Err(ApiError::bad_request(format!("Invalid input received: Invalid migration policy {p:?}; must be never or on-demand."))),
            };
            svc.retype_volume(who, id, &new_type, on_demand).await?;
            Ok((StatusCode::ACCEPTED, Value::Null))
        }
        other => Err(ApiError::bad_request(format!("There is no such action: {other}"))),
    }
}

/// 403 unless `who` is an admin (the admin-only actions behind a
/// member-level route).
fn admin_only(who: &Caller, policy_name: &str) -> Result<(), ApiError> {
    if who.admin {
        Ok(())
    } else {
        Err(policy::forbidden(policy_name))
    }
}

/// A boolean argument Cinder requires: JSON true/false or its strings.
fn required_bool(args: &Value, field: &str) -> Result<bool, ApiError> {
    match args.get(field) {
        Some(Value::Bool(b)) => Ok(*b),
        Some(Value::String(s)) => match s.to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "on" | "t" | "y" => Ok(true),
            "false" | "0" | "no" | "off" | "f" | "n" => Ok(false),
            _ => Err(ApiError::bad_request(format!("Invalid input received: Invalid value for '{field}': {s:?} is not a boolean."))),
        },
        None | Some(Value::Null) => Err(ApiError::bad_request(format!("Invalid input received: Must specify {field} in request."))),
        Some(v) => Err(ApiError::bad_request(format!("Invalid input received: Invalid value for '{field}': {v} is not a boolean."))),
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ResetStatus {
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    attach_status: Option<String>,
    #[serde(default)]
    migration_status: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RetypeAction {
    #[serde(default)]
    new_type: Option<String>,
    #[serde(default)]
    migration_policy: Option<String>,
}

/// `GET /volumes/summary` (3.12+; `metadata` from 3.36).
pub(super) async fn summary(c: &Ctx<'_>, uri: &Uri) -> Reply {
    if c.mv < (3, 12) {
        return Err(ApiError::not_found_path());
    }
    let all = query(uri).iter().any(|(k, v)| k == "all_tenants" && truthy(v));
    let s = c.svc.volume_summary(c.who, all).await?;
    let mut out = json!({ "total_size": s.total_size, "total_count": s.total_count });
    if c.mv >= (3, 36) {
        out["metadata"] = json!(s.metadata);
    }
    Ok((StatusCode::OK, json!({ "volume-summary": out })))
}

/// The arguments of a legacy attach action (`null` = none given).
fn legacy_args<T: serde::de::DeserializeOwned + Default>(name: &str, args: Value) -> Result<T, ApiError> {
    match args {
        Value::Null => Ok(T::default()),
        v => serde_json::from_value(v).map_err(|e| ApiError::bad_request(format!("Invalid input received: {name}: {e}"))),
    }
}

/// `{"connector": {...}}` of `os-initialize_connection` / `os-terminate_connection`.
fn legacy_connector(name: &str, args: &Value) -> Result<Value, ApiError> {
    match args.get("connector") {
        Some(c @ Value::Object(_)) => Ok(c.clone()),
        _ => Err(ApiError::bad_request(format!("Invalid input received: {name} needs a connector object"))),
    }
}

#[derive(Debug, Default, Deserialize)]
struct AttachAction {
    #[serde(default)]
    instance_uuid: Option<String>,
    #[serde(default)]
    mountpoint: Option<String>,
    #[serde(default)]
    mode: Option<String>,
    #[serde(default)]
    host_name: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct DetachAction {
    #[serde(default)]
    attachment_id: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RekeyAction {
    #[serde(default)]
    mode: Option<String>,
}

/// The volume as Cinder shows it; `shown`: a show or detailed list (which
/// carry the admin-only `os-vol-*` attributes), not a create or update.
async fn detail_view(c: &Ctx<'_>, v: &Volume, shown: bool) -> Result<Value, ApiError> {
    let (svc, who, base, mv) = (c.svc, c.who, c.base, c.mv);
    let (t, enc) = svc.type_of(v).await?;
    let mut view = views::volume_detail(base, v, t.as_ref().map(|t| t.name.as_str()), enc, mv, who.admin, shown);
    // As Cinder: only complete attachments are listed on the volume.
    let attached: Vec<Value> = svc
        .attachments_of(&v.id)
        .await?
        .iter()
        .filter(|a| a.attach_status == attach_status::ATTACHED)
        .map(views::volume_attachment)
        .collect();
    view["attachments"] = Value::Array(attached);
    Ok(view)
}

pub(super) async fn create(c: &Ctx<'_>, bytes: &Bytes) -> Reply {
    let (svc, who, mv) = (c.svc, c.who, c.mv);
    let b: VolumeCreateBody = body(bytes)?;
    let v = b.volume;
    if v.backup_id.is_some() && mv < (3, 47) {
        return Err(ApiError::bad_request("Invalid input received: backup_id needs microversion 3.47 or later"));
    }
    let sources = [v.source_volid.is_some(), v.snapshot_id.is_some(), v.backup_id.is_some()];
    if sources.iter().filter(|s| **s).count() > 1 {
        return Err(ApiError::bad_request(
            "Invalid input received: only one of source_volid, snapshot_id and backup_id may be given",
        ));
    }
    let unsupported = [
        ("imageRef", v.image_ref.is_some()),
        ("consistencygroup_id", v.consistencygroup_id.is_some()),
        ("multiattach", v.multiattach == Some(true)),
    ];
    if let Some((field, _)) = unsupported.iter().find(|(_, set)| *set) {
        return Err(ApiError::bad_request(format!("Invalid input received: {field} is not supported by this service yet")));
    }
    let _ = (&v.availability_zone, &v.scheduler_hints);
    let size_gb = match &v.size {
        None | Some(Value::Null) => None,
        Some(s) => Some(parse_size(s)?),
    };
    if size_gb.is_none() && !sources.iter().any(|s| *s) {
        return Err(ApiError::bad_request("Invalid input received: size is required"));
    }
    let req = CreateVolume {
        size_gb,
        name: v.name.or(v.display_name),
        description: v.description.or(v.display_description),
        volume_type: v.volume_type,
        source_volid: v.source_volid,
        metadata: v.metadata.unwrap_or_default(),
        group_id: v.group_id.filter(|_| mv >= (3, 13)),
    };
    let (vol, job) = match (v.snapshot_id, v.backup_id) {
        (Some(snap), _) => svc.create_volume_from_snapshot(who, req, &snap).await?,
        (_, Some(backup)) => svc.create_volume_from_backup(who, req, &backup).await?,
        _ => svc.create_volume(who, req).await?,
    };
    crate::engine::spawn(svc.clone(), job);
    Ok((StatusCode::ACCEPTED, json!({ "volume": detail_view(c, &vol, false).await? })))
}

