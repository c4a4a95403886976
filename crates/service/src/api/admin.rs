//! The discovery and operator surface: availability zones, extensions,
//! `os-services`, `os-hosts`, `scheduler-stats/get_pools` and
//! `capabilities/{host}`. Routing, bodies and views; the state comes from
//! [`crate::inventory`].

use std::sync::Arc;

use axum::body::Bytes;
use axum::http::{Method, StatusCode, Uri};
use serde_json::{json, Map, Value};

use super::error::ApiError;
use super::{query, strict_bool, Reply};
use crate::inventory::{CleanupRequest, HostUsage, PoolInfo, ServiceChange, ServiceInfo, VENDOR, VOLUME_BINARY, ZONE};
use crate::messages::Message;
use crate::model::Caller;
use crate::service::Service;

/// Operations of this module.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdminEndpoint {
    /// `GET /os-availability-zone`.
    AvailabilityZones,
    /// `GET /extensions`.
    Extensions,
    /// `GET /os-services`.
    ListServices,
    /// `PUT /os-services/{action}`: enable, disable, disable-log-reason,
    /// freeze, thaw.
    UpdateService(String),
    /// `GET /os-hosts`.
    ListHosts,
    /// `GET /os-hosts/{host}`.
    ShowHost(String),
    /// `GET /scheduler-stats/get_pools`.
    Pools,
    /// `GET /capabilities/{host}`.
    Capabilities(String),
    /// `GET /types/{id}/os-volume-type-access`.
    TypeAccess(String),
    /// `POST /types/{id}/action`: `addProjectAccess`, `removeProjectAccess`.
    TypeAccessAction(String),
    /// `GET /messages` (3.3+).
    ListMessages,
    /// `GET /messages/{id}`.
    ShowMessage(String),
    /// `DELETE /messages/{id}`.
    DeleteMessage(String),
    /// `POST /workers/cleanup` (3.24): release the down nodes' jobs.
    WorkersCleanup,
}

/// The first path segments this module answers (none is a project id).
pub(super) const COLLECTIONS: &[&str] =
    &["os-availability-zone", "extensions", "os-services", "os-hosts", "scheduler-stats", "capabilities", "messages", "workers"];

/// Routes the path segments after `/v3[/{project}]`.
pub(super) fn resource(m: &Method, segs: &[&str]) -> Result<AdminEndpoint, ApiError> {
    use AdminEndpoint::*;
    let s = |x: &&str| (*x).to_owned();
    let e = match (segs, m) {
        (["os-availability-zone"], &Method::GET) => AvailabilityZones,
        (["extensions"], &Method::GET) => Extensions,
        (["os-services"], &Method::GET) => ListServices,
        (["os-services", action], &Method::PUT) => UpdateService(s(action)),
        (["os-hosts"], &Method::GET) => ListHosts,
        (["os-hosts", host], &Method::GET) => ShowHost(s(host)),
        (["scheduler-stats", "get_pools"], &Method::GET) => Pools,
        (["capabilities", host], &Method::GET) => Capabilities(s(host)),
        (["messages"], &Method::GET) => ListMessages,
        (["messages", id], &Method::GET) => ShowMessage(s(id)),
        (["messages", id], &Method::DELETE) => DeleteMessage(s(id)),
        (["messages"] | ["messages", _], _) => return Err(ApiError::bad_method()),
        (["workers", "cleanup"], &Method::POST) => WorkersCleanup,
        (["workers", "cleanup"], _) => return Err(ApiError::bad_method()),
        (["types", id, "os-volume-type-access"], &Method::GET) => TypeAccess(s(id)),
        (["types", id, "action"], &Method::POST) => TypeAccessAction(s(id)),
        (["types", _, "os-volume-type-access" | "action"], _) => return Err(ApiError::bad_method()),
        (["os-availability-zone" | "extensions" | "os-services" | "os-hosts"], _)
        | (["os-services" | "os-hosts" | "capabilities", _], _)
        | (["scheduler-stats", "get_pools"], _) => return Err(ApiError::bad_method()),
        _ => return Err(ApiError::not_found_path()),
    };
    Ok(e)
}

