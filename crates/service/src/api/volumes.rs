//! Volumes: bodies and handlers. Each handler extracts and checks its
//! input, calls one domain function and renders the answer.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::http::{StatusCode, Uri};
use serde::Deserialize;
use serde_json::{json, Value};

use super::error::ApiError;
use super::{body, parse_size, policy, query, truthy, views, Reply};
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


pub(super) async fn list(c: &Ctx<'_>, uri: &Uri, detail: bool) -> Reply {
    let mut f = VolumeFilter::default();
    for (k, v) in query(uri) {
        match k.as_str() {
            "name" | "display_name" => f.name = Some(v),
            "status" => f.status = Some(v),
            "all_tenants" => f.all_tenants = truthy(&v),
            _ => {}
        }
    }
    let vols = c.svc.list_volumes(c.who, &f).await?;
    let mut out = Vec::with_capacity(vols.len());
    for v in &vols {
        out.push(if detail { detail_view(c, v).await? } else { views::volume_summary(c.base, v) });
    }
    Ok((StatusCode::OK, json!({ "volumes": out })))
}

pub(super) async fn show(c: &Ctx<'_>, id: &str) -> Reply {
    let v = c.svc.get_volume(c.who, id).await?;
    Ok((StatusCode::OK, json!({ "volume": detail_view(c, &v).await? })))
}

pub(super) async fn update(c: &Ctx<'_>, id: &str, bytes: &Bytes) -> Reply {
    let b: VolumeUpdateBody = body(bytes)?;
    let u = crate::service::UpdateVolume {
        name: b.volume.name.or(b.volume.display_name),
        description: b.volume.description.or(b.volume.display_description),
        metadata: b.volume.metadata,
    };
    let v = c.svc.update_volume(c.who, id, u).await?;
    Ok((StatusCode::OK, json!({ "volume": detail_view(c, &v).await? })))
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
    svc.get_volume(who, id).await?;
    svc.delete_volume_snapshots(who, id, cascade).await?;
    let job = svc.delete_volume(who, id, force).await?;
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
        other => Err(ApiError::bad_request(format!("There is no such action: {other}"))),
    }
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

async fn detail_view(c: &Ctx<'_>, v: &Volume) -> Result<Value, ApiError> {
    let (svc, who, base, mv) = (c.svc, c.who, c.base, c.mv);
    let (t, enc) = svc.type_of(v).await?;
    let mut view = views::volume_detail(base, v, t.as_ref().map(|t| t.name.as_str()), enc, mv, who.admin);
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
        ("group_id", v.group_id.is_some()),
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
    };
    let (vol, job) = match (v.snapshot_id, v.backup_id) {
        (Some(snap), _) => svc.create_volume_from_snapshot(who, req, &snap).await?,
        (_, Some(backup)) => svc.create_volume_from_backup(who, req, &backup).await?,
        _ => svc.create_volume(who, req).await?,
    };
    crate::engine::spawn(svc.clone(), job);
    Ok((StatusCode::ACCEPTED, json!({ "volume": detail_view(c, &vol).await? })))
}