pub(super) async fn handle(
    svc: &Arc<Service>,
    who: &Caller,
    e: AdminEndpoint,
    uri: &Uri,
    bytes: &Bytes,
    base: &str,
    mv: (u32, u32),
) -> Reply {
    use AdminEndpoint::*;
    let ok = |v: Value| Ok((StatusCode::OK, v));
    if matches!(e, ListMessages | ShowMessage(_) | DeleteMessage(_)) && mv < (3, 3) {
        return Err(ApiError { status: 404, message: "API version 3.3 or later is needed for messages.".into() });
    }
    if e == WorkersCleanup && mv < (3, 24) {
        return Err(ApiError { status: 404, message: "API version 3.24 or later is needed for the worker cleanup.".into() });
    }
    match e {
        WorkersCleanup => {
            let req = cleanup_request(bytes)?;
            let (cleaning, unavailable, _) = svc.workers_cleanup(&req).await?;
            let list = |v: &[(u64, ServiceInfo)]| -> Vec<Value> {
                v.iter().map(|(id, s)| json!({ "id": id, "host": s.host, "binary": s.binary, "cluster_name": Value::Null })).collect()
            };
            Ok((StatusCode::ACCEPTED, json!({ "cleaning": list(&cleaning), "unavailable": list(&unavailable) })))
        }
        ListMessages => {
            let all = svc.list_messages(who).await?;
            ok(json!({ "messages": all.iter().map(|m| message_view(base, m)).collect::<Vec<_>>() }))
        }
        ShowMessage(id) => ok(json!({ "message": message_view(base, &svc.get_message(who, &id).await?) })),
        DeleteMessage(id) => {
            svc.delete_message(who, &id).await?;
            Ok((StatusCode::NO_CONTENT, Value::Null))
        }
        AvailabilityZones => ok(json!({
            "availabilityZoneInfo": [{ "zoneName": ZONE, "zoneState": { "available": true } }]
        })),
        Extensions => ok(json!({ "extensions": extensions() })),
        ListServices => {
            let q = query(uri);
            let get = |k: &str| q.iter().find(|(key, _)| key == k).map(|(_, v)| v.as_str());
            // `service` is Cinder's older name for the binary filter.
            let binary = get("binary").or(get("service")).filter(|b| !b.is_empty());
            let host = get("host").filter(|h| !h.is_empty());
            let services = svc.list_services(host, binary).await?;
            ok(json!({ "services": services.iter().map(|s| service_view(s, mv)).collect::<Vec<_>>() }))
        }
        UpdateService(action) => update_service(svc, &action, bytes).await,
        ListHosts => {
            let services = svc.list_services(None, None).await?;
            ok(json!({ "hosts": services.iter().map(host_view).collect::<Vec<_>>() }))
        }
        ShowHost(host) => {
            let usage = svc.host_usage(&host).await?;
            ok(json!({ "host": usage.iter().map(|u| usage_view(&host, u)).collect::<Vec<_>>() }))
        }
        Pools => {
            let q = query(uri);
            let detail = match q.iter().find(|(k, _)| k == "detail").map(|(_, v)| v.as_str()) {
                None => false,
                Some(v) => strict_bool(v).ok_or_else(|| ApiError::bad_request(format!("Invalid value '{v}' for detail")))?,
            };
            let name = q.iter().find(|(k, _)| k == "name").map(|(_, v)| v.clone());
            let pools = svc.pools().await?;
            let out: Vec<Value> = pools
                .iter()
                .filter(|p| name.as_deref().is_none_or(|n| p.name == n))
                .map(|p| if detail { json!({ "name": p.name, "capabilities": pool_capabilities(p) }) } else { json!({ "name": p.name }) })
                .collect();
            ok(json!({ "pools": out }))
        }
        Capabilities(host) => {
            let p = svc.capabilities(&host).await?;
            ok(capabilities_view(&host, &p))
        }
        TypeAccess(id) => {
            let projects = svc.type_access(&id).await?;
            let out: Vec<Value> = projects.iter().map(|p| json!({ "volume_type_id": id, "project_id": p })).collect();
            ok(json!({ "volume_type_access": out }))
        }
        TypeAccessAction(id) => {
            let b: Value = serde_json::from_slice(bytes).map_err(|_| ApiError::bad_request("Malformed request body"))?;
            let (add, args) = match (b.get("addProjectAccess"), b.get("removeProjectAccess")) {
                (Some(a), None) => (true, a),
                (None, Some(r)) => (false, r),
                _ => {
                    return Err(ApiError::bad_request(
                        "Invalid input received: the action must be one of addProjectAccess, removeProjectAccess",
                    ))
                }
            };
            let project = args
                .get("project")
                .and_then(Value::as_str)
                .ok_or_else(|| ApiError::bad_request("Invalid input received: 'project' is a required string"))?;
            svc.change_type_access(&id, project, add).await?;
            Ok((StatusCode::ACCEPTED, Value::Null))
        }
    }
}

/// The longest disabled reason Cinder takes.
const MAX_REASON: usize = 255;

async fn update_service(svc: &Arc<Service>, action: &str, bytes: &Bytes) -> Reply {
    let b: Value = if bytes.iter().all(u8::is_ascii_whitespace) {
        Value::Object(Map::new())
    } else {
        serde_json::from_slice(bytes).map_err(|_| ApiError::bad_request("Malformed request body"))?
    };
    let field = |k: &str| b.get(k).and_then(Value::as_str).map(str::to_owned);
    let host = field("host").filter(|h| !h.is_empty());
    let host = || host.clone().ok_or_else(|| ApiError::bad_request("Invalid input received: Missing required element 'host' in request body."));
    let change = match action {
        "freeze" | "thaw" => {
            svc.freeze_host(&host()?, action == "freeze").await?;
            return Ok((StatusCode::OK, Value::Null));
        }
        "enable" => ServiceChange::Enable,
        "disable" => ServiceChange::Disable,
        "disable-log-reason" => {
            let reason = field("disabled_reason").map(|r| r.trim().to_owned()).filter(|r| !r.is_empty() && r.chars().count() <= MAX_REASON);
            let reason = reason.ok_or_else(|| {
                ApiError::bad_request("Invalid input received: Disabled reason contains invalid characters or is too long")
            })?;
            ServiceChange::DisableWithReason(reason)
        }
        _ => return Err(ApiError::bad_request("Invalid input received: Unknown action")),
    };
    let host = host()?;
    let service = field("service").unwrap_or_default();
    let binary = field("binary").unwrap_or_default();
    let key = if binary.is_empty() { service.clone() } else { binary.clone() };
    if key.is_empty() {
        return Err(ApiError::bad_request("Invalid input received: Missing required element 'binary' in request body."));
    }
    let enabling = matches!(change, ServiceChange::Enable);
    let s = svc.change_service(&host, &key, change).await?;
    let mut out = json!({
        "host": host,
        "service": service,
        "binary": binary,
        "disabled": s.disabled,
        "status": if s.disabled { "disabled" } else { "enabled" },
    });
    // Cinder answers the reason it just set (none on enable); a plain
    // disable leaves the reason out.
    if enabling || action == "disable-log-reason" {
        out["disabled_reason"] = json!(s.disabled_reason);
    }
    Ok((StatusCode::OK, out))
}

/// The body of `POST /workers/cleanup`, checked as Cinder's schema does (an
/// empty body selects every down service).
fn cleanup_request(bytes: &Bytes) -> Result<CleanupRequest, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(CleanupRequest::default());
    }
    let b: Map<String, Value> = super::body(bytes)?;
    let bad = |k: &str, v: &Value, what: &str| ApiError::bad_request(format!("Invalid input for field/attribute {k}. Value: {v}. {what}"));
    let text = |k: &str, v: &Value| -> Result<Option<String>, ApiError> {
        match v {
            Value::Null => Ok(None),
            Value::String(s) if !s.is_empty() && s.len() <= 255 => Ok(Some(s.clone())),
            _ => Err(bad(k, v, "is not a valid name")),
        }
    };
    let flag = |k: &str, v: &Value| -> Result<Option<bool>, ApiError> {
        match v {
            Value::Null => Ok(None),
            Value::Bool(b) => Ok(Some(*b)),
            Value::String(s) => strict_bool(s).map(Some).ok_or_else(|| bad(k, v, "is not a boolean")),
            _ => Err(bad(k, v, "is not a boolean")),
        }
    };
    let mut r = CleanupRequest::default();
    for (k, v) in &b {
        match k.as_str() {
            "cluster_name" => r.cluster_name = text(k, v)?,
            "host" => r.host = text(k, v)?,
            "binary" => {
                r.binary = match v.as_str() {
                    Some(b @ ("cinder-volume" | "cinder-scheduler")) => Some(b.to_owned()),
                    _ => return Err(bad(k, v, "is not one of 'cinder-volume', 'cinder-scheduler'")),
                }
            }
            "is_up" => r.is_up = flag(k, v)?,
            "disabled" => r.disabled = flag(k, v)?,
            "resource_id" => {
                r.resource_id = match v {
                    Value::Null => None,
                    Value::String(s) if uuid::Uuid::parse_str(s).is_ok() => Some(s.clone()),
                    _ => return Err(bad(k, v, "is not a 'uuid'")),
                }
            }
            "resource_type" => {
                // Cinder title-cases the type before checking it.
                let t = v.as_str().ok_or_else(|| bad(k, v, "is not a string"))?;
                let mut c = t.chars();
                r.resource_type = Some(c.next().map(|f| f.to_uppercase().chain(c.flat_map(char::to_lowercase)).collect()).unwrap_or_default());
            }
            "service_id" => {
                r.service_id = match v {
                    Value::Null => None,
                    Value::Number(n) => Some(n.as_u64().ok_or_else(|| bad(k, v, "is not a service id"))?),
                    Value::String(s) if !s.is_empty() && s.len() <= 11 && s.bytes().all(|c| c.is_ascii_digit()) => Some(s.parse().unwrap_or(u64::MAX)),
                    _ => return Err(bad(k, v, "is not a service id")),
                }
            }
            other => {
                return Err(ApiError::bad_request(format!(
                    "Invalid input received: Additional properties are not allowed ('{other}' was unexpected)"
                )))
            }
        }
    }
    Ok(r)
}

/// One `os-services` entry at microversion `mv`.
fn service_view(s: &ServiceInfo, mv: (u32, u32)) -> Value {
    let mut v = json!({
        "binary": s.binary,
        "host": s.host,
        "zone": ZONE,
        "status": if s.disabled { "disabled" } else { "enabled" },
        "state": if s.up { "up" } else { "down" },
        "updated_at": s.updated_at,
        "disabled_reason": s.disabled_reason,
    });
    if mv >= (3, 7) {
        v["cluster"] = Value::Null;
    }
    if s.binary == VOLUME_BINARY {
        v["replication_status"] = json!("disabled");
        v["active_backend_id"] = Value::Null;
        v["frozen"] = json!(s.frozen);
        if mv >= (3, 49) {
            v["backend_state"] = json!(if s.up { "up" } else { "down" });
        }
    }
    v
}

fn message_view(base: &str, m: &Message) -> Value {
    json!({
        "id": m.id,
        "message_level": m.message_level,
        "event_id": m.event_id,
        "user_message": m.user_message,
        "resource_type": m.resource_type,
        "resource_uuid": m.resource_uuid,
        "request_id": m.request_id,
        "created_at": m.created_at,
        "guaranteed_until": m.guaranteed_until,
        "links": super::views::links(base, &m.project_id, "messages", &m.id),
    })
}

fn host_view(s: &ServiceInfo) -> Value {
    json!({
        "host_name": s.host,
        "service": s.binary,
        "zone": ZONE,
        "service-status": if s.up { "available" } else { "unavailable" },
        "service-state": if s.disabled { "disabled" } else { "enabled" },
        "last-update": s.updated_at,
    })
}

fn usage_view(host: &str, u: &HostUsage) -> Value {
    json!({ "resource": {
        "host": host,
        "project": u.project.as_deref().unwrap_or("(total)"),
        "volume_count": u.volume_count.to_string(),
        "total_volume_gb": u.volume_gb.to_string(),
        "snapshot_count": u.snapshot_count.to_string(),
        "total_snapshot_gb": u.snapshot_gb.to_string(),
    }})
}

fn gb(v: Option<f64>) -> Value {
    v.map_or_else(|| json!("unknown"), |g| json!(g))
}

fn pool_capabilities(p: &PoolInfo) -> Value {
    let now = crate::model::now_iso();
    json!({
        "pool_name": p.name.split_once('#').map_or(p.name.as_str(), |(_, pool)| pool),
        "volume_backend_name": p.backend_name,
        "vendor_name": VENDOR,
        "driver_version": env!("CARGO_PKG_VERSION"),
        "storage_protocol": p.storage_protocol,
        "total_capacity_gb": gb(p.total_gb),
        "free_capacity_gb": gb(p.free_gb),
        "reserved_percentage": 0,
        "QoS_support": false,
        "thin_provisioning_support": true,
        "thick_provisioning_support": false,
        "multiattach": false,
        "timestamp": now,
        "updated": now,
    })
}

fn capabilities_view(host: &str, p: &PoolInfo) -> Value {
    json!({
        "namespace": format!("OS::Storage::Capabilities::{host}"),
        "vendor_name": VENDOR,
        "volume_backend_name": p.backend_name,
        "pool_name": Value::Null,
        "driver_version": env!("CARGO_PKG_VERSION"),
        "storage_protocol": p.storage_protocol,
        "display_name": Value::Null,
        "description": Value::Null,
        "visibility": Value::Null,
        "replication_targets": [],
        "properties": {
            "thin_provisioning": {
                "title": "Thin Provisioning",
                "description": "Volumes take backend space only as data is written.",
                "type": "boolean",
            },
        },
    })
}

/// The extensions this API serves, in Cinder's names.
fn extensions() -> Vec<Value> {
    const LIST: &[(&str, &str, &str)] = &[
        ("AvailabilityZones", "os-availability-zone", "Describe Availability Zones."),
        ("Backups", "backups", "Backups support."),
        ("Capabilities", "capabilities", "Capabilities support."),
        ("ExtendedServices", "os-extended-services", "Extended services support."),
        ("ExtendedSnapshotAttributes", "os-extended-snapshot-attributes", "Extended SnapshotAttributes support."),
        ("Hosts", "os-hosts", "Admin-only host administration."),
        ("SchedulerStats", "scheduler-stats", "Scheduler stats support."),
        ("Services", "os-services", "Services support."),
        ("TypesExtraSpecs", "os-types-extra-specs", "Type extra specs support."),
        ("TypesManage", "os-types-manage", "Types manage support."),
        ("VolumeEncryptionMetadata", "os-volume-encryption-metadata", "Volume encryption metadata."),
        ("VolumeHostAttribute", "os-vol-host-attr", "Expose host as an attribute of a volume."),
        ("VolumeMigStatusAttribute", "os-vol-mig-status-attr", "Expose migration_status as an attribute of a volume."),
        ("VolumeTenantAttribute", "os-vol-tenant-attr", "Expose the internal project_id as an attribute of a volume."),
        ("VolumeTransfer", "os-volume-transfer", "Volume transfer management support."),
        ("VolumeTypeEncryption", "encryption", "Encryption support for volume types."),
    ];
    LIST.iter()
        .map(|(name, alias, description)| {
            json!({
                "name": name,
                "alias": alias,
                "description": description,
                "namespace": format!("https://docs.openstack.org/volume/ext/{alias}/api/v3"),
                "updated": "2026-01-01T00:00:00+00:00",
                "links": [],
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        let r = |m: Method, p: &[&str]| resource(&m, p);
        assert_eq!(r(Method::GET, &["os-services"]).unwrap(), AdminEndpoint::ListServices);
        assert_eq!(r(Method::PUT, &["os-services", "freeze"]).unwrap(), AdminEndpoint::UpdateService("freeze".into()));
        assert_eq!(r(Method::GET, &["capabilities", "rekey@file"]).unwrap(), AdminEndpoint::Capabilities("rekey@file".into()));
        assert_eq!(r(Method::POST, &["os-services"]).unwrap_err().status, 405);
        assert_eq!(r(Method::GET, &["scheduler-stats", "nope"]).unwrap_err().status, 404);
    }

    #[test]
    fn service_views_follow_the_microversion() {
        let s = ServiceInfo {
            binary: VOLUME_BINARY.into(),
            host: "rekey@file".into(),
            disabled: false,
            disabled_reason: None,
            frozen: false,
            updated_at: "2026-01-01T00:00:00.000000".into(),
            up: true,
        };
        assert!(service_view(&s, (3, 0)).get("cluster").is_none());
        assert!(service_view(&s, (3, 7)).get("cluster").is_some());
        assert!(service_view(&s, (3, 48)).get("backend_state").is_none());
        assert_eq!(service_view(&s, (3, 49))["backend_state"], "up");
        let sched = ServiceInfo { binary: "cinder-scheduler".into(), ..s };
        assert!(service_view(&sched, (3, 60)).get("frozen").is_none());
    }
}
